"""SIP signalling benchmark: call set-ups/s and digest REGISTERs/s that the server completes with 0
failures, with SIPp (Debian's sip-tester) sharing the 2-core machine, and the server's CPU per call.

Each step offers a fixed rate for a few seconds; the figure is the highest offered rate whose run
had no failed call and whose achieved rate kept up with the offer (within 5 %). Calls are
INVITE → 100 → 200 (with SDP, an RTP port pair opened per call) → ACK → BYE → 200.

    .venv/bin/python scripts/bench/sip_signalling.py [--seconds 5] [--rates 200,400,...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from callcenter.testing.server import ServerProcess
from callcenter.testing.sipp import run_sipp, sipp_available


def sweep(
    server: ServerProcess, work: Path, kind: str, rates: list[int], seconds: float
) -> tuple[int, float]:
    """Highest clean rate and the server's CPU ms per operation at that rate."""
    best, best_cpu = 0, 0.0
    for rate in rates:
        calls = int(rate * seconds)
        cpu0 = server.cpu_seconds()
        if kind == "calls":
            r = run_sipp(
                f"127.0.0.1:{server.sip_port}",
                work / f"c{rate}",
                builtin="uac",
                calls=calls,
                rate=rate,
                timeout_s=seconds * 4 + 30,
                extra=["-d", "0", "-l", str(rate * 4)],
            )
        else:
            r = run_sipp(
                f"127.0.0.1:{server.sip_port}",
                work / f"r{rate}",
                scenario="register.xml",
                calls=calls,
                rate=rate,
                timeout_s=seconds * 4 + 30,
                inject=[["bench"]],
                extra=["-au", "bench", "-ap", "bench-password", "-l", str(rate * 4)],
            )
        cpu = server.cpu_seconds() - cpu0
        achieved = r.successful / r.elapsed_s if r.elapsed_s else 0.0
        clean = r.failed == 0 and r.successful == calls and achieved >= rate * 0.95
        print(
            f"  {kind:5s} offered {rate:5d}/s: ok {r.successful:6d} failed {r.failed:5d} "
            f"retrans {r.retransmissions:6d} achieved {achieved:7.1f}/s "
            f"server CPU {1000 * cpu / max(1, r.successful):.3f} ms/op",
            flush=True,
        )
        if not clean:
            break
        best, best_cpu = rate, 1000 * cpu / max(1, r.successful)
    return best, best_cpu


def _server(data_dir: Path) -> ServerProcess:
    server = ServerProcess(
        data_dir,
        env={
            "CALLCENTER_LOG_LEVEL": "warning",
            "CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S": "0",
            # Enough RTP ports for every call in flight at the top rate.
            "CALLCENTER_MEDIA_RTP_PORT_MIN": "20000",
            "CALLCENTER_MEDIA_RTP_PORT_MAX": "40000",
        },
    )
    data_dir.mkdir(parents=True)
    server.cli("agents", "add", "bench", "--password", "bench-password")
    return server


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each step")
    parser.add_argument("--call-rates", default="200,400,600,800,1000,1200")
    parser.add_argument("--register-rates", default="400,800,1200,1500,2000,2500")
    args = parser.parse_args()
    if not sipp_available():
        print("sipp not found: run `make test-peers` first", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="cc-bench-") as tmp:
        work = Path(tmp)
        # A fresh server per sweep: an overloaded last step must not tax the next sweep.
        print("call set-ups (INVITE→200→ACK→BYE):")
        with _server(work / "calls") as server:
            calls, call_cpu = sweep(
                server, work, "calls", [int(x) for x in args.call_rates.split(",")], args.seconds
            )
        print("digest REGISTERs (REGISTER→401→REGISTER→200):")
        with _server(work / "registers") as server:
            regs, reg_cpu = sweep(
                server, work, "register", [int(x) for x in args.register_rates.split(",")], args.seconds
            )
    print(
        f"RESULT call_setups_per_s={calls} server_cpu_ms_per_call={call_cpu:.3f} "
        f"registers_per_s={regs} server_cpu_ms_per_register={reg_cpu:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
