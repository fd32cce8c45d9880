"""DTMF over RTP events (RFC 4733) and in SIP INFO bodies, sans-I/O.

RFC 4733 §2.3 event payload (one event per packet)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    |     event     |E|R| volume    |          duration             |

* ``Rfc4733Receiver``: one digit per event. An event is keyed by its RTP timestamp (§2.5.1.2: every
  packet of one event carries the timestamp of its start); its end packet comes three times
  (§2.5.1.4) and is reported once; an event whose end packets were all lost ends when the next event
  starts or after a timeout counted in RTP time (§2.5.2.2 leaves the value to the receiver).
  ``on_press`` reports the key at the first packet of its event that arrives (key-down, ~one packet
  time after the caller pressed, instead of the hold time later), exactly once whatever follows:
  updates, the three end packets, segments of a long press, late retransmissions.
* ``Rfc4733Transmitter``: the sending side, advanced once per send slot by ``pacer.RtpSender`` so
  the events share the voice stream's SSRC, sequence numbers and timestamp clock.
* ``parse_info``: ``application/dtmf-relay`` (``Signal=5`` / ``Duration=160``) and ``application/dtmf``
  (``5``) bodies of SIP INFO requests.

In-band tones (Goertzel detection, tone generation) are in ``dtmf_inband``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from callcenter.core.errors import CallcenterError

EVENTS: Final = "0123456789*#ABCD"  # RFC 4733 §3.2 table 7: events 0..15
EVENT_OF: Final[dict[str, int]] = {d: i for i, d in enumerate(EVENTS)}
MAX_DURATION: Final = 0xFFFF  # 16-bit duration field, in timestamp units
END_REPEATS: Final = 3  # §2.5.1.4: the final packet is sent a total of three times

DtmfSource = Literal["rfc4733", "inband", "info"]
DtmfHandler = Callable[[str, DtmfSource], None]

_M32: Final = 0xFFFFFFFF
_HALF: Final = 1 << 31


class DtmfParseError(CallcenterError):
    """A DTMF body or event payload that cannot be understood."""


def normalize_digit(digit: str) -> str:
    """``"5"``, ``"*"``, ``"a"`` → the canonical digit (upper-case A-D); ValueError otherwise."""
    d = digit.strip().upper()
    if len(d) != 1 or d not in EVENT_OF:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return d


# --- event payloads ----------------------------------------------------------------------------


def encode_event(event: int, duration: int, *, end: bool = False, volume: int = 10) -> bytes:
    """One RFC 4733 payload. ``volume`` is the power level in -dBm0 (0..63, §2.3.4)."""
    if not 0 <= event <= 255:
        raise ValueError("event must be 0..255")
    if not 0 <= volume <= 63:
        raise ValueError("volume must be 0..63 (-dBm0)")
    if not 0 <= duration <= MAX_DURATION:
        raise ValueError("duration must be 0..65535 timestamp units")
    return bytes((event, (0x80 if end else 0) | volume, duration >> 8, duration & 0xFF))


def decode_event(payload: bytes) -> tuple[int, bool, int, int]:
    """``(event, end, volume, duration)``; raise ``DtmfParseError`` if shorter than 4 bytes."""
    if len(payload) < 4:
        raise DtmfParseError(f"telephone-event payload of {len(payload)} bytes, expected 4")
    flags = payload[1]
    return payload[0], bool(flags & 0x80), flags & 0x3F, (payload[2] << 8) | payload[3]


# --- receiving ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """One finished RFC 4733 event."""

    digit: str
    event: int
    timestamp: int  # RTP timestamp of the event's start
    duration: int  # timestamp units (all segments of a long event added up)
    volume: int  # -dBm0
    ended: bool  # an end packet was seen (False: closed by the next event or the timeout)
    clock_rate: int = 8000

    @property
    def duration_ms(self) -> float:
        return self.duration * 1000.0 / self.clock_rate


class Rfc4733Receiver:
    """Turns telephone-event packets into one ``DtmfEvent`` per key press.

    ``feed`` every telephone-event packet, ``observe`` the timestamps of the other (voice) packets
    while ``pending`` (they advance the RTP clock the timeout is measured on), and call
    ``handle_timer(now)`` when ``get_timer()`` is due (silence after an event without end packets).
    Only events 0-15 (the DTMF digits) are reported; other events are tracked and ignored.

    Two callbacks per key press: ``on_press`` (optional) at the first packet of the event that
    arrives — the start packet, or whichever comes first when it was lost (an update, even an end
    packet) — with the duration known so far; ``on_event`` when the event is over (end packet, next
    event or timeout), with its full duration. A DTMF user acts on ``on_press``: waiting for the end
    makes every digit as slow as the caller's finger (a 160 ms hold is 160 ms of latency).
    """

    __slots__ = (
        "on_event", "clock_rate", "timeout", "stale_window", "ssrc", "events", "ignored", "malformed",
        "stale", "_last_ts", "_start_ts", "_open", "_event", "_volume", "_duration", "_base", "_ended",
        "_seen_rtp", "_seen_at", "on_press",
    )

    def __init__(self, on_event: Callable[[DtmfEvent], None], *, clock_rate: int = 8000,
                 end_timeout_ms: int = 400, on_press: Callable[[DtmfEvent], None] | None = None) -> None:
        self.on_event = on_event
        self.on_press = on_press
        self.clock_rate = clock_rate
        self.timeout = clock_rate * end_timeout_ms // 1000  # RTP time after the event's known end
        # A packet whose timestamp is this much older than the latest event is a straggler (an
        # update or end retransmission of an event already replaced); older still: a new epoch.
        self.stale_window = clock_rate * 10
        self.ssrc: int | None = None
        self.events = 0  # digits reported
        self.ignored = 0  # non-DTMF events (flash, tones, ...) seen
        self.malformed = 0
        self.stale = 0
        self._last_ts: int | None = None  # timestamp of the latest event (open or finished)
        self._start_ts = 0  # of its first segment
        self._open = False
        self._event = 0
        self._volume = 0
        self._duration = 0  # of the current segment
        self._base = 0  # durations of earlier segments of a long event (§2.5.1.3)
        self._ended = False
        self._seen_rtp = 0  # the latest RTP instant known ...
        self._seen_at = 0.0  # ... and when it was learnt

    @property
    def pending(self) -> bool:
        """An event is open (its end not yet known)."""
        return self._open

    def feed(self, ssrc: int, timestamp: int, payload: bytes, now: float) -> None:
        if len(payload) < 4:
            self.malformed += 1
            return
        event = payload[0]
        flags = payload[1]
        duration = (payload[2] << 8) | payload[3]
        if ssrc != self.ssrc:
            if self._open:
                self._finish()
            self.ssrc = ssrc
            self._last_ts = None
        last = self._last_ts
        if timestamp == last and (self._open or event == self._event):
            if not self._open:
                return  # a retransmitted end, or an update overtaken by its end: already reported
            if duration > self._duration:
                self._duration = duration
            self._volume = flags & 0x3F
            self._advance(timestamp + duration, now)
            if flags & 0x80:
                self._ended = True
                self._finish()
            return
        # (A different event on the timestamp of a finished one breaks §2.5.1.2, but some senders
        # do it: it is still a new key press.)
        if last is not None and 0 < (last - timestamp) & _M32 <= self.stale_window:
            self.stale += 1  # older than the latest event: a reordered straggler
            return
        # A new timestamp: a new event (§2.5.1.2), or the next segment of a long one (§2.5.1.3:
        # same event, starting where the previous segment's maximal duration ended).
        if self._open:
            if (event == self._event and self._duration >= MAX_DURATION - 2 * self.clock_rate // 50
                    and timestamp == (last or 0) + self._duration & _M32):
                self._base += self._duration
            else:
                self._finish()
                self._base = 0
                self._start_ts = timestamp
        else:
            self._base = 0
            self._start_ts = timestamp
        self._last_ts = timestamp
        self._open = True
        self._ended = bool(flags & 0x80)
        self._event = event
        self._volume = flags & 0x3F
        self._duration = duration
        self._seen_rtp = timestamp
        self._seen_at = now
        self._advance(timestamp + duration, now)
        if self._base == 0:  # not the next segment of a long press: a key went down
            self._pressed()
        if self._ended:
            self._finish()

    def observe(self, timestamp: int, now: float) -> None:
        """A voice packet's timestamp: the RTP clock went on; an open event may have timed out."""
        if self._open and self.ssrc is not None:
            self._advance(timestamp, now)
            if self._expired(now):
                self._finish()

    def get_timer(self) -> float | None:
        """When the open event times out if nothing more arrives (None: nothing open)."""
        if not self._open or self._last_ts is None:
            return None
        end = self._last_ts + self._duration + self.timeout
        return self._seen_at + self._signed(end - self._seen_rtp) / self.clock_rate

    def handle_timer(self, now: float) -> None:
        if self._open and self._expired(now):
            self._finish()

    def reset(self) -> None:
        """Forget everything (e.g. the peer's stream was replaced); an open event is dropped."""
        self._open = False
        self._last_ts = None
        self.ssrc = None

    # ---

    @staticmethod
    def _signed(delta: int) -> int:
        delta &= _M32
        return delta - (1 << 32) if delta >= _HALF else delta

    def _advance(self, rtp_time: int, now: float) -> None:
        # Keep the latest RTP instant seen; "later" in serial-number arithmetic (RFC 1982).
        if self._signed(rtp_time - self._seen_rtp) > 0:
            self._seen_rtp = rtp_time & _M32
            self._seen_at = now

    def _expired(self, now: float) -> bool:
        timer = self.get_timer()
        return timer is not None and now >= timer

    def _current(self) -> DtmfEvent:
        return DtmfEvent(
            digit=EVENTS[self._event], event=self._event, timestamp=self._start_ts,
            duration=self._base + self._duration, volume=self._volume, ended=self._ended,
            clock_rate=self.clock_rate,
        )

    def _pressed(self) -> None:
        if self.on_press is not None and self._event < len(EVENTS):
            self.on_press(self._current())

    def _finish(self) -> None:
        self._open = False
        if self._event >= len(EVENTS):
            self.ignored += 1
            return
        self.events += 1
        self.on_event(self._current())


# --- sending -----------------------------------------------------------------------------------


class Rfc4733Transmitter:
    """RFC 4733 §2.5.1 packets for a string of digits, one send slot at a time.

    ``next(slot_ts)`` is called by the RTP sender for each slot while this transmitter is active and
    returns ``(payload_type, marker, timestamp, payload)`` to send in that slot, or ``None`` for a slot
    that carries ordinary audio (the gap between digits). Per digit: the first packet has the marker
    bit; every packet carries the event's start timestamp and the duration so far; the final packet
    (E bit, final duration) goes out three times; each packet takes a new sequence number (§2.5.1.6).
    """

    __slots__ = ("payload_type", "samples_per_packet", "duration", "volume", "gap", "events",
                 "_index", "_start", "_ends", "_final", "_gap_left", "done")

    def __init__(self, digits: str, *, payload_type: int, samples_per_packet: int, duration: int,
                 volume: int = 10, gap: int = 480) -> None:
        if not digits:
            raise ValueError("no digits to send")
        self.events = [EVENT_OF[normalize_digit(d)] for d in digits]
        if not 0 <= payload_type <= 127:
            raise ValueError("payload_type must be 0..127")
        if not samples_per_packet <= duration <= MAX_DURATION - samples_per_packet:
            raise ValueError(f"duration must be {samples_per_packet}..{MAX_DURATION - samples_per_packet}"
                             " timestamp units")
        if not 0 <= volume <= 63:
            raise ValueError("volume must be 0..63 (-dBm0)")
        self.payload_type = payload_type
        self.samples_per_packet = samples_per_packet
        self.duration = duration
        self.volume = volume
        self.gap = gap
        self._index = 0
        self._start: int | None = None  # timestamp of the current event's first slot
        self._ends = 0
        self._final = b""
        self._gap_left = 0
        self.done = False

    def next(self, slot_ts: int) -> tuple[int, bool, int, bytes] | None:
        if self.done:
            return None
        spp = self.samples_per_packet
        if self._gap_left > 0:
            self._gap_left -= spp
            return None
        start = self._start
        marker = False
        if start is None:
            start = self._start = slot_ts
            marker = True
        if self._ends:
            payload = self._final
        else:
            # Duration so far, measured on the slot clock so a stall (slots skipped by the pacer)
            # still yields the real elapsed time.
            elapsed = ((slot_ts - start) & _M32) + spp
            event = self.events[self._index]
            if elapsed < self.duration:
                return self.payload_type, marker, start, encode_event(event, elapsed, volume=self.volume)
            payload = self._final = encode_event(event, min(elapsed, MAX_DURATION), end=True,
                                                 volume=self.volume)
        self._ends += 1
        if self._ends >= END_REPEATS:
            self._index += 1
            self._start = None
            self._ends = 0
            self._gap_left = self.gap
            if self._index >= len(self.events):
                self.done = True
        return self.payload_type, marker, start, payload


# --- SIP INFO ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InfoDtmf:
    digit: str
    duration_ms: int | None = None


DTMF_RELAY: Final = "application/dtmf-relay"
DTMF_PLAIN: Final = "application/dtmf"
_LINE = re.compile(r"\s*([A-Za-z-]+)\s*[=:]\s*(\S*)\s*")


def _signal(value: str) -> str:
    v = value.strip().upper()
    if v.isdigit() and len(v) == 2 and int(v) < len(EVENTS):
        return EVENTS[int(v)]  # some gateways send the RFC 4733 event code: "10" = *, "11" = #
    try:
        return normalize_digit(v)
    except ValueError:
        raise DtmfParseError(f"unsupported DTMF signal {value.strip()!r}") from None


def parse_dtmf_relay(body: bytes | str) -> InfoDtmf:
    """``application/dtmf-relay``: ``Signal=5`` and optional ``Duration=160`` (ms), one per line.

    Keys are case-insensitive, ``:`` is accepted for ``=``, unknown lines are ignored, and a missing
    or unreadable duration is ``None``.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else body
    signal: str | None = None
    duration: int | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _LINE.fullmatch(line)
        if m is None:
            continue
        key, value = m.group(1).lower(), m.group(2)
        if key == "signal":
            signal = _signal(value)
        elif key == "duration" and value.isdigit():
            duration = int(value)
    if signal is None:
        raise DtmfParseError("dtmf-relay body without a Signal= line")
    return InfoDtmf(signal, duration)


def parse_dtmf_plain(body: bytes | str) -> InfoDtmf:
    """``application/dtmf``: the digit alone (some phones send a dtmf-relay style body instead)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else body
    if "=" in text:
        return parse_dtmf_relay(text)
    if not text.strip():
        raise DtmfParseError("empty application/dtmf body")
    return InfoDtmf(_signal(text))


def parse_info(content_type: str, body: bytes | str) -> InfoDtmf | None:
    """The digit in a SIP INFO body; ``None`` if ``content_type`` is not a DTMF one.

    Raises ``DtmfParseError`` for a DTMF content type whose body holds no valid digit.
    """
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == DTMF_RELAY:
        return parse_dtmf_relay(body)
    if ctype == DTMF_PLAIN:
        return parse_dtmf_plain(body)
    return None
