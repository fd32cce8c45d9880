"""Stereo call recordings written by the worker thread, aligned by time."""

import asyncio
import wave

import numpy as np
import pytest

from callcenter.media import g711, tones
from callcenter.media.recorder import LEFT, RIGHT, CallRecorder, RecorderWorker, RecordingError

T0 = 100.0


@pytest.fixture
def worker():
    w = RecorderWorker()
    yield w
    w.stop(timeout=10)


def read(path):
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return data[0::2], data[1::2]


def frame(value: int) -> np.ndarray:
    return np.full(160, value, dtype=np.int16)


def test_channels_are_aligned_by_time_and_gaps_are_silence(tmp_path, worker):
    rec = CallRecorder(tmp_path / "calls" / "c1.wav", start=T0, worker=worker)
    for k in range(10):  # the caller talks for 200 ms
        rec.write(LEFT, frame(1000 + k), T0 + 0.02 * k)
    for k in range(5):  # the system answers 100 ms in, for 100 ms
        rec.write_g711(RIGHT, g711.ulaw_encode(frame(-2000)), "PCMU", T0 + 0.1 + 0.02 * k)
    for k in range(3):  # the caller again after 300 ms of silence
        rec.write(LEFT, frame(500), T0 + 0.5 + 0.02 * k)
    path = rec.close().result(timeout=10)
    assert path == tmp_path / "calls" / "c1.wav"
    left, right = read(path)
    assert len(left) == len(right) == 8000 * 0.56
    assert [left[160 * k] for k in range(10)] == [1000 + k for k in range(10)]
    assert not left[1600:4000].any() and (left[4000:4480] == 500).all()
    assert not right[:800].any()
    decoded = g711.ulaw_decode(g711.ulaw_encode(frame(-2000)))[0]
    assert (right[800:1600] == decoded).all() and not right[1600:].any()


def test_small_timing_jitter_does_not_open_gaps(tmp_path, worker):
    rec = CallRecorder(tmp_path / "j.wav", start=T0, worker=worker)
    rng = np.random.default_rng(1)
    pcm = tones.sine(440, 2.0)
    for k in range(100):  # ticks arrive a few ms early or late; catch-up pairs at the same instant
        rec.write(LEFT, pcm[160 * k: 160 * (k + 1)], T0 + 0.02 * k + rng.uniform(-0.004, 0.008))
    left, _ = read(rec.close().result(timeout=10))
    assert np.array_equal(left[: len(pcm)], pcm)  # contiguous: nothing inserted, nothing lost


def test_a_silent_channel_is_padded_and_a_long_recording_is_flushed_in_batches(tmp_path, worker):
    rec = CallRecorder(tmp_path / "long.wav", worker=worker)
    for k in range(500):  # 10 s on the left only
        rec.write(LEFT, frame(7), T0 + 0.02 * k)
    left, right = read(rec.close().result(timeout=10))
    assert len(left) == 80000 and (left == 7).all() and not right.any()


async def test_aclose_returns_the_path_and_close_is_idempotent(tmp_path, worker):
    rec = CallRecorder(tmp_path / "a.wav", worker=worker)
    rec.write(RIGHT, frame(3), T0)
    assert await rec.aclose() == tmp_path / "a.wav"
    assert rec.close() is rec.close() and rec.closed
    rec.write(LEFT, frame(3), T0)  # after close: ignored
    assert read(tmp_path / "a.wav")[1].tolist() == [3] * 160


async def test_tap_helper_fits_an_rtp_audio_tap(tmp_path, worker):
    rec = CallRecorder(tmp_path / "t.wav", start=T0, worker=worker)
    tap = rec.tap(LEFT)
    tap(frame(9), T0)
    left, _ = read(await rec.aclose())
    assert (left == 9).all()


def test_an_empty_recording_is_a_valid_wav(tmp_path, worker):
    left, right = read(CallRecorder(tmp_path / "e.wav", worker=worker).close().result(timeout=10))
    assert len(left) == len(right) == 0


def test_unwritable_path_is_reported_on_close(tmp_path, worker):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    rec = CallRecorder(blocker / "x.wav", worker=worker)
    rec.write(LEFT, frame(1), T0)
    with pytest.raises(RecordingError, match="cannot write recording"):
        rec.close().result(timeout=10)


async def test_many_recordings_share_one_worker(tmp_path, worker):
    recs = [CallRecorder(tmp_path / f"r{i}.wav", start=T0, worker=worker) for i in range(20)]
    for k in range(50):
        for i, rec in enumerate(recs):
            rec.write(LEFT, frame(i), T0 + 0.02 * k)
            rec.write(RIGHT, frame(-i), T0 + 0.02 * k)
    paths = await asyncio.gather(*(r.aclose() for r in recs))
    for i, p in enumerate(paths):
        left, right = read(p)
        assert len(left) == 8000 and (left == i).all() and (right == -i).all()
