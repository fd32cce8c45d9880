"""WhisperLive: Whisper fed while the caller speaks, with an early transcription during the trailing
silence that answers the utterance unless the caller speaks again. The engine is a fake that only
answers when told, so every step is explicit (no clocks, no sleeps)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from speech_audio import silence, voice_like

from callcenter.speech.base import AsrResult, PcmLike
from callcenter.speech.select import SpeechEngineSettings, SpeechRouter, WhisperLive

FRAME = 160


class FakeWhisper:
    """Each transcription waits until the test answers it; cancellations are counted."""

    def __init__(self) -> None:
        self.jobs: list[tuple[int, asyncio.Future[AsrResult]]] = []  # (samples given, answer)
        self.cancelled = 0

    async def transcribe(
        self, pcm: PcmLike, phrases: Sequence[str] | None = None, language: str | None = None
    ) -> AsrResult:
        fut: asyncio.Future[AsrResult] = asyncio.get_running_loop().create_future()
        self.jobs.append((len(pcm), fut))
        try:
            return await fut
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def load(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def feed(live: WhisperLive, pcm: np.ndarray) -> None:
    for i in range(0, len(pcm) - FRAME + 1, FRAME):
        live.feed(pcm[i : i + FRAME])
    for _ in range(3):
        await asyncio.sleep(0)  # started jobs reach the engine (no time passes)


def said(text: str) -> AsrResult:
    return AsrResult(text, True, 0.9, raw_text=text)


async def test_the_early_transcription_answers_when_the_caller_stays_silent() -> None:
    whisper = FakeWhisper()
    live = WhisperLive(whisper, "en", None, early_ms=240)
    await feed(live, np.concatenate([silence(0.3), voice_like(1.0), silence(0.2)]))
    assert whisper.jobs == []  # 200 ms of silence: not yet
    await feed(live, silence(0.25))
    (given, answer), = whisper.jobs  # queued during the trailing silence, before any endpoint
    # the audio up to 240 ms after the last voiced frame (webrtcvad holds "voiced" ~120 ms longer)
    assert (0.3 + 1.0 + 0.24) * 8000 <= given <= (0.3 + 1.0 + 0.24 + 0.16) * 8000
    answer.set_result(said("billing"))
    await feed(live, silence(0.4))  # the endpointer's silence runs on: nothing new is started
    result = await live.finish()
    assert result.text == "billing" and live.used_early
    assert len(whisper.jobs) == 1


async def test_speech_resuming_drops_the_early_transcription_and_a_later_one_answers() -> None:
    whisper = FakeWhisper()
    live = WhisperLive(whisper, "en", None, early_ms=240)
    await feed(live, np.concatenate([voice_like(0.8), silence(0.45)]))
    assert len(whisper.jobs) == 1
    await feed(live, voice_like(0.6))  # "billing ... and payments"
    assert whisper.cancelled == 1 and live.early_wasted == 1
    await feed(live, silence(0.45))
    assert len(whisper.jobs) == 2
    assert whisper.jobs[1][0] > whisper.jobs[0][0] + 0.5 * 8000  # the whole utterance this time
    whisper.jobs[1][1].set_result(said("billing and payments"))
    assert (await live.finish()).text == "billing and payments"


async def test_without_early_decoding_the_utterance_is_transcribed_at_its_end_trimmed() -> None:
    whisper = FakeWhisper()
    live = WhisperLive(whisper, "en", ["billing"], early_ms=0)
    await feed(live, np.concatenate([voice_like(1.0), silence(0.7)]))
    assert whisper.jobs == []
    task = asyncio.ensure_future(live.finish())
    await feed(live, silence(0.0))
    (given, answer), = whisper.jobs
    assert given < (1.0 + 0.7) * 8000  # the long trailing silence is not handed to Whisper
    answer.set_result(said("billing"))
    assert (await task).text == "billing" and live.used_early is False


async def test_a_hangup_while_waiting_cancels_the_transcription() -> None:
    whisper = FakeWhisper()
    live = WhisperLive(whisper, "en", None, early_ms=240)
    await feed(live, np.concatenate([voice_like(0.8), silence(0.45)]))
    task = asyncio.ensure_future(live.finish())
    await feed(live, silence(0.0))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert whisper.cancelled == 1
    await live.aclose()


async def test_closing_with_an_early_transcription_pending_cancels_it() -> None:
    whisper = FakeWhisper()
    live = WhisperLive(whisper, "en", None, early_ms=240)
    await feed(live, np.concatenate([voice_like(0.8), silence(0.45)]))
    await live.aclose()
    await feed(live, silence(0.0))
    assert whisper.cancelled == 1


async def test_the_router_gives_english_calls_a_live_whisper_with_the_configured_early_decoding(
    tmp_path: Path,
) -> None:
    settings = SpeechEngineSettings(early_decode_ms=400)
    router = SpeechRouter(settings, {}, whisper=FakeWhisper())
    live = router.live("en-US", ["billing"])
    assert isinstance(live, WhisperLive)
    assert router.live("zh-CN") is None  # nothing serves Mandarin here
    whisper = FakeWhisper()
    live = WhisperLive(whisper, "en", None, early_ms=settings.early_decode_ms)
    await feed(live, np.concatenate([voice_like(0.8), silence(0.45)]))
    assert whisper.jobs == []  # under 400 ms of unvoiced audio
    await feed(live, silence(0.12))
    assert len(whisper.jobs) == 1
    await live.aclose()


async def test_each_finished_utterance_feeds_the_decode_time_metric_through_the_event_bus() -> None:
    from callcenter.events import EventBus, install_log_bridge

    bus = EventBus()
    seen: list[tuple[str, dict[str, object]]] = []
    stop = bus.listen(lambda event: seen.append((event.name, dict(event.data))))
    handler = install_log_bridge(bus)
    try:
        whisper = FakeWhisper()
        live = WhisperLive(whisper, "en", None, early_ms=240)
        await feed(live, np.concatenate([voice_like(0.8), silence(0.1)]))
        task = asyncio.ensure_future(live.finish())
        while not whisper.jobs:
            await asyncio.sleep(0)
        whisper.jobs[0][1].set_result(said("billing"))
        assert (await task).text == "billing"
        await asyncio.sleep(0)
    finally:
        stop()
        logging.getLogger("callcenter").removeHandler(handler)
    decoded = [data for name, data in seen if name == "asr_decoded"]
    assert len(decoded) == 1
    assert decoded[0]["engine"] == "whisper" and decoded[0]["language"] == "en"
    assert isinstance(decoded[0]["decode_s"], float) and decoded[0]["decode_s"] >= 0
