"""Jitter buffer for inbound G.711 audio: packets in any order in, 20 ms int16 frames out. Sans-I/O.

The consumer calls ``pop()`` once per frame on its own clock (the media scheduler's tick); packets
are ``put`` as they arrive. Audio is placed by RTP timestamp in a ring of G.711 codes, one byte per
sample, so packets of any ptime (10, 20, 30 ms ...) fill the 20 ms frames they overlap.

* Playout starts ``depth`` (default 60 ms) behind the first packet: a packet up to that late still
  finds its slot; later than that it is dropped as *late*. A second copy of audio already buffered
  or played is a *duplicate*.
* A missing frame is *concealed*: the last frame repeated while fading out over three frames
  (1 → 0.6 → 0.3 → 0, ramped per sample so there is no step), then silence.
* Latency is bounded: when packets reach further ahead than ``depth`` + two frames (the first packet
  was delayed, the sender's clock runs fast, a burst), whole frames at the front are *dropped* until
  the buffer holds ``depth`` + one frame again.
* The other way round — the stream now arrives later than ``depth`` behind where it used to (the
  network's delay stepped up, the sender stalled and did not catch up, its clock runs slow) — every
  packet would be late from then on and the stream silent for good. So ``late_resync`` packets late
  in a row, with none taken in between, re-anchor playout ``depth`` behind the latest of them: one
  short gap, then audio again (a fixed buffer's resync, as Asterisk's and PJSIP's do).
* Timestamps are compared in serial-number arithmetic (RFC 1982), so wrap-around is seamless. A new
  SSRC restarts the buffer; so does a timestamp jump beyond ``resync_ms`` confirmed by the next
  packet (one stray packet does not).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from callcenter.media import g711

Pcm = npt.NDArray[np.int16]

_M32: Final = 0xFFFFFFFF
_HALF: Final = 1 << 31
_EMPTY, _RECEIVED, _PLAYED = 0, 1, 2
_MARK_PLAYED: Final = bytes([_EMPTY, _PLAYED, _PLAYED]) + bytes(253)  # translate table: 1 -> 2
# Concealment gains at frame boundaries: repeat the last frame, fade it out over three frames.
_FADE: Final = (1.0, 0.6, 0.3, 0.0)
_TRANSCODE: Final = {("PCMU", "PCMA"): g711.ULAW_TO_ALAW, ("PCMA", "PCMU"): g711.ALAW_TO_ULAW}


class JitterBuffer:
    """One inbound stream's reorder/loss buffer. Not thread-safe; lives on the event loop."""

    __slots__ = (
        "codec", "clock_rate", "frame", "depth", "max_ahead", "resync", "ring_size", "history",
        "ssrc", "played", "concealed", "lost", "late", "duplicates", "dropped", "restarts",
        "packets", "strays", "ignored", "late_resync", "_data", "_mask", "_silence", "_decode",
        "_started", "_next", "_anchor", "_last", "_fade_pos", "_fades", "_probe", "_late_run",
    )

    def __init__(self, codec: str = "PCMU", *, depth_ms: int = 60, frame_ms: int = 20,
                 clock_rate: int = 8000, resync_ms: int = 1000, late_resync: int = 5) -> None:
        codec = codec.upper()
        if codec not in g711.SILENCE_CODE:
            raise ValueError(f"not a G.711 codec: {codec!r}")
        if depth_ms < 0 or frame_ms <= 0:
            raise ValueError("depth_ms must be >= 0 and frame_ms > 0")
        if late_resync < 1:
            raise ValueError("late_resync must be >= 1")
        self.codec = codec
        self.clock_rate = clock_rate
        self.frame = clock_rate * frame_ms // 1000
        self.depth = clock_rate * depth_ms // 1000
        self.max_ahead = self.depth + 2 * self.frame  # beyond this, drop frames at the front
        self.resync = clock_rate * resync_ms // 1000
        self.late_resync = late_resync
        # Ring: half for what lies ahead of the playout point, half remembering what was played
        # (to tell a duplicate from a late packet).
        self.ring_size = max(4 * (self.max_ahead + self.frame), 2 * self.resync)
        self.history = self.ring_size // 2
        self.ssrc: int | None = None
        # counters: frames out = played + concealed
        self.played = 0  # frames holding received audio
        self.concealed = 0  # frames made up (loss, gaps, the lead-in after a restart)
        self.lost = 0  # concealed frames at positions the stream had reached (subset of concealed)
        self.late = 0  # packets that came after their frame was played
        self.duplicates = 0  # packets whose audio was already buffered or played
        self.dropped = 0  # frames skipped unplayed to bound the latency
        self.restarts = 0  # SSRC changes, timestamp jumps and re-anchors after a run of late packets
        self.packets = 0  # packets accepted into the buffer
        self.strays = 0  # packets far off the stream's timeline that did not start a new one
        self.ignored = 0  # empty or oversized payloads
        silence = g711.SILENCE_CODE[codec]
        self._silence = silence
        self._data = bytearray([silence]) * self.ring_size
        self._mask = bytearray(self.ring_size)
        self._decode = g711.ulaw_decode if codec == "PCMU" else g711.alaw_decode
        self._started = False
        self._next = 0  # unwrapped timestamp of the next frame to pop
        self._anchor = 0  # first timestamp of the current stream: frames before it are lead-in
        self._last: Pcm | None = None  # the last frame that held audio
        self._fade_pos = 0  # frames concealed since then
        self._fades = self._fade_ramps()
        self._probe: tuple[int, int, bytes] | None = None  # (expected next ts, ts, payload)
        self._late_run = 0  # packets late in a row (none taken since)

    # --- the producer side -------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._started

    @property
    def next_timestamp(self) -> int:
        """RTP timestamp of the frame the next ``pop`` returns."""
        return self._next & _M32

    @property
    def buffered(self) -> int:
        """Samples received ahead of the playout point (including gaps between them)."""
        if not self._started:
            return 0
        n = min(self.history, self.ring_size - self.history)
        m = self._window(self._mask, self._next, n)
        end = m.rfind(_RECEIVED)
        return end + 1

    def put(self, ssrc: int, timestamp: int, payload: bytes, codec: str | None = None) -> bool:
        """Add one packet's audio; ``codec`` is its G.711 flavour if not the buffer's own.

        Returns True if (some of) its audio was taken, False if it was late, a duplicate or a stray.
        """
        n = len(payload)
        if not n or n > self.ring_size - self.history - self.max_ahead:
            self.ignored += 1
            return False
        if codec is not None and codec != self.codec:
            table = _TRANSCODE.get((codec.upper(), self.codec))
            if table is not None:
                payload = payload.translate(table)
        if ssrc != self.ssrc or not self._started:
            self._restart(ssrc, timestamp)
        delta = ((timestamp - self._next) & _M32)
        if delta >= _HALF:
            delta -= 1 << 32
        # More than ``resync`` away from the playout point: a new timeline if the next packet
        # continues it (RFC 3550 A.1 uses the same two-packet test for sequence jumps).
        if delta > self.resync or delta + n < -self.resync:
            probe = self._probe
            if probe is not None and probe[0] == timestamp:
                self._restart(ssrc, probe[1])
                self.strays -= 1  # it started the new timeline after all
                self._store(self._anchor, probe[2])
                return self.put(ssrc, timestamp, payload)
            self._probe = ((timestamp + n) & _M32, timestamp, payload)
            self.strays += 1
            return False
        self._probe = None
        pos = self._next + delta
        if pos + n <= self._next:
            # Entirely behind the playout point: a copy of what played, or too late.
            if self._mask[pos % self.ring_size] == _PLAYED and -delta <= self.history:
                self.duplicates += 1
                return False
            self.late += 1
            self._late_run += 1
            if self._late_run < self.late_resync:
                return False
            # The stream runs behind our playout for good: play it ``depth`` behind again.
            self.late -= 1
            self._anchor_at(pos)
        over = pos + n - self._next - self.max_ahead
        if over > 0:
            # Too far ahead: skip whole frames so that depth + one frame stays buffered. (Before
            # storing: the ring only holds ``ring_size - history`` samples ahead.)
            frames = -(-(over + self.frame) // self.frame)
            self.dropped += frames
            self._advance(frames * self.frame)
        if pos < self._next:  # straddles the playout point: keep what is still ahead
            cut = self._next - pos
            payload = payload[cut:]
            pos += cut
            n -= cut
        if self._window(self._mask, pos, n).find(_RECEIVED) >= 0:
            self.duplicates += 1
            return False
        self._store(pos, payload)
        self._late_run = 0
        return True

    def _store(self, pos: int, payload: bytes) -> None:
        n = len(payload)
        self._set(self._data, pos, payload)
        self._set(self._mask, pos, b"\x01" * n)
        self.packets += 1

    # --- the consumer side -------------------------------------------------------------------

    def pop(self) -> Pcm | None:
        """The next 20 ms frame (int16, a new array); None until the first packet arrived."""
        if not self._started:
            return None
        f = self.frame
        pos = self._next
        received = self._window(self._mask, pos, f).count(_RECEIVED)
        if received:
            pcm = self._decode(bytes(self._window(self._data, pos, f)))
            self._last = pcm
            self._fade_pos = 0
            self.played += 1
        else:
            pcm = self._conceal()
            self.concealed += 1
            if pos >= self._anchor:
                self.lost += 1
        self._advance(f)
        return pcm

    def reset(self) -> None:
        """Forget the stream; the next packet starts it anew (as after an SSRC change)."""
        self._started = False
        self.ssrc = None
        self._probe = None

    def _conceal(self) -> Pcm:
        k = self._fade_pos
        self._fade_pos += 1
        last = self._last
        if last is None or k >= len(self._fades) or len(last) != self.frame:
            return np.zeros(self.frame, dtype=np.int16)
        return (last * self._fades[k]).astype(np.int16)

    def _fade_ramps(self) -> list[npt.NDArray[np.float64]]:
        f = self.frame
        t = np.arange(f, dtype=np.float64) / f
        return [a + (b - a) * t for a, b in zip(_FADE, _FADE[1:], strict=False)]

    # --- ring housekeeping -------------------------------------------------------------------

    def _restart(self, ssrc: int, timestamp: int) -> None:
        self.ssrc = ssrc
        # Unwrapped positions continue from where playout is, so ``lost`` keeps counting sensibly.
        self._anchor_at(self._next - (self._next & _M32) + timestamp)

    def _anchor_at(self, pos: int) -> None:
        """Start a timeline whose first sample is at unwrapped position ``pos``: playout ``depth``
        behind it, the ring emptied."""
        if self._started:
            self.restarts += 1
        self._started = True
        self._probe = None
        self._late_run = 0
        self._data[:] = bytes([self._silence]) * self.ring_size
        self._mask[:] = bytes(self.ring_size)
        self._next = pos - self.depth
        self._anchor = pos

    def _advance(self, n: int) -> None:
        """Move the playout point ``n`` samples on: what it passes counts as played, and the
        oldest history is wiped so the ring can hold what lies furthest ahead."""
        pos = self._next
        r = self.ring_size
        if n >= r:
            self._data[:] = bytes([self._silence]) * r
            self._mask[:] = bytes(r)
        else:
            self._set(self._mask, pos, self._window(self._mask, pos, n).translate(_MARK_PLAYED))
            old = pos - self.history
            self._set(self._data, old, bytes([self._silence]) * n)
            self._set(self._mask, old, bytes(n))
        self._next = pos + n

    def _window(self, buf: bytearray, pos: int, n: int) -> bytearray:
        i = pos % self.ring_size
        j = i + n
        if j <= self.ring_size:
            return buf[i:j]
        return buf[i:] + buf[: j - self.ring_size]

    def _set(self, buf: bytearray, pos: int, data: bytes | bytearray) -> None:
        i = pos % self.ring_size
        j = i + len(data)
        if j <= self.ring_size:
            buf[i:j] = data
        else:
            k = self.ring_size - i
            buf[i:] = data[:k]
            buf[: j - self.ring_size] = data[k:]
