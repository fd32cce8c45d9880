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
