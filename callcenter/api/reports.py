"""Past calls and queue reports from the call records.

- ``GET /api/reports/queues?since&until&sl_seconds`` (admins, supervisors): per queue offered,
  answered, abandoned, overflowed, voicemail, callback, service level, ASA, AHT, longest wait — the
  numbers of ``callcenter queues stats`` (store/reports.py). ``since`` defaults to today 00:00 UTC.
- ``GET /api/reports/intervals?date&interval_min&queue`` (admins, supervisors): one local day (in
  ``routing.timezone``; default today) cut into intervals of ``interval_min`` minutes (a divisor of a
  day, 5-240), each with offered, answered, abandoned and service level of the calls that started in
  it — every interval present, empty ones with zeros. Without ``queue``: all queues together.
- ``GET /api/calls?since&until&queue&agent&limit`` (any role): ended and live calls' records, newest
  first, without transcripts (``GET /api/calls/{id}`` has them). An agent sees only calls they
  talked on (``agent`` defaults to them; another agent's name is 403).

Times are ISO 8601 (a bare date is a whole day; no zone means UTC); a bad one is 422.
"""

from __future__ import annotations

import asyncio
import zoneinfo
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from callcenter.api.access import STAFF, SUPERVISORS, Access
from callcenter.auth.service import Principal
from callcenter.store import Store
from callcenter.store.reports import DEFAULT_SL_SECONDS, iter_calls, parse_when, queue_report, queue_stats

__all__ = ["call_matches", "create_reports_router", "interval_report", "recent_calls"]

_LIST_OMITS = ("transcript",)


def _when(text: str | None, name: str, *, end: bool = False) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_when(text, end=end)
    except ValueError as exc:
        raise HTTPException(422, f"{name}: {exc}") from None


def _day(text: str) -> date:
    if len(text) != 10:  # date.fromisoformat would also take 20250501 and 2025-W18-4
        raise ValueError(text)
    return date.fromisoformat(text)


def call_matches(call: Mapping[str, Any], queue: str | None, agent: str | None) -> bool:
    """Did the call visit ``queue`` / talk with ``agent`` (any of its queue stays and agents)?"""
    if queue is not None:
        visits = call.get("queue_visits") or []
        queues = {call.get("queue")} | {v.get("queue") for v in visits if isinstance(v, Mapping)}
        if queue not in queues:
            return False
    if agent is not None:
        agents = {call.get("agent"), *(call.get("agents") or [])}
        if agent not in agents:
            return False
    return True


def recent_calls(
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    queue: str | None = None,
    agent: str | None = None,
    limit: int = 100,
    batch_size: int = 500,
) -> list[dict[str, Any]]:
    """Newest first: call records started in [since, until) matching ``queue``/``agent`` (filtered
    as they are read, in keyset-paginated batches), at most ``limit``. Blocking: run in a thread."""
    out: list[dict[str, Any]] = []
    if queue is None and agent is None:
        batch_size = min(batch_size, limit)  # every row matches: read no more than asked for
    for call in iter_calls(store, since=since, until=until, batch_size=batch_size, newest_first=True):
        if call_matches(call, queue, agent):
            for key in _LIST_OMITS:
                call.pop(key, None)
            out.append(call)
            if len(out) >= limit:
                break
    return out


def interval_report(
    records: Iterable[Mapping[str, Any]],
    *,
    day: date,
    tz: zoneinfo.ZoneInfo,
    interval_min: int,
    queue: str | None = None,
    sl_by_queue: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Per interval of the local ``day``: offered/answered/abandoned/service level (store/reports.py's
    queue attribution: a stay in each queue is one offer). Intervals are wall-clock times of ``tz``;
    on a DST change day there are fewer or more of them (the day has 23 or 25 hours)."""
    start = datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz).astimezone(UTC)
    step = timedelta(minutes=interval_min)
    count = -(-(end - start) // step)
    groups: list[list[Mapping[str, Any]]] = [[] for _ in range(count)]
    for call in records:
        started = datetime.fromisoformat(str(call["started_at"]))
        index = (started - start) // step
        if 0 <= index < count and (queue is None or call_matches(call, queue, None)):
            groups[index].append(call)
    out = []
    for i, calls in enumerate(groups):
        slot = start + i * step
        reports = queue_stats(calls, sl_seconds=DEFAULT_SL_SECONDS, sl_by_queue=sl_by_queue)
        chosen = [r for r in reports.values() if queue is None or r.queue == queue]
        answered = sum(r.answered for r in chosen)
        abandoned = sum(r.abandoned for r in chosen)
        within = sum(r.answered_within_sl for r in chosen)
        out.append(
            {
                "start": slot.astimezone(tz).isoformat(),
                "label": slot.astimezone(tz).strftime("%H:%M"),
                "offered": sum(r.offered for r in chosen),
                "answered": answered,
                "abandoned": abandoned,
                "service_level": round(within / (answered + abandoned), 4) if answered + abandoned else None,
            }
        )
    return out


def create_reports_router(
    store: Store,
    access: Access,
    *,
    sl_by_queue: Mapping[str, float] | None = None,
    timezone: str = "UTC",
) -> APIRouter:
    """``sl_by_queue``: each configured queue's ``service_level_s`` (its name is reported even
    without calls); ``timezone``: whose day ``/reports/intervals`` counts in (``routing.timezone``)."""
    router = APIRouter(prefix="/api", tags=["reports"])
    supervisors = Depends(access.require(*SUPERVISORS))
    staff = Depends(access.require(*STAFF))
    configured = dict(sl_by_queue or {})

    @router.get("/reports/queues", dependencies=[supervisors])
    async def queues_report(
        since: str | None = None,
        until: str | None = None,
        sl_seconds: Annotated[float | None, Query(gt=0)] = None,
    ) -> dict[str, Any]:
        start = _when(since, "since") or datetime.combine(datetime.now(UTC).date(), time(), tzinfo=UTC)
        end = _when(until, "until", end=True)
        reports = await asyncio.to_thread(
            queue_report,
            store,
            since=start,
            until=end,
            sl_seconds=sl_seconds or DEFAULT_SL_SECONDS,
            sl_by_queue={} if sl_seconds is not None else configured,
            queues=configured.keys(),
        )
        return {
            "since": start.isoformat(),
            "until": end.isoformat() if end is not None else None,
            "queues": [r.as_json() for r in reports.values()],
        }

    tz = zoneinfo.ZoneInfo(timezone)

    @router.get("/reports/intervals", dependencies=[supervisors])
    async def intervals_report(
        date: str | None = None,
        interval_min: Annotated[int, Query(ge=5, le=240)] = 30,
        queue: str | None = None,
    ) -> dict[str, Any]:
        if 1440 % interval_min:
            raise HTTPException(422, f"interval_min: {interval_min} does not divide a day (e.g. 15, 30, 60)")
        try:
            day = _day(date) if date else datetime.now(tz).date()
        except ValueError:
            raise HTTPException(422, f"date: {date!r}: expected YYYY-MM-DD") from None
        since = datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)
        until = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz).astimezone(UTC)

        def compute() -> list[dict[str, Any]]:
            calls = iter_calls(store, since=since, until=until)
            return interval_report(
                calls, day=day, tz=tz, interval_min=interval_min, queue=queue or None, sl_by_queue=configured
            )

        return {
            "date": day.isoformat(),
            "timezone": timezone,
            "interval_min": interval_min,
            "queue": queue or None,
            "intervals": await asyncio.to_thread(compute),
        }

    @router.get("/calls")
    async def list_calls(
        since: str | None = None,
        until: str | None = None,
        queue: str | None = None,
        agent: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        principal: Principal = staff,
    ) -> list[dict[str, Any]]:
        if principal.role not in SUPERVISORS:
            if principal.agent is None:
                raise HTTPException(403, "this login is not linked to an agent")
            if agent is not None and agent != principal.agent:
                raise HTTPException(403, "agents list their own calls only")
            agent = principal.agent
        start, end = _when(since, "since"), _when(until, "until", end=True)
        return await asyncio.to_thread(
            recent_calls, store, since=start, until=end, queue=queue, agent=agent, limit=limit
        )

    return router
