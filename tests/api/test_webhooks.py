"""Outgoing webhooks against a receiver on 127.0.0.1: signatures it can check, retries with backoff
after failures, bounded attempts, no retry of a refusal, event selection."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from callcenter.core.config import WebhookSettings
from callcenter.events import Event, EventBus
from callcenter.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSender,
    backoff_delay,
    sign,
    verify_signature,
)

SECRET = "a-long-shared-webhook-secret"


@dataclass
class Receiver:
    """A minimal HTTP/1.1 server: answers each POST with the next scripted status (then 200)."""

    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0
    got: asyncio.Queue[tuple[dict[str, str], bytes]] = field(default_factory=asyncio.Queue)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status = self.statuses.pop(0) if self.statuses else 200
                self.received.append((headers, body))
                self.got.put_nowait((headers, body))
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    rec.port = server.sockets[0].getsockname()[1]
    async with server:
        yield rec


class FakeSleep:
    """Records the backoff delays instead of waiting them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def hook(url: str, events: list[str] | None = None, attempts: int = 6) -> WebhookSettings:
    return WebhookSettings(url=url, secret=SECRET, events=events or ["*"], max_attempts=attempts, timeout_s=5)


def ev(name: str, kind: str = "call", **data: object) -> Event:
    return Event(kind, name, datetime.now(UTC), dict(data))


class Outcomes:
    """Collects each delivery's end (delivered or given up); ``settle`` waits for a number of them."""

    def __init__(self) -> None:
        self.done: asyncio.Queue[bool] = asyncio.Queue()

    def __call__(self, url: str, delivery: object, delivered: bool) -> None:
        self.done.put_nowait(delivered)

    async def settle(self, total: int) -> list[bool]:
        return [await asyncio.wait_for(self.done.get(), 10) for _ in range(total)]


async def test_a_delivery_is_signed_so_the_receiver_can_verify_it(receiver: Receiver) -> None:
    bus = EventBus()
    sender = WebhookSender([hook(receiver.url)], sleep=FakeSleep())
    sender.attach(bus)
    sender.start()
    try:
        bus.publish(ev("call_ended", call_id="c1", disposition="answered"))
        headers, body = await asyncio.wait_for(receiver.got.get(), 10)
    finally:
        await sender.aclose()
    sig, ts = headers[SIGNATURE_HEADER.lower()], headers[TIMESTAMP_HEADER.lower()]
    assert verify_signature(SECRET, body, ts, sig, now=time.time())
    assert not verify_signature("another-secret-entirely", body, ts, sig, now=time.time())
    assert not verify_signature(SECRET, body.replace(b"answered", b"abandoned"), ts, sig, now=time.time())
    message = json.loads(body)
    assert message["event"] == "call_ended" and message["type"] == "call"
    assert message["data"] == {"call_id": "c1", "disposition": "answered"} and len(message["id"]) == 32
    assert headers["content-type"] == "application/json"


def test_an_old_signature_is_refused_as_a_replay() -> None:
    body = b'{"event":"call_ended"}'
    signature = sign(SECRET, 1_700_000_000, body)
    assert verify_signature(SECRET, body, "1700000000", signature, now=1_700_000_100)
    assert not verify_signature(SECRET, body, "1700000000", signature, now=1_700_000_000 + 301)
    # the timestamp is inside the MAC: a fresh timestamp on the old signature does not verify
    assert not verify_signature(SECRET, body, "1700000301", signature, now=1_700_000_301)
    assert not verify_signature(SECRET, body, None, signature, now=1_700_000_000)


async def test_failures_are_retried_with_growing_jittered_backoff_then_delivered(receiver: Receiver) -> None:
    outcomes = Outcomes()
    receiver.statuses = [500, 503, 429]
    sleep = FakeSleep()
    sender = WebhookSender(
        [hook(receiver.url)],
        sleep=sleep,
        rng=random.Random(1),
        backoff_base_s=1,
        backoff_cap_s=60,
        on_outcome=outcomes,
    )
    sender.start()
    try:
        sender.offer(ev("agent_state", "agent", agent="al"))
        await outcomes.settle(1)
    finally:
        await sender.aclose()
    assert sender.hooks[0].delivered == 1 and len(receiver.received) == 4
    assert len(sleep.delays) == 3 and all(0 <= d <= 2**i for i, d in enumerate(sleep.delays))
    ids = {json.loads(body)["id"] for _, body in receiver.received}
    assert len(ids) == 1  # the same delivery id on every try: receivers deduplicate


async def test_attempts_are_bounded(receiver: Receiver) -> None:
    outcomes = Outcomes()
    receiver.statuses = [500] * 10
    sender = WebhookSender([hook(receiver.url, attempts=3)], sleep=FakeSleep(), on_outcome=outcomes)
    sender.start()
    try:
        sender.offer(ev("call_ended", call_id="x"))
        await outcomes.settle(1)
    finally:
        await sender.aclose()
    assert sender.hooks[0].failed == 1 and len(receiver.received) == 3


async def test_a_refusal_is_not_retried(receiver: Receiver) -> None:
    outcomes = Outcomes()
    receiver.statuses = [400]
    sender = WebhookSender([hook(receiver.url)], sleep=FakeSleep(), on_outcome=outcomes)
    sender.start()
    try:
        sender.offer(ev("call_ended", call_id="x"))
        await outcomes.settle(1)
    finally:
        await sender.aclose()
    assert sender.hooks[0].failed == 1 and len(receiver.received) == 1


async def test_an_unreachable_receiver_is_retried_then_given_up() -> None:
    outcomes = Outcomes()
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens there now: connection refused
    sleep = FakeSleep()
    sender = WebhookSender([hook(f"http://127.0.0.1:{port}/", attempts=4)], sleep=sleep, on_outcome=outcomes)
    sender.start()
    try:
        sender.offer(ev("call_ended", call_id="x"))
        await outcomes.settle(1)
    finally:
        await sender.aclose()
    assert sender.hooks[0].failed == 1 and len(sleep.delays) == 3


async def test_each_hook_gets_only_the_events_it_selected(receiver: Receiver) -> None:
    outcomes = Outcomes()
    bus = EventBus()
    sender = WebhookSender(
        [hook(receiver.url + "?a", ["call_ended", "tickets.*"]), hook(receiver.url + "?b", ["queue_*"])],
        sleep=FakeSleep(),
        on_outcome=outcomes,
    )
    sender.attach(bus)
    sender.start()
    try:
        bus.publish(ev("call_answered", call_id="1"))
        bus.publish(ev("call_ended", call_id="1"))
        bus.publish(ev("tickets.created", "ticket", ticket=5))
        bus.publish(ev("queue_joined", "queue", queue="sales"))
        await outcomes.settle(3)
    finally:
        await sender.aclose()
    names = sorted(json.loads(body)["event"] for _, body in receiver.received)
    assert names == ["call_ended", "queue_joined", "tickets.created"]


async def test_offering_never_waits_and_a_full_queue_drops_the_oldest() -> None:
    sender = WebhookSender([hook("http://127.0.0.1:9/")], queue_size=3)  # not started: nothing drains
    for i in range(5):
        sender.offer(ev("call_ended", call_id=str(i)))
    queue = sender.hooks[0].queue
    assert [d.event.call_id for d in queue] == ["2", "3", "4"] and sender.hooks[0].dropped == 2


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        bound = min(60.0, 2.0 ** (attempt - 1))
        delays = [backoff_delay(attempt, rng, base_s=1.0, cap_s=60.0) for _ in range(200)]
        assert all(0 <= d <= bound for d in delays) and max(delays) > bound * 0.8
