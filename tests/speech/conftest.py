"""Shared speech fixtures: engines and models are loaded once per session (they are slow to load and
loop-agnostic: their work runs in their own worker threads)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from callcenter.speech.tts import EspeakNgEngine


@pytest.fixture(scope="session")
def tts() -> Iterator[EspeakNgEngine]:
    engine = EspeakNgEngine()
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def say(tts: EspeakNgEngine):
    """say(text, voice="en-us", **kw) -> 8 kHz int16 audio, cached for the session."""
    memo: dict[tuple, np.ndarray] = {}

    def _say(text: str, voice: str = "en-us", rate: float = 1.0, pitch: float = 1.0) -> np.ndarray:
        key = (text, voice, rate, pitch)
        if key not in memo:
            # its own loop in a helper thread: works from sync and async tests alike
            with ThreadPoolExecutor(1) as ex:
                memo[key] = ex.submit(asyncio.run, tts.synthesize(text, voice, rate, pitch)).result()
        return memo[key]

    return _say
