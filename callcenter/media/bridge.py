"""Relay audio between two call legs (``RtpSession``s): what leg A receives, leg B sends, and back.

Each packet is forwarded as it arrives (no added delay; the far ends' jitter buffers absorb the
network's jitter), through ``RtpSession.send_relayed``: it goes out under the receiving leg's own
SSRC and sequence numbers, its timestamp shifted so the outbound stream continues where that leg's
own packets (prompts, ringback, silence) left off — each leg's peer sees one continuous stream
(RFC 3550 §7.2: a translator that changes the stream owns the SSRC; B2BUA legs terminate RTCP).

* Voice: PCMU↔PCMA transcoded by one ``bytes.translate`` through a precomputed 256-byte table
  when the legs' codecs differ; sent as is when they match.
* RFC 4733 events: passed through with the other leg's telephone-event payload type; dropped and
  counted (``BridgeStats.dtmf_dropped``, ``on_dtmf_dropped``) when the other leg negotiated none.
  Either way the receiving leg's own ``on_dtmf`` still reports the digit.
* Anything else (comfort noise, unknown payload types) is not forwarded.
* Taps: ``add_tap("a_to_b", fn)`` gets what flows from A to B as jitter-buffered 20 ms int16 frames
  (leg A's received audio), e.g. for the recorder or live transcription.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from callcenter.media import g711, rtp
from callcenter.media.session import PT_CODEC, AudioTap, RtpSession

log = logging.getLogger(__name__)

Direction = Literal["a_to_b", "b_to_a"]
_TABLES: dict[tuple[str, str], bytes] = {
    ("PCMU", "PCMA"): g711.ULAW_TO_ALAW,
    ("PCMA", "PCMU"): g711.ALAW_TO_ULAW,
}
# A route: payload type in -> (payload type out, translate table or None); event routes have None
# as their table and are told apart by the ``is_event`` flag.
_Route = tuple[int, bytes | None, bool]


@dataclass(slots=True)
class BridgeStats:
    a_to_b: int = 0  # packets forwarded
    b_to_a: int = 0
    transcoded: int = 0  # of those, voice packets whose codec was changed
    dtmf_forwarded: int = 0  # RFC 4733 packets passed through
    dtmf_dropped: int = 0  # RFC 4733 packets the other leg cannot take (no telephone-event)
    not_forwarded: int = 0  # other payload types, or the sending leg on hold


class _Forwarder:
    """One direction. The routing table is rebuilt when either leg renegotiates (``media_version``)."""

    __slots__ = ("src", "dst", "bridge", "routes", "version", "a_to_b")

    def __init__(self, src: RtpSession, dst: RtpSession, bridge: Bridge, a_to_b: bool) -> None:
        self.src = src
        self.dst = dst
        self.bridge = bridge
        self.a_to_b = a_to_b
        self.routes: dict[int, _Route] = {}
        self.version = (-1, -1)

    def _rebuild(self) -> None:
        src, dst = self.src, self.dst
        routes: dict[int, _Route] = {}
        out_pt = dst.sender.payload_type
        for pt, codec in PT_CODEC.items():
            routes[pt] = (out_pt, _TABLES.get((codec, dst.codec)), False)
        # The voice payload type negotiated on the source leg (dynamic G.711 types are possible).
        routes[src.sender.payload_type] = (out_pt, _TABLES.get((src.codec, dst.codec)), False)
        if src.telephone_event_pt is not None:
            if dst.telephone_event_pt is not None:
                routes[src.telephone_event_pt] = (dst.telephone_event_pt, None, True)
            else:
                routes[src.telephone_event_pt] = (-1, None, True)
        self.routes = routes
        self.version = (src.media_version, dst.media_version)

    def __call__(self, packet: rtp.RtpPacket, now: float) -> None:
        if self.version != (self.src.media_version, self.dst.media_version):
            self._rebuild()
        route = self.routes.get(packet.payload_type)
        stats = self.bridge.stats
        if route is None:
            stats.not_forwarded += 1
            return
        out_pt, table, is_event = route
        payload = packet.payload
        if is_event:
            if out_pt < 0:
                stats.dtmf_dropped += 1
                self.bridge._dtmf_dropped(self.src, packet)
                return
            stats.dtmf_forwarded += 1
        elif table is not None:
            payload = payload.translate(table)
            stats.transcoded += 1
        if self.dst.send_relayed(out_pt, packet.marker, packet.ssrc, packet.timestamp, payload, now):
            if self.a_to_b:
                stats.a_to_b += 1
            else:
                stats.b_to_a += 1
        else:
            stats.not_forwarded += 1


class Bridge:
    """Connects legs ``a`` and ``b`` while started. ``stop()`` (idempotent) gives each leg back its
    own audio (prompts, silence) from its next slot on."""

    def __init__(self, a: RtpSession, b: RtpSession, *,
                 on_dtmf_dropped: Callable[[RtpSession, rtp.RtpPacket], None] | None = None) -> None:
        if a is b:
            raise ValueError("a bridge needs two different legs")
        self.a = a
        self.b = b
        self.stats = BridgeStats()
        self.on_dtmf_dropped = on_dtmf_dropped
        self._ab = _Forwarder(a, b, self, True)
        self._ba = _Forwarder(b, a, self, False)
        self._taps: list[tuple[Direction, AudioTap]] = []
        self._warned_dtmf = False
        self.active = False

    def start(self) -> Bridge:
        """Begin relaying: a leg's own playback pauses while the other leg's audio flows."""
        if not self.active:
            self.a.set_relay(self._ab)
            self.b.set_relay(self._ba)
            self.active = True
        return self

    def stop(self) -> None:
        if not self.active:
            return
        self.active = False
        self.a.set_relay(None)
        self.b.set_relay(None)
        for direction, tap in self._taps:
            self._leg(direction).remove_audio_tap(tap)
        self._taps.clear()

    def __enter__(self) -> Bridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_tap(self, direction: Direction, tap: AudioTap) -> None:
        """``tap(frame, now)`` with the audio flowing in ``direction``: 20 ms int16 frames at 8 kHz,
        jitter-buffered, one per tick. Removed by ``remove_tap`` or ``stop``."""
        self._leg(direction).add_audio_tap(tap)
        self._taps.append((direction, tap))

    def remove_tap(self, direction: Direction, tap: AudioTap) -> None:
        if (direction, tap) in self._taps:
            self._taps.remove((direction, tap))
            self._leg(direction).remove_audio_tap(tap)

    def forwarder(self, direction: Direction) -> Callable[[rtp.RtpPacket, float], None]:
        """The relay handler of ``direction`` (what ``start`` installs on the sending leg): a mixer
        that takes over one direction's voice hands it the RFC 4733 events still, and gives it back."""
        self._leg(direction)  # validates the direction
        return self._ab if direction == "a_to_b" else self._ba

    def _leg(self, direction: Direction) -> RtpSession:
        if direction == "a_to_b":
            return self.a
        if direction == "b_to_a":
            return self.b
        raise ValueError(f"direction must be 'a_to_b' or 'b_to_a', not {direction!r}")

    def _dtmf_dropped(self, src: RtpSession, packet: rtp.RtpPacket) -> None:
        if not self._warned_dtmf:
            self._warned_dtmf = True
            log.info("bridge: the other leg has no telephone-event; RFC 4733 DTMF from port %d is "
                     "not forwarded", src.local_port)
        cb = self.on_dtmf_dropped
        if cb is not None:
            cb(src, packet)
