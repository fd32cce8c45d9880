"""Audio measurements for end-to-end tests: WAV in and out, correlation, tone share.

Used to check that what a peer sent is what the server recorded (G.711 on the way, so never
sample-exact: compare by normalised cross-correlation) and that a side heard the demo tone.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]


def write_pcm_wav(path: Path, pcm: Samples, rate: int = 8000) -> Path:
    """A mono 16-bit WAV holding `pcm` (baresip's aufile wants 8 kHz mono)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    return path


def read_wav(path: Path) -> tuple[int, Samples]:
    """(sample rate, samples shaped (frames, channels)) of a 16-bit PCM WAV."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * w.getsampwidth()}-bit samples, expected 16-bit")
        rate, channels = w.getframerate(), w.getnchannels()
        raw = w.readframes(w.getnframes())
    return rate, np.frombuffer(raw, dtype="<i2").astype(np.int16).reshape(-1, channels)


def best_correlation(recorded: Samples, sent: Samples) -> float:
    """Peak normalised cross-correlation of `sent` against `recorded` over every lag (-1..1).

    0 when `recorded` is shorter than `sent` at the best lag (the audio was cut short).
    """
    rec = recorded.astype(np.float64)
    ref = sent.astype(np.float64)
    n = len(rec) + len(ref)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(ref, size)), size)
    best_lag = int(np.argmax(np.abs(corr[: len(rec)])))
    window = rec[best_lag : best_lag + len(ref)]
    if len(window) < len(ref):
        return 0.0
    return float(np.dot(window, ref) / (np.linalg.norm(window) * np.linalg.norm(ref) + 1e-9))


def tone_fraction(pcm: Samples, hz: float, rate: int = 8000, width_hz: float = 15.0) -> float:
    """Share of the spectral energy of `pcm` within `width_hz` of `hz` (0..1)."""
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / rate)
    band = np.abs(freqs - hz) < width_hz
    return float(spectrum[band].sum() / (spectrum.sum() + 1e-9))
