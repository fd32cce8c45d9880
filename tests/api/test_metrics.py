"""GET /metrics: who may scrape, and the series moving with what happens."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from api_helpers import PW, token_for
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from callcenter.api.access import Access
from callcenter.api.metrics import HttpMetricsMiddleware, Metrics, RtpCounts, create_metrics_router
from callcenter.auth.service import UserService
from callcenter.events import Event, EventBus

SCRAPE = "prometheus-scrape-token-123"


class World:
    def __init__(self) -> None:
        self.active = 2
        self.snap: dict[str, Any] = {
            "queues": {"sales": {"waiting": 3, "longest_wait_s": 42.5}, "support": {"waiting": 0}},
            "agents": {
                "al": {"state": "available"},
                "bo": {"state": "on_call"},
                "cy": {"state": "available"},
            },
        }
        self.rtp: dict[str, RtpCounts] = {}


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def metrics(world: World) -> Metrics:
    return Metrics(
        active_calls=lambda: world.active,
        snapshot=lambda: world.snap,
        live_rtp=lambda: list(world.rtp.items()),
    )


@pytest.fixture
def client(access: Access, metrics: Metrics) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(access.router())
    app.include_router(create_metrics_router(metrics, access, scrape_token=SCRAPE))

    @app.get("/api/things/{thing_id}")
    def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    with TestClient(app) as c:
        yield c


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def ev(name: str, **data: Any) -> Event:
    return Event("call", name, datetime.now(UTC), data)


def test_scraping_needs_the_token_or_a_supervisor(client: TestClient, users: UserService) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    agent = client.get("/metrics", headers={"Authorization": f"Bearer {token_for(users, 'al')}"})
    assert agent.status_code == 403
    sup = client.get("/metrics", headers={"Authorization": f"Bearer {token_for(users, 'sue')}"})
    assert sup.status_code == 200 and "callcenter_active_calls 2.0" in sup.text
    client.post("/api/auth/login", json={"username": "ann", "password": PW})
    assert client.get("/metrics").status_code == 200


def test_calls_queues_and_agents_are_reported(client: TestClient, metrics: Metrics, world: World) -> None:
    m = scrape(client)
    assert m[("callcenter_active_calls", ())] == 2
    assert m[("callcenter_queue_waiting", (("queue", "sales"),))] == 3
    assert m[("callcenter_queue_longest_wait_seconds", (("queue", "sales"),))] == 42.5
    assert m[("callcenter_agents", (("state", "available"),))] == 2
    assert m[("callcenter_agents", (("state", "on_call"),))] == 1
    bus = EventBus()
    metrics.attach(bus)
    bus.publish(ev("call_ended", call_id="a", disposition="answered"))
    bus.publish(ev("call_ended", call_id="b", disposition="answered"))
    bus.publish(ev("call_ended", call_id="c", disposition="abandoned"))
    world.active = 0
    m = scrape(client)
    assert m[("callcenter_calls_total", (("disposition", "answered"),))] == 2
    assert m[("callcenter_calls_total", (("disposition", "abandoned"),))] == 1
    assert m[("callcenter_active_calls", ())] == 0


def test_rtp_counters_never_go_down_when_a_call_ends(
    client: TestClient, metrics: Metrics, world: World
) -> None:
    world.rtp = {"a": RtpCounts(100, 110, 2), "b": RtpCounts(50, 50, 0)}
    m = scrape(client)
    assert m[("callcenter_rtp_packets_received_total", ())] == 150
    assert m[("callcenter_rtp_packets_lost_total", ())] == 2
    world.rtp = {"b": RtpCounts(80, 80, 1)}
    metrics.on_event(ev("call_ended", call_id="a", disposition="answered"))  # final counts unknown
    metrics.on_event(
        ev("call_ended", call_id="c", rtp={"packets_received": 10, "packets_sent": 9, "packets_lost": 1})
    )
    m = scrape(client)
    assert m[("callcenter_rtp_packets_received_total", ())] == 100 + 80 + 10
    assert m[("callcenter_rtp_packets_sent_total", ())] == 110 + 80 + 9
    assert m[("callcenter_rtp_packets_lost_total", ())] == 2 + 1 + 1


def test_asr_decode_times_fill_the_histogram(client: TestClient, metrics: Metrics) -> None:
    for seconds in (0.08, 0.4, 0.4, 2.5):
        metrics.on_event(
            Event("speech", "asr_decoded", datetime.now(UTC), {"engine": "vosk", "decode_s": seconds})
        )
    m = scrape(client)
    vosk = (("engine", "vosk"),)
    assert m[("callcenter_asr_decode_seconds_count", vosk)] == 4
    assert m[("callcenter_asr_decode_seconds_bucket", (("engine", "vosk"), ("le", "0.5")))] == 3
    assert m[("callcenter_asr_decode_seconds_sum", vosk)] == pytest.approx(3.38)


def test_http_latency_is_labelled_by_route_template_not_path(client: TestClient) -> None:
    for thing in ("a", "b", "c"):
        assert client.get(f"/api/things/{thing}").status_code == 200
    client.get("/no/such/page")
    m = scrape(client)
    key = (("method", "GET"), ("route", "/api/things/{thing_id}"), ("status", "200"))
    assert m[("callcenter_http_request_duration_seconds_count", key)] == 3
    unmatched = (("method", "GET"), ("route", "unmatched"), ("status", "404"))
    assert m[("callcenter_http_request_duration_seconds_count", unmatched)] == 1
    assert not any("/api/things/a" in str(labels) for _, labels in m)


def test_the_sip_guards_actions_are_counted(access: Access) -> None:
    """Wired as app.py does (the guard's stats read at scrape time): a number scan shows up."""
    from callcenter.sip.guard import GuardSettings, SipGuard

    guard = SipGuard(GuardSettings(trusted=(), number_scan_failures=3))
    metrics = Metrics(sip_guard=lambda: guard.stats)
    app = FastAPI()
    app.include_router(access.router())
    app.include_router(create_metrics_router(metrics, access, scrape_token=SCRAPE))
    with TestClient(app) as c:
        assert scrape(c)[("callcenter_sip_protection_total", (("action", "numbers_refused"),))] == 0
        for number in ("900", "901", "902"):
            guard.number_refused("198.51.100.4", number, 1.0)
        m = scrape(c)
    assert m[("callcenter_sip_protection_total", (("action", "numbers_refused"),))] == 3
    assert m[("callcenter_sip_protection_total", (("action", "bans"),))] == 1
