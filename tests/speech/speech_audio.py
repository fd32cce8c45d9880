"""Audio helpers for the speech tests (imported as a top-level module, like tests/sip/corpus.py)."""

from __future__ import annotations

import numpy as np


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 8000), dtype=np.int16)


def with_noise(pcm: np.ndarray, snr_db: float, reference: np.ndarray, seed: int = 1) -> np.ndarray:
    """``pcm`` plus white noise whose power is ``snr_db`` below the power of ``reference``."""
    rng = np.random.default_rng(seed)
    p = float(np.mean(reference.astype(np.float64) ** 2))
    noise = rng.standard_normal(len(pcm)) * np.sqrt(p / 10 ** (snr_db / 10))
    return np.clip(pcm + noise, -32768, 32767).astype(np.int16)


def voice_like(seconds: float) -> np.ndarray:
    """A voice-like harmonic signal (150 Hz and harmonics, 4 Hz syllable swell) webrtcvad calls speech."""
    t = np.arange(int(seconds * 8000)) / 8000
    x = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((150, 300, 450, 900, 1350), 1))
    return (x * 4000 * (1 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.int16)
