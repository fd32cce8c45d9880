"""Benchmark: 1000 concurrent web chat sessions, message → agent delivery latency.

The server (its own process, uvicorn on uvloop, switch interval and ``gc.freeze`` as ``callcenter
serve`` sets them): the conversation engine over SQLite, the web chat gateway (``/chat/ws``) and the
live channel (``/api/live``) on loopback; 50 agents, 25 chats each.

The visitors are driven by ``--procs`` separate processes (one Python loop driving 1000 sockets is
itself a source of delay: its loop lag lands in the figure). Each opens its share of the ``--sessions``
visitor WebSockets (ids signed with the server's key, as ``POST /chat/session`` would hand out),
starts a conversation on each (routed to an agent), then every session sends ``--messages`` messages
spread over ``--seconds``. This process holds one supervisor connection on ``/api/live`` standing for
the agents' inboxes, and nothing else: a message counts as delivered when its ``chat_message`` event
arrives there. Send and arrival times are CLOCK_MONOTONIC (``perf_counter_ns``), one clock for every
process on the machine.

Prints p50/p95/p99/max of send → agent arrival (target: p99 ≤ 100 ms), the event-loop lag of every
process (how late a 5 ms timer fires: what each loop adds to the figure), the server's garbage
collections during the measured phase, and the machine's load average.

    .venv/bin/python scripts/bench/webchat_sessions.py [--sessions 1000] [--messages 3] [--seconds 15]
        [--procs 4]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SECRET = b"bench-secret-bench-secret-bench-secret"
ADMIN_TOKEN = "bench-admin-token-0123456789"
AGENTS = 50
CHATS_EACH = 25
LAG_TICK_S = 0.005


class LoopLag:
    """How late a ``LAG_TICK_S`` sleep wakes up, in ms (a loop busy elsewhere or a starved process)."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(LAG_TICK_S)
            self.samples.append((time.perf_counter() - start - LAG_TICK_S) * 1000.0)

    def reset(self) -> None:
        self.samples = []

    def summary(self) -> dict[str, float]:
        s = sorted(self.samples) or [0.0]
        return {"p50": _q(s, 0.5), "p99": _q(s, 0.99), "max": s[-1]}


def _cpu_ticks(pids: list[int]) -> tuple[int, int, int]:
    """(busy ticks of the whole machine, all ticks, ticks spent by ``pids``) from /proc (Linux)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        own = 0
        for pid in pids:
            stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            own += int(stat[11]) + int(stat[12])  # utime + stime
        return sum(fields) - idle, sum(fields), own
    except (OSError, ValueError, IndexError):
        return 0, 0, 0


def _q(s: list[float], q: float) -> float:
    return s[min(len(s) - 1, int(q * len(s)))]


def _fmt(lag: dict[str, float]) -> str:
    return f"p50 {lag['p50']:.1f} / p99 {lag['p99']:.1f} / max {lag['max']:.1f} ms"


# -- the server ------------------------------------------------------------------------------------------


def serve(port: int, data: Path) -> None:
    import uvicorn

    import callcenter.store.crm  # noqa: F401 - registers the tables
    from callcenter.api.access import Access
    from callcenter.api.http import create_http_app
    from callcenter.api.live import LiveHub, create_live_router
    from callcenter.chat.engine import ConversationEngine
    from callcenter.chat.routing import ChatRouter
    from callcenter.chat.store import ChatStore
    from callcenter.chat.webchat import WebchatGateway, create_webchat_router
    from callcenter.core.config import ChatSettings, WebchatSettings
    from callcenter.core.logging import setup_logging
    from callcenter.events import EventBus, install_log_bridge
    from callcenter.routing.agents import Agent, AgentState
    from callcenter.routing.queues import QueueConfig
    from callcenter.store import Store

    setup_logging("warning", "json")
    store = Store(f"sqlite:///{data / 'chat.db'}")
    store.create_all()
    agents = []
    for i in range(AGENTS):
        a = Agent(f"agent{i:02d}", {}, frozenset(), state=AgentState.AVAILABLE)
        a.max_chats = CHATS_EACH
        agents.append(a)
    router = ChatRouter({"general": QueueConfig("general")})
    chat_store = ChatStore(store.engine)
    writer = chat_store.writer
    engine = ConversationEngine(chat_store, router, settings=ChatSettings(), agents=lambda: agents)
    # Loopback is one address for every visitor here: the per-address limit is lifted for the run.
    settings = WebchatSettings(ip_rate_per_s=1e6, ip_burst=1_000_000, visitor_burst=100)
    gateway = WebchatGateway(settings, data, secret=SECRET)
    gateway.attach(engine)
    bus = EventBus()
    hub = LiveHub(bus)
    access = Access(None, admin_token=ADMIN_TOKEN)
    app = create_http_app(
        lambda: {"sip": "up", "db": "up"},
        routers=[create_live_router(hub, access), create_webchat_router(gateway)],
    )
    lag = LoopLag()
    writes = [0, 0]  # the message writer's batches and messages when the measured phase started
    # (generation, wall ms, CPU ms) of each collection in the measured phase: wall much above CPU
    # means the process was descheduled meanwhile (a loaded machine), not a long collection.
    pauses: list[tuple[int, float, float]] = []
    gc_started = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[:] = [time.perf_counter(), time.thread_time()]
        else:
            wall = (time.perf_counter() - gc_started[0]) * 1000.0
            pauses.append((int(info["generation"]), wall, (time.thread_time() - gc_started[1]) * 1000.0))

    def measure_from_now() -> None:  # SIGUSR1 from the driver: the set-up burst is over
        lag.reset()
        pauses.clear()
        writes[:] = [writer.batches, writer.written]
        writer.slowest_batch_s = 0.0

    def report() -> None:  # SIGUSR2: the measured phase is over
        gen2 = [p for p in pauses if p[0] == 2]
        batches = writer.batches - writes[0]
        wall = max((p[1] for p in pauses), default=0.0)
        cpu = max((p[2] for p in pauses), default=0.0)
        text = (
            f"loop lag {_fmt(lag.summary())}; {len(pauses)} collections ({len(gen2)} full), "
            f"longest {wall:.1f} ms wall / {cpu:.1f} ms CPU; message writer: {batches} batches, "
            f"{(writer.written - writes[1]) / max(1, batches):.1f} messages each, longest "
            f"{writer.slowest_batch_s * 1000:.1f} ms"
        )
        (data / "server-report.txt").write_text(text)

    async def main() -> None:
        bus.bind()
        install_log_bridge(bus)
        logging.getLogger("callcenter").setLevel(logging.INFO)
        hub.start()
        ticker = asyncio.create_task(engine.run())
        lagger = asyncio.create_task(lag.run())
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, measure_from_now)
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, report)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
        )
        # As callcenter.app does for the real server.
        sys.setswitchinterval(0.001)
        gc.collect()
        gc.freeze()
        gc.callbacks.append(on_gc)
        try:
            await uvicorn.Server(config).serve()
        finally:
            ticker.cancel()
            lagger.cancel()

    import uvloop

    uvloop.run(main())


# -- a visitor-driving process ---------------------------------------------------------------------------


async def drive(port: int, first: int, count: int, messages: int, seconds: float, pace: float) -> None:
    """Open ``count`` sessions, say ``joined``; on ``go`` send; print what was sent when; exit on EOF."""
    import websockets

    from callcenter.chat.webchat import VisitorSigner

    signer = VisitorSigner(SECRET)
    base = f"ws://127.0.0.1:{port}"
    sent: dict[str, int] = {}
    lag = LoopLag()
    lagger = asyncio.create_task(lag.run())
    go = asyncio.Event()
    stop = asyncio.Event()
    errors: list[str] = []

    async def visitor(i: int, joined: asyncio.Event) -> None:
        _, token = signer.new()
        try:
            async with websockets.connect(
                f"{base}/chat/ws", max_size=None, open_timeout=60, ping_interval=None
            ) as ws:
                await ws.send(json.dumps({"type": "hello", "token": token}))
                await ws.send(json.dumps({"type": "message", "text": "hello"}))

                async def reader() -> None:
                    async for raw in ws:
                        if "has joined the conversation" in raw:
                            joined.set()

                read = asyncio.create_task(reader())
                await go.wait()
                for n in range(messages):
                    await asyncio.sleep(random.uniform(0, seconds / messages))
                    text = f"bench:{i}:{n}"
                    sent[text] = time.perf_counter_ns()
                    await ws.send(json.dumps({"type": "message", "text": text}))
                await stop.wait()
                read.cancel()
                await asyncio.gather(read, return_exceptions=True)
        except Exception as exc:  # noqa: BLE001 - counted and shown once, not a traceback per socket
            errors.append(f"{type(exc).__name__}: {exc}")

    joined = [asyncio.Event() for _ in range(count)]
    tasks = []
    for k in range(count):
        tasks.append(asyncio.create_task(visitor(first + k, joined[k])))
        await asyncio.sleep(pace)  # a connection storm would measure the accept queue, not chat
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in joined)), 120)
    print("joined", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    lag.reset()
    go.set()
    if line.strip() == "go":
        await asyncio.sleep(seconds)
        await loop.run_in_executor(None, sys.stdin.readline)  # "stop" or EOF
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    lagger.cancel()
    report = {"sent": sent, "lag": lag.summary(), "errors": len(errors), "error": errors[:1]}
    print(json.dumps(report), flush=True)


# -- the measuring process -------------------------------------------------------------------------------


async def bench(
    port: int, server: subprocess.Popen[bytes], sessions: int, messages: int, seconds: float, procs: int
) -> tuple[int, dict[str, Any]]:
    import websockets

    expected = sessions * messages
    arrived: dict[str, int] = {}
    all_arrived = asyncio.Event()
    listening = asyncio.Event()
    lag = LoopLag()
    pace = 0.001 * procs  # 1000 connections a second in all
    drivers = []
    started = time.perf_counter()
    for p in range(procs):
        first, count = p * sessions // procs, (p + 1) * sessions // procs - p * sessions // procs
        drivers.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--drive",
                str(port),
                "--first",
                str(first),
                "--count",
                str(count),
                "--messages",
                str(messages),
                "--seconds",
                str(seconds),
                "--pace",
                str(pace),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=64 * 1024 * 1024,  # the report is one JSON line of every send time
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            )
        )
    for d in drivers:
        assert d.stdout is not None
        line = await asyncio.wait_for(d.stdout.readline(), 180)
        if line.strip() != b"joined":
            raise SystemExit(f"a driver failed while connecting: {line!r}")
    print(f"{sessions} sessions connected and routed to agents in {time.perf_counter() - started:.1f} s")

    async def agent_side() -> None:
        url = f"ws://127.0.0.1:{port}/api/live?token={ADMIN_TOKEN}"
        async with websockets.connect(url, max_size=None, ping_interval=None) as ws:
            listening.set()
            async for raw in ws:
                now = time.perf_counter_ns()
                if '"chat_message"' not in raw:
                    if '"ping"' in raw:
                        await ws.send('{"type": "pong"}')
                    continue
                text = (json.loads(raw).get("data") or {}).get("text", "")
                if text.startswith("bench:") and text not in arrived:
                    arrived[text] = now
                    if len(arrived) >= expected:
                        all_arrived.set()
        print(f"the live channel closed: {ws.close_code} {ws.close_reason}")

    # The supervisor's live channel connects once the set-up burst (the conversations started and
    # assigned) is over: the hub closes a consumer that falls behind, and the burst is not measured.
    agent_task = asyncio.create_task(agent_side())
    await asyncio.wait_for(listening.wait(), 30)
    lagger = asyncio.create_task(lag.run())
    load_before = os.getloadavg()
    pids = [os.getpid(), server.pid, *(d.pid for d in drivers)]
    cpu_before = _cpu_ticks(pids)
    server_before = _cpu_ticks([server.pid])[2]
    server.send_signal(signal.SIGUSR1)
    for d in drivers:
        assert d.stdin is not None
        d.stdin.write(b"go\n")
        await d.stdin.drain()
    try:
        await asyncio.wait_for(all_arrived.wait(), seconds + 60)
    except TimeoutError:
        pass
    load_after = os.getloadavg()
    cpu_after = _cpu_ticks(pids)
    server_cpu_s = (_cpu_ticks([server.pid])[2] - server_before) / os.sysconf("SC_CLK_TCK")
    server.send_signal(signal.SIGUSR2)
    lagger.cancel()
    agent_task.cancel()
    await asyncio.gather(agent_task, lagger, return_exceptions=True)
    sent: dict[str, int] = {}
    driver_lags = []
    errors = 0
    for d in drivers:
        assert d.stdin is not None and d.stdout is not None
        d.stdin.write(b"stop\n")
        d.stdin.close()
        report = json.loads(await asyncio.wait_for(d.stdout.readline(), 60))
        sent.update(report["sent"])
        driver_lags.append(report["lag"])
        if report["errors"]:
            errors += report["errors"]
            print(f"a driver lost {report['errors']} sessions, e.g. {report['error'][0]}")
        await d.wait()
    lat = sorted((arrived[k] - sent[k]) / 1e6 for k in arrived if k in sent)
    if sent:
        t0 = min(sent.values())
        worst: dict[int, float] = {}
        for k in arrived:
            if k in sent:
                second = (sent[k] - t0) // 1_000_000_000
                worst[second] = max(worst.get(second, 0.0), (arrived[k] - sent[k]) / 1e6)
        print("worst delivery per second sent:", " ".join(f"{worst[s]:.0f}" for s in sorted(worst)))
    return errors, {
        "lat": lat,
        "expected": expected,
        "lag": lag.summary(),
        "driver_lag": max(driver_lags, key=lambda x: x["p99"]) if driver_lags else None,
        "load": (load_before[0], load_after[0]),
        "server_cpu_ms": 1000.0 * server_cpu_s / max(1, len(lat)),
        "cpu": tuple(b - a for a, b in zip(cpu_before, cpu_after, strict=True)),
        "offered": expected / seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=3, help="messages per session")
    parser.add_argument("--seconds", type=float, default=15.0, help="over how long they are sent")
    parser.add_argument("--procs", type=int, default=4, help="visitor-driving processes")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--drive", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--pace", type=float, default=0.001, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop

    if args.serve:
        serve(args.serve, args.data)
        return 0
    if args.drive:
        uvloop.run(drive(args.drive, args.first, args.count, args.messages, args.seconds, args.pace))
        return 0
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="webchat-bench-") as tmp:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), "--data", tmp],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            errors, r = uvloop.run(
                bench(port, server, args.sessions, args.messages, args.seconds, max(1, args.procs))
            )
            report = Path(tmp) / "server-report.txt"
            for _ in range(50):
                if report.exists():
                    break
                time.sleep(0.1)
            server_report = report.read_text() if report.exists() else "no report"
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
    lat = r["lat"]
    if not lat:
        print("no message reached the agent side")
        return 1
    p = lambda q: _q(lat, q)  # noqa: E731
    print(f"delivered {len(lat)}/{r['expected']} messages ({r['offered']:.0f}/s offered)")
    print(f"loop lag: agent side {_fmt(r['lag'])}; worst visitor driver {_fmt(r['driver_lag'])}")
    print(f"server (measured phase): {server_report}")
    print(f"load average (1 min) {r['load'][0]:.2f} before, {r['load'][1]:.2f} after")
    busy, total, own = r["cpu"]
    if total:
        cores = os.cpu_count() or 1
        print(
            f"CPU while measuring: machine {100 * busy / total:.0f} % busy of {cores} cores, this bench "
            f"{100 * own / total:.0f} %, everything else {100 * (busy - own) / total:.0f} %; "
            f"server {r['server_cpu_ms']:.2f} ms CPU per message"
        )
    print(
        f"message → agent delivery: p50 {p(0.5):.1f} ms, p95 {p(0.95):.1f} ms, p99 {p(0.99):.1f} ms, "
        f"max {lat[-1]:.1f} ms"
    )
    print(f"webchat_sessions p99_ms={p(0.99):.1f} sessions={args.sessions} (target ≤ 100)")
    return 0 if len(lat) == r["expected"] and not errors else 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
