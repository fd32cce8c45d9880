"""In-band DTMF: Goertzel detection over 8 kHz int16 audio, and tone generation for sending.

Detection works on blocks of ``BLOCK`` = 102 samples (12.75 ms; bins 78 Hz apart, about the spacing
of the DTMF rows, so a neighbouring row leaks at most about -12 dB even at the ±1.5 % frequency
tolerance of ITU-T Q.24). Each block's power at the eight DTMF frequencies is one DFT bin per
frequency (what a Goertzel filter computes), done for all blocks of a frame by one matrix product.
A block is a *hit* for a key when

* both tones are above ``min_level_db`` (dB below a full-scale sine, per tone),
* the twist between them is within limits (normal: the low/row tone louder; reverse: the high),
* each is the clear maximum of its group (``peak_ratio_db`` above the runner-up), and
* together they hold at least ``purity`` of the block's energy — the test that speech and noise
  fail: their energy is spread over many frequencies, a key's sits in two bins.

A key press is reported once, after ``hits_to_press`` consecutive hits (2 blocks: any tone of 40 ms
covers two whole blocks), and the key is released after ``misses_to_release`` blocks without it,
so a single dropped block inside a long press does not report the digit twice. While a key is held
its tones are judged with looser limits (``HOLD_SLACK_DB``): a signal near a threshold does not
flicker between hit and miss and report one press twice.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from callcenter.media import g711, tones
from callcenter.media.dtmf import END_REPEATS, EVENT_OF, normalize_digit

SAMPLE_RATE: Final = 8000
BLOCK: Final = 102
HOLD_SLACK_DB: Final = 3.0
ROWS: Final = (697.0, 770.0, 852.0, 941.0)
COLS: Final = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS: Final = ("123A", "456B", "789C", "*0#D")  # KEYS[row][col]
FREQS: Final[dict[str, tuple[float, float]]] = {
    KEYS[r][c]: (ROWS[r], COLS[c]) for r in range(4) for c in range(4)
}

Pcm = npt.NDArray[np.int16]


def _basis(block: int, rate: int) -> npt.NDArray[np.float64]:
    n = np.arange(block, dtype=np.float64)
    freqs = np.array(ROWS + COLS, dtype=np.float64)
    phase = 2.0 * np.pi * np.outer(freqs, n) / rate
    return np.vstack([np.cos(phase), np.sin(phase)])  # (16, block): cos rows then sin rows


class InbandDtmfDetector:
    """Feed consecutive int16 frames (any length); ``feed`` returns the digits whose press began."""

    __slots__ = ("block", "hits_to_press", "misses_to_release", "_strict", "_loose", "_basis",
                 "_pending", "_candidate", "_count", "_pressed", "_misses", "blocks")

    def __init__(self, *, rate: int = SAMPLE_RATE, block: int = BLOCK, min_level_db: float = -32.0,
                 normal_twist_db: float = 8.0, reverse_twist_db: float = 6.0,
                 peak_ratio_db: float = 8.0, purity: float = 0.6, hits_to_press: int = 2,
                 misses_to_release: int = 2) -> None:
        self.block = block
        # A sine of amplitude A concentrates A²·N/2 in its bin power normalised by 2/N (below).
        def limits(slack_db: float) -> tuple[float, float, float, float, float]:
            amp = tones.amplitude(min_level_db - slack_db)
            return (amp * amp * block / 2.0,  # minimum energy per tone
                    10.0 ** ((normal_twist_db + slack_db) / 10.0),
                    10.0 ** ((reverse_twist_db + slack_db) / 10.0),
                    10.0 ** ((peak_ratio_db - slack_db) / 10.0),
                    purity * 10.0 ** (-slack_db / 10.0))

        self._strict = limits(0.0)
        self._loose = limits(HOLD_SLACK_DB)
        self.hits_to_press = hits_to_press
        self.misses_to_release = misses_to_release
        self._basis = _basis(block, rate)
        self._pending: npt.NDArray[np.float64] = np.zeros(0, dtype=np.float64)
        self._candidate: str | None = None
        self._count = 0
        self._pressed: str | None = None
        self._misses = 0
        self.blocks = 0  # blocks analysed

    @property
    def pressed(self) -> str | None:
        """The key currently held down, if any."""
        return self._pressed

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.float64)
        self._candidate = None
        self._count = 0
        self._pressed = None
        self._misses = 0

    def feed(self, pcm: g711.PcmLike) -> str:
        samples = np.frombuffer(pcm, dtype=np.int16) if not isinstance(pcm, np.ndarray) else pcm
        x = samples.astype(np.float64)
        if len(self._pending):
            x = np.concatenate((self._pending, x))
        n = self.block
        k = len(x) // n
        self._pending = x[k * n:]
        if not k:
            return ""
        blocks = x[: k * n].reshape(k, n)
        proj = blocks @ self._basis.T  # (k, 16)
        power = proj[:, :8] ** 2 + proj[:, 8:] ** 2
        power *= 2.0 / n  # sinusoid energy in the block, same units as sum(x²)
        total = np.einsum("ij,ij->i", blocks, blocks)
        out = ""
        for i in range(k):
            limits = self._strict if self._pressed is None else self._loose
            out += self._step(self._classify(power[i], float(total[i]), limits))
        self.blocks += k
        return out

    @staticmethod
    def _classify(p: npt.NDArray[np.float64], total: float,
                  limits: tuple[float, float, float, float, float]) -> str | None:
        min_energy, normal_twist, reverse_twist, peak_ratio, purity = limits
        rows = p[:4]
        cols = p[4:]
        r = int(rows.argmax())
        c = int(cols.argmax())
        er = float(rows[r])
        ec = float(cols[c])
        if er < min_energy or ec < min_energy:
            return None
        if er > ec * normal_twist or ec > er * reverse_twist:
            return None
        for i in range(4):
            if (i != r and rows[i] * peak_ratio > er) or (i != c and cols[i] * peak_ratio > ec):
                return None
        if er + ec < purity * total:
            return None
        return KEYS[r][c]

    def _step(self, hit: str | None) -> str:
        if hit is not None and hit == self._candidate:
            self._count += 1
        else:
            self._candidate = hit
            self._count = 1 if hit is not None else 0
        pressed = self._pressed
        if pressed is not None:
            if hit == pressed:
                self._misses = 0
                return ""
            self._misses += 1
            if self._misses < self.misses_to_release:
                return ""
            self._pressed = None
        if hit is not None and self._count >= self.hits_to_press:
            self._pressed = hit
            self._misses = 0
            return hit
        return ""


def dtmf_tone(digit: str, duration: float, *, level_db: float = -10.0, rate: int = SAMPLE_RATE) -> Pcm:
    """The two tones of ``digit`` for ``duration`` seconds, each ``level_db`` below full scale."""
    low, high = FREQS[normalize_digit(digit)]
    return tones.dual_tone(low, high, duration, level_db=level_db, rate=rate)


class InbandTransmitter:
    """Digits as tones in the voice stream: the same per-slot interface as ``Rfc4733Transmitter``.

    Each digit's tone frames replace the audio for ``duration`` samples, followed by ``gap`` samples
    of ordinary audio (silence when nothing plays) so the far end sees separate presses.
    """

    __slots__ = ("payload_type", "samples_per_packet", "_frames", "_index", "done")

    def __init__(self, digits: str, *, payload_type: int, codec: str, samples_per_packet: int,
                 duration: int, gap: int = 480, level_db: float = -10.0) -> None:
        if not digits:
            raise ValueError("no digits to send")
        for d in digits:
            EVENT_OF[normalize_digit(d)]  # validates
        self.payload_type = payload_type
        self.samples_per_packet = spp = samples_per_packet
        n_tone = max(1, -(-duration // spp))
        # The gap is at least as long as an RFC 4733 sender's (its two end retransmissions + gap).
        n_gap = max(1, -(-(gap + (END_REPEATS - 1) * spp) // spp))
        frames: list[bytes | None] = []
        for d in digits:
            pcm = dtmf_tone(d, n_tone * spp / SAMPLE_RATE, level_db=level_db)
            data = g711.encode(pcm, codec)
            frames.extend(data[i: i + spp] for i in range(0, len(data), spp))
            frames.extend([None] * n_gap)
        while frames and frames[-1] is None:
            frames.pop()
        self._frames = frames
        self._index = 0
        self.done = False

    def next(self, slot_ts: int) -> tuple[int, bool, int, bytes] | None:
        if self.done:
            return None
        frame = self._frames[self._index]
        self._index += 1
        if self._index >= len(self._frames):
            self.done = True
        if frame is None:
            return None
        return self.payload_type, False, slot_ts, frame
