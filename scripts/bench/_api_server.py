"""The server side of the API benchmarks: the real HTTP app (users, access, routing, calls, reports,
live channel, metrics middleware) over a fake ACD and a SQLite file with call records, on uvicorn
(uvloop, like production) in its own process. Not a benchmark by itself: api_rest.py and
api_live.py start it with ``python scripts/bench/_api_server.py PORT DBDIR``.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import APIRouter
from sqlmodel import Session

import callcenter.auth.models  # noqa: F401 - registers the tables
from callcenter.api.access import Access
from callcenter.api.calls import create_calls_router
from callcenter.api.http import create_http_app
from callcenter.api.live import LiveHub, create_live_router
from callcenter.api.metrics import HttpMetricsMiddleware, Metrics, create_metrics_router
from callcenter.api.reports import create_reports_router
from callcenter.api.routing import create_routing_router
from callcenter.auth.service import UserService
from callcenter.core.logging import log_event, setup_logging
from callcenter.events import EventBus, install_log_bridge
from callcenter.store import Store
from callcenter.store.models import CallRecord

QUEUES = [f"q{i:02d}" for i in range(20)]
AGENTS = [f"agent{i:03d}" for i in range(200)]


class FakeAcd:
    def __init__(self) -> None:
        self.waiting = {q: 0 for q in QUEUES}

    def snapshot(self) -> dict[str, Any]:
        return {
            "queues": {
                q: {"waiting": n, "ringing": 0, "longest_wait_s": 0.0, "agents": {"available": 10}}
                for q, n in self.waiting.items()
            },
            "agents": {a: {"state": "available", "since": 0.0, "reason": None, "call": None} for a in AGENTS},
        }

    def set_state(self, username: str, state: str, reason: str | None = None) -> dict[str, Any]:
        raise KeyError(username)


def seed(store: Store, n_calls: int) -> None:
    rng = random.Random(1)
    start = datetime.now(UTC) - timedelta(days=7)
    with Session(store.engine) as session:
        for i in range(n_calls):
            queue, agent = rng.choice(QUEUES), rng.choice(AGENTS)
            started = start + timedelta(seconds=i * 7 * 86400 / n_calls)
            session.add(
                CallRecord(
                    sip_call_id=f"call-{i}",
                    from_uri="sip:caller@example.com",
                    to_uri="sip:100@bench",
                    started_at=started,
                    ended_at=started + timedelta(seconds=90),
                    disposition="answered",
                    extra={
                        "queue": queue,
                        "agent": agent,
                        "agents": [agent],
                        "wait_s": rng.uniform(0, 60),
                        "talk_s": rng.uniform(30, 300),
                    },
                )
            )
        session.commit()


def main() -> None:
    port, folder = int(sys.argv[1]), Path(sys.argv[2])
    setup_logging("warning", "json")
    store = Store(f"sqlite:///{folder / 'bench.db'}")
    store.create_all()
    seed(store, 5000)
    users = UserService(store.engine)
    users.add_user("sup", "supervisor", "bench-password-123")
    (folder / "token").write_text(users.create_api_token("sup", "bench"))
    access = Access(users)
    acd = FakeAcd()
    bus = EventBus()
    metrics = Metrics(active_calls=lambda: 0, snapshot=acd.snapshot)
    hub = LiveHub(bus, acd.snapshot, client_queue=1000)
    trigger = APIRouter()
    acd_log = logging.getLogger("callcenter.acd")

    @trigger.post("/bench/queue_event")
    async def queue_event(n: int = 0) -> dict[str, int]:
        """A caller joins a queue: logged like the ACD does, with the wall time it happened."""
        queue = QUEUES[n % len(QUEUES)]
        acd.waiting[queue] += 1
        log_event(acd_log, "queue_joined", call_id=f"bench-{n}", queue=queue, position=1, sent_at=time.time())
        return {"subscribers": bus.subscribers}

    app = create_http_app(
        lambda: {"sip": "up", "db": "up"},
        routers=[
            access.router(),
            create_routing_router(acd, access),
            create_calls_router(lambda call_id: None, store, access),
            create_reports_router(store, access, sl_by_queue={q: 20.0 for q in QUEUES}),
            create_live_router(hub, access),
            create_metrics_router(metrics, access),
            trigger,
        ],
    )
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off", loop="uvloop"
    )

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            bus.bind()
            install_log_bridge(bus)
            hub.start()
            metrics.attach(bus)
            await super().startup(sockets)
            print("ready", flush=True)

    Server(config).run()


if __name__ == "__main__":
    main()
