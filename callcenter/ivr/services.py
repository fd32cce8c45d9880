"""Backends the nodes use, as small protocols: the lead plugs in real ones, tests pass fakes.

``Services()`` with no arguments works: no knowledge base (``kb_answer`` finds nothing), no tickets
(``ticket`` takes ``on_error``), no intent classifier (``intent`` takes ``on_unknown``), an httpx client
for ``http``, no customer table (nobody is VIP), no named schedules, the system's wall clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import httpx

from callcenter.core.errors import CallcenterError
from callcenter.ivr.schema import Flow, Schedule

__all__ = [
    "Customers",
    "Http",
    "HttpError",
    "HttpResponse",
    "HttpxHttp",
    "IntentClassifier",
    "IntentResult",
    "KbAnswer",
    "KeywordIntents",
    "KnowledgeBase",
    "Services",
    "TicketDraft",
    "TicketUpdate",
    "Tickets",
    "TranscriptEntry",
]


@dataclass(frozen=True)
class TranscriptEntry:
    speaker: Literal["ivr", "caller"]
    text: str
    node: str


@dataclass(frozen=True)
class KbAnswer:
    text: str
    article_id: str | None = None
    score: float | None = None


class KnowledgeBase(Protocol):
    async def answer(self, question: str, *, language: str) -> KbAnswer | None:
        """The best answer to ``question``, or None when nothing fits."""
        ...


@dataclass(frozen=True)
class TicketDraft:
    subject: str
    body: str = ""
    priority: str = "normal"
    tags: tuple[str, ...] = ()
    caller: str = ""
    call_id: str = ""
    transcript: tuple[TranscriptEntry, ...] = ()
    recording: str | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TicketUpdate:
    body: str = ""
    priority: str | None = None
    tags: tuple[str, ...] = ()
    transcript: tuple[TranscriptEntry, ...] = ()
    recording: str | None = None


class Tickets(Protocol):
    async def create(self, draft: TicketDraft) -> str:
        """Create a ticket; returns its id."""
        ...

    async def update(self, ticket_id: str, update: TicketUpdate) -> None:
        """Add to a ticket; raises (anything) when there is no such ticket."""
        ...


@dataclass(frozen=True)
class IntentResult:
    name: str | None
    confidence: float = 0.0


class IntentClassifier(Protocol):
    async def classify(self, text: str, intents: Sequence[str], *, language: str) -> IntentResult:
        """Which of ``intents`` ``text`` expresses (name None: none of them)."""
        ...


class KeywordIntents:
    """A classifier from keyword lists: the intent with the most keywords in the text wins."""

    def __init__(self, keywords: Mapping[str, Sequence[str]]) -> None:
        self.keywords = {name: [k.lower() for k in words] for name, words in keywords.items()}

    async def classify(self, text: str, intents: Sequence[str], *, language: str) -> IntentResult:
        words = re.findall(r"\w+", text.lower())
        said = " " + " ".join(words) + " "
        best, hits = None, 0
        for name in intents:
            n = sum(
                1 for k in self.keywords.get(name, ()) if f" {k} " in said or (not k.isascii() and k in said)
            )
            if n > hits:
                best, hits = name, n
        return IntentResult(best, 1.0 if best else 0.0)


class HttpError(CallcenterError):
    """A request failed before a response (timeout, refused connection, bad URL)."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    json: Any = None  # the decoded body, None when it is not JSON
    text: str = ""


class Http(Protocol):
    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float,
    ) -> HttpResponse:
        """Send a request; raises :class:`HttpError` when there is no response."""
        ...


class HttpxHttp:
    """The default :class:`Http`: one ``httpx.AsyncClient`` per request (flows call rarely)."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport  # tests pass httpx.MockTransport

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float,
    ) -> HttpResponse:
        try:
            async with httpx.AsyncClient(transport=self._transport, timeout=timeout_s) as client:
                response = await client.request(method, url, json=json, headers=dict(headers or {}))
        except httpx.HTTPError as exc:
            raise HttpError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        return HttpResponse(response.status_code, body, response.text)


class Customers(Protocol):
    async def lookup(self, caller: str) -> Mapping[str, Any] | None:
        """The customer record for a caller ID (e.g. {"name": …, "vip": true}), or None."""
        ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    kb: KnowledgeBase | None = None
    tickets: Tickets | None = None
    intents: IntentClassifier | None = None
    http: Http = field(default_factory=HttpxHttp)
    customers: Customers | None = None
    schedules: Mapping[str, Schedule] = field(default_factory=dict)
    flows: Mapping[str, Flow] = field(default_factory=dict)  # flow id → Flow, for subflow nodes
    wall_clock: Callable[[], datetime] = _utc_now  # aware datetimes; business hours only
    file_exists: Callable[[str], bool] | None = None  # default: os.path.isfile
