"""Media benchmark: N concurrent calls, each caller (SIPp) streaming audio from a pcap while the
server plays its tone to every call and consumes what it receives.

For each N: a fresh server, SIPp opens N calls, and once all are up a capture on loopback (dumpcap)
records what the server sends for `--seconds`, while the server's CPU is measured. Reported per N:
the p99 deviation of the server's per-stream send interval from 20 ms (over a sample of 40 streams:
copying every packet to dumpcap slows the sender being measured), sequence gaps in what it sent,
packets it counted lost in what it received (from the call records), and CPU per call (% of a core).
The figure is the largest N with 0 lost packets and p99 deviation ≤ 3 ms.

    .venv/bin/python scripts/bench/media_calls.py [--calls 100,200,300,400] [--seconds 8]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from callcenter.media import tones
from callcenter.testing.pcap import Segment, write_rtp_pcap
from callcenter.testing.server import ServerProcess
from callcenter.testing.sipp import pcap_caller_scenario, run_sipp

RTP_MIN, RTP_MAX = 30000, 34000


def _capture_stats(pcap: Path) -> tuple[float, int, int]:
    """(p99 |interval - 20 ms| in ms, sequence gaps, packets) over every stream the server sent."""
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(pcap),
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "udp.srcport",
            "-e",
            "rtp.seq",
            "-d",
            f"udp.port=={RTP_MIN}-{RTP_MAX},rtp",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    streams: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[2] and int(parts[1]) % 2 == 0:  # odd ports carry RTCP
            streams[parts[1]].append((float(parts[0]), int(parts[2])))
    deviations: list[np.ndarray] = []
    gaps = packets = 0
    for packets_of_stream in streams.values():
        times = np.array([t for t, _ in packets_of_stream])
        seqs = np.array([s for _, s in packets_of_stream])
        packets += len(times)
        if len(times) > 1:
            deviations.append(np.abs(np.diff(times) - 0.020) * 1000)
            steps = np.diff(seqs) % 65536
            gaps += int(np.sum(steps[steps != 1] - 1))
    if not deviations:
        return float("nan"), gaps, packets
    all_dev = np.concatenate(deviations)
    p50, p90, p999 = np.percentile(all_dev, [50, 90, 99.9])
    print(f"    |interval-20ms| p50 {p50:.2f} p90 {p90:.2f} p99.9 {p999:.2f} max {all_dev.max():.2f} ms")
    return float(np.percentile(all_dev, 99)), gaps, packets


def run_step(
    work: Path, calls: int, seconds: float, silent: bool = False
) -> tuple[float, int, int, int, float]:
    hold_s = seconds + calls / 50 + 12
    caller_pcap = work / "caller.pcap"
    write_rtp_pcap(caller_pcap, [Segment(pcm=tones.sine(300, hold_s))])
    scenario = pcap_caller_scenario(work, caller_pcap)
    server = ServerProcess(
        work / f"data{calls}",
        env={
            "CALLCENTER_LOG_LEVEL": "warning",
            "CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S": "0",
            "CALLCENTER_MEDIA_RTP_PORT_MIN": str(RTP_MIN),
            "CALLCENTER_MEDIA_RTP_PORT_MAX": str(RTP_MAX),
            "CALLCENTER_MEDIA_RTP_TIMEOUT_S": "120",
        },
    )
    with server:
        result: dict[str, object] = {}

        def caller() -> None:
            result["sipp"] = run_sipp(
                f"127.0.0.1:{server.sip_port}",
                work / f"sipp{calls}",
                scenario=str(scenario),
                calls=calls,
                rate=50,
                media_port=RTP_MAX + 2000,  # SIPp's own RTP stays out of the captured range
                timeout_s=hold_s + 60,
                extra=["-l", str(calls), "-d", str(int(hold_s * 1000))],
            )

        thread = threading.Thread(target=caller)
        thread.start()
        deadline = time.monotonic() + calls / 50 + 20
        while server.health().get("active_calls", 0) < calls and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        capture = work / f"server{calls}.pcap"
        # Capture a sample of the streams (the first and the last 20 port pairs handed out): copying
        # every packet to dumpcap would itself slow the sender it measures.
        last = RTP_MIN + 2 * calls
        sample = f"udp src portrange {RTP_MIN}-{RTP_MIN + 40} or udp src portrange {last - 40}-{last}"
        dump = subprocess.Popen(
            [
                "dumpcap",
                "-q",
                "-i",
                "lo",
                "-a",
                f"duration:{int(seconds)}",
                "-f",
                sample,
                "-w",
                str(capture),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        dump.wait(timeout=seconds + 30)
        cpu = (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        thread.join(timeout=hold_s + 120)
        records = server.new_calls(set(), calls, timeout=60)
    lost_in = sum(int(c.get("rtp", {}).get("packets_lost", 0)) for c in records)
    p99, gaps, packets = _capture_stats(capture)
    return p99, gaps, lost_in, packets, 100 * cpu / calls


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", default="100,200,300,400")
    parser.add_argument("--seconds", type=float, default=8.0, help="capture length per step")
    parser.add_argument(
        "--silent-callers",
        action="store_true",
        help="callers send no RTP (isolates the server's sending from SIPp's pcap threads)",
    )
    args = parser.parse_args()
    for tool in ("sipp", "dumpcap", "tshark"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: run `make test-peers` first", file=sys.stderr)
            return 1
    best, best_cpu = 0, 0.0
    with tempfile.TemporaryDirectory(prefix="cc-media-bench-") as tmp:
        for n in [int(x) for x in args.calls.split(",")]:
            p99, gaps, lost_in, packets, cpu_pct = run_step(Path(tmp), n, args.seconds, args.silent_callers)
            clean = gaps == 0 and lost_in == 0 and p99 <= 3.0
            print(
                f"  {n:4d} calls: server sent {packets} packets, p99 |interval-20ms| {p99:.2f} ms, "
                f"gaps {gaps}, lost on receive {lost_in}, CPU {cpu_pct:.3f} % of a core per call"
                f"{'' if clean else '  (not clean)'}",
                flush=True,
            )
            if not clean:
                break
            best, best_cpu = n, cpu_pct
    print(f"RESULT concurrent_calls={best} cpu_percent_per_call={best_cpu:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
