"""Prompt cache: disk + memory, keys, atomic files, start-up rendering, playback compatibility."""

from __future__ import annotations

import asyncio
import wave

import numpy as np
import pytest

from callcenter.media.playback import load_prompt
from callcenter.speech.base import SpeechError
from callcenter.speech.cache import PromptCache, PromptSpec
from callcenter.speech.tts import EspeakNgEngine


class CountingEngine:
    """The real espeak-ng engine, counting syntheses (and optionally pretending another version)."""

    name = "espeak-ng"

    def __init__(self, inner: EspeakNgEngine, version: str | None = None) -> None:
        self.inner = inner
        self._version = version or inner.version
        self.calls: list[str] = []

    @property
    def version(self) -> str:
        return self._version

    async def synthesize(self, text: str, voice: str, rate: float = 1.0, pitch: float = 1.0) -> np.ndarray:
        self.calls.append(text)
        return await self.inner.synthesize(text, voice, rate, pitch)

    async def aclose(self) -> None:
        pass


async def test_renders_once_then_serves_from_memory_and_disk(tts, tmp_path) -> None:
    eng = CountingEngine(tts)
    spec = PromptSpec("Welcome to the help line.", "en-us")
    cache = PromptCache(tmp_path, eng)
    first = await cache.get(spec)
    again = await cache.get(spec)
    assert again is first and eng.calls == [spec.text]
    assert first.path.is_file() and first.path.suffix == ".wav"
    with wave.open(str(first.path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert w.getnframes() == len(first.pcm)

    # A restart: a new cache over the same directory reads the file instead of synthesising.
    cache2 = PromptCache(tmp_path, eng)
    loaded = await cache2.get(spec)
    assert eng.calls == [spec.text]
    assert np.array_equal(loaded.pcm, first.pcm)
    assert cache2.stats.disk_hits == 1


async def test_key_covers_text_voice_rate_pitch_and_engine_version(tts, tmp_path) -> None:
    base = PromptSpec("Hello.", "en-us", 1.0, 1.0)
    cache = PromptCache(tmp_path, CountingEngine(tts))
    variants = [base, PromptSpec("Hello!", "en-us"), PromptSpec("Hello.", "cmn"),
                PromptSpec("Hello.", "en-us", 1.2), PromptSpec("Hello.", "en-us", 1.0, 1.3)]
    assert len({cache.key(v) for v in variants}) == len(variants)
    upgraded = PromptCache(tmp_path, CountingEngine(tts, version="espeak-ng/9.99/other"))
    assert upgraded.key(base) != cache.key(base)
    assert cache.key(PromptSpec("Hello.", "en-us")) == cache.key(base)


async def test_concurrent_requests_for_one_prompt_synthesise_once(tts, tmp_path) -> None:
    eng = CountingEngine(tts)
    cache = PromptCache(tmp_path, eng)
    spec = PromptSpec("Your balance is twelve dollars.", "en-us")
    results = await asyncio.gather(*(cache.get(spec) for _ in range(10)))
    assert eng.calls == [spec.text]
    assert all(r is results[0] for r in results)


async def test_a_cancelled_requester_does_not_cancel_the_others(tts, tmp_path) -> None:
    eng = CountingEngine(tts)
    cache = PromptCache(tmp_path, eng)
    spec = PromptSpec("One moment please. " * 20, "en-us")
    hung_up = asyncio.create_task(cache.get(spec))
    waiting = asyncio.create_task(cache.get(spec))
    await asyncio.sleep(0)
    hung_up.cancel()
    prompt = await waiting
    assert len(prompt.pcm) > 8000 and eng.calls == [spec.text]
    with pytest.raises(asyncio.CancelledError):
        await hung_up


async def test_no_temporary_files_left_and_damaged_files_are_rendered_again(tts, tmp_path) -> None:
    eng = CountingEngine(tts)
    spec = PromptSpec("Goodbye.", "en-us")
    p = (await PromptCache(tmp_path, eng).get(spec)).path
    assert [f.name for f in p.parent.iterdir()] == [p.name]
    p.write_bytes(b"RIFF....garbage")
    again = await PromptCache(tmp_path, eng).get(spec)
    assert len(eng.calls) == 2 and len(again.pcm) > 1000
    with wave.open(str(p)) as w:
        assert w.getnframes() == len(again.pcm)


async def test_render_all_prerenders_and_reports_every_failure(tts, tmp_path) -> None:
    eng = CountingEngine(tts)
    cache = PromptCache(tmp_path, eng)
    good = [PromptSpec("Press one for billing.", "en-us"), PromptSpec("请按一号键。", "cmn"),
            PromptSpec("Press one for billing.", "en-us")]  # duplicate
    bad = [PromptSpec("x", "no-such-voice-1"), PromptSpec("y", "no-such-voice-2")]
    with pytest.raises(SpeechError) as ei:
        await cache.render_all(good + bad)
    assert "2 prompt(s) failed" in str(ei.value)
    assert "no-such-voice-1" in str(ei.value) and "no-such-voice-2" in str(ei.value)
    assert all(cache.path_for(s).is_file() for s in good)
    out = await cache.render_all(good)
    assert set(out) == set(good) and len(eng.calls) == 4  # two good renders + two failed attempts


async def test_memory_is_bounded_lru(tts, tmp_path) -> None:
    eng = CountingEngine(tts)
    specs = [PromptSpec(t, "en-us") for t in ("Option one.", "Option two.", "Option three.")]
    sizes = [(await PromptCache(tmp_path, eng).get(s)).pcm.nbytes for s in specs]
    cache = PromptCache(tmp_path, eng, memory_bytes=sum(sizes) - 1)  # all three do not fit
    for s in specs:
        await cache.get(s)
    assert cache.stats.disk_hits == 3
    await cache.get(specs[0])  # the oldest was evicted: read back from disk
    assert cache.stats.disk_hits == 4
    await cache.get(specs[2])  # recent: still in memory
    assert cache.stats.memory_hits == 1 and len(eng.calls) == 3


async def test_cached_wav_plays_through_media_playback(tts, tmp_path) -> None:
    cached = await PromptCache(tmp_path / "tts", CountingEngine(tts)).get(PromptSpec("Please hold.", "en-us"))
    prompt = await load_prompt(cached.path, "PCMU")
    assert len(prompt.frames) == -(-len(cached.pcm) // 160)
    assert all(len(f) == 160 for f in prompt.frames)
