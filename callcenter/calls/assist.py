"""Agent assist: a live call's top knowledge-base suggestions, refreshed as the conversation goes on.

Each final utterance of the caller (in the IVR and on the bridge) or the agent marks the call's
suggestions stale. One runner task per call (in the call's TaskGroup) recomputes them from the
recent transcript in the call's language — the search itself runs in a worker thread
(``KbService.suggest``), never on the event loop — so a call never has two computations in flight:
utterances arriving during one are folded into the next.

Debounce: a computation waits ``debounce_s`` after the latest utterance (both parties often say
several short things in a row), but never more than ``max_wait_s`` after the first utterance it
covers, so suggestions follow each utterance within ``max_wait_s`` plus at most two searches
(one already running, then ours): well under a second with searches of tens of milliseconds.

Each change is logged as the event ``call_suggestions`` (``call_id``, ``suggestions``), which the live
WebSocket channel forwards to the call's agent and to supervisors; ``AgentAssist.add_listener`` gives
the same to any other subscriber.

``AgentAssist`` is the server-wide part (the suggester, settings, listeners);
``CallAssist`` the per-call state. Time comes from a :class:`~callcenter.core.clock.Clock` and waits
from an injectable ``sleep``, so tests step a fake clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from callcenter.core.clock import Clock, MonotonicClock
from callcenter.core.logging import log_event
from callcenter.kb.repo import SearchHit

__all__ = ["AgentAssist", "AssistListener", "CallAssist", "Suggester", "Suggestion"]

log = logging.getLogger("callcenter.calls.assist")

SNIPPET_CHARS = 160


@dataclass(frozen=True)
class Suggestion:
    article_id: int
    title: str
    snippet: str  # the article's spoken answer (first paragraph), shortened
    score: float  # confidence 0-1: the share of the conversation's key words the article covers

    def as_json(self) -> dict[str, object]:
        return {"id": self.article_id, "title": self.title, "snippet": self.snippet, "score": self.score}

    @classmethod
    def from_hit(cls, hit: SearchHit) -> Suggestion:
        snippet = hit.answer
        if len(snippet) > SNIPPET_CHARS:
            snippet = snippet[: SNIPPET_CHARS - 1].rstrip() + "…"
        return cls(hit.article_id, hit.title, snippet, round(hit.confidence, 3))


class Suggester(Protocol):
    """What assist needs from the knowledge base (``KbService`` is one)."""

    async def suggest(self, text: str, language: str | None, limit: int = 3) -> list[SearchHit]: ...


class Said(Protocol):
    """One utterance of the transcript (``calls.control.Utterance``)."""

    @property
    def speaker(self) -> str: ...

    @property
    def text(self) -> str: ...

    @property
    def start(self) -> float: ...


AssistListener = Callable[[str, tuple[Suggestion, ...]], None]
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None] | None"]


class AgentAssist:
    """Server-wide: one per server, handed to every call (``IvrRuntime.assist``)."""

    def __init__(
        self,
        suggester: Suggester,
        *,
        limit: int = 3,
        utterances: int = 6,
        debounce_s: float = 0.25,
        max_wait_s: float = 0.5,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.suggester = suggester
        self.limit = limit
        self.utterances = utterances
        self.debounce_s = debounce_s
        self.max_wait_s = max_wait_s
        self.clock = clock or MonotonicClock()
        self.sleep = sleep
        self._listeners: list[AssistListener] = []

    def add_listener(self, listener: AssistListener) -> Callable[[], None]:
        """``listener(call_id, suggestions)`` on the event loop whenever a call's suggestions change
        (an empty tuple: nothing fits any more). Returns the function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def for_call(self, call_id: str, spawn: Spawn, alive: Callable[[], bool] = lambda: True) -> CallAssist:
        """The per-call state; ``spawn`` runs its task in the call's TaskGroup (None once over)."""
        return CallAssist(self, call_id, spawn, alive)

    def _publish(self, call_id: str, suggestions: tuple[Suggestion, ...]) -> None:
        # A "call_" event: the live channel (api/live.py, through the log bridge) pushes it to the
        # call's agent and to supervisors with no further wiring. DEBUG keeps the console quiet.
        log_event(
            log,
            "call_suggestions",
            call_id=call_id,
            level=logging.DEBUG,
            suggestions=[s.as_json() for s in suggestions],
        )
        for listener in list(self._listeners):
            try:
                listener(call_id, suggestions)
            except Exception as exc:  # noqa: BLE001 - one broken subscriber must not stop the others
                log_event(
                    log, "assist_listener_failed", level=logging.WARNING, call_id=call_id, error=repr(exc)
                )


class CallAssist:
    def __init__(self, hub: AgentAssist, call_id: str, spawn: Spawn, alive: Callable[[], bool]) -> None:
        self.hub = hub
        self.call_id = call_id
        self._spawn = spawn
        self._alive = alive
        self.suggestions: tuple[Suggestion, ...] = ()
        self.updated_at: float | None = None  # clock time the suggestions were last published
        self.computations = 0
        self._text = ""
        self._language: str | None = None
        self._dirty = False
        self._first_at = 0.0  # first utterance not yet covered by a computation
        self._last_at = 0.0
        self._task: asyncio.Task[None] | None = None

    def heard(self, transcript: Sequence[Said], language: str | None) -> None:
        """A final utterance landed on ``transcript`` (call on the event loop; returns at once)."""
        said = [u for u in transcript if u.speaker != "system" and u.text.strip()]
        recent = sorted(said, key=lambda u: u.start)[-self.hub.utterances :]
        text = " ".join(u.text for u in recent)
        if not text:
            return
        now = self.hub.clock.now()
        if not self._dirty:
            self._first_at = now
        self._dirty, self._last_at = True, now
        self._text, self._language = text, language
        if self._task is None or self._task.done():
            self._task = self._spawn(self._run())

    async def settled(self) -> None:
        """Wait until no computation is pending (tests, shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    def _due(self) -> float:
        hub = self.hub
        return min(self._last_at + hub.debounce_s, self._first_at + hub.max_wait_s)

    async def _run(self) -> None:
        hub = self.hub
        while self._dirty and self._alive():
            delay = self._due() - hub.clock.now()
            if delay > 0:
                await hub.sleep(delay)
                continue  # more may have been said meanwhile: the due time may have moved
            self._dirty = False
            text, language = self._text, self._language
            self.computations += 1
            try:
                hits = await hub.suggester.suggest(text, language, hub.limit)
            except Exception as exc:  # noqa: BLE001 - a failed search must not end the call
                log_event(log, "assist_failed", level=logging.WARNING, call_id=self.call_id, error=repr(exc))
                continue
            suggestions = tuple(Suggestion.from_hit(h) for h in hits[: hub.limit])
            self.updated_at = hub.clock.now()
            if suggestions != self.suggestions:
                self.suggestions = suggestions
                hub._publish(self.call_id, suggestions)
