import numpy as np
import pytest

from callcenter.media import tones


def peaks(x, n=2, rate=8000):
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return sorted(freqs[np.argsort(spectrum)[-n:]])


def test_sine_frequency_level_and_length():
    x = tones.sine(440, 1.0, level_db=-6.0)
    assert x.dtype == np.int16 and len(x) == 8000
    assert peaks(x, 1) == [440.0]
    assert np.abs(x).max() == pytest.approx(32767 * 10 ** (-6 / 20), rel=0.01)


def test_dual_tone_has_both_frequencies():
    assert peaks(tones.dual_tone(480, 620, 1.0)) == [480.0, 620.0]


def test_ringback_cadence():
    x = tones.ringback()
    assert len(x) == 6 * 8000
    assert peaks(x[: 2 * 8000]) == [440.0, 480.0]
    assert np.abs(x[: 2 * 8000]).max() > 1000
    assert not x[2 * 8000 :].any()


def test_busy_cadence():
    x = tones.busy()
    assert len(x) == 8000
    assert peaks(x[:4000]) == [480.0, 620.0]
    assert not x[4000:].any()


def test_cycles_loop_without_a_click():
    for x in (tones.sine(440, 1.0), tones.dual_tone(440, 480, 2.0)):
        looped = np.concatenate([x, x]).astype(np.int32)
        assert np.abs(np.diff(looped)).max() <= np.abs(np.diff(x.astype(np.int32))).max() + 1


def test_silence_and_comfort_noise():
    assert not tones.silence(0.5).any() and len(tones.silence(0.5)) == 4000
    n = tones.comfort_noise(2.0, level_db=-50.0, seed=1)
    rms = np.sqrt(np.mean(n.astype(np.float64) ** 2))
    assert rms == pytest.approx(32767 * 10 ** (-50 / 20) / np.sqrt(2), rel=0.05)
    assert np.array_equal(n, tones.comfort_noise(2.0, level_db=-50.0, seed=1))
    assert n.any()


def test_bad_arguments():
    with pytest.raises(ValueError):
        tones.sine(5000, 1.0)  # above Nyquist at 8 kHz
    with pytest.raises(ValueError):
        tones.silence(-1)
