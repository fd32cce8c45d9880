"""REST latency at a fixed request rate: p50/p99 of GETs against the real app (bearer token checked
against SQLite on each request) served by uvicorn+uvloop in its own process. Target: p99 <= 50 ms at
200 requests/s (issue 8).

Open loop: request i is sent at start + i/rate whatever the earlier ones are doing, and its latency is
measured from that scheduled moment (so a stalled server cannot hide its queueing: no coordinated
omission). The mix: queues, agents (200), one call's record, the last 20 calls, /healthz.

    .venv/bin/python scripts/bench/api_rest.py [--rate 200] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PATHS = ["/api/queues", "/api/agents/live", "/api/calls/call-42", "/api/calls?limit=20", "/healthz"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(folder: Path) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_api_server.py")), str(port), str(folder)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    if server.stdout.readline().strip() != "ready":
        server.kill()
        raise SystemExit("the benchmark server did not start")
    return server, port


async def run(port: int, token: str, rate: float, seconds: float) -> tuple[list[float], dict[str, int]]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, limits=limits
    ) as client:
        for path in PATHS:  # warm-up: connections, caches
            await client.get(path)

        async def one(path: str, due: float) -> None:
            r = await client.get(path)
            latencies.append(time.perf_counter() - due)
            statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1

        tasks = []
        start = time.perf_counter() + 0.1
        for i in range(int(rate * seconds)):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(PATHS[i % len(PATHS)], due)))
        await asyncio.gather(*tasks)
    return latencies, statuses


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server, port = start_server(Path(tmp))
        try:
            token = (Path(tmp) / "token").read_text()
            cpu_before = cpu_seconds(server.pid)
            latencies, statuses = asyncio.run(run(port, token, args.rate, args.seconds))
            cpu_ms = (cpu_seconds(server.pid) - cpu_before) * 1000 / len(latencies)
        finally:
            server.terminate()
            server.wait(10)
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(
        f"requests: {len(ms)} at {args.rate:.0f}/s, statuses {statuses}; server CPU {cpu_ms:.2f} ms/request"
    )
    print(
        f"latency ms: p50 {statistics.median(ms):.1f}  p90 {ms[int(len(ms) * 0.9)]:.1f}  "
        f"p99 {p99:.1f}  max {ms[-1]:.1f}"
    )
    verdict = "met" if p99 <= 50 else "NOT met"
    print(f"REST p99 at {args.rate:.0f} req/s: {p99:.1f} ms (target <= 50 ms): {verdict}")


if __name__ == "__main__":
    main()
