"""LegTranscriber: utterances of one bridged side land on the transcript with speaker and time; the
backlog is bounded; hang-up flushes the last words; recogniser failures never end the call.

The segmenter is the real one; its frame classifier is an energy threshold so the audio is exact.
Each "utterance" is 400 ms of loud samples whose first sample encodes its number, which the fake
recogniser reads back as text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from callcenter.calls.bridge_transcript import LegTranscriber, TranscriptionLimits
from callcenter.speech.base import AsrResult, PcmLike, SpeechError
from callcenter.speech.vad import Segmenter, VadConfig

FRAME = 160  # 20 ms at 8 kHz
LOUD = 5000


class Energy:
    def is_speech(self, frame: np.ndarray) -> bool:
        return bool(np.abs(frame.astype(np.int32)).mean() > 1000)

    def reset(self) -> None:
        pass


class Recogniser:
    """Reads the utterance number from the loudest sample; can be held, fail, or refuse a language."""

    def __init__(self, *, fail: type[Exception] | None = None, languages: Sequence[str] = ("en-US",)) -> None:
        self.fail = fail
        self.languages = languages
        self.gate = asyncio.Event()
        self.gate.set()
        self.heard: list[int] = []
        self.running = 0
        self.most_at_once = 0

    def supports(self, language: str) -> bool:
        return language in self.languages

    async def transcribe(
        self, pcm: PcmLike, phrases: Sequence[str] | None = None, language: str | None = None
    ) -> AsrResult:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await self.gate.wait()
            if self.fail is not None:
                raise self.fail("decoder broke")
            n = (int(np.asarray(pcm).max()) - LOUD) // 10
            self.heard.append(n)
            return AsrResult(f"utterance {n}", True, 0.8, raw_text=f"utterance {n}")
        finally:
            self.running -= 1


def frames(n: int, speech_ms: int = 400, silence_ms: int = 300) -> list[np.ndarray]:
    """Utterance ``n``: loud frames tagged with n, then silence long enough to end it."""
    loud = np.full(FRAME, LOUD + 10 * n, dtype=np.int16)
    quiet = np.zeros(FRAME, dtype=np.int16)
    return [loud] * (speech_ms // 20) + [quiet] * (silence_ms // 20)


def leg(
    recogniser: Recogniser, limits: TranscriptionLimits | None = None, language: str = "en-US"
) -> tuple[LegTranscriber, list[tuple[str, str, float, float]], list[Segmenter]]:
    said: list[tuple[str, str, float, float]] = []
    released: list[Segmenter] = []
    segmenter = Segmenter(Energy(), VadConfig(start_ms=100, end_silence_ms=200, pre_roll_ms=0))
    transcriber = LegTranscriber(
        "agent",
        language,
        segmenter,
        recogniser,
        lambda *a: said.append(a),
        limits or TranscriptionLimits(),
        call_id="c1",
        release=released.append,
    )
    return transcriber, said, released


def feed(transcriber: LegTranscriber, chunks: list[np.ndarray], t0: float) -> float:
    t = t0
    for frame in chunks:
        transcriber.tap(frame, t)
        t += 0.02
    return t


async def test_each_utterance_lands_with_its_speaker_and_start_time() -> None:
    recogniser = Recogniser()
    transcriber, said, released = leg(recogniser)
    task = asyncio.create_task(transcriber.run())
    t = feed(transcriber, [np.zeros(FRAME, dtype=np.int16)] * 10, 100.0)  # 200 ms of silence first
    t = feed(transcriber, frames(1), t)
    feed(transcriber, frames(2), t)
    transcriber.close()
    await task
    assert [(s, text) for s, text, _, _ in said] == [("agent", "utterance 1"), ("agent", "utterance 2")]
    assert said[0][2] == pytest.approx(100.2, abs=0.05)  # tap time of the first frame + audio offset
    assert said[1][2] == pytest.approx(100.2 + 0.7, abs=0.05)
    assert said[0][3] == 0.8
    assert released == [transcriber.segmenter]  # the VAD classifier goes back to the pool


async def test_hanging_up_mid_sentence_still_transcribes_the_last_words() -> None:
    recogniser = Recogniser()
    transcriber, said, _ = leg(recogniser)
    task = asyncio.create_task(transcriber.run())
    feed(transcriber, frames(7, silence_ms=0), 0.0)  # speech under way when the bridge ends
    assert said == []
    transcriber.close()
    await task
    assert [text for _, text, _, _ in said] == ["utterance 7"]


async def test_a_full_backlog_drops_the_oldest_and_counts_it() -> None:
    recogniser = Recogniser()
    recogniser.gate.clear()  # the recogniser is busy elsewhere
    transcriber, said, _ = leg(recogniser, TranscriptionLimits(workers=1, backlog=2))
    task = asyncio.create_task(transcriber.run())
    t = 0.0
    for n in range(1, 6):
        t = feed(transcriber, frames(n), t)
        await asyncio.sleep(0)  # the first utterance is taken into the recogniser at once
    recogniser.gate.set()
    transcriber.close()
    await task
    # 1 was being decoded; 2 and 3 were pushed out of the 2-deep backlog by 4 and 5.
    assert recogniser.heard == [1, 4, 5]
    assert transcriber.dropped == 2
    assert [text for _, text, _, _ in said] == ["utterance 1", "utterance 4", "utterance 5"]


async def test_calls_share_the_decoding_slots() -> None:
    recogniser = Recogniser()
    recogniser.gate.clear()
    limits = TranscriptionLimits(workers=1)
    a, said_a, _ = leg(recogniser, limits)
    b, said_b, _ = leg(recogniser, limits)
    tasks = [asyncio.create_task(x.run()) for x in (a, b)]
    feed(a, frames(1), 0.0)
    feed(b, frames(2), 0.0)
    for _ in range(20):
        await asyncio.sleep(0)
    assert recogniser.running == 1  # the second waits for the one slot
    recogniser.gate.set()
    a.close()
    b.close()
    await asyncio.gather(*tasks)
    assert recogniser.most_at_once == 1 and len(said_a) == len(said_b) == 1


@pytest.mark.parametrize("error", [SpeechError, RuntimeError])
async def test_a_failing_recogniser_never_raises_into_the_call(error: type[Exception]) -> None:
    recogniser = Recogniser(fail=error)
    transcriber, said, released = leg(recogniser)
    task = asyncio.create_task(transcriber.run())
    feed(transcriber, frames(1) + frames(2), 0.0)
    transcriber.close()
    await task  # returns normally
    assert said == [] and released == [transcriber.segmenter]


async def test_a_language_without_a_recogniser_transcribes_nothing() -> None:
    recogniser = Recogniser(languages=("ko",))
    transcriber, said, _ = leg(recogniser, language="en-US")
    task = asyncio.create_task(transcriber.run())
    feed(transcriber, frames(1), 0.0)
    transcriber.close()
    await task
    assert said == [] and recogniser.heard == []


async def test_after_close_the_tap_ignores_audio_and_run_returns_at_once() -> None:
    recogniser = Recogniser()
    transcriber, said, _ = leg(recogniser)
    transcriber.close()
    feed(transcriber, frames(1), 0.0)
    await asyncio.wait_for(transcriber.run(), timeout=5)
    assert said == []
