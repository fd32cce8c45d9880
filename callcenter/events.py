"""In-process event bus: what changed (calls, queues, agents, tickets, flows, KB) for the live channel,
metrics and webhooks.

Publishers never wait: each subscriber has a bounded queue, and a subscriber whose queue is full is
dropped (closed with reason ``"slow"``) instead of slowing the publisher or growing memory — it can
reconnect and start again from a snapshot. ``publish`` may be called from any thread (the call-record
writer, ticket code run by ``asyncio.to_thread``): off the loop's thread the event is handed over with
``call_soon_threadsafe``, so subscribers only ever run on the loop.

The events come from the structured log (:func:`callcenter.core.logging.log_event`):
:class:`EventLogHandler` turns each record whose event name has a known kind (:func:`kind_of`) into an
:class:`Event`. Nothing else needs to change to make a new event visible: log it.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "Event",
    "EventBus",
    "EventLogHandler",
    "LIVE_KINDS",
    "Subscription",
    "SubscriptionClosed",
    "install_log_bridge",
    "kind_of",
]

log = logging.getLogger("callcenter.events")

# Event name → kind, first match wins: exact names, then prefixes.
_EXACT: dict[str, str] = {
    "ivr_started": "call",
    "transfer_started": "call",
    "transfer_ringing": "call",
    "transfer_consulting": "call",
    "transfer_completed": "call",
    "transfer_ended": "call",
    "transfer_failed": "call",
    "voicemail_recorded": "call",
}
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("call_", "call"),
    ("queue_", "queue"),
    ("callback_", "queue"),
    ("agent_", "agent"),
    ("tickets.", "ticket"),
    ("ticket_", "ticket"),
    ("flow_", "flow"),
    ("kb_", "kb"),
    ("kb.", "kb"),
    ("chat_", "chat"),  # chat_assigned, chat_message, chat_closed (callcenter.chat.engine)
    ("asr_", "speech"),  # for metrics (decode times); not sent on the live channel
)
LIVE_KINDS = frozenset({"call", "queue", "agent", "ticket", "flow", "kb", "chat"})


def kind_of(name: str) -> str | None:
    """The message type of an event name (``call_ended`` → ``call``), or None: not published."""
    kind = _EXACT.get(name)
    if kind is not None:
        return kind
    for prefix, kind in _PREFIXES:
        if name.startswith(prefix):
            return kind
    return None


@dataclass(frozen=True)
class Event:
    kind: str  # call, queue, agent, ticket, flow, kb, chat (LIVE_KINDS) or speech
    name: str  # the log event name, e.g. call_ended
    at: datetime  # wall-clock time of the change (UTC)
    data: dict[str, Any] = field(default_factory=dict)  # includes call_id when the event has one
    # None: happened in this process. Else the node_id of the cluster node it came from (republished
    # by callcenter.cluster.bridge): live clients see it, side-effecting listeners do not by default.
    origin: str | None = None

    @property
    def call_id(self) -> str | None:
        value = self.data.get("call_id")
        return str(value) if value is not None else None

    def message(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "event": self.name,
            "at": self.at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "data": self.data,
        }

    def json(self) -> str:
        """The message as JSON text, built once however many clients receive it."""
        cached: str | None = self.__dict__.get("_json")
        if cached is None:
            cached = json.dumps(self.message(), separators=(",", ":"), default=str, ensure_ascii=False)
            object.__setattr__(self, "_json", cached)
        return cached


class SubscriptionClosed(Exception):
    """The subscription ended: ``reason`` is ``"slow"`` (its queue overflowed) or ``"closed"``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Subscription:
    """One consumer's bounded queue. Use on the bus's event loop only."""

    def __init__(self, bus: EventBus, maxsize: int, accept: Callable[[Event], bool] | None) -> None:
        self._bus = bus
        self.maxsize = maxsize
        self.accept = accept
        self._items: collections.deque[Event] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self.closed_reason: str | None = None

    def __len__(self) -> int:
        return len(self._items)

    def _put(self, event: Event) -> None:
        if self.closed_reason is not None:
            return
        if self.accept is not None and not self.accept(event):
            return
        if len(self._items) >= self.maxsize:
            self._bus._drop(self, "slow")
            return
        self._items.append(event)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def get_nowait(self) -> Event | None:
        """The next event, None when there is none yet; raises SubscriptionClosed once closed."""
        if self._items:
            return self._items.popleft()
        if self.closed_reason is not None:
            raise SubscriptionClosed(self.closed_reason)
        return None

    async def get(self) -> Event:
        """Wait for the next event. A slow subscriber is closed at once (what is queued is discarded:
        it must start again from a snapshot); a closed one first drains what it has."""
        while True:
            if self.closed_reason == "slow":
                raise SubscriptionClosed("slow")
            event = self.get_nowait()
            if event is not None:
                return event
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def close(self) -> None:
        self._bus._drop(self, "closed")

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.get()
        except SubscriptionClosed:
            raise StopAsyncIteration from None


class EventBus:
    """Publish/subscribe for :class:`Event`; see the module docstring."""

    def __init__(self, maxsize: int = 1000) -> None:
        self.maxsize = maxsize
        self._subs: list[Subscription] = []
        self._listeners: list[Callable[[Event], None]] = []
        self._remote_listeners: set[Callable[[Event], None]] = set()  # also get other nodes' events
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self.published = 0
        self.dropped_subscribers = 0

    def bind(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Deliver on ``loop`` (default: the running loop). Done by the first ``subscribe``/``listen``
        made inside a loop; publishing before then delivers in the caller's thread."""
        self._loop = loop or asyncio.get_running_loop()
        self._thread = threading.get_ident() if loop is None else None
        if self._thread is None:
            self._loop.call_soon_threadsafe(self._learn_thread)

    def _learn_thread(self) -> None:
        self._thread = threading.get_ident()

    def _bind_here(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # no running loop: synchronous use (tests, CLI)
            return
        if self._loop is not running:  # first use, or the old loop is gone (a new test client)
            self.bind()

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def subscribe(
        self, maxsize: int | None = None, accept: Callable[[Event], bool] | None = None
    ) -> Subscription:
        """A new bounded queue receiving every later event that ``accept`` (if given) admits.
        ``accept`` runs on the loop for each event: keep it cheap."""
        self._bind_here()
        sub = Subscription(self, maxsize or self.maxsize, accept)
        self._subs.append(sub)
        return sub

    def listen(self, callback: Callable[[Event], None], *, remote: bool = False) -> Callable[[], None]:
        """Call ``callback(event)`` on the loop for each event (it must not block); returns the
        function that stops it. A listener that raises is logged and kept.

        Only this process's events unless ``remote``: events republished from other cluster nodes
        (``Event.origin``) already had their side effects (webhooks, metrics) where they happened.
        Subscriptions (live clients) get both."""
        self._bind_here()
        self._listeners.append(callback)
        if remote:
            self._remote_listeners.add(callback)

        def stop() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)
            self._remote_listeners.discard(callback)

        return stop

    def publish(self, event: Event) -> None:
        """Hand ``event`` to every subscriber and listener; never blocks, from any thread."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._thread:
            self._deliver(event)
            return
        try:
            loop.call_soon_threadsafe(self._deliver, event)
        except RuntimeError:  # the loop is closed: nobody is left to tell
            pass

    def publish_many(self, events: Iterable[Event]) -> None:
        """Publish several events; off the loop's thread they are handed over in one go."""
        batch = list(events)
        loop = self._loop
        if loop is None or threading.get_ident() == self._thread:
            for event in batch:
                self._deliver(event)
            return
        try:
            loop.call_soon_threadsafe(self._deliver_all, batch)
        except RuntimeError:
            pass

    def _deliver_all(self, batch: list[Event]) -> None:
        for event in batch:
            self._deliver(event)

    def _deliver(self, event: Event) -> None:
        self.published += 1
        remote = event.origin is not None
        for listener in list(self._listeners):
            if remote and listener not in self._remote_listeners:
                continue
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - one broken listener must not starve the others
                log.exception("event listener failed on %s", event.name)
        for sub in list(self._subs):
            sub._put(event)

    def _drop(self, sub: Subscription, reason: str) -> None:
        if sub.closed_reason is not None:
            return
        sub.closed_reason = reason
        if reason == "slow":
            sub._items.clear()
            self.dropped_subscribers += 1
        if sub in self._subs:
            self._subs.remove(sub)
        sub._wake()


# -- from the structured log --------------------------------------------------------------------------

_EVENT, _CALL_ID, _FIELDS = "cc_event", "cc_call_id", "cc_fields"  # set by core.logging.log_event


class EventLogHandler(logging.Handler):
    """Publishes ``log_event`` records whose name has a kind (below ERROR); ignores every other record."""

    def __init__(self, bus: EventBus) -> None:
        super().__init__(logging.DEBUG)
        self.bus = bus

    def emit(self, record: logging.LogRecord) -> None:
        name = getattr(record, _EVENT, None)
        if not isinstance(name, str) or record.levelno >= logging.ERROR:
            return  # errors are for operators (the log), not changes of state
        kind = kind_of(name)
        if kind is None:
            return
        fields: dict[str, Any] = dict(getattr(record, _FIELDS, None) or {})
        call_id = getattr(record, _CALL_ID, None)
        if call_id is not None:
            fields["call_id"] = call_id
        self.bus.publish(Event(kind, name, datetime.fromtimestamp(record.created, UTC), fields))


# Loggers whose DEBUG-level events the live channel wants (call_offered, call_answered and ivr_started
# are logged at DEBUG so the console stays quiet).
DEBUG_EVENT_LOGGERS: tuple[str, ...] = ("callcenter.calls", "callcenter.speech.decode")


def install_log_bridge(
    bus: EventBus, *, logger: str = "callcenter", debug_loggers: Iterable[str] = DEBUG_EVENT_LOGGERS
) -> EventLogHandler:
    """Attach an :class:`EventLogHandler` to ``logger``, let ``logger`` emit INFO records and
    ``debug_loggers`` DEBUG records whatever ``log.level`` says (events must flow even when the console
    shows only warnings).

    So that the console still shows only what ``log.level`` asks for, every root handler without a
    level of its own gets the root logger's level (what ``setup_logging`` configured): call this after
    ``setup_logging``. Idempotent. Returns the handler.
    """
    root = logging.getLogger()
    for handler in root.handlers:
        if handler.level == logging.NOTSET:
            handler.setLevel(root.level)
    if logging.getLogger(logger).getEffectiveLevel() > logging.INFO:
        logging.getLogger(logger).setLevel(logging.INFO)
    for name in debug_loggers:
        target = logging.getLogger(name)
        if target.getEffectiveLevel() > logging.DEBUG:
            target.setLevel(logging.DEBUG)
    target_logger = logging.getLogger(logger)
    for old in [h for h in target_logger.handlers if isinstance(h, EventLogHandler)]:
        target_logger.removeHandler(old)  # idempotent: a second server in one process replaces it
    handler = EventLogHandler(bus)
    target_logger.addHandler(handler)
    return handler
