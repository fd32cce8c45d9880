"""Outgoing webhooks: selected events POSTed as signed JSON to configured URLs, retried with backoff.

Each delivery is ``{"id", "type", "event", "at", "data"}`` (``id`` is the same on every retry of one
event: receivers deduplicate with it) and carries

- ``X-Callcenter-Timestamp``: Unix seconds when this attempt was signed;
- ``X-Callcenter-Signature``: ``sha256=`` + hex HMAC-SHA256 (RFC 2104) with the hook's secret over
  ``TIMESTAMP + "." + raw body``. The timestamp is inside the MAC so a captured request cannot be
  replayed later with a fresh one; receivers refuse timestamps older than a few minutes
  (:func:`verify_signature`, default 300 s) and compare in constant time.

Never blocking calls: the bus listener only appends to a bounded per-hook queue (a full queue drops
the oldest event, logged as ``webhook_dropped``); a worker per hook posts with httpx (async), at most
``concurrency`` deliveries at a time. A delivery is retried after a connection error, a timeout, 408,
429 or 5xx, up to ``max_attempts`` tries, waiting ``backoff_delay`` ("full jitter": a random time up
to base·2^(n-1), capped) between tries; another 4xx is final (the receiver refuses it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fnmatch
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import httpx

from callcenter.core.config import WebhookSettings
from callcenter.core.logging import log_event
from callcenter.events import Event, EventBus

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Delivery",
    "WebhookSender",
    "backoff_delay",
    "sign",
    "verify_signature",
]

log = logging.getLogger("callcenter.webhooks")

SIGNATURE_HEADER = "X-Callcenter-Signature"
TIMESTAMP_HEADER = "X-Callcenter-Timestamp"
EVENT_HEADER = "X-Callcenter-Event"
ID_HEADER = "X-Callcenter-Delivery"
_RETRYABLE = frozenset({408, 425, 429})


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    now: float,
    tolerance_s: float = 300,
) -> bool:
    """What a receiver checks: a well-formed timestamp within ``tolerance_s`` of ``now`` (Unix seconds)
    and a matching signature (constant-time comparison)."""
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    ts = int(timestamp)
    if abs(now - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


def backoff_delay(attempt: int, rng: random.Random, *, base_s: float = 1.0, cap_s: float = 60.0) -> float:
    """Seconds to wait after failed try number ``attempt`` (1-based): uniform in [0, min(cap, base·2^(n-1))]
    ("full jitter", so many receivers' retries do not arrive in lockstep)."""
    return rng.uniform(0.0, min(cap_s, base_s * 2 ** (attempt - 1)))


@dataclass
class Delivery:
    """One event on its way to one hook."""

    id: str
    event: Event
    body: bytes
    attempts: int = 0


def _matches(patterns: Sequence[str], name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


class _Hook:
    def __init__(self, settings: WebhookSettings, queue_size: int) -> None:
        self.settings = settings
        self.queue: collections.deque[Delivery] = collections.deque(maxlen=queue_size)
        self.wake = asyncio.Event()
        self.delivered = 0
        self.failed = 0
        self.dropped = 0


Sleep = Callable[[float], Awaitable[None]]


class WebhookSender:
    """Feeds on the bus (``attach``), delivers in the background (``start`` / ``aclose``)."""

    def __init__(
        self,
        hooks: Iterable[WebhookSettings],
        *,
        client: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
        queue_size: int = 1000,
        concurrency: int = 4,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 60.0,
        on_outcome: Callable[[str, Delivery, bool], None] | None = None,
    ) -> None:
        """``on_outcome(url, delivery, delivered)`` is called once per event and hook when it is
        delivered or given up (for metrics, tests)."""
        self.hooks = [_Hook(h, queue_size) for h in hooks]
        self._client = client
        self._own_client = client is None
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._wall = wall_clock
        self._concurrency = concurrency
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._workers: list[asyncio.Task[None]] = []
        self._stop_listening: Callable[[], None] | None = None
        self._on_outcome = on_outcome

    def attach(self, bus: EventBus) -> None:
        if self.hooks and self._stop_listening is None:
            self._stop_listening = bus.listen(self.offer)

    def offer(self, event: Event) -> None:
        """Queue ``event`` for every hook that wants it; never blocks."""
        body: bytes | None = None
        delivery_id = ""
        for hook in self.hooks:
            if not _matches(hook.settings.events, event.name):
                continue
            if body is None:
                delivery_id = uuid.uuid4().hex
                message = {"id": delivery_id, **event.message()}
                body = json.dumps(message, separators=(",", ":"), default=str, ensure_ascii=False).encode()
            if len(hook.queue) == hook.queue.maxlen:
                hook.dropped += 1
                log_event(
                    log, "webhook_dropped", level=logging.WARNING, url=hook.settings.url, name=event.name
                )
            hook.queue.append(Delivery(delivery_id, event, body))
            hook.wake.set()

    def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        for hook in self.hooks:
            self._workers.append(asyncio.create_task(self._work(hook), name=f"webhook {hook.settings.url}"))

    async def aclose(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _work(self, hook: _Hook) -> None:
        slots = asyncio.Semaphore(self._concurrency)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                if not hook.queue:
                    hook.wake.clear()
                    await hook.wake.wait()
                    continue
                await slots.acquire()
                delivery = hook.queue.popleft()
                task = asyncio.create_task(self._deliver(hook, delivery))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _: slots.release())
        finally:
            for task in running:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*running, return_exceptions=True)

    async def _deliver(self, hook: _Hook, delivery: Delivery) -> None:
        settings = hook.settings
        while True:
            delivery.attempts += 1
            outcome = await self._post(settings, delivery)
            if outcome is None:
                hook.delivered += 1
                if self._on_outcome is not None:
                    self._on_outcome(settings.url, delivery, True)
                return
            retry, detail = outcome
            if not retry or delivery.attempts >= settings.max_attempts:
                hook.failed += 1
                log_event(
                    log,
                    "webhook_failed",
                    level=logging.WARNING,
                    url=settings.url,
                    name=delivery.event.name,
                    delivery=delivery.id,
                    attempts=delivery.attempts,
                    error=detail,
                )
                if self._on_outcome is not None:
                    self._on_outcome(settings.url, delivery, False)
                return
            base, cap = self._backoff
            await self._sleep(backoff_delay(delivery.attempts, self._rng, base_s=base, cap_s=cap))

    async def _post(self, settings: WebhookSettings, delivery: Delivery) -> tuple[bool, str] | None:
        """None when delivered, else (worth retrying, what went wrong)."""
        assert self._client is not None
        timestamp = int(self._wall())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(settings.secret, timestamp, delivery.body),
            EVENT_HEADER: delivery.event.name,
            ID_HEADER: delivery.id,
            "User-Agent": "callcenter-webhooks",
        }
        try:
            response = await self._client.post(
                settings.url, content=delivery.body, headers=headers, timeout=settings.timeout_s
            )
        except httpx.HTTPError as exc:
            return True, f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return None
        status = response.status_code
        return (status >= 500 or status in _RETRYABLE), f"HTTP {status}"
