"""``GET /metrics``: Prometheus text format.

Who may scrape: a request whose ``Authorization: Bearer`` equals ``metrics.token`` (what Prometheus
sends with ``authorization: {credentials: ...}`` in its scrape config), or a logged-in admin or
supervisor (cookie or API token). Anything else: 401 without credentials, 403 for agents. Metrics
reveal traffic volumes and agent names' counts, not callers: still not public.

Series (``callcenter_`` prefix):

- ``active_calls`` gauge; ``calls_total{disposition}`` counter (from ``call_ended`` events);
- ``queue_waiting{queue}``, ``queue_longest_wait_seconds{queue}``, ``agents{state}`` gauges, read
  from the ACD snapshot at scrape time;
- ``rtp_packets_{received,sent,lost}_total`` counters: calls that ended plus the live calls so far;
- ``asr_decode_seconds{engine}`` histogram (``asr_decoded`` events with ``decode_s``);
- ``http_request_duration_seconds{method,route,status}`` histogram (route = the path template, so
  ``/api/calls/{call_id}`` is one series, unmatched paths are ``unmatched``);
- ``sip_connections{transport}`` gauge (open TCP/TLS connections), ``sip_connections_refused_total
  {transport,limit}`` and ``sip_connections_closed_total{transport,reason}`` counters (the caps and
  timeouts of callcenter/sip/transport/limits.py).
"""

from __future__ import annotations

import hmac
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callcenter.api.access import SUPERVISORS, Access
from callcenter.events import Event, EventBus

__all__ = ["HttpMetricsMiddleware", "Metrics", "RtpCounts", "create_metrics_router", "rtp_of_sessions"]


@dataclass(frozen=True)
class RtpCounts:
    received: int = 0
    sent: int = 0
    lost: int = 0

    def __add__(self, other: RtpCounts) -> RtpCounts:
        return RtpCounts(self.received + other.received, self.sent + other.sent, self.lost + other.lost)


LiveRtp = Callable[[], Iterable[tuple[str, RtpCounts]]]  # (call id, counts so far) per live call
# SipEndpoint.connection_stats: transport → {"open", "refused_total", "refused_source", <timeouts>}
ConnectionStats = Callable[[], dict[str, dict[str, int]]]


def rtp_of_sessions(sessions: Callable[[], Iterable[Any]]) -> LiveRtp:
    """Adapter for ``CallManager.sessions.values``: each session's ``call_id`` and ``rtp.stats()``."""

    def live() -> Iterator[tuple[str, RtpCounts]]:
        for session in list(sessions()):
            rtp = getattr(session, "rtp", None)
            if rtp is None:
                continue
            s = rtp.stats()
            yield session.call_id, RtpCounts(s.packets_received, s.packets_sent, max(0, s.packets_lost))

    return live


class Metrics:
    """The registry and the state behind it; ``attach(bus)`` on the event loop feeds the counters."""

    def __init__(
        self,
        *,
        active_calls: Callable[[], int] | None = None,
        snapshot: Callable[[], dict[str, Any]] | None = None,
        live_rtp: LiveRtp | None = None,
        sip_connections: ConnectionStats | None = None,
        sip_guard: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.active_calls = active_calls
        self.snapshot = snapshot
        self.live_rtp = live_rtp
        self.sip_connections = sip_connections
        self.sip_guard = sip_guard  # SipGuard.stats: what the flood/brute-force/scan protection did
        self.calls_total = Counter(
            "callcenter_calls", "Calls ended, by disposition", ["disposition"], registry=self.registry
        )
        self.asr_decode = Histogram(
            "callcenter_asr_decode_seconds",
            "Time to decode one utterance",
            ["engine"],
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "callcenter_http_request_duration_seconds",
            "HTTP request latency (until the response starts)",
            ["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        # RTP: counts of ended calls, plus the last counts seen of each live call (a call that ends
        # without final counts in its call_ended event keeps what was last seen: never decreases).
        self._rtp_ended = RtpCounts()
        self._rtp_seen: dict[str, RtpCounts] = {}
        self.registry.register(_Collector(self))

    def attach(self, bus: EventBus) -> Callable[[], None]:
        return bus.listen(self.on_event)

    def on_event(self, event: Event) -> None:
        if event.name == "call_ended":
            self.calls_total.labels(str(event.data.get("disposition") or "unknown")).inc()
            final = _rtp_fields(event.data)
            seen = self._rtp_seen.pop(event.call_id or "", None)
            if final is not None:
                self._rtp_ended += final
            elif seen is not None:
                self._rtp_ended += seen
        elif event.name == "asr_decoded":
            seconds = event.data.get("decode_s")
            if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
                self.asr_decode.labels(str(event.data.get("engine") or "unknown")).observe(float(seconds))

    def rtp_totals(self) -> RtpCounts:
        total = self._rtp_ended
        if self.live_rtp is not None:
            for call_id, counts in self.live_rtp():
                self._rtp_seen[call_id] = counts
                total += counts
        return total

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _rtp_fields(data: dict[str, Any]) -> RtpCounts | None:
    rtp = data.get("rtp")
    if not isinstance(rtp, dict):
        return None
    values = [rtp.get(k) for k in ("packets_received", "packets_sent", "packets_lost")]
    if not all(isinstance(v, int) for v in values):
        return None
    return RtpCounts(int(values[0] or 0), int(values[1] or 0), max(0, int(values[2] or 0)))


class _Collector(Collector):
    """Values read at scrape time: calls now, queues and agents from the ACD, RTP totals."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Any]:
        m = self.m
        if m.active_calls is not None:
            yield GaugeMetricFamily("callcenter_active_calls", "Calls in progress", value=m.active_calls())
        if m.snapshot is not None:
            snap = m.snapshot()
            waiting = GaugeMetricFamily("callcenter_queue_waiting", "Callers waiting", labels=["queue"])
            longest = GaugeMetricFamily(
                "callcenter_queue_longest_wait_seconds", "Longest current wait", labels=["queue"]
            )
            for name, q in sorted(snap.get("queues", {}).items()):
                waiting.add_metric([name], q.get("waiting", 0))
                longest.add_metric([name], q.get("longest_wait_s", 0.0))
            yield waiting
            yield longest
            states = Tally(str(a.get("state")) for a in snap.get("agents", {}).values())
            agents = GaugeMetricFamily("callcenter_agents", "Agents by state", labels=["state"])
            for state, count in sorted(states.items()):
                agents.add_metric([state], count)
            yield agents
        if m.live_rtp is not None:
            rtp = m.rtp_totals()
            for what, value in (("received", rtp.received), ("sent", rtp.sent), ("lost", rtp.lost)):
                name = f"callcenter_rtp_packets_{what}"
                yield CounterMetricFamily(name, f"RTP packets {what}", value=value)
        if m.sip_connections is not None:
            yield from _connection_families(m.sip_connections())
        if m.sip_guard is not None:
            guard = CounterMetricFamily(
                "callcenter_sip_protection",
                "SIP protection actions: scanners/rate_limited/banned_dropped (requests dropped), bans, "
                "calls_refused (503 over a call cap), numbers_refused (404 to an unknown source)",
                labels=["action"],
            )
            for action, count in sorted(m.sip_guard().items()):
                guard.add_metric([action], count)
            yield guard


def _connection_families(stats: dict[str, dict[str, int]]) -> Iterator[Any]:
    open_ = GaugeMetricFamily(
        "callcenter_sip_connections", "Open SIP TCP/TLS connections", labels=["transport"]
    )
    refused = CounterMetricFamily(
        "callcenter_sip_connections_refused", "Connections closed at once by a cap",
        labels=["transport", "limit"],
    )
    closed = CounterMetricFamily(
        "callcenter_sip_connections_closed", "Connections closed by a timeout",
        labels=["transport", "reason"],
    )
    for transport, counts in sorted(stats.items()):
        open_.add_metric([transport], counts.get("open", 0))
        refused.add_metric([transport, "max_total"], counts.get("refused_total", 0))
        refused.add_metric([transport, "max_per_source"], counts.get("refused_source", 0))
        refused.add_metric([transport, "banned"], counts.get("refused_banned", 0))
        for reason, value in sorted(counts.items()):
            if reason.endswith("_timeout"):
                closed.add_metric([transport, reason], value)
    yield from (open_, refused, closed)


class HttpMetricsMiddleware:
    """Pure ASGI (no per-request task like BaseHTTPMiddleware): times each HTTP request until its
    response starts. WebSockets and lifespan pass through untouched."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.http_latency.labels(scope.get("method", ""), template, str(status)).observe(
                time.perf_counter() - start
            )


def create_metrics_router(metrics: Metrics, access: Access, scrape_token: str | None = None) -> APIRouter:
    router = APIRouter(tags=["metrics"])
    token = scrape_token.encode("utf-8") if scrape_token else None
    staff_check = access.require(*SUPERVISORS)

    def allowed(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, given = (authorization or "").partition(" ")
        if token is not None and scheme.lower() == "bearer":
            if hmac.compare_digest(given.strip().encode("utf-8"), token):
                return
        staff_check(request, authorization)  # raises 401 / 403

    @router.get("/metrics", dependencies=[Depends(allowed)], response_class=Response)
    async def metrics_text() -> Response:
        """Prometheus text exposition format 0.0.4. Rendered on the event loop: the collectors read
        the ACD's state, which only the loop may touch."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
