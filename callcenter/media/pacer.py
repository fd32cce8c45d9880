"""Packet pacing against absolute deadlines, and the per-stream RTP send state. Sans-I/O.

``Pacer``: packet *n* is due at ``start + n * interval`` (never "previous send + interval", which
drifts by every wake-up's lateness). After a stall of more than ``max_catchup`` packets it skips the
missed slots instead of bursting them, and tells the caller how many it skipped so the RTP
timestamp can jump by the same amount (RFC 3550 §5.1: the timestamp follows the sampling clock; a
jump reads as a gap the receiver conceals).

``RtpSender``: one outbound stream (SSRC, sequence, timestamp, marker) fed with pre-encoded frames.
``poll(now, send)`` emits what is due; ``MediaScheduler`` (session.py) calls it for every stream
from one tick. Two other things share the stream's SSRC, sequence numbers and timestamp clock:

* DTMF transmitters (``send_events``): while one is active it decides each slot's packet (RFC 4733
  events or in-band tone frames); the playing source pauses meanwhile.
* Relayed packets (``relay``, used by bridges): sent as they arrive, their timestamps moved by an
  offset chosen so that the stream continues where our own packets left off; while relayed packets
  keep coming our own slots stay silent, and ``relay_hold`` after the last one our frames resume.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Final, Protocol

from callcenter.media import g711
from callcenter.media.rtp import HEADER, VERSION_BITS

_EPS: Final = 1e-9  # absorbs float error when ``now`` is exactly a deadline
_M32: Final = 0xFFFFFFFF
_HALF: Final = 1 << 31


def _later(a: int, b: int) -> bool:
    """RTP timestamp ``a`` is after ``b`` (serial-number arithmetic, RFC 1982)."""
    return 0 < (a - b) & _M32 < _HALF


class EventTransmitter(Protocol):
    """Per-slot packet source for DTMF (``dtmf.Rfc4733Transmitter``, ``dtmf_inband.InbandTransmitter``)."""

    @property
    def done(self) -> bool: ...

    def next(self, slot_ts: int) -> tuple[int, bool, int, bytes] | None:
        """``(payload_type, marker, timestamp, payload)`` for the slot at ``slot_ts``, or None to let
        the slot carry the ordinary audio."""
        ...


class Pacer:
    """Which slots of a fixed-interval schedule are due at ``now``."""

    __slots__ = ("interval", "start", "max_catchup", "next_index")

    def __init__(self, interval: float, start: float, max_catchup: int = 2) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.start = start
        self.max_catchup = max_catchup
        self.next_index = 0  # the first slot not yet handed out

    def deadline(self, index: int) -> float:
        return self.start + index * self.interval

    def next_deadline(self) -> float:
        return self.start + self.next_index * self.interval

    def due(self, now: float) -> tuple[int, int]:
        """``(send, skip)``: send ``send`` packets now, after skipping ``skip`` slots."""
        reached = math.floor((now - self.start) / self.interval + _EPS) + 1  # slots with deadline <= now
        pending = reached - self.next_index
        if pending <= 0:
            return 0, 0
        self.next_index = reached
        if pending > self.max_catchup:
            return 1, pending - 1
        return pending, 0


def encode_frames(pcm: g711.PcmLike, codec: str, ptime_ms: int = 20,
                  rate: int = g711.SAMPLE_RATE) -> list[bytes]:
    """Cut int16 audio into ``ptime_ms`` frames encoded with ``codec``; the last is padded with silence.

    Do this once per prompt (and cache it): the send path then only slices nothing and copies nothing.
    """
    data = g711.encode(pcm, codec)
    n = rate * ptime_ms // 1000
    if len(data) % n:
        data += g711.silence(codec, n - len(data) % n)
    return [data[i : i + n] for i in range(0, len(data), n)]


def looping(frames: Iterable[bytes]) -> Iterator[bytes]:
    """Repeat ``frames`` forever (tones, music on hold)."""
    return itertools.cycle(frames)


class RtpSender:
    """Send state of one RTP stream. Not thread-safe; driven from the event loop."""

    __slots__ = (
        "ssrc", "payload_type", "sequence", "timestamp", "clock_rate", "ptime", "samples_per_packet",
        "idle_frame", "enabled", "packets_sent", "octets_sent", "skipped_slots", "pacer",
        "_marker", "_source", "_on_done", "_anchor_time", "_anchor_ts", "max_catchup",
        "on_frame", "relay_hold", "_events", "_relay_until", "_relay_ssrc",
        "_relay_offset", "_relay_src_last", "_relay_last_ts", "_relayed",
    )

    def __init__(self, *, ssrc: int, payload_type: int, sequence: int, timestamp: int,
                 ptime: float = 0.02, clock_rate: int = 8000, idle_frame: bytes | None = None,
                 max_catchup: int = 2) -> None:
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.sequence = sequence & 0xFFFF
        self.timestamp = timestamp & 0xFFFFFFFF  # of the next slot
        self.clock_rate = clock_rate
        self.ptime = ptime
        self.samples_per_packet = round(ptime * clock_rate)
        # Sent when no source plays, so the peer keeps hearing us (NAT bindings, its RTP timeout);
        # None: send nothing while idle (the timestamp still advances).
        self.idle_frame = idle_frame
        self.enabled = True  # False while the peer holds us: slots pass, nothing is sent
        self.max_catchup = max_catchup
        self.packets_sent = 0
        self.octets_sent = 0  # payload octets, as RTCP SR counts them
        self.skipped_slots = 0
        self.pacer: Pacer | None = None
        self._marker = True  # first packet of the stream (RFC 3551 §4.1)
        self._source: Iterator[bytes] | None = None
        self._on_done: Callable[[bool], None] | None = None
        self._anchor_time = 0.0
        self._anchor_ts = self.timestamp
        # Called with each audio payload sent (own frames and relayed ones, not DTMF events), e.g.
        # to record what the peer hears.
        self.on_frame: Callable[[bytes, float], None] | None = None
        self._events: deque[tuple[EventTransmitter, Callable[[bool], None] | None]] = deque()
        # relaying (bridges)
        self.relay_hold = 0.1  # s after the last relayed packet before our own frames resume
        self._relay_until = -math.inf
        self._relay_ssrc: int | None = None
        self._relay_offset = 0
        self._relay_src_last = 0
        self._relay_last_ts = 0
        self._relayed = False

    @property
    def started(self) -> bool:
        return self.pacer is not None

    @property
    def playing(self) -> bool:
        return self._source is not None

    def start(self, start: float) -> None:
        """Begin (or re-anchor) the schedule: slot 0 is due at ``start``."""
        self.pacer = Pacer(self.ptime, start, self.max_catchup)
        self._anchor_time = start
        self._anchor_ts = self.timestamp

    def set_ptime(self, ptime: float, now: float) -> None:
        if ptime != self.ptime:
            self.ptime = ptime
            self.samples_per_packet = round(ptime * self.clock_rate)
            if self.pacer is not None:
                self.start(max(now, self.pacer.next_deadline()))

    def play(self, frames: Iterable[bytes], on_done: Callable[[bool], None] | None = None) -> None:
        """Replace what plays by ``frames`` from the next slot on; ``on_done(finished)`` reports its end.

        A replaced or stopped source gets ``on_done(False)``.
        """
        self._finish(False)
        self._source = iter(frames)
        self._on_done = on_done
        self._marker = True

    def stop(self) -> None:
        """Stop playing (barge-in): the next slot already carries the idle frame."""
        self._finish(False)

    def _finish(self, finished: bool) -> None:
        cb = self._on_done
        self._source = None
        self._on_done = None
        if cb is not None:
            cb(finished)

    # --- DTMF ---------------------------------------------------------------------------------

    @property
    def sending_events(self) -> bool:
        return bool(self._events)

    def send_events(self, transmitter: EventTransmitter,
                    on_done: Callable[[bool], None] | None = None) -> None:
        """Queue ``transmitter`` (after those already queued); ``on_done(True)`` once it finished,
        ``on_done(False)`` if cancelled."""
        self._events.append((transmitter, on_done))

    def cancel_events(self) -> None:
        events = list(self._events)
        self._events.clear()
        if events:
            self._marker = True
        for _, cb in events:
            if cb is not None:
                cb(False)

    def _event_finished(self) -> None:
        _, cb = self._events.popleft()
        if cb is not None:
            cb(True)

    # --- relaying ------------------------------------------------------------------------------

    def relay(self, payload_type: int, marker: bool, src_ssrc: int, src_ts: int, payload: bytes,
              now: float, send: Callable[[bytes], object]) -> bool:
        """Send a packet received elsewhere as part of this stream. False if not sent (on hold, or
        our own DTMF is being sent)."""
        if not self.enabled or self._events:
            return False
        if (src_ssrc != self._relay_ssrc or now >= self._relay_until
                or _HALF > (self._relay_src_last - src_ts) & _M32 > self.clock_rate):
            # A new source, a pause, or the source's timestamps jumped back more than a second:
            # re-anchor so that our stream continues after what we last sent.
            base = self.timestamp
            if self._relayed and _later(self._relay_last_ts + self.samples_per_packet, base):
                base = (self._relay_last_ts + self.samples_per_packet) & _M32
            self._relay_offset = (base - src_ts) & _M32
            self._relay_ssrc = src_ssrc
            self._relay_src_last = src_ts
            self._relayed = False
            marker = True
        elif _later(src_ts, self._relay_src_last):
            self._relay_src_last = src_ts
        ts = (src_ts + self._relay_offset) & _M32
        send(HEADER.pack(VERSION_BITS, (payload_type | 0x80) if marker else payload_type,
                         self.sequence, ts, self.ssrc) + payload)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        self._relay_until = now + self.relay_hold
        if not self._relayed or _later(ts, self._relay_last_ts):
            self._relay_last_ts = ts
        self._relayed = True
        tap = self.on_frame
        if tap is not None:
            tap(payload, now)
        return True

    def _end_relay(self) -> None:
        # Our own frames resume after the relayed ones, never behind them.
        nxt = (self._relay_last_ts + self.samples_per_packet) & _M32
        if _later(nxt, self.timestamp):
            self.timestamp = nxt
        self._relayed = False
        self._marker = True

    def rtp_timestamp_at(self, now: float) -> int:
        """The RTP timestamp of the sampling instant ``now`` (for RTCP SR, RFC 3550 §6.4.1)."""
        return (self._anchor_ts + round((now - self._anchor_time) * self.clock_rate)) & 0xFFFFFFFF

    def poll(self, now: float, send: Callable[[bytes], object]) -> int:
        """Emit the packets due at ``now`` through ``send``; return how many were sent."""
        pacer = self.pacer
        if pacer is None:
            return 0
        n, skip = pacer.due(now)
        if not n:
            return 0
        spp = self.samples_per_packet
        if skip:
            # Stall: jump the timestamp over the missed slots instead of bursting them; the audio
            # itself resumes where it stopped. The marker tells the receiver to resynchronise.
            self.timestamp = (self.timestamp + skip * spp) & 0xFFFFFFFF
            self.skipped_slots += skip
            self._marker = True
        relaying = self._relay_until > now
        if self._relayed and not relaying:
            self._end_relay()
        sent = 0
        for _ in range(n):
            if self._events:
                tx = self._events[0][0]
                out = tx.next(self.timestamp)
                if tx.done:
                    self._event_finished()
                if out is not None:
                    if self.enabled:
                        pt, marker, ts, payload = out
                        send(HEADER.pack(VERSION_BITS, (pt | 0x80) if marker else pt, self.sequence, ts,
                                         self.ssrc) + payload)
                        self.sequence = (self.sequence + 1) & 0xFFFF
                        self.packets_sent += 1
                        self.octets_sent += len(payload)
                        sent += 1
                    self._marker = True  # the audio after the event starts a talkspurt
                    self.timestamp = (self.timestamp + spp) & 0xFFFFFFFF
                    continue
            if relaying:
                self.timestamp = (self.timestamp + spp) & 0xFFFFFFFF
                continue
            frame = None
            src = self._source
            if src is not None:
                frame = next(src, None)
                if frame is None:
                    self._finish(True)
            if frame is None:
                frame = self.idle_frame
            if frame is not None and self.enabled:
                b1 = (self.payload_type | 0x80) if self._marker else self.payload_type
                send(HEADER.pack(VERSION_BITS, b1, self.sequence, self.timestamp, self.ssrc) + frame)
                self._marker = False
                self.sequence = (self.sequence + 1) & 0xFFFF
                self.packets_sent += 1
                self.octets_sent += len(frame)
                sent += 1
                tap = self.on_frame
                if tap is not None:
                    tap(frame, now)
            else:
                self._marker = True  # the next packet starts a talkspurt
            self.timestamp = (self.timestamp + spp) & 0xFFFFFFFF
        return sent
