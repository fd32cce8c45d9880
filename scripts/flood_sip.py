"""Flood a callcenter server's SIP port with malformed SIP over UDP and TCP, then check it still
answers: OPTIONS over both transports and, with --call, a real SIPp call.

    .venv/bin/python scripts/flood_sip.py --port 5060 [--host 127.0.0.1] [--seconds 10] [--call]

The messages are real ones (tests/sip/messages) broken on purpose: bytes flipped, cut short, headers
duplicated or blown up, NULs and non-UTF-8 inserted, Content-Length lying both ways, start lines
mangled, plus pure garbage; over TCP also half messages left hanging and streams of junk. The run is
bounded by --seconds; the exit status is 0 when the server answered afterwards.
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def seeds() -> list[bytes]:
    found = sorted((ROOT / "tests" / "sip" / "messages").rglob("*.dat"))
    return [p.read_bytes() for p in found] or [
        b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    ]


def mutate(rng: random.Random, seed: bytes) -> bytes:
    """One broken message."""
    data = bytearray(seed)
    choice = rng.randrange(10)
    if choice == 0 and data:  # flip bytes
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif choice == 1:  # cut short
        del data[rng.randrange(len(data) + 1) :]
    elif choice == 2:  # a header line repeated many times
        lines = bytes(data).split(b"\r\n")
        if len(lines) > 2:
            line = lines[rng.randrange(1, len(lines) - 1)]
            lines[1:1] = [line] * rng.randint(2, 300)
        data = bytearray(b"\r\n".join(lines))
    elif choice == 3:  # a huge header value
        data[:0] = b""
        pos = bytes(data).find(b"\r\n") + 2
        data[pos:pos] = b"X-Junk: " + b"A" * rng.randint(1000, 70000) + b"\r\n"
    elif choice == 4 and data:  # NULs and invalid UTF-8
        for _ in range(rng.randint(1, 10)):
            data.insert(rng.randrange(len(data)), rng.choice((0, 0xFF, 0xC0, 0x80)))
    elif choice == 5:  # Content-Length lying
        text = bytes(data)
        value = rng.choice((b"-1", b"99999999", b"0", b"abc", b"4294967296", b"1e3"))
        import re

        data = bytearray(re.sub(rb"(?im)^(content-length|l)\s*:\s*\d+", b"Content-Length: " + value, text))
    elif choice == 6:  # mangled start line
        line_end = bytes(data).find(b"\r\n")
        data[: max(0, line_end)] = rng.choice(
            (b"INVITE", b"INVITE  SIP/2.0", b"SIP/2.0 999999 X", b"\x00\x01\x02", b"INVITE sip: SIP/3.0")
        )
    elif choice == 7:  # garbage
        data = bytearray(rng.randbytes(rng.randint(1, 1500)))
    elif choice == 8:  # header folding / bare CRs / LF only
        data = bytearray(bytes(data).replace(b"\r\n", rng.choice((b"\n", b"\r", b"\r\n \r\n", b"\r\n\t"))))
    else:  # a fresh Call-ID so the transaction layer sees new work, plus a random method
        method = rng.choice((b"INVITE", b"REGISTER", b"BYE", b"CANCEL", b"ACK", b"REFER", b"NOTIFY", b"FOO"))
        data = bytearray(bytes(data).replace(b"Call-ID:", b"Call-ID: " + uuid.uuid4().hex.encode() + b"x", 1))
        space = bytes(data).find(b" ")
        if space > 0:
            data[:space] = method
    return bytes(data)


def messages(rng: random.Random) -> Iterator[bytes]:
    pool = seeds()
    while True:
        yield mutate(rng, rng.choice(pool))


def flood(host: str, port: int, seconds: float, seed: int = 1) -> dict[str, int]:
    """Send broken SIP for ``seconds`` over UDP and TCP; returns what was sent."""
    rng = random.Random(seed)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.setblocking(False)
    sent = {"udp": 0, "tcp_messages": 0, "tcp_connections": 0, "tcp_refused": 0}
    hanging: list[socket.socket] = []
    source = messages(rng)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for _ in range(50):
                data = next(source)
                try:
                    udp.sendto(data[:65000], (host, port))
                    sent["udp"] += 1
                except (BlockingIOError, OSError):
                    time.sleep(0.001)
            # TCP: a connection gets a few broken messages; every tenth is left hanging mid-message.
            try:
                conn = socket.create_connection((host, port), timeout=1.0)
            except OSError:
                sent["tcp_refused"] += 1
                continue
            sent["tcp_connections"] += 1
            try:
                for _ in range(rng.randint(1, 5)):
                    conn.sendall(next(source))
                    sent["tcp_messages"] += 1
                if rng.randrange(10) == 0:
                    conn.sendall(b"INVITE sip:x@y SIP/2.0\r\nContent-Length: 500\r\n\r\npartial")
                    hanging.append(conn)
                    if len(hanging) > 50:
                        hanging.pop(0).close()
                    continue
            except OSError:
                pass
            conn.close()
    finally:
        udp.close()
        for conn in hanging:
            conn.close()
    return sent


def options_answered(host: str, port: int, transport: str, timeout: float = 30.0) -> bool:
    """An OPTIONS over ``transport`` gets a 200 within ``timeout`` (asked again every 2 s: the server
    may still be working through the datagrams queued during the flood)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _options_once(host, port, transport, min(2.0, max(0.1, deadline - time.monotonic()))):
            return True
    return False


def _options_once(host: str, port: int, transport: str, timeout: float) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        local = s.getsockname()
        call_id = uuid.uuid4().hex
        target = f"[{host}]" if ":" in host else host
        msg = (
            f"OPTIONS sip:probe@{target}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport.upper()} {local[0]}:{local[1]};branch=z9hG4bK{call_id[:12]}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:flood-check@{target}>;tag=fc\r\n"
            f"To: <sip:probe@{target}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
            f"User-Agent: flood-check\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        s.send(msg)
        deadline = time.monotonic() + timeout
        buf = b""
        while time.monotonic() < deadline:
            try:
                buf += s.recv(65536)
            except (TimeoutError, ConnectionRefusedError):
                return False
            if call_id.encode() in buf and b"SIP/2.0 200" in buf:
                return True
    return False


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5060)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--call", action="store_true", help="also place one SIPp call afterwards")
    args = parser.parse_args()
    sent = flood(args.host, args.port, args.seconds, args.seed)
    print(
        f"sent {sent['udp']} broken datagrams and {sent['tcp_messages']} broken TCP messages over "
        f"{sent['tcp_connections']} connections in {args.seconds:.0f} s"
    )
    ok = all(options_answered(args.host, args.port, t) for t in ("udp", "tcp"))
    print(f"OPTIONS over UDP and TCP afterwards: {'answered' if ok else 'NOT ANSWERED'}")
    if ok and args.call:
        import tempfile

        sys.path.insert(0, str(ROOT))
        from callcenter.testing.sipp import run_sipp

        target = f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}"
        with tempfile.TemporaryDirectory() as work:
            result = run_sipp(target, Path(work), builtin="uac", calls=1, extra=["-d", "300"], timeout_s=30)
        ok = result.successful == 1
        print(f"a SIPp call afterwards: {'completed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
