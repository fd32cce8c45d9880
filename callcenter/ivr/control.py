"""The CallControl protocol: everything the IVR may do to a call, with typed results.

A :class:`~callcenter.ivr.engine.FlowRunner` drives one call only through this interface, so flows run
the same against a live call (the lead's ``calls/`` implementation), the terminal (``flows try``) and
test fakes. Semantics every implementation keeps:

- Input methods play their ``prompts`` first; with ``barge_in`` any input stops the prompt. The
  ``timeout_s`` counts from the end of the prompts (as jambonz's gather does).
- When the caller hangs up, any method raises :class:`CallerHangup` — except :meth:`CallControl.record`,
  which returns what was recorded with ``ended_by="hangup"`` (a voicemail left before hanging up is kept).
- :meth:`CallControl.enqueue` returns once the caller leaves the queue: after the agent conversation
  (``answered``) or without an agent (``timeout``/``closed``/``full``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from callcenter.core.errors import CallcenterError

__all__ = [
    "CallControl",
    "CallerHangup",
    "DigitSpec",
    "InputResult",
    "PromptItem",
    "QueueRequest",
    "QueueResult",
    "RecordResult",
    "SpeechSpec",
    "TransferResult",
]


class CallerHangup(CallcenterError):
    """The caller hung up (raised by CallControl methods; the FlowRunner records where)."""


@dataclass(frozen=True)
class PromptItem:
    """One piece of a prompt: a recorded ``file`` (played when present) and/or TTS ``text``."""

    text: str | None = None
    file: str | None = None
    language: str | None = None
    voice: str | None = None


@dataclass(frozen=True)
class DigitSpec:
    """DTMF collection: stops at ``max_digits``, at the terminator, or after ``inter_digit_timeout_s``."""

    max_digits: int = 1
    min_digits: int = 1
    terminator: str | None = None
    inter_digit_timeout_s: float = 3.0


@dataclass(frozen=True)
class SpeechSpec:
    """Speech recognition; ``phrases`` are hints (or the grammar) for the recognizer.

    ``open``: anything said counts (a menu with ``other_speech``: the caller may ask a question
    instead of picking an option), so the phrases must not be a closed grammar; the menu matches the
    free transcript against them itself."""

    phrases: tuple[str, ...] = ()
    language: str | None = None
    open: bool = False


@dataclass(frozen=True)
class InputResult:
    kind: Literal["digits", "speech", "timeout"]
    digits: str = ""  # without the terminator
    transcript: str = ""
    confidence: float | None = None
    terminated: bool = False  # the terminator key ended the input


@dataclass(frozen=True)
class QueueRequest:
    queue: str
    skills: Mapping[str, int] = field(default_factory=dict)
    priority: int = 0
    hold_music: str | None = None
    announce: tuple[PromptItem, ...] = ()
    announce_every_s: float = 30.0
    announce_position: bool = False
    max_wait_s: float | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)  # for the agent's screen
    callback_key: str | None = None  # this key asks for a callback that keeps the caller's place
    callback_after_s: float = 0.0  # offered (and announced) once the caller has waited this long
    record: bool = False  # record the call from the moment an agent answers


@dataclass(frozen=True)
class QueueResult:
    outcome: Literal["answered", "timeout", "closed", "full"]
    agent: str | None = None
    waited_s: float = 0.0


@dataclass(frozen=True)
class TransferResult:
    outcome: Literal["answered", "busy", "no_answer", "failed"]
    detail: str = ""


@dataclass(frozen=True)
class RecordResult:
    file: str | None  # None when nothing was recorded
    duration_s: float = 0.0
    ended_by: Literal["terminator", "silence", "max_length", "hangup"] = "terminator"


class CallControl(Protocol):
    async def say(self, text: str, *, language: str | None = None, voice: str | None = None) -> None:
        """Speak ``text`` with TTS; returns when it has been played."""
        ...

    async def play(self, file: str, *, fallback_text: str | None = None, language: str | None = None) -> None:
        """Play an audio file; if it cannot be played, say ``fallback_text`` (if any)."""
        ...

    async def collect_digits(
        self,
        spec: DigitSpec,
        *,
        prompts: Sequence[PromptItem] = (),
        barge_in: bool = True,
        timeout_s: float = 5.0,
    ) -> InputResult:
        """Play ``prompts``, then collect DTMF; ``kind`` is "digits" or "timeout"."""
        ...

    async def listen(
        self,
        spec: SpeechSpec,
        *,
        prompts: Sequence[PromptItem] = (),
        barge_in: bool = True,
        timeout_s: float = 5.0,
        digits: DigitSpec | None = None,
    ) -> InputResult:
        """Play ``prompts``, then recognize speech — and DTMF too when ``digits`` is given (first wins)."""
        ...

    async def record(
        self, *, max_s: float, beep: bool = True, terminator: str | None = "#", max_silence_s: float = 5.0
    ) -> RecordResult:
        """Record the caller (a voicemail); never raises CallerHangup (see the module notes)."""
        ...

    async def enqueue(self, request: QueueRequest) -> QueueResult:
        """Queue the call for an agent; returns when the caller leaves the queue."""
        ...

    async def transfer(
        self, target: str, *, timeout_s: float = 30.0, caller_id: str | None = None
    ) -> TransferResult:
        """Transfer to ``sip:…``, a number or ``agent:NAME``; "answered" means the call left the IVR."""
        ...

    async def set_language(self, language: str, voice: str | None = None) -> None:
        """Later TTS and recognition use this language (and voice)."""
        ...

    async def hangup(self, reason: str) -> None:
        """End the call (BYE); ``reason`` goes to the call record."""
        ...
