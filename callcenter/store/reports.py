"""Reports over call records: CSV rows, per-queue statistics, and the batched queries feeding them.

The statistics are a pure function over call-record dicts (the shape ``call_public`` / ``calls list
--json`` gives), so they are tested with hand-made records and computed in one pass over a stream:
memory does not grow with the number of calls.

Queue attribution: a call that overflowed from queue A into queue B was offered to both; it counts as
overflowed in A and as whatever happened next in B. Waits are per queue stay (``queue_visits``), not
the call's total wait. Records written before ``queue_visits`` existed fall back to the call's own
``queue`` / ``disposition`` / ``wait_s`` / ``talk_s``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import and_, func, or_, select

from callcenter.store.models import CallRecord, call_public

if TYPE_CHECKING:
    from callcenter.store.repo import Store

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_SL_SECONDS",
    "QueueReport",
    "count_calls",
    "csv_row",
    "iter_calls",
    "parse_when",
    "queue_report",
    "queue_stats",
]

DEFAULT_SL_SECONDS = 20.0
CSV_COLUMNS: tuple[str, ...] = (
    "sip_call_id",
    "from",
    "to",
    "started_at",
    "answered_at",
    "ended_at",
    "hangup_by",
    "disposition",
    "flow",
    "queue",
    "agent",
    "wait_s",
    "talk_s",
    "offered_agents",
    "end_reason",
    "recording",
    "node",  # the node_id of the server that held the call
)
# Header values a caller chooses (From display name, To, Call-ID) could start a spreadsheet formula
# (OWASP "CSV injection"): such cells get a leading apostrophe. Values we generate are left alone.
_CALLER_TEXT = frozenset({"sip_call_id", "from", "to"})
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_TABLE = CallRecord.__table__  # type: ignore[attr-defined]


# -- time bounds ------------------------------------------------------------------------------------


def parse_when(text: str, *, end: bool = False) -> datetime:
    """An ISO 8601 date or date-time as an aware UTC datetime; no zone means UTC.

    A bare date is midnight at its start, or with ``end`` the midnight after it, so ``--until
    2024-05-01`` includes all of May 1st (bounds are half-open: since <= started_at < until).
    Raises ValueError with a message fit for the user.
    """
    value = text.strip()
    try:
        if len(value) == 10:  # YYYY-MM-DD
            day = date.fromisoformat(value)
            return datetime.combine(day + timedelta(days=1 if end else 0), time(), tzinfo=UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r}: expected an ISO 8601 date or date-time, e.g. 2024-05-01 or 2024-05-01T08:00:00Z"
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# -- queries ----------------------------------------------------------------------------------------


def _in_range(since: datetime | None, until: datetime | None) -> list[Any]:
    conds: list[Any] = []
    if since is not None:
        conds.append(_TABLE.c.started_at >= since)
    if until is not None:
        conds.append(_TABLE.c.started_at < until)
    return conds


def count_calls(store: Store, *, since: datetime | None = None, until: datetime | None = None) -> int:
    """How many call records started in [since, until)."""
    query = select(func.count()).select_from(_TABLE).where(*_in_range(since, until))
    with store.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def iter_calls(
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    batch_size: int = 1000,
    newest_first: bool = False,
) -> Iterator[dict[str, Any]]:
    """Call records started in [since, until), oldest (or newest) first, as ``call_public`` dicts.

    Read in batches with keyset pagination on (started_at, id): each batch is its own short read, so
    a long export neither holds a million rows nor one long transaction (which would keep SQLite's
    WAL from being checkpointed while the server writes).
    """
    if batch_size < 1:
        raise ValueError("batch_size: expected at least 1")
    started_col, id_col = _TABLE.c.started_at, _TABLE.c.id
    order = (started_col.desc(), id_col.desc()) if newest_first else (started_col, id_col)
    base = select(_TABLE).order_by(*order).limit(batch_size)
    conds = _in_range(since, until)
    last: tuple[datetime, int] | None = None
    while True:
        where = list(conds)
        if last is not None:
            started, row_id = last
            if newest_first:
                after = or_(started_col < started, and_(started_col == started, id_col < row_id))
            else:
                after = or_(started_col > started, and_(started_col == started, id_col > row_id))
            where.append(after)
        with store.engine.connect() as conn:
            rows = conn.execute(base.where(*where)).all()
        for row in rows:
            # A Row has the columns as attributes, which is all call_public reads.
            yield call_public(cast(CallRecord, row))
        if len(rows) < batch_size:
            return
        last = (rows[-1].started_at, rows[-1].id)


# -- CSV --------------------------------------------------------------------------------------------


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column == "offered_agents" and isinstance(value, list | tuple):
        return ";".join(str(v) for v in value)
    text = value if isinstance(value, str) else str(value)
    if column in _CALLER_TEXT and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def csv_row(call: Mapping[str, Any]) -> list[str]:
    """One call-record dict as the cells of :data:`CSV_COLUMNS` (missing values are empty)."""
    return [_cell(column, call.get(column)) for column in CSV_COLUMNS]


# -- queue statistics -------------------------------------------------------------------------------


@dataclass
class QueueReport:
    """Outcomes of the callers offered to one queue.

    ``offered`` counts queue stays; each ends as one of answered, abandoned, overflowed (to another
    queue or back to the flow), voicemail or callback (overflowed, then the caller left a message or
    a number). Service level = answered within ``sl_seconds`` / (answered + abandoned): every
    abandoned caller counts against it, however short the wait; overflowed ones do not count.
    """

    queue: str
    sl_seconds: float
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    overflowed: int = 0
    voicemail: int = 0
    callback: int = 0
    answered_within_sl: int = 0
    total_wait_answered_s: float = 0.0
    total_talk_s: float = 0.0
    longest_wait_s: float = 0.0

    @property
    def service_level(self) -> float | None:
        """A fraction 0-1; None before the first answered or abandoned caller."""
        ended = self.answered + self.abandoned
        return self.answered_within_sl / ended if ended else None

    @property
    def asa_s(self) -> float | None:
        """Average speed of answer: mean wait of the answered callers."""
        return self.total_wait_answered_s / self.answered if self.answered else None

    @property
    def aht_s(self) -> float | None:
        """Average handle time: mean talk time of the answered calls (wrap-up is not recorded)."""
        return self.total_talk_s / self.answered if self.answered else None

    def add(self, disposition: str, wait_s: float, talk_s: float) -> None:
        self.offered += 1
        self.longest_wait_s = max(self.longest_wait_s, wait_s)
        if disposition == "answered":
            self.answered += 1
            self.total_wait_answered_s += wait_s
            self.total_talk_s += talk_s
            if wait_s <= self.sl_seconds:  # "within" the threshold, as the live counters count it
                self.answered_within_sl += 1
        elif disposition == "abandoned":
            self.abandoned += 1
        elif disposition == "overflowed":
            self.overflowed += 1
        elif disposition == "voicemail":
            self.voicemail += 1
        elif disposition == "callback":
            self.callback += 1
        # Anything else (a future outcome) is offered but in none of the columns.

    def as_json(self) -> dict[str, Any]:
        def r(value: float | None, digits: int = 2) -> float | None:
            return round(value, digits) if value is not None else None

        return {
            "queue": self.queue,
            "offered": self.offered,
            "answered": self.answered,
            "abandoned": self.abandoned,
            "overflowed": self.overflowed,
            "voicemail": self.voicemail,
            "callback": self.callback,
            "sl_seconds": self.sl_seconds,
            "answered_within_sl": self.answered_within_sl,
            "service_level": r(self.service_level, 4),
            "asa_s": r(self.asa_s),
            "aht_s": r(self.aht_s),
            "longest_wait_s": round(self.longest_wait_s, 2) if self.offered else None,
        }


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return max(0.0, float(value))


def _stays(record: Mapping[str, Any]) -> list[tuple[str, str, float, float]]:
    """(queue, outcome, wait_s, talk_s) for each queue stay of one call."""
    call_disposition = record.get("disposition")
    visits = record.get("queue_visits")
    if isinstance(visits, list) and visits:
        valid = [v for v in visits if isinstance(v, Mapping) and v.get("queue")]
        out = []
        for i, visit in enumerate(valid):
            outcome = str(visit.get("disposition") or "")
            # The last stay overflowed and the flow then took a message or a number: that is the
            # queue's outcome for this caller.
            if (
                i == len(valid) - 1
                and outcome == "overflowed"
                and call_disposition in ("voicemail", "callback")
            ):
                outcome = call_disposition
            out.append(
                (str(visit["queue"]), outcome, _seconds(visit.get("wait_s")), _seconds(visit.get("talk_s")))
            )
        return out
    queue = record.get("queue")
    if not queue:
        return []
    return [
        (
            str(queue),
            str(call_disposition or ""),
            _seconds(record.get("wait_s")),
            _seconds(record.get("talk_s")),
        )
    ]


def queue_stats(
    records: Iterable[Mapping[str, Any]],
    *,
    sl_seconds: float = DEFAULT_SL_SECONDS,
    sl_by_queue: Mapping[str, float] | None = None,
    queues: Iterable[str] = (),
) -> dict[str, QueueReport]:
    """Per-queue statistics over call-record dicts (one pass; any iterable, e.g. a batched query).

    ``sl_by_queue`` overrides ``sl_seconds`` for the queues it names; ``queues`` are reported even
    when no call reached them. The result is sorted by queue name.
    """
    sl_by_queue = sl_by_queue or {}
    reports: dict[str, QueueReport] = {}

    def report(name: str) -> QueueReport:
        rep = reports.get(name)
        if rep is None:
            rep = reports[name] = QueueReport(name, float(sl_by_queue.get(name, sl_seconds)))
        return rep

    for name in queues:
        report(name)
    for record in records:
        for queue, outcome, wait_s, talk_s in _stays(record):
            report(queue).add(outcome, wait_s, talk_s)
    return dict(sorted(reports.items()))


def queue_report(
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    sl_seconds: float = DEFAULT_SL_SECONDS,
    sl_by_queue: Mapping[str, float] | None = None,
    queues: Iterable[str] = (),
) -> dict[str, QueueReport]:
    """:func:`queue_stats` over the calls that started in [since, until), read in batches."""
    return queue_stats(
        iter_calls(store, since=since, until=until),
        sl_seconds=sl_seconds,
        sl_by_queue=sl_by_queue,
        queues=queues,
    )
