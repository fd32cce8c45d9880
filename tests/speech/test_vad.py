"""VAD segmenter (audio-time, deterministic) with scripted, webrtcvad and Silero classifiers."""

from __future__ import annotations

import numpy as np
import pytest
from speech_audio import silence, with_noise

from callcenter.speech.base import SpeechEnded, SpeechStarted
from callcenter.speech.vad import Segmenter, SileroVad, VadConfig, WebRtcVad

F = 160  # samples in a 20 ms frame


class Scripted:
    """A classifier that reads its verdict from the frame itself: a frame of 1s is speech."""

    def __init__(self) -> None:
        self.resets = 0

    def is_speech(self, frame: np.ndarray) -> bool:
        return bool(frame[0] == 1)

    def reset(self) -> None:
        self.resets += 1


def pattern(bits: str) -> np.ndarray:
    """'0011' → four 20 ms frames, the last two "voiced"."""
    return np.concatenate([np.full(F, int(b), dtype=np.int16) for b in bits])


def run(seg: Segmenter, pcm: np.ndarray, chunk: int = F) -> list:
    events = []
    for i in range(0, len(pcm), chunk):
        events += seg.process(pcm[i : i + chunk])
    return events


CFG = VadConfig(start_ms=100, start_ratio=0.8, end_silence_ms=200, end_ratio=0.1, max_utterance_ms=2000,
                pre_roll_ms=60)


def test_start_end_times_count_audio_not_wall_time() -> None:
    seg = Segmenter(Scripted(), CFG)
    audio = pattern("0" * 10 + "1" * 20 + "0" * 15)
    events = run(seg, audio)
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    start, end = events
    assert start.start == pytest.approx(0.2)  # first voiced frame
    assert start.at == pytest.approx(0.28)  # 4 of the last 5 frames (100 ms at 80 %) voiced
    # pre-roll: 60 ms before the start window plus the 100 ms window itself
    assert len(start.audio) == (3 + 5) * F and start.audio[0] == 0 and start.audio[-1] == 1
    assert start.at - len(start.audio) / 8000 == pytest.approx(0.12)
    assert end.reason == "silence"
    assert end.end == pytest.approx(0.6)  # last voiced audio
    assert end.at == pytest.approx(0.78)  # the last 200 ms hold ≤ 10 % voiced (1 frame of 10)
    assert len(end.audio) == len(start.audio) + (end.at - start.at) * 8000
    assert not seg.in_speech and seg.position == pytest.approx(len(audio) / 8000)


def test_chunking_does_not_change_events() -> None:
    audio = pattern("000" + "1" * 12 + "0" * 12 + "1" * 6 + "0" * 11)
    ref = [(type(e), e.start, e.at) for e in run(Segmenter(Scripted(), CFG), audio)]
    assert len(ref) == 4
    for chunk in (7, 80, 240, 333, len(audio)):
        got = [(type(e), e.start, e.at) for e in run(Segmenter(Scripted(), CFG), audio, chunk)]
        assert got == ref


def test_short_blips_neither_start_nor_end_speech() -> None:
    seg = Segmenter(Scripted(), CFG)
    # 3 voiced frames of 5 is below the 80 % start ratio: no start
    assert run(seg, pattern("0011100000")) == []
    # one noise blip in the trailing silence (1 of 10 frames ≤ 10 %) does not keep it open
    events = run(seg, pattern("11111" + "11111" + "0000100000" + "00"))
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    assert events[1].at == pytest.approx(0.2 + 0.2 + 0.2)  # 200 ms after the voiced frames
    assert events[1].end == pytest.approx(0.2 + 0.2 + 0.1)  # the blip counts as the last voiced audio


def test_gap_shorter_than_end_silence_keeps_one_utterance() -> None:
    events = run(Segmenter(Scripted(), CFG), pattern("1" * 10 + "0" * 8 + "1" * 10 + "0" * 10))
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    assert events[1].end - events[0].start == pytest.approx(0.56)


def test_max_utterance_length_cuts_and_speech_restarts() -> None:
    cfg = VadConfig(start_ms=100, end_silence_ms=200, max_utterance_ms=1000, pre_roll_ms=0)
    events = run(Segmenter(Scripted(), cfg), pattern("1" * 80))
    kinds = [(type(e).__name__, getattr(e, "reason", "")) for e in events]
    assert kinds[:3] == [("SpeechStarted", ""), ("SpeechEnded", "max_length"), ("SpeechStarted", "")]
    assert events[1].at - events[0].start == pytest.approx(1.0)
    assert events[2].start == pytest.approx(events[1].at)  # restarts on the very next speech


def test_flush_ends_an_open_utterance() -> None:
    seg = Segmenter(Scripted(), CFG)
    run(seg, pattern("1" * 10))
    end = seg.flush()
    assert isinstance(end, SpeechEnded) and end.reason == "flush" and end.at == pytest.approx(0.2)
    assert seg.flush() is None


def test_reset_starts_a_new_stream() -> None:
    cls = Scripted()
    seg = Segmenter(cls, CFG)
    run(seg, pattern("1" * 10))
    seg.reset()
    assert not seg.in_speech and seg.position == 0 and cls.resets == 2


@pytest.mark.parametrize("kw", [dict(frame_ms=25), dict(start_ms=30), dict(end_silence_ms=0),
                                dict(start_ratio=0), dict(end_ratio=1.0), dict(pre_roll_ms=-20)])
def test_config_is_validated(kw) -> None:
    with pytest.raises(ValueError):
        VadConfig(**kw)


# --- real audio -----------------------------------------------------------------------------------


def speech_bounds(pcm: np.ndarray) -> tuple[float, float]:
    """First and last 10 ms with energy above -40 dBFS: where the TTS audio really speaks."""
    e = np.array([np.sqrt(np.mean(pcm[i : i + 80].astype(np.float64) ** 2)) for i in range(0, len(pcm), 80)])
    loud = np.nonzero(e > 327)[0]
    return loud[0] * 0.01, (loud[-1] + 1) * 0.01


@pytest.fixture(scope="module")
def utterance(say) -> tuple[np.ndarray, np.ndarray, float, float]:
    speech = say("Please connect me to the billing department.")
    audio = np.concatenate([silence(1.0), speech, silence(1.5)])
    s, e = speech_bounds(speech)
    return audio, speech, 1.0 + s, 1.0 + e


def segments(classifier, audio: np.ndarray) -> list[tuple[float, float]]:
    cfg = VadConfig(end_silence_ms=700)
    seg = Segmenter(classifier, cfg)
    events = run(seg, audio)
    end = seg.flush()
    if end is not None:
        events.append(end)
    starts = [e for e in events if isinstance(e, SpeechStarted)]
    ends = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(starts) == len(ends)
    return [(s.start, e.end) for s, e in zip(starts, ends, strict=True)]


@pytest.mark.parametrize("make", [lambda: WebRtcVad(3), lambda: SileroVad()], ids=["webrtc", "silero"])
def test_clean_tts_sentence_is_one_utterance(make, utterance) -> None:
    audio, _speech, t0, t1 = utterance
    [(start, end)] = segments(make(), audio)
    assert abs(start - t0) < 0.15
    assert abs(end - t1) < 0.3


def test_pre_roll_gives_asr_the_beginning_of_the_word(utterance) -> None:
    audio, _speech, t0, _t1 = utterance
    seg = Segmenter(WebRtcVad(3), VadConfig(pre_roll_ms=300))
    started = next(e for e in run(seg, audio) if isinstance(e, SpeechStarted))
    first_sample = started.at - len(started.audio) / 8000
    assert first_sample <= t0 - 0.25  # pre-roll reaches back before the first sound


@pytest.mark.parametrize("snr", [20, 10])
def test_webrtc_finds_the_utterance_in_moderate_noise(snr, utterance) -> None:
    audio, speech, t0, t1 = utterance
    [(start, end)] = segments(WebRtcVad(3), with_noise(audio, snr, speech))
    assert abs(start - t0) < 0.2 and abs(end - t1) < 0.4


@pytest.mark.parametrize("snr", [20, 10, 5])
def test_silero_finds_the_utterance_in_noise_down_to_5db(snr, utterance) -> None:
    audio, speech, t0, t1 = utterance
    [(start, end)] = segments(SileroVad(), with_noise(audio, snr, speech))
    assert abs(start - t0) < 0.2 and abs(end - t1) < 0.4


def test_silero_stays_quiet_on_noise_only(utterance) -> None:
    _audio, speech, _t0, _t1 = utterance
    assert segments(SileroVad(), with_noise(silence(4.0), 5, speech, seed=7)) == []


def test_two_sentences_two_utterances(say) -> None:
    a, b = say("Yes, that is correct."), say("My account number is one two three.")
    audio = np.concatenate([silence(0.5), a, silence(1.2), b, silence(1.0)])
    assert len(segments(WebRtcVad(3), audio)) == 2
    assert len(segments(SileroVad(), audio)) == 2
