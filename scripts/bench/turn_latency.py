"""Turn latency on a real server: caller's action → first RTP packet of the server's reply.

One SIPp call to a bench flow that loops ``menu → reply → menu``: the menu ("Say something, or press
1.") takes key 1 or any speech (``other_speech``), the reply is a fixed prompt ("Thank you."), both
pre-rendered at start-up like every fixed prompt. The caller's pcap alternates turns, each after the
menu prompt has finished: real human speech (short clips from tests/speech/corpus, 8 kHz μ-law) or
an RFC 4733 digit "1". ``dumpcap`` on loopback records both directions of the call's RTP.

From the capture, per turn:
- speech: end of speech = arrival of the caller's packet carrying the last voiced 20 ms of the clip
  (a frame above -40 dBFS); reply = the first server packet after it that is not the idle frame
  (the server sends all-0xFF PCMU silence between prompts). Includes the endpointer's trailing
  silence (the menu offers a key, so ``speech.menu_end_silence_ms``, 500 ms by default), whatever of
  the transcription is not done yet (Whisper starts early, after ``speech.early_decode_ms`` of
  silence) and the prompt start.
- digit: the first RFC 4733 packet of the event (key down) → first non-idle server packet. The
  server's receiver (media/dtmf.py) acts on a digit at its event's first packet, so the reply starts
  while the key is still held (the caller's pcap holds each key 160 ms).
A turn counts only if the server was idle from 100 ms before the caller's action began (a prompt still
playing would be barge-in, another measurement); skipped turns are reported.

    .venv/bin/python scripts/bench/turn_latency.py [--turns 12] [--menu-end-silence-ms 500]
        [--early-decode-ms 240] [--end-silence-ms 700]

Needs sipp and dumpcap (``make test-peers``) and root (or capture rights) for dumpcap on ``lo``.
Run time ~1.5 min with the defaults.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from asr_wer import load_corpus, phone_audio  # noqa: E402

from callcenter.testing.pcap import Segment, write_rtp_pcap  # noqa: E402
from callcenter.testing.server import ServerProcess, free_port  # noqa: E402
from callcenter.testing.sipp import pcap_caller_scenario, run_sipp  # noqa: E402

FLOW = """\
id: bench_turns
language: en-US
start: menu
nodes:
  menu:
    type: menu
    prompt: Say something, or press 1.
    options:
      - {dtmf: "1", next: reply}
    other_speech: reply
    timeout_s: 30
    retries: 0
    on_failure: bye
  reply:
    type: say
    text: Thank you.
    next: menu
  bye:
    type: hangup
    prompt: Goodbye.
"""
FRAME = 160
IDLE = b"\xff" * FRAME  # g711.silence("PCMU", 160)
LEAD_S = 3.0  # silence before the first turn: the first menu prompt plays
GAP_S = 5.0  # silence after each turn: reply + menu prompt (speech turns: + endpoint + transcription)
VOICED_RMS = 328.0  # -40 dBFS
DIGIT_PACKETS = 160 // 20  # Segment.digit_ms = 160: event packets before the end packets


@dataclass
class Turn:
    kind: str  # "speech" | "digit"
    first_packet: int  # index among the caller's RTP packets where the action starts
    end_packet: int  # speech: packet with the last voiced frame; digit: the event's first packet
    text: str = ""


def build_caller(pcap: Path, turns: int) -> tuple[list[Turn], int]:
    """The caller's pcap: alternate speech and digit turns; returns the turns and the packet count."""
    clips = [(phone_audio(i), i.reference) for i in load_corpus()]
    clips = [c for c in clips if len(c[0]) <= 3 * 8000]
    segments: list[Segment] = []
    out: list[Turn] = []
    packets = 0

    def silence(seconds: float) -> None:
        nonlocal packets
        n = int(seconds * 8000) // FRAME * FRAME
        segments.append(Segment(pcm=np.zeros(n, np.int16)))
        packets += n // FRAME

    silence(LEAD_S)
    for k in range(turns):
        if k % 2 == 0:
            pcm, text = clips[(k // 2) % len(clips)]
            pcm = pcm[: len(pcm) // FRAME * FRAME]
            rms = np.sqrt(np.mean(pcm.reshape(-1, FRAME).astype(np.float64) ** 2, axis=1))
            last_voiced = int(np.nonzero(rms > VOICED_RMS)[0][-1])
            segments.append(Segment(pcm=pcm))
            out.append(Turn("speech", packets, packets + last_voiced, text))
            packets += len(pcm) // FRAME
            silence(GAP_S + 1.0)
        else:
            segments.append(Segment(digit="1"))
            out.append(Turn("digit", packets, packets))
            packets += DIGIT_PACKETS + 3  # write_rtp_pcap: 8 event packets, then the end packet 3 times
            silence(GAP_S)
    write_rtp_pcap(pcap, segments)
    return out, packets


def read_udp(pcap: Path) -> list[tuple[float, int, int, bytes]]:
    """(time, source port, destination port, UDP payload) of each IPv4/UDP packet in a pcap file."""
    data = pcap.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    link_len = {1: 14, 113: 16, 0: 4, 276: 20}[linktype]
    out = []
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(endian + "IIII", data[off : off + 16])
        pkt = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        ip = pkt[link_len:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0xF) * 4
        sport, dport = struct.unpack("!HH", ip[ihl : ihl + 4])
        out.append((sec + frac / (1e9 if nano else 1e6), sport, dport, ip[ihl + 8 :]))
    return out


def measure(capture: Path, turns: list[Turn], server_ports: range, caller_port: int,
            expected: int) -> tuple[dict[str, list[float]], list[str]]:
    pkts = read_udp(capture)
    # RTP only (version 2, not RTCP's payload types 200-204); SIPp plays the pcap from a port of its own
    def rtp(p: bytes) -> bool:
        return len(p) >= 12 and p[0] >> 6 == 2 and not 72 <= (p[1] & 0x7F) <= 76

    caller = [(t, p) for t, s, d, p in pkts if d in server_ports and s not in server_ports and rtp(p)]
    server = [(t, p[12:]) for t, s, d, p in pkts if s in server_ports and d == caller_port and rtp(p)]
    notes: list[str] = []
    if len(caller) != expected:
        notes.append(f"capture holds {len(caller)} caller packets, the pcap {expected}: "
                     "turns may be misplaced")
    times = np.array([t for t, _ in server])
    lat: dict[str, list[float]] = {"speech": [], "digit": []}
    for i, turn in enumerate(turns):
        if turn.end_packet >= len(caller):
            notes.append(f"turn {i} ({turn.kind}): not in the capture")
            continue
        t_start = caller[turn.first_packet][0]
        t_event = caller[turn.end_packet][0]
        lo, hi = np.searchsorted(times, [t_start - 0.1, t_event])
        if any(server[j][1] != IDLE for j in range(lo, hi)):
            notes.append(f"turn {i} ({turn.kind}): a prompt was still playing when the caller acted; skipped")
            continue
        j = hi
        while j < len(server) and server[j][1] == IDLE:
            j += 1
        if j == len(server):
            notes.append(f"turn {i} ({turn.kind}): no reply in the capture")
            continue
        lat[turn.kind].append(server[j][0] - t_event)
    return lat, notes


def run(args: argparse.Namespace, work: Path) -> None:
    flows = work / "flows"
    flows.mkdir()
    (flows / "bench_turns.yaml").write_text(FLOW)
    pcap = work / "caller.pcap"
    turns, expected = build_caller(pcap, args.turns)
    duration = LEAD_S + sum((GAP_S + 4.0) if t.kind == "speech" else (GAP_S + 0.3) for t in turns) + 2
    env = {
        "CALLCENTER_IVR_FLOWS_DIR": str(flows),
        "CALLCENTER_IVR_NUMBERS": "100=bench_turns",
        "CALLCENTER_LOG_LEVEL": "warning",
        "CALLCENTER_MEDIA_RTP_TIMEOUT_S": "120",
    }
    for key, value in (("END_SILENCE_MS", args.end_silence_ms),
                       ("MENU_END_SILENCE_MS", args.menu_end_silence_ms),
                       ("EARLY_DECODE_MS", args.early_decode_ms)):
        if value is not None:
            env[f"CALLCENTER_SPEECH_{key}"] = str(value)
    server = ServerProcess(work / "data", env=env)
    caller_port = free_port(even=True)
    ports = range(server.rtp_min, server.rtp_min + 99)
    capture = work / "turns.pcap"
    with server:
        time.sleep(3.0)  # fixed prompts are rendered and Whisper warmed just after start-up
        dump = subprocess.Popen(
            ["dumpcap", "-q", "-P", "-i", "lo", "-f",
             f"udp portrange {ports.start}-{ports.stop - 1}",
             "-a", f"duration:{int(duration + 20)}", "-w", str(capture)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # dumpcap is listening
        result: dict[str, object] = {}

        def call() -> None:
            result["sipp"] = run_sipp(
                f"127.0.0.1:{server.sip_port}", work / "sipp", scenario=str(pcap_caller_scenario(work, pcap)),
                media_port=caller_port, timeout_s=duration + 30,
                extra=["-s", "100", "-d", str(int(duration * 1000))],
            )

        th = threading.Thread(target=call)
        th.start()
        th.join(duration + 60)
        dump.terminate()
        dump.wait(10)
    sipp = result.get("sipp")
    ok = getattr(sipp, "successful", 0) == 1
    if not ok:
        print(f"the SIPp call failed: {getattr(sipp, 'errors', sipp)}", file=sys.stderr)
    lat, notes = measure(capture, turns, ports, caller_port, expected)
    for n in notes:
        print("  note:", n)
    def setting(value: int | None, default: int) -> str:
        return f"{value}" if value is not None else f"server default ({default})"

    print(f"machine: 2 cores; menu_end_silence_ms = {setting(args.menu_end_silence_ms, 500)}, "
          f"early_decode_ms = {setting(args.early_decode_ms, 240)}, "
          f"end_silence_ms = {setting(args.end_silence_ms, 700)} (free-form questions; not used here)")
    for kind, target in (("speech", 800), ("digit", 150)):
        v = np.array(lat[kind]) * 1000
        if len(v) == 0:
            print(f"{kind}: no valid turns")
            continue
        p50 = float(np.median(v))
        print(f"{kind:20s}: {len(v)} turns  p50 {p50:6.0f} ms  min {v.min():6.0f}  max {v.max():6.0f} ms  "
              f"(target p50 <= {target} ms: {'meets' if p50 <= target else 'MISSES'})  all: "
              + " ".join(f"{x:.0f}" for x in v))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=12, help="turns, alternating speech and digit")
    ap.add_argument("--end-silence-ms", type=int, default=None,
                    help="trailing silence that ends a free-form utterance (server default 700)")
    ap.add_argument("--menu-end-silence-ms", type=int, default=None,
                    help="trailing silence that ends a menu answer (server default 500; this flow's menu)")
    ap.add_argument("--early-decode-ms", type=int, default=None,
                    help="Whisper's early transcription after this much silence (server default 240; 0 off)")
    args = ap.parse_args()
    for tool in ("sipp", "dumpcap"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: run `make test-peers` first", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="cc-turns-") as tmp:
        run(args, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
