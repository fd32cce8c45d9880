"""Prompt loading: WAV formats, resampling, G.711 frames, memory and disk caches, errors."""

import asyncio
import os
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callcenter.media import g711, tones
from callcenter.media.playback import Prompt, PromptCache, PromptError, _parse_wav, load_prompt, read_wav

GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def write_wav(path, data: bytes, *, tag=1, channels=1, rate=8000, bits=16, extensible=False,
              extra_chunk=False):
    block = channels * ((bits + 7) // 8)
    if extensible:
        fmt = struct.pack("<HHIIHH", 0xFFFE, channels, rate, rate * block, block, bits)
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + GUID_TAIL
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    if extra_chunk:  # an odd-sized chunk before the data, padded to even length
        chunks += b"LIST" + struct.pack("<I", 3) + b"abc\x00"
    chunks += b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)
    return path


def sine(freq, seconds, rate, amp=0.5):
    t = np.arange(round(seconds * rate)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def peak_hz(pcm):
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.fft.rfftfreq(len(pcm), 1 / 8000)[np.argmax(spectrum)])


def decoded(prompt: Prompt) -> np.ndarray:
    return g711.decode(b"".join(prompt.frames), prompt.codec)


def encodings(x: np.ndarray):
    """(name, bytes, tag, bits) of float samples in [-1, 1] in every supported sample format."""
    i16 = np.round(x * 32767).astype("<i2")
    i32 = np.round(x * (2**31 - 1)).astype("<i4")
    i24 = np.round(x * (2**23 - 1)).astype("<i4")
    b24 = np.stack([(i24 & 0xFF), (i24 >> 8) & 0xFF, (i24 >> 16) & 0xFF], axis=-1).astype(np.uint8)
    return [
        ("u8", np.round(x * 127 + 128).astype(np.uint8).tobytes(), 1, 8),
        ("s16", i16.tobytes(), 1, 16),
        ("s24", b24.tobytes(), 1, 24),
        ("s32", i32.tobytes(), 1, 32),
        ("f32", x.astype("<f4").tobytes(), 3, 32),
        ("f64", x.astype("<f8").tobytes(), 3, 64),
        ("alaw", g711.alaw_encode(i16), 6, 8),
        ("ulaw", g711.ulaw_encode(i16), 7, 8),
    ]


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_any_format_rate_and_channel_count_becomes_8k_mono(tmp_path, rate, channels):
    x = sine(1000, 0.5, rate)
    interleaved = np.repeat(x, channels) if channels > 1 else x
    for name, data, tag, bits in encodings(interleaved):
        path = write_wav(tmp_path / f"{name}.wav", data, tag=tag, channels=channels, rate=rate, bits=bits,
                         extensible=name in ("s24", "f32"))
        prompt = PromptCache().load(path, "PCMU")
        pcm = decoded(prompt)
        assert len(pcm) == 4000, name
        assert peak_hz(pcm[400:3600]) == pytest.approx(1000, abs=3), name
        rms = np.sqrt(np.mean(pcm[400:3600].astype(np.float64) ** 2))
        assert rms == pytest.approx(0.5 * 32768 / np.sqrt(2), rel=0.05), name


def test_resampling_does_not_alias(tmp_path):
    # A 6 kHz tone in a 48 kHz file is above the 4 kHz Nyquist limit of 8 kHz audio: a proper
    # low-pass removes it; naive decimation would fold it down to 2 kHz.
    x = sine(6000, 1.0, 48000, amp=0.8) + sine(500, 1.0, 48000, amp=0.1)
    path = write_wav(tmp_path / "hi.wav", np.round(x * 32767).astype("<i2").tobytes(), rate=48000)
    pcm = decoded(PromptCache().load(path, "PCMA")).astype(np.float64)
    assert peak_hz(pcm) == pytest.approx(500, abs=3)
    spectrum = np.abs(np.fft.rfft(pcm[800:-800]))
    freqs = np.fft.rfftfreq(len(pcm[800:-800]), 1 / 8000)
    alias = spectrum[np.abs(freqs - 2000) < 50].max()
    assert alias < spectrum.max() / 100


def test_8k_mono_16bit_passes_through_unchanged(tmp_path):
    pcm = tones.sine(440, 0.33)  # 2640 samples: 16.5 frames
    path = write_wav(tmp_path / "p.wav", pcm.astype("<i2").tobytes(), extra_chunk=True)
    prompt = PromptCache().load(path, "PCMU", ptime_ms=20)
    assert len(prompt) == 17 and all(len(f) == 160 for f in prompt.frames)
    assert prompt.frames[-1][80:] == g711.silence("PCMU", 80)
    assert b"".join(prompt.frames)[: len(pcm)] == g711.ulaw_encode(pcm)
    assert prompt.duration == pytest.approx(0.34)
    assert list(prompt) == list(prompt.frames)  # plays directly: RtpSession.play(prompt)
    assert len(PromptCache().load(path, "PCMU", ptime_ms=30).frames[0]) == 240


def test_memory_cache_hits_and_file_changes(tmp_path):
    path = write_wav(tmp_path / "m.wav", tones.sine(440, 0.1).tobytes())
    cache = PromptCache()
    first = cache.load(path, "PCMU")
    assert cache.load(path, "PCMU") is first and cache.hits == 1
    assert cache.load(path, "PCMA") is not first  # a different codec: another entry
    write_wav(path, tones.sine(880, 0.2).tobytes())
    os.utime(path, ns=(1, 1_000_000_000))  # a new mtime (and size)
    changed = cache.load(path, "PCMU")
    assert changed is not first and len(changed) == 10
    assert cache.conversions == 3


def test_disk_cache_survives_a_restart_and_drops_stale_files(tmp_path):
    path = write_wav(tmp_path / "d.wav", tones.sine(440, 0.2).tobytes())
    cache_dir = tmp_path / "cache"
    a = PromptCache(cache_dir).load(path, "PCMA")
    files = list(cache_dir.iterdir())
    assert [f.suffix for f in files] == [".alaw"]
    assert files[0].read_bytes() == b"".join(a.frames)[: len(files[0].read_bytes())]
    restarted = PromptCache(cache_dir)
    b = restarted.load(path, "PCMA")
    assert (restarted.disk_hits, restarted.conversions) == (1, 0)
    assert b.frames == a.frames
    write_wav(path, tones.sine(440, 0.3).tobytes())
    os.utime(path, ns=(1, 2_000_000_000))
    restarted.load(path, "PCMA")
    assert len(list(cache_dir.iterdir())) == 1  # the stale conversion was removed
    PromptCache(cache_dir).load(path, "PCMU")
    assert sorted(f.suffix for f in cache_dir.iterdir()) == [".alaw", ".ulaw"]


def test_lru_is_bounded_by_bytes(tmp_path):
    cache = PromptCache(max_bytes=3000)
    paths = [write_wav(tmp_path / f"{i}.wav", tones.sine(440, 0.2).tobytes()) for i in range(3)]
    p0 = cache.load(paths[0])
    cache.load(paths[1])  # 1600 bytes each: the first is evicted
    assert cache.load(paths[1]) is not None and cache.hits == 1
    assert cache.load(paths[0]) is not p0


@pytest.mark.parametrize(("content", "message"), [
    (None, "file not found"),
    (b"", "not a WAV file"),
    (b"ID3\x03 an mp3 file", "not a WAV file"),
    (b"RIFF\x04\x00\x00\x00WAVE", "no fmt chunk"),
])
def test_unreadable_files_raise_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PromptError, match=message) as e:
        PromptCache().load(path, "PCMU")
    assert str(path) in str(e.value)


def test_unsupported_encoding_and_empty_data(tmp_path):
    mp3 = write_wav(tmp_path / "mp3.wav", b"\x00" * 100, tag=0x55, bits=0)
    with pytest.raises(PromptError, match="unsupported WAV encoding .*0x0055"):
        read_wav(mp3)
    empty = write_wav(tmp_path / "empty.wav", b"")
    with pytest.raises(PromptError, match="no audio"):
        read_wav(empty)
    with pytest.raises(PromptError, match="is a directory"):
        read_wav(tmp_path)


async def test_load_prompt_runs_in_a_thread_and_concurrent_loads_convert_once(tmp_path):
    path = write_wav(tmp_path / "c.wav", tones.sine(440, 1.0).tobytes())
    cache = PromptCache()
    prompts = await asyncio.gather(*(load_prompt(path, "PCMU", cache=cache) for _ in range(20)))
    assert cache.conversions == 1
    assert all(p.frames == prompts[0].frames for p in prompts)
    with pytest.raises(PromptError):
        await load_prompt(tmp_path / "missing.wav", cache=cache)
    with pytest.raises(ValueError):
        await load_prompt(path, "G729", cache=cache)


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_prompt_error(data):
    try:
        samples, rate = _parse_wav(b"RIFF\x00\x00\x00\x00WAVE" + data)
    except PromptError:
        return
    assert samples.ndim == 2 and rate > 0 and samples.size > 0
