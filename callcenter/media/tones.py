"""Generated audio, int16 at 8 kHz (or ``rate``): tones, call-progress cadences, silence, noise.

Levels are in dB relative to a full-scale sine (0 dB = peak 32767). Call-progress tones follow the
North American plan (ANSI T1.401 / ITU-T E.180 supplement): ringback 440+480 Hz, 2 s on 4 s off;
busy 480+620 Hz, 0.5 s on 0.5 s off. One returned array is one cadence cycle, so looping it
(``source.encode_frames`` + ``itertools.cycle``) gives the continuous signal: the cycles hold a
whole number of periods of every frequency, so the loop point is seamless.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000
_FULL_SCALE = 32767.0

Pcm = npt.NDArray[np.int16]


def _samples(duration: float, rate: int) -> int:
    if duration < 0:
        raise ValueError("duration must be >= 0")
    return round(duration * rate)


def amplitude(level_db: float) -> float:
    """Peak amplitude of a sine at ``level_db`` below full scale."""
    return _FULL_SCALE * 10.0 ** (level_db / 20.0)


def silence(duration: float, rate: int = SAMPLE_RATE) -> Pcm:
    return np.zeros(_samples(duration, rate), dtype=np.int16)


def _tones(freqs: tuple[float, ...], duration: float, level_db: float, rate: int) -> Pcm:
    n = _samples(duration, rate)
    t = np.arange(n, dtype=np.float64) / rate
    acc = np.zeros(n, dtype=np.float64)
    for f in freqs:
        if not 0 < f < rate / 2:
            raise ValueError(f"frequency {f} Hz must be between 0 and {rate / 2} Hz")
        acc += np.sin(2.0 * np.pi * f * t)
    acc *= amplitude(level_db)
    return np.clip(np.rint(acc), -32768, 32767).astype(np.int16)


def sine(freq: float, duration: float, *, level_db: float = -10.0, rate: int = SAMPLE_RATE) -> Pcm:
    """A pure tone, e.g. ``sine(440, 1.0)``."""
    return _tones((freq,), duration, level_db, rate)


def dual_tone(f1: float, f2: float, duration: float, *, level_db: float = -16.0,
              rate: int = SAMPLE_RATE) -> Pcm:
    """Two tones summed, each at ``level_db``."""
    return _tones((f1, f2), duration, level_db, rate)


def cadence(tone: Pcm, off: float, rate: int = SAMPLE_RATE) -> Pcm:
    """One cycle: ``tone`` followed by ``off`` seconds of silence."""
    return np.concatenate([tone, silence(off, rate)])


def ringback(rate: int = SAMPLE_RATE) -> Pcm:
    """One 6 s ringback cycle: 440+480 Hz for 2 s, then 4 s silence."""
    return cadence(dual_tone(440, 480, 2.0, level_db=-19.0, rate=rate), 4.0, rate)


def busy(rate: int = SAMPLE_RATE) -> Pcm:
    """One 1 s busy cycle: 480+620 Hz for 0.5 s, then 0.5 s silence."""
    return cadence(dual_tone(480, 620, 0.5, level_db=-24.0, rate=rate), 0.5, rate)


def comfort_noise(duration: float, *, level_db: float = -60.0, seed: int | None = None,
                  rate: int = SAMPLE_RATE) -> Pcm:
    """Low-level white noise whose RMS equals that of a sine at ``level_db``.

    Played in place of digital silence so listeners do not think the line went dead. (RFC 3389 CN
    payloads, which let the peer generate it, can come later.)
    """
    rng = np.random.default_rng(seed)
    rms = amplitude(level_db) / np.sqrt(2.0)
    noise = rng.standard_normal(_samples(duration, rate)) * rms
    return np.clip(np.rint(noise), -32768, 32767).astype(np.int16)


def hold_music(rate: int = SAMPLE_RATE, *, level_db: float = -20.0) -> Pcm:
    """One 6.4 s cycle of a soft arpeggio (C major, then A minor), each note a decaying sine with a
    quiet fifth: generated, so the package ships no licensed music. Phones' narrow band (300-3400 Hz)
    keeps the notes between 260 and 1050 Hz."""
    notes = (261.63, 329.63, 392.00, 523.25, 392.00, 329.63, 261.63, 329.63,
             220.00, 261.63, 329.63, 440.00, 329.63, 261.63, 220.00, 261.63)
    note_s = 0.4
    n = _samples(note_s, rate)
    t = np.arange(n, dtype=np.float64) / rate
    # 10 ms attack and 20 ms release: no clicks between notes
    envelope = np.exp(-3.0 * t) * np.minimum(1.0, t / 0.01) * np.minimum(1.0, (note_s - t) / 0.02)
    peak = amplitude(level_db)
    parts = []
    for f in notes:
        wave = np.sin(2.0 * np.pi * f * t) + 0.3 * np.sin(2.0 * np.pi * f * 1.5 * t)
        parts.append(wave * envelope * (peak / 1.3))
    out = np.concatenate(parts)
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)
