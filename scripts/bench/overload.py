"""Overload benchmark: offer twice the server's call ceiling with SIPp for ~10 s and show that it keeps
completing calls near its ceiling, turns the rest away at once with 503 + Retry-After (no timeouts,
no retransmission storm), and that its memory returns to the baseline once the load ends.

Calls are INVITE → 100 → 200 → ACK → BYE → 200 (as in sip_signalling.py); a 503 is ACKed and counted.
Prints completed set-ups/s, 503s/s, failed calls (timeouts or anything unexpected), SIPp's
retransmissions, and the server's RSS before, at its peak during, 20 s into the quiet after the load
(what the allocators still hold) and at the end of the quiet (after the server's quiet-after-load
collection and malloc_trim, callcenter/core/memory.py, ~45 s after the last call).

    .venv/bin/python scripts/bench/overload.py [--ceiling 900] [--factor 2] [--seconds 10]
        [--env PYTHONMALLOC=malloc]   # server environment, e.g. to compare allocators
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import threading
import time
from pathlib import Path

from callcenter.testing.server import ServerProcess
from callcenter.testing.sipp import run_sipp, sipp_available

# SIPp's uac with a branch for 503: the call then ends (successfully, for SIPp) after the ACK; the
# per-message counts (-trace_counts) tell 503s from completed calls. (The 503's ACK carries a new
# branch: SIPp's start_txn/ack_txn trip an assertion on this path. The server's 503 for overload is
# stateless, so it drops that ACK either way.)
SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uac_overload">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[media_ip_type] [media_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="503" optional="true" next="refused"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      [routes]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      [routes]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" next="done"/>
  <label id="refused"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <label id="done"/>
</scenario>
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def refused_count(workdir: Path) -> int:
    """503s received, from SIPp's -trace_counts file (one column per scenario message)."""
    files = sorted(workdir.glob("*_counts.csv"))
    if not files:
        return -1
    rows = list(csv.reader(files[-1].open(), delimiter=";"))
    if len(rows) < 2:
        return -1
    head, last = rows[0], rows[-1]
    for i, name in enumerate(head):
        if "503" in name and name.endswith("Recv"):
            return int(last[i])
    return -1


def load_round(
    server: ServerProcess, work: Path, scenario: Path, rate: int, calls: int, seconds: float, settle: float
) -> dict[str, float]:
    """One burst of `calls` at `rate`, then `settle` seconds of quiet; the figures of that round."""
    assert server.proc is not None
    pid = server.proc.pid
    before = rss_mb(pid)
    peak = [before]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.25):
            peak[0] = max(peak[0], rss_mb(pid))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    cpu0 = server.cpu_seconds()
    r = run_sipp(
        f"127.0.0.1:{server.sip_port}",
        work,
        scenario=str(scenario),
        calls=calls,
        rate=rate,
        timeout_s=seconds * 4 + 60,
        extra=["-d", "0", "-l", str(rate * 4), "-trace_counts"],
    )
    cpu = server.cpu_seconds() - cpu0
    stop.set()
    watcher.join()
    if not r.elapsed_s:
        raise RuntimeError(f"SIPp did not run: {r.stderr[-1500:]}")
    refused = refused_count(work)
    completed = r.successful - max(0, refused)
    quiet = min(20.0, settle)
    time.sleep(quiet)
    rss_quiet = rss_mb(pid)
    time.sleep(settle - quiet)
    return {
        "elapsed": r.elapsed_s,
        "completed": completed,
        "refused": refused,
        "failed": r.failed,
        "retrans": r.retransmissions,
        "cpu": cpu,
        "active_after": float(server.health().get("active_calls") or 0),
        "rss_before": before,
        "rss_peak": peak[0],
        "rss_quiet": rss_quiet,
        "rss_after": rss_mb(pid),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ceiling", type=int, default=900, help="clean set-ups/s (sip_signalling.py)")
    parser.add_argument("--factor", type=float, default=2.0, help="offered load as a multiple of the ceiling")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--settle", type=float, default=60.0, help="quiet seconds after a burst before 'after'"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="bursts (a second one tells a leak from a plateau)"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra server environment"
    )
    args = parser.parse_args()
    if not sipp_available():
        print("sipp not found: run `make test-peers` first", file=sys.stderr)
        return 1
    rate = int(args.ceiling * args.factor)
    calls = int(rate * args.seconds)
    with tempfile.TemporaryDirectory(prefix="cc-overload-") as tmp:
        work = Path(tmp)
        scenario = work / "uac_overload.xml"
        scenario.write_text(SCENARIO)
        server = ServerProcess(
            work / "data",
            env={
                "CALLCENTER_LOG_LEVEL": "warning",
                "CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S": "0",
                "CALLCENTER_MEDIA_RTP_PORT_MIN": "20000",
                "CALLCENTER_MEDIA_RTP_PORT_MAX": "40000",
                **dict(item.split("=", 1) for item in args.env),
            },
        )
        rounds = []
        with server:
            # Warm up (first calls import and cache things), then take the baseline.
            run_sipp(
                f"127.0.0.1:{server.sip_port}",
                work / "warm",
                scenario=str(scenario),
                calls=200,
                rate=100,
                timeout_s=30,
                extra=["-d", "0"],
            )
            # The speech recogniser loads in the background after start-up: wait, it competes for the CPU.
            deadline = time.monotonic() + 120
            while server.health().get("speech") == "warming" and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(3)
            print(
                f"offered {rate}/s for {calls} calls ({args.factor:g}x a ceiling of {args.ceiling}/s), "
                f"{args.rounds} round(s), {args.settle:g} s quiet after each",
                flush=True,
            )
            for i in range(args.rounds):
                f = load_round(server, work / f"load{i}", scenario, rate, calls, args.seconds, args.settle)
                rounds.append(f)
                e = f["elapsed"]
                print(
                    f"  round {i + 1}: completed {f['completed']:.0f} = {f['completed'] / e:.1f}/s, "
                    f"503 {f['refused']:.0f} = {f['refused'] / e:.1f}/s, failed {f['failed']:.0f}, "
                    f"SIPp retransmissions {f['retrans']:.0f}, server CPU {f['cpu']:.1f} s over {e:.1f} s, "
                    f"live calls after {f['active_after']:.0f}; RSS MB before {f['rss_before']:.1f} "
                    f"peak {f['rss_peak']:.1f} quiet 20 s {f['rss_quiet']:.1f} after {f['rss_after']:.1f}",
                    flush=True,
                )
    first, last = rounds[0], rounds[-1]
    e = first["elapsed"]
    print(
        f"RESULT completed_per_s={first['completed'] / e:.1f} refused_per_s={first['refused'] / e:.1f} "
        f"failed={first['failed']:.0f} retransmissions={first['retrans']:.0f} "
        f"rss_before_mb={first['rss_before']:.1f} rss_peak_mb={first['rss_peak']:.1f} "
        f"rss_quiet_mb={first['rss_quiet']:.1f} rss_after_mb={last['rss_after']:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
