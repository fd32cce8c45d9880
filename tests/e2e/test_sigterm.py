"""SIGTERM with calls up (issue 11): new calls and OPTIONS get 503 + Retry-After at once, a call that
ends by itself within calls.shutdown_grace_s ends normally, the rest are hung up with a BYE after the
grace, records are written, and the process exits 0."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from callcenter.sip.message import SipResponse
from callcenter.sip.parser import parse_message
from callcenter.testing.server import ServerProcess, free_port
from callcenter.testing.sipp import SCENARIOS

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sipp")]

GRACE_S = 4
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"


def sipp(server: ServerProcess, workdir: Path, scenario: str, pause_ms: int) -> subprocess.Popen[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        ["sipp", f"127.0.0.1:{server.sip_port}", "-sf", str(SCENARIOS / scenario), "-m", "1", "-r", "1",
         "-d", str(pause_ms), "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port(even=True)),
         "-nostdin", "-timeout", "60s", "-timeout_error", "-trace_stat", "-stf", "stat.csv"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def ask(server: ServerProcess, method: str) -> SipResponse:
    """One request over UDP from a raw socket; the final response (bounded wait)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        port = s.getsockname()[1]
        call_id = uuid.uuid4().hex
        body = SDP if method == "INVITE" else b""
        head = (
            f"{method} sip:100@127.0.0.1:{server.sip_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id}\r\n"
            f"From: <sip:probe@127.0.0.1:{port}>;tag=p1\r\nTo: <sip:100@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
            f"Contact: <sip:probe@127.0.0.1:{port}>\r\n"
            + ("Content-Type: application/sdp\r\n" if body else "")
            + f"Content-Length: {len(body)}\r\n\r\n"
        )
        s.sendto(head.encode() + body, ("127.0.0.1", server.sip_port))
        while True:
            reply = parse_message(s.recv(65536))
            if isinstance(reply, SipResponse) and reply.status >= 200:
                return reply


def test_sigterm_drains_calls_then_hangs_up_the_rest_and_exits_0(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "data",
        env={
            "CALLCENTER_CALLS_SHUTDOWN_GRACE_S": str(GRACE_S),
            "CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S": "0",
            "CALLCENTER_IVR_NUMBERS": "",
        },
    )
    server.start()
    try:
        assert ask(server, "OPTIONS").status == 200
        long = sipp(server, tmp_path / "long", "uac_server_bye.xml", 0)  # waits for the server's BYE
        short = sipp(server, tmp_path / "short", "uac.xml", 2500)  # hangs up 2.5 s after the answer
        deadline = time.monotonic() + 20
        while server.health()["active_calls"] < 2:
            assert time.monotonic() < deadline, "the two calls never came up"
            time.sleep(0.1)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for_event("calls_draining", active=2)

        refused = ask(server, "INVITE")
        assert refused.status == 503 and refused.headers.get("Retry-After")
        busy = ask(server, "OPTIONS")
        assert busy.status == 503 and busy.headers.get("Retry-After")

        assert short.wait(30) == 0, short.stderr.read() if short.stderr else ""
        assert long.wait(30) == 0, long.stderr.read() if long.stderr else ""  # it got the BYE
        assert server.proc.wait(30) == 0
    finally:
        server.stop()

    drained = server.events("calls_drained")
    assert drained and drained[0]["hung_up"] == 1 and drained[0]["cancelled"] == 0
    calls = server.calls()  # the writer flushed every record before the exit
    assert len(calls) == 2 and all(c["ended_at"] for c in calls)
    assert sorted(c["hangup_by"] for c in calls) == ["caller", "server"]
