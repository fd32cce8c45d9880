"""The event bus: fan-out in order, slow subscribers dropped without slowing anyone, publishing from
worker threads, and log_event records turned into events."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from callcenter.core.logging import log_event, setup_logging
from callcenter.events import Event, EventBus, SubscriptionClosed, install_log_bridge, kind_of


def ev(name: str, **data: object) -> Event:
    kind = kind_of(name)
    assert kind is not None
    return Event(kind, name, datetime(2025, 1, 1, tzinfo=UTC), dict(data))


async def test_every_subscriber_gets_every_event_in_order() -> None:
    bus = EventBus()
    a, b = bus.subscribe(), bus.subscribe()
    for i in range(3):
        bus.publish(ev("queue_joined", call_id=f"c{i}"))
    assert [(await a.get()).call_id for _ in range(3)] == ["c0", "c1", "c2"]
    assert [(await b.get()).call_id for _ in range(3)] == ["c0", "c1", "c2"]


async def test_a_slow_subscriber_is_dropped_and_the_others_keep_receiving() -> None:
    bus = EventBus()
    slow, fast = bus.subscribe(maxsize=2), bus.subscribe(maxsize=100)
    for i in range(5):  # publish never waits, whoever is behind
        bus.publish(ev("agent_state", agent="al", state=str(i)))
    assert slow.closed_reason == "slow" and bus.subscribers == 1 and bus.dropped_subscribers == 1
    with pytest.raises(SubscriptionClosed) as closed:
        await slow.get()
    assert closed.value.reason == "slow"
    assert [(await fast.get()).data["state"] for _ in range(5)] == ["0", "1", "2", "3", "4"]


async def test_a_waiting_consumer_wakes_on_publish_and_on_close() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    waiting = asyncio.ensure_future(sub.get())
    await asyncio.sleep(0)  # let it start waiting (one loop step, not a timed wait)
    bus.publish(ev("call_ended", call_id="x"))
    assert (await waiting).name == "call_ended"
    waiting = asyncio.ensure_future(sub.get())
    await asyncio.sleep(0)
    sub.close()
    with pytest.raises(SubscriptionClosed):
        await waiting
    assert bus.subscribers == 0


async def test_the_filter_decides_what_a_subscriber_queues() -> None:
    bus = EventBus()
    sub = bus.subscribe(accept=lambda e: e.kind == "agent")
    bus.publish(ev("call_ended", call_id="x"))
    bus.publish(ev("agent_state", agent="al"))
    assert len(sub) == 1 and (await sub.get()).name == "agent_state"


async def test_events_published_from_another_thread_arrive_on_the_loop() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    seen_on: list[int] = []
    bus.listen(lambda e: seen_on.append(threading.get_ident()))
    thread = threading.Thread(target=bus.publish, args=(ev("tickets.created", ticket=7),))
    thread.start()
    thread.join()
    event = await asyncio.wait_for(sub.get(), 5)
    assert event.data == {"ticket": 7} and seen_on == [threading.get_ident()]


async def test_a_failing_listener_does_not_stop_delivery() -> None:
    bus = EventBus()

    def broken(event: Event) -> None:
        raise RuntimeError("bug")

    bus.listen(broken)
    sub = bus.subscribe()
    bus.publish(ev("flow_published", flow="main"))
    assert (await sub.get()).name == "flow_published"


def test_event_names_map_to_message_types() -> None:
    assert kind_of("call_ended") == "call"
    assert kind_of("queue_joined") == "queue" and kind_of("callback_requested") == "queue"
    assert kind_of("agent_state") == "agent"
    assert kind_of("tickets.created") == "ticket"
    assert kind_of("flow_published") == "flow"
    assert kind_of("kb_unavailable") == "kb"
    # not state changes (or private: digits typed into the IVR may be card numbers)
    assert kind_of("dtmf") is None and kind_of("login") is None and kind_of("server_started") is None


def test_message_shape() -> None:
    event = Event("call", "call_ended", datetime(2025, 5, 1, 12, 0, 0, 123000, tzinfo=UTC), {"call_id": "a"})
    assert event.message() == {
        "type": "call",
        "event": "call_ended",
        "at": "2025-05-01T12:00:00.123Z",
        "data": {"call_id": "a"},
    }
    assert (
        event.json()
        == '{"type":"call","event":"call_ended","at":"2025-05-01T12:00:00.123Z","data":{"call_id":"a"}}'
    )


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    setup_logging("warning", "json", stream=stream)
    yield stream
    for name in ("callcenter", "callcenter.calls", "callcenter.test"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.NOTSET)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
    setup_logging("info", "json")


async def test_log_events_become_bus_events_whatever_the_console_level(console: io.StringIO) -> None:
    bus = EventBus()
    sub = bus.subscribe()
    install_log_bridge(bus)
    calls = logging.getLogger("callcenter.calls")
    log_event(calls, "call_offered", call_id="c1", level=logging.DEBUG, source="1.2.3.4:5060")
    log_event(logging.getLogger("callcenter.test"), "agent_state", agent="al", state="available")
    log_event(logging.getLogger("callcenter.test"), "server_started", http="x")  # no kind: not published
    log_event(logging.getLogger("callcenter.test"), "queue_unknown", level=logging.ERROR, queue="x")
    first, second = await sub.get(), await sub.get()
    assert (first.kind, first.name, first.data) == (
        "call",
        "call_offered",
        {"source": "1.2.3.4:5060", "call_id": "c1"},
    )
    assert (second.kind, second.name, second.data) == (
        "agent",
        "agent_state",
        {"agent": "al", "state": "available"},
    )
    assert sub.get_nowait() is None  # server_started has no kind; errors are for the log only
    printed = console.getvalue()
    # the console still shows only warnings and worse (log.level), the bus gets info and debug events
    assert "queue_unknown" in printed and "agent_state" not in printed and "call_offered" not in printed
