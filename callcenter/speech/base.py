"""Engine-neutral speech types: audio, ASR results, voice-activity events, engine protocols.

Audio everywhere in this package is telephone audio: mono, 8 kHz, native-endian int16 numpy arrays
(``Pcm8k``); bytes holding such samples are accepted where audio comes in. An ASR stream is fed 20 ms
frames (160 samples) as they arrive from RTP; engines that want another rate resample internally.

Nothing here imports the store, FastAPI or SQLModel, and every engine method that may take more than
a few microseconds is a coroutine whose work runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from callcenter.core.errors import CallcenterError

Pcm8k = npt.NDArray[np.int16]
PcmLike = Pcm8k | bytes | bytearray | memoryview

SAMPLE_RATE: Final = 8000
FRAME_MS: Final = 20
FRAME_SAMPLES: Final = SAMPLE_RATE * FRAME_MS // 1000


class SpeechError(CallcenterError):
    """A speech engine failed or was misused; the message says which engine and why."""


class Word(NamedTuple):
    """One recognised word; times are seconds of stream audio from the stream's first sample."""

    word: str
    start: float
    end: float
    conf: float


@dataclass(frozen=True, slots=True)
class AsrResult:
    """A partial (``is_final=False``) or final hypothesis.

    ``confidence`` is in [0, 1]; partials carry 0.0 and no words. With a phrase list, ``text`` is
    one of the allowed phrases exactly as given (or "" when nothing matched) and ``raw_text`` is
    what the recogniser heard; without one both hold the recognised text.
    """

    text: str
    is_final: bool
    confidence: float = 0.0
    words: tuple[Word, ...] = ()
    raw_text: str = ""

    @property
    def empty(self) -> bool:
        return not self.text


@runtime_checkable
class AsrStream(Protocol):
    """One caller's audio into one recogniser. Not shared between tasks.

    ``feed`` never blocks: audio is queued and decoded in a worker. Partial and final results come
    out of ``async for result in stream`` (the final that ``finish`` returns is delivered there
    too); iteration ends after ``aclose``.
    """

    def feed(self, pcm: PcmLike) -> None: ...

    async def finish(self) -> AsrResult:
        """Decode everything fed so far and return the final result of the current utterance.

        The stream stays usable: audio fed afterwards starts a new utterance.
        """
        ...

    async def aclose(self) -> None:
        """Release the recogniser (idempotent)."""
        ...

    def __aiter__(self) -> AsyncIterator[AsrResult]: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...


@runtime_checkable
class AsrEngine(Protocol):
    name: str

    def supports(self, language: str) -> bool:
        """Whether a model for ``language`` (BCP 47, e.g. "en", "ko-KR") is configured."""
        ...

    async def open_stream(self, language: str, phrases: Sequence[str] | None = None) -> AsrStream:
        """A stream for one utterance or more; ``phrases`` restricts results to that list."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class TtsEngine(Protocol):
    name: str

    @property
    def version(self) -> str:
        """Changes whenever the same input may sound different (part of prompt-cache keys)."""
        ...

    async def synthesize(self, text: str, voice: str, rate: float = 1.0, pitch: float = 1.0) -> Pcm8k:
        """``text`` spoken by ``voice`` as 8 kHz int16 mono.

        ``rate`` scales the speaking speed (1.0 normal, 0.5 half, 2.0 double); ``pitch`` scales the
        base pitch (1.0 normal, 0 lowest, 2.0 highest).
        """
        ...

    async def aclose(self) -> None: ...


# --- voice activity ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class SpeechStarted:
    """Speech began at ``start`` (stream seconds); detected at ``at``.

    ``audio`` is the pre-roll: the audio from shortly before ``start`` up to ``at``, so a recogniser
    fed it first hears the beginning of the first word.
    """

    start: float
    at: float
    audio: Pcm8k = field(repr=False)
    kind: Literal["start"] = "start"


@dataclass(frozen=True, slots=True, eq=False)
class SpeechEnded:
    """Speech from ``start`` to ``end`` (the last voiced audio), detected at ``at``.

    ``reason``: "silence" (trailing silence reached), "max_length" (utterance cut at the configured
    maximum) or "flush" (the stream ended mid-utterance). ``audio`` holds the whole utterance, pre-roll
    included, up to ``at``.
    """

    start: float
    end: float
    at: float
    reason: Literal["silence", "max_length", "flush"]
    audio: Pcm8k = field(repr=False)
    kind: Literal["end"] = "end"

    @property
    def duration(self) -> float:
        return self.end - self.start


VoiceActivity = SpeechStarted | SpeechEnded
