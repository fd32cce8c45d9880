"""espeak-ng through libespeak-ng: 8 kHz output, voices, rate and pitch, and no blocking."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from callcenter.speech.base import SpeechError
from callcenter.speech.tts import EspeakNgEngine, voice_for


def f0(pcm: np.ndarray) -> float:
    """Median fundamental frequency (autocorrelation) over the loudest 30 ms frames."""
    x = pcm.astype(np.float64)
    n = 240
    frames = [x[i : i + n] for i in range(0, len(x) - n, n)]
    frames.sort(key=lambda f: -np.sum(f * f))
    est = []
    for f in frames[: max(5, len(frames) // 3)]:
        f = f - f.mean()
        ac = np.correlate(f, f, "full")[n - 1 :]
        lo, hi = 8000 // 400, 8000 // 60  # 60..400 Hz
        lag = lo + int(np.argmax(ac[lo:hi]))
        est.append(8000 / lag)
    return float(np.median(est))


def test_english_sentence_is_8khz_speech(say) -> None:
    pcm = say("Thank you for calling. How can I help you today?")
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    seconds = len(pcm) / 8000
    assert 1.5 < seconds < 6
    assert np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > 500  # audible, not silence


def test_resampling_leaves_no_aliasing_near_nyquist(say) -> None:
    # espeak-ng renders at 22.05 kHz; a proper low-pass keeps 3.9-4 kHz almost empty.
    pcm = say("She sells sea shells by the sea shore, six thick thistle sticks.").astype(np.float64)
    spec = np.abs(np.fft.rfft(pcm)) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / 8000)
    top = spec[freqs > 3900].sum() / spec.sum()
    assert top < 1e-3


def test_mandarin_voice(say) -> None:
    zh = say("您好，欢迎致电客服中心。", voice_for("zh-CN"))
    assert voice_for("zh-CN") == "cmn"
    assert len(zh) / 8000 > 1.0
    assert np.sqrt(np.mean(zh.astype(np.float64) ** 2)) > 500


def test_rate_changes_duration(say) -> None:
    text = "Please hold while we connect your call."
    fast, slow = say(text, rate=2.0), say(text, rate=0.5)
    assert len(slow) > 2.5 * len(fast)


def test_pitch_changes_fundamental(say) -> None:
    text = "Hello, welcome to customer service."
    assert f0(say(text, pitch=1.8)) > 1.3 * f0(say(text, pitch=0.4))


def test_concurrent_requests_each_get_their_own_audio(tts: EspeakNgEngine, say) -> None:
    # espeak-ng is not bit-exact from call to call (lengths vary by a few ms), so compare durations.
    texts = ["Yes.", "Please hold.", "Your call is important to us, please stay on the line.",
             "Press one for billing, two for technical support, three for sales."]

    async def run() -> list[np.ndarray]:
        return await asyncio.gather(*(tts.synthesize(t, "en-us") for t in texts * 3))

    outs = asyncio.run(run())
    for i, out in enumerate(outs):
        alone = say(texts[i % len(texts)])
        assert abs(len(out) - len(alone)) < 0.05 * len(alone) + 400


async def test_unknown_voice_and_bad_parameters(tts: EspeakNgEngine) -> None:
    with pytest.raises(SpeechError, match="unknown voice"):
        await tts.synthesize("hello", "no-such-voice-xx")
    with pytest.raises(ValueError):
        await tts.synthesize("hello", "en-us", rate=10)
    with pytest.raises(ValueError):
        await tts.synthesize("hello", "en-us", pitch=-1)
    # the engine still works after errors
    assert len(await tts.synthesize("hello", "en-us")) > 0


async def test_voices_list_has_english_and_mandarin(tts: EspeakNgEngine) -> None:
    voices = await tts.voices()
    langs = {lang for v in voices for lang in v.languages}
    assert {"en-us", "cmn"} <= langs


async def test_synthesis_does_not_block_the_event_loop(tts: EspeakNgEngine) -> None:
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    await tts.synthesize("This is a long prompt. " * 300, "en-us")
    during = ticks - before
    done = True
    await t
    assert during > 1  # the loop kept running while espeak-ng worked


def test_voice_for_languages() -> None:
    assert voice_for("en") == "en-us"
    assert voice_for("en-GB") == "en-gb"
    assert voice_for("zh_CN") == "cmn"
    assert voice_for("de-AT") == "de-at"
    assert voice_for("ko-KR") == "ko-kr"


def test_version_names_engine_and_pipeline(tts: EspeakNgEngine) -> None:
    assert tts.version.startswith("espeak-ng/1.")
    assert "soxr" in tts.version
