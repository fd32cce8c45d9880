"""Live channel fan-out: N WebSocket clients (default 200, each authenticated with a bearer token)
on /api/live; queue events are triggered through the server (logged with log_event exactly like the
ACD does, then the log bridge → bus → each client's queue → its socket) and each client notes when
the event arrived. Latency = arrival time − the wall time the event was logged (same machine clock).
Target: p99 <= 200 ms with 200 clients (issue 8).

The server runs in its own process (uvicorn+uvloop); the clients share one asyncio process, whose own
delay is part of the figure (a pessimistic measure).

    .venv/bin/python scripts/bench/api_live.py [--clients 200] [--events 50] [--interval 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import websockets

sys.path.insert(0, str(Path(__file__).parent))
from api_rest import start_server  # noqa: E402


async def client(
    url: str, token: str, ready: asyncio.Event, delays: list[float], wanted: int, counter: list[int]
) -> None:
    async with websockets.connect(f"{url}?token={token}", max_queue=None, open_timeout=60) as ws:
        snapshot = json.loads(await ws.recv())
        assert snapshot["type"] == "snapshot"
        counter[0] += 1
        if counter[0] == counter[1]:
            ready.set()
        got = 0
        while got < wanted:
            message = json.loads(await ws.recv())
            if message["type"] == "ping":
                await ws.send('{"type":"pong"}')
                continue
            if message["event"] == "queue_joined":
                delays.append(time.time() - message["data"]["sent_at"])
                got += 1


async def run(
    port: int, token: str, n_clients: int, n_events: int, interval: float
) -> tuple[list[float], float]:
    ready = asyncio.Event()
    delays: list[float] = []
    counter = [0, n_clients]
    url = f"ws://127.0.0.1:{port}/api/live"
    started = time.perf_counter()
    tasks = [
        asyncio.create_task(client(url, token, ready, delays, n_events, counter)) for _ in range(n_clients)
    ]
    await asyncio.wait_for(ready.wait(), 120)
    connect_s = time.perf_counter() - started
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        for i in range(n_events):
            await http.post("/bench/queue_event", params={"n": i})
            await asyncio.sleep(interval)
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return delays, connect_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between two queue events")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server, port = start_server(Path(tmp))
        try:
            token = (Path(tmp) / "token").read_text()
            delays, connect_s = asyncio.run(run(port, token, args.clients, args.events, args.interval))
        finally:
            server.terminate()
            server.wait(10)
    ms = sorted(d * 1000 for d in delays)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(
        f"{args.clients} clients connected in {connect_s:.1f} s; {len(ms)} deliveries "
        f"({args.events} queue events)"
    )
    print(
        f"delivery ms: p50 {statistics.median(ms):.1f}  p90 {ms[int(len(ms) * 0.9)]:.1f}  "
        f"p99 {p99:.1f}  max {ms[-1]:.1f}"
    )
    print(
        f"live p99 with {args.clients} clients: {p99:.1f} ms (target <= 200 ms): "
        f"{'met' if p99 <= 200 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
