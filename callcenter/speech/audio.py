"""Small audio helpers shared by the engines: int16 conversion, soxr resampling, 8 kHz WAV files."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

from callcenter.speech.base import FRAME_SAMPLES, SAMPLE_RATE, Pcm8k, PcmLike, SpeechError


def as_pcm(data: PcmLike) -> Pcm8k:
    """int16 samples from an int16 array (returned as is) or bytes holding native int16 samples."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.int16:
            raise ValueError(f"PCM must be int16, got {data.dtype}")
        return data
    if len(data) % 2:
        raise ValueError("PCM bytes must hold whole 16-bit samples")
    return np.frombuffer(data, dtype=np.int16)


def to_float32(pcm: Pcm8k) -> npt.NDArray[np.float32]:
    """int16 → float32 in [-1, 1)."""
    return pcm.astype(np.float32) * np.float32(1.0 / 32768.0)


def to_int16(x: npt.NDArray[np.floating]) -> Pcm8k:
    """float in [-1, 1] → int16, clipped."""
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


def resample(pcm: Pcm8k, src_rate: int, dst_rate: int) -> Pcm8k:
    """Resample int16 audio with soxr HQ (a proper low-pass: naive interpolation aliases audibly)."""
    if src_rate == dst_rate or len(pcm) == 0:
        return pcm
    out = soxr.resample(pcm, src_rate, dst_rate, quality="HQ")
    return np.asarray(out, dtype=np.int16)


def frames(pcm: Pcm8k, size: int = FRAME_SAMPLES) -> Iterator[Pcm8k]:
    """Consecutive frames of ``size`` samples; a short last frame is padded with silence."""
    for i in range(0, len(pcm), size):
        f = pcm[i : i + size]
        if len(f) < size:
            f = np.concatenate([f, np.zeros(size - len(f), dtype=np.int16)])
        yield f


def wav_bytes(pcm: Pcm8k, rate: int = SAMPLE_RATE) -> bytes:
    """A mono 16-bit PCM WAV file holding ``pcm``."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
    return buf.getvalue()


def read_wav(data: bytes | Path) -> tuple[Pcm8k, int]:
    """Samples and rate of a mono 16-bit PCM WAV (what ``wav_bytes`` and espeak-ng write)."""
    raw = data.read_bytes() if isinstance(data, Path) else data
    try:
        with wave.open(io.BytesIO(raw), "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise SpeechError("expected a mono 16-bit WAV")
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
            return pcm, w.getframerate()
    except (wave.Error, EOFError) as e:
        raise SpeechError(f"not a readable WAV: {e}") from None
