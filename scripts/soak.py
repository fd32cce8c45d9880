"""Soak test (not in CI): an hour (configurable) of mixed SIPp calls and web chats against one server,
sampling the server's memory (RSS), open file descriptors and threads every 30 s. Flat lines expected.

Calls: SIPp's uac at ``--call-rate`` calls/s, each held ``--call-seconds`` (the demo tone; the caller
hangs up). Chats: ``--chats-per-minute`` web chats through /chat/session and /chat/messages, each
answering the sample flow's menu (the engine then queues, overflows and closes them, filing tickets).
After the run the table's first and last rows are compared (growth per hour).

    .venv/bin/python scripts/soak.py [--minutes 60] [--sample-s 30] [--call-rate 5] [--call-seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from callcenter.testing.server import ServerProcess, free_port
from callcenter.testing.sipp import sipp_available

REPO = Path(__file__).resolve().parents[1]


def proc_stats(pid: int) -> tuple[float, int, int]:
    """(RSS MB, open fds, threads) of a process (Linux /proc)."""
    rss, threads = 0.0, 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd")), threads


class Chats(threading.Thread):
    """Web chats at a steady rate: a session, "hello", then the menu answer "sales"."""

    def __init__(self, base: str, per_minute: float, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.base, self.gap, self.stop = base, 60.0 / per_minute, stop
        self.started = self.failed = 0

    def post(self, path: str, body: dict[str, str], visitor: str | None = None) -> dict[str, object]:
        headers = {"Content-Type": "application/json"}
        if visitor is not None:
            headers["X-Chat-Visitor"] = visitor
        request = urllib.request.Request(
            f"{self.base}{path}", json.dumps(body).encode(), headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            return dict(json.loads(r.read()))

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += self.gap
            try:
                token = str(self.post("/chat/session", {})["token"])
                self.post("/chat/messages", {"text": "hello"}, token)
                time.sleep(1.0)
                self.post("/chat/messages", {"text": "sales"}, token)
                self.started += 1
            except (OSError, urllib.error.HTTPError, KeyError, ValueError):
                self.failed += 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--sample-s", type=float, default=30.0)
    parser.add_argument("--call-rate", type=float, default=5.0, help="new calls per second")
    parser.add_argument("--call-seconds", type=float, default=20.0, help="how long each call lasts")
    parser.add_argument("--chats-per-minute", type=float, default=30.0)
    args = parser.parse_args()
    if not sipp_available():
        print("sipp not found: run `make test-peers` first", file=sys.stderr)
        return 1
    seconds = args.minutes * 60
    calls = int(args.call_rate * seconds)
    with tempfile.TemporaryDirectory(prefix="cc-soak-") as tmp:
        work = Path(tmp)
        server = ServerProcess(
            work / "data",
            env={
                "CALLCENTER_LOG_LEVEL": "warning",
                "CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S": "0",
                "CALLCENTER_MEDIA_RTP_PORT_MIN": "20000",
                "CALLCENTER_MEDIA_RTP_PORT_MAX": "40000",
            },
            # the soak's chats all come from 127.0.0.1: a wider per-address allowance than a visitor's
            config=f"""
ivr:
  flows_dir: {REPO / "ivr_flows"}
  intents_file: {REPO / "ivr_flows" / "intents" / "intents.yaml"}
chat:
  webchat: {{ip_rate_per_s: 100, ip_burst: 200}}
""",
        )
        with server:
            assert server.proc is not None
            pid = server.proc.pid
            deadline = time.monotonic() + 120
            while server.health().get("speech") == "warming" and time.monotonic() < deadline:
                time.sleep(0.5)
            in_flight = int(args.call_rate * args.call_seconds * 2) + 10
            command = ["sipp", f"127.0.0.1:{server.sip_port}", "-sn", "uac", "-r", str(args.call_rate)]
            command += ["-m", str(calls), "-d", str(int(args.call_seconds * 1000)), "-l", str(in_flight)]
            command += ["-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port(even=True))]
            command += ["-nostdin", "-trace_stat", "-stf", "stat.csv", "-fd", "10"]
            sipp = subprocess.Popen(command, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stop = threading.Event()
            chats = Chats(f"http://127.0.0.1:{server.http_port}", args.chats_per_minute, stop)
            chats.start()
            title = f"{'minute':>7} {'RSS MB':>8} {'fds':>6} {'threads':>8} {'live calls':>11} {'chats':>6}"
            print(title, flush=True)
            rows: list[tuple[float, float, int, int]] = []
            t0 = time.monotonic()
            try:
                while True:
                    elapsed = time.monotonic() - t0
                    rss, fds, threads = proc_stats(pid)
                    active = server.health().get("active_calls")
                    rows.append((elapsed, rss, fds, threads))
                    row = f"{elapsed / 60:7.1f} {rss:8.1f} {fds:6d} {threads:8d} {active!s:>11}"
                    print(f"{row} {chats.started:6d}", flush=True)
                    if elapsed >= seconds:
                        break
                    time.sleep(min(args.sample_s, max(0.0, seconds - elapsed)))
            finally:
                stop.set()
                sipp.kill()  # our own SIPp, by its PID
                sipp.wait(10)
                chats.join(15)
            stats = (work / "stat.csv").read_text().splitlines() if (work / "stat.csv").exists() else []
            if len(stats) >= 2:
                head, last = stats[0].split(";"), stats[-1].split(";")
                col = {name: i for i, name in enumerate(head)}
                print(f"SIPp: {last[col['SuccessfulCall(C)']]} calls completed, "
                      f"{last[col['FailedCall(C)']]} failed")  # fmt: skip
            print(f"chats: {chats.started} started, {chats.failed} failed requests")
    if len(rows) >= 3:
        # growth after the first sample (start-up and the first calls fill caches and pools)
        (t1, rss1, fds1, _), (t2, rss2, fds2, _) = rows[1], rows[-1]
        hours = max(1e-9, (t2 - t1) / 3600)
        print(
            f"RESULT rss_mb_first={rss1:.1f} rss_mb_last={rss2:.1f} "
            f"rss_mb_per_hour={(rss2 - rss1) / hours:.1f} fds_first={fds1} fds_last={fds2}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
