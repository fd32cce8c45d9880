"""Live transcription of a bridged call: both sides, utterance by utterance, speaker and time.

While a caller talks to an agent, each direction of the bridge gets a :class:`LegTranscriber`: its
audio tap (on the event loop, ~2 µs a frame with webrtcvad) segments speech; every finished utterance
waits in a short backlog and is transcribed in a worker by the call language's recogniser (free form,
no phrase list), then lands on the call's transcript as ``caller`` or ``agent``.

Recognition is the scarce resource (Whisper tiny.en costs ~0.5 s of a core per utterance), so all
calls share one limiter (``speech.transcription_workers`` decodes at a time) and each leg keeps at
most ``speech.transcription_backlog`` utterances waiting: beyond that the oldest is dropped and counted
(``transcript_dropped`` on the record) rather than letting the transcript fall minutes behind the
call. When the bridge ends, what is still waiting is transcribed within ``drain_s`` so the last words
before a hang-up reach the call record.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from callcenter.core.logging import log_event
from callcenter.speech.base import AsrResult, PcmLike, SpeechEnded, SpeechError

if TYPE_CHECKING:
    from callcenter.speech.vad import Segmenter

__all__ = ["LegTranscriber", "Recogniser", "TranscriptionLimits"]

log = logging.getLogger("callcenter.calls.transcript")

Speaker = Literal["caller", "agent"]


class Recogniser(Protocol):
    def supports(self, language: str) -> bool: ...

    async def transcribe(
        self, pcm: PcmLike, phrases: Sequence[str] | None = None, language: str | None = None
    ) -> AsrResult: ...


@dataclass
class TranscriptionLimits:
    """Shared by every call: how many bridge utterances decode at once, and each leg's backlog."""

    workers: int = 1
    backlog: int = 4
    drain_s: float = 10.0
    _slots: asyncio.Semaphore | None = field(default=None, repr=False)

    @property
    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:  # created on the loop that uses it
            self._slots = asyncio.Semaphore(self.workers)
        return self._slots


class LegTranscriber:
    """One direction of a bridge. ``tap`` goes on the bridge (sync, cheap); ``run`` lives in the call's
    TaskGroup and ends after :meth:`close` once the backlog is transcribed (or ``drain_s`` passed).

    ``on_text(speaker, text, start, confidence)``: ``start`` is in the tap's clock (the loop's
    monotonic time) — the caller converts it to the call's timeline.
    """

    def __init__(
        self,
        speaker: Speaker,
        language: str,
        segmenter: Segmenter,
        recogniser: Recogniser,
        on_text: Callable[[Speaker, str, float, float], None],
        limits: TranscriptionLimits,
        *,
        call_id: str = "",
        release: Callable[[Segmenter], None] | None = None,
    ) -> None:
        self.speaker = speaker
        self.language = language
        self.segmenter = segmenter
        self.recogniser = recogniser
        self.on_text = on_text
        self.limits = limits
        self.call_id = call_id
        self._release = release
        self._first_at: float | None = None  # tap time of the first frame: audio time 0
        self._waiting: deque[SpeechEnded] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self.dropped = 0
        self.transcribed = 0

    def tap(self, frame: PcmLike, now: float) -> None:
        if self._closed:
            return
        if self._first_at is None:
            self._first_at = now
        for event in self.segmenter.process(frame):
            if isinstance(event, SpeechEnded):
                self._queue(event)

    def close(self) -> None:
        """The bridge ended: speech under way counts as finished; ``run`` drains and returns."""
        if self._closed:
            return
        self._closed = True
        last = self.segmenter.flush()
        if last is not None:
            self._queue(last)
        self._wake.set()

    def _queue(self, event: SpeechEnded) -> None:
        if len(self._waiting) >= self.limits.backlog:
            self._waiting.popleft()  # the oldest: the transcript stays close to the conversation
            self.dropped += 1
        self._waiting.append(event)
        self._wake.set()

    async def run(self) -> None:
        """Transcribe utterances as they end; never raises (a failure must not end the call)."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        try:
            while True:
                if not self._waiting:
                    if self._closed:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if self._closed and deadline is None:
                    deadline = loop.time() + self.limits.drain_s
                if deadline is not None and loop.time() >= deadline:
                    self.dropped += len(self._waiting)
                    self._waiting.clear()
                    return
                event = self._waiting.popleft()
                await self._transcribe(event, None if deadline is None else deadline - loop.time())
        except Exception:  # noqa: BLE001 - logged; the call goes on without the rest of its transcript
            log_event(log, "transcript_failed", call_id=self.call_id, level=logging.ERROR, exc_info=True)
        finally:
            if self._release is not None:
                self._release(self.segmenter)
                self._release = None
            if self.dropped:
                log_event(
                    log,
                    "transcript_dropped",
                    call_id=self.call_id,
                    level=logging.WARNING,
                    speaker=self.speaker,
                    utterances=self.dropped,
                )

    async def _transcribe(self, event: SpeechEnded, budget_s: float | None) -> None:
        if not self.recogniser.supports(self.language):
            return
        try:
            async with asyncio.timeout(budget_s), self.limits.slots:
                result = await self.recogniser.transcribe(event.audio, None, self.language)
        except TimeoutError:
            self.dropped += 1
            return
        except SpeechError as exc:
            log_event(log, "asr_failed", call_id=self.call_id, level=logging.WARNING, error=str(exc))
            return
        text = (result.raw_text or result.text).strip()
        if not text:
            return
        self.transcribed += 1
        start = (self._first_at or 0.0) + event.start
        self.on_text(self.speaker, text, start, result.confidence)
