"""Supervisor monitoring: a three-party mixer (caller, agent, supervisor) for listen, whisper, barge.

Only monitored calls pass through here; every other call keeps the plain two-leg :class:`Bridge`.

* :data:`HEARS` is the whole policy: per mode, whom each participant hears. Nobody hears themself
  (N-1 mixing). ``listen``: the supervisor hears both, nobody hears the supervisor. ``whisper``: the
  agent hears the caller and the supervisor, the caller only the agent. ``barge``: everyone else.
* :func:`mix` (pure): one 20 ms tick's int16 frames in, each listener's sum out — summed in int32,
  clipped to int16 (saturation, not wrap-around). A participant without a frame this tick (its
  jitter buffer ran dry) counts as silence.
* :class:`Mixer` (sans-I/O): a small queue of received frames per participant; ``tick()`` takes one
  frame of each and mixes.
* :class:`LiveMix`: the adapter on the media scheduler. Its input is each leg's jitter-buffered audio
  tap; its output goes out through ``RtpSession.send_relayed`` — under the leg's own SSRC and
  sequence numbers, timestamps continuing the leg's stream (RFC 3550 §8.2: a changed SSRC would be a
  new source to the phone) — so switching a leg between the bridge's direct relay and the mixer is a
  re-anchored talkspurt (marker bit), never a gap of our own hold time. A listener whose hearing is
  exactly its bridge partner (the caller in listen and whisper, the agent in listen) keeps the direct
  relay: no added delay, no decode/encode. Where the mixer takes over a direction, RFC 4733 events
  still pass through the bridge's forwarder (DTMF from the caller reaches the agent), and the mixer
  pauses that listener's voice while an event flows (one source at a time on the leg's stream).

Recording is untouched: the caller's recording taps what the caller says and what the caller's leg
sends, so a barge (the caller hears the supervisor) is recorded, a whisper (the caller does not) is
not — what mature contact centers do.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Mapping
from typing import Final, Literal, get_args

import numpy as np
import numpy.typing as npt

from callcenter.media import g711, rtp
from callcenter.media.bridge import Bridge, Direction
from callcenter.media.session import AudioTap, MediaScheduler, RtpSession

__all__ = [
    "FRAME_SAMPLES",
    "HEARS",
    "MODES",
    "LiveMix",
    "Mixer",
    "Mode",
    "Participant",
    "direct_partner",
    "hearing_matrix",
    "mix",
]

Participant = Literal["caller", "agent", "supervisor"]
Mode = Literal["listen", "whisper", "barge"]
PARTICIPANTS: tuple[Participant, ...] = get_args(Participant)
MODES: tuple[Mode, ...] = get_args(Mode)
FRAME_SAMPLES = 160  # 20 ms at 8 kHz
TICK = 0.02
MAX_QUEUED = 3  # frames kept per participant: bounds the delay when ticks and taps drift apart
EVENT_HOLD = 0.06  # s the mixer leaves a listener's stream to RFC 4733 events after each event packet

_C: Final = "caller"
_A: Final = "agent"
_S: Final = "supervisor"
HEARS: Mapping[Mode, Mapping[Participant, frozenset[Participant]]] = {
    "listen": {_C: frozenset({_A}), _A: frozenset({_C}), _S: frozenset({_C, _A})},
    "whisper": {_C: frozenset({_A}), _A: frozenset({_C, _S}), _S: frozenset({_C, _A})},
    "barge": {_C: frozenset({_A, _S}), _A: frozenset({_C, _S}), _S: frozenset({_C, _A})},
}
_PARTNER: Mapping[Participant, Participant] = {_C: _A, _A: _C}
_SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)


def check_mode(mode: str) -> Mode:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def direct_partner(mode: Mode, listener: Participant) -> Participant | None:
    """The bridge partner when ``listener`` hears exactly that partner in ``mode`` (the direct relay
    serves it), else None (the mixer does)."""
    partner = _PARTNER.get(listener)
    if partner is not None and HEARS[mode][listener] == frozenset({partner}):
        return partner
    return None


def hearing_matrix(hears: Mapping[Participant, frozenset[Participant]],
                   listeners: tuple[Participant, ...]) -> npt.NDArray[np.int32]:
    """Row per listener, column per participant (``PARTICIPANTS`` order): 1 where it is heard. The
    diagonal is always 0: nobody hears themself (N-1)."""
    return np.array([[int(s in hears[lis] and s != lis) for s in PARTICIPANTS] for lis in listeners],
                    dtype=np.int32)


def mix(frames: Mapping[Participant, g711.Pcm | None],
        hears: Mapping[Participant, frozenset[Participant]],
        listeners: tuple[Participant, ...] = PARTICIPANTS,
        matrix: npt.NDArray[np.int32] | None = None) -> dict[Participant, g711.Pcm]:
    """Each listener's frame: the int32 sum of the frames it hears (never its own), clipped to int16
    (saturation, not wrap-around). A missing frame (None, or no entry) is silence. One matrix
    product for every listener at once (``matrix``: ``hearing_matrix(hears, listeners)``, cached by
    the caller)."""
    stack = np.zeros((len(PARTICIPANTS), FRAME_SAMPLES), dtype=np.int32)
    for i, p in enumerate(PARTICIPANTS):
        f = frames.get(p)
        if f is not None:
            stack[i] = f
    if matrix is None:
        matrix = hearing_matrix(hears, listeners)
    summed = np.clip(matrix @ stack, -32768, 32767).astype(np.int16)
    return {lis: summed[i] for i, lis in enumerate(listeners)}


class Mixer:
    """The sans-I/O core: ``push`` frames as they are received, ``tick`` once per 20 ms."""

    def __init__(self, mode: Mode = "listen") -> None:
        self.mode: Mode = check_mode(mode)
        self._queues: dict[Participant, deque[g711.Pcm]] = {p: deque(maxlen=MAX_QUEUED) for p in PARTICIPANTS}
        self.underruns: dict[Participant, int] = dict.fromkeys(PARTICIPANTS, 0)
        self._matrices: dict[tuple[Mode, tuple[Participant, ...]], npt.NDArray[np.int32]] = {}

    def set_mode(self, mode: str) -> None:
        self.mode = check_mode(mode)

    def push(self, who: Participant, frame: g711.Pcm) -> None:
        """One 20 ms frame received from ``who`` (the oldest is dropped beyond ``MAX_QUEUED``)."""
        if len(frame) != FRAME_SAMPLES:
            raise ValueError(f"a frame is {FRAME_SAMPLES} samples, not {len(frame)}")
        self._queues[who].append(frame)

    def tick(self, listeners: tuple[Participant, ...] = PARTICIPANTS) -> dict[Participant, g711.Pcm]:
        """Take one frame of every participant (silence when it has none) and mix for ``listeners``."""
        frames: dict[Participant, g711.Pcm | None] = {}
        for p, q in self._queues.items():
            if q:
                frames[p] = q.popleft()
            else:
                frames[p] = None
                self.underruns[p] += 1
        key = (self.mode, listeners)
        matrix = self._matrices.get(key)
        if matrix is None:
            matrix = self._matrices[key] = hearing_matrix(HEARS[self.mode], listeners)
        return mix(frames, HEARS[self.mode], listeners, matrix)


PacketHandler = Callable[[rtp.RtpPacket, float], None]


class LiveMix:
    """The mixer on live legs. ``attach`` the caller↔agent bridge (again whenever the call's bridge
    changes: hold, transfer); ``set_mode`` at any moment (applied before the next tick: this runs on
    the event loop, between the scheduler's ticks); ``close`` gives the bridge its legs back."""

    def __init__(self, scheduler: MediaScheduler, supervisor: RtpSession, mode: Mode = "listen") -> None:
        self.scheduler = scheduler
        self.supervisor = supervisor
        self.mixer = Mixer(mode)
        self.bridge: Bridge | None = None
        self.frames_sent: dict[Participant, int] = dict.fromkeys(PARTICIPANTS, 0)
        self._ssrc = random.getrandbits(32)  # the "source" the legs' senders re-anchor on
        self._ts0 = random.getrandbits(32)
        self._index = -1
        self._t0: float | None = None
        self._taps: list[tuple[RtpSession, AudioTap]] = []
        self._event_until: dict[Participant, float] = {}
        self._closed = False
        self._tap(supervisor, _S)
        scheduler.add(self)

    @property
    def mode(self) -> Mode:
        return self.mixer.mode

    def _tap(self, leg: RtpSession, who: Participant) -> None:
        push = self.mixer.push

        def tap(frame: g711.Pcm, now: float) -> None:
            push(who, frame)

        leg.add_audio_tap(tap)
        self._taps.append((leg, tap))

    def _untap(self, keep: RtpSession | None = None) -> None:
        for leg, tap in [t for t in self._taps if t[0] is not keep]:
            leg.remove_audio_tap(tap)
            self._taps.remove((leg, tap))

    def attach(self, bridge: Bridge | None) -> None:
        """The call's caller↔agent bridge now (``a`` the caller's leg, ``b`` the agent's); None while
        the caller is on hold (the supervisor still hears both legs, nobody else is mixed)."""
        if self._closed:
            return
        old = self.bridge
        if bridge is not None:
            if old is None or (old.a, old.b) != (bridge.a, bridge.b):
                self._untap(keep=self.supervisor)
                self._tap(bridge.a, _C)
                self._tap(bridge.b, _A)
        elif old is not None:
            self._restore(old)
        self.bridge = bridge
        self._apply()

    def set_mode(self, mode: str) -> None:
        self.mixer.set_mode(mode)
        self._apply()

    def _apply(self) -> None:
        """Route each direction of the bridge: direct relay, or RFC 4733 events only (the mixer has
        the voice)."""
        bridge = self.bridge
        if bridge is None or not bridge.active:
            return
        mode = self.mixer.mode
        routes: tuple[tuple[RtpSession, Participant, Direction], ...] = (
            (bridge.a, _A, "a_to_b"), (bridge.b, _C, "b_to_a"))
        for src, listener, direction in routes:
            forward = bridge.forwarder(direction)
            if direct_partner(mode, listener) is not None:
                src.set_relay(forward)
            else:
                src.set_relay(self._events_only(src, listener, forward))

    def _events_only(self, src: RtpSession, listener: Participant, forward: PacketHandler) -> PacketHandler:
        hold = self._event_until

        def relay(packet: rtp.RtpPacket, now: float) -> None:
            if packet.payload_type == src.telephone_event_pt:
                hold[listener] = now + EVENT_HOLD
                forward(packet, now)

        return relay

    @staticmethod
    def _restore(bridge: Bridge) -> None:
        if bridge.active:
            bridge.a.set_relay(bridge.forwarder("a_to_b"))
            bridge.b.set_relay(bridge.forwarder("b_to_a"))

    def _outputs(self) -> list[tuple[Participant, RtpSession]]:
        outs: list[tuple[Participant, RtpSession]] = [(_S, self.supervisor)]
        bridge = self.bridge
        if bridge is not None and bridge.active:
            mode = self.mixer.mode
            legs: tuple[tuple[Participant, RtpSession], ...] = ((_C, bridge.a), (_A, bridge.b))
            for who, leg in legs:
                if direct_partner(mode, who) is None:
                    outs.append((who, leg))
        return outs

    def on_tick(self, now: float) -> None:
        if self._t0 is None:
            self._t0 = now
        # One frame per tick; after a stall the timestamp jumps over the missed ticks (no burst).
        self._index = max(self._index + 1, round((now - self._t0) / TICK))
        outs = self._outputs()
        mixed = self.mixer.tick(tuple(who for who, _ in outs))
        ts = (self._ts0 + self._index * FRAME_SAMPLES) & 0xFFFFFFFF
        for who, leg in outs:
            if leg.closed or now < self._event_until.get(who, -1.0):
                continue
            payload = g711.encode(mixed[who], leg.codec)
            if leg.send_relayed(leg.sender.payload_type, False, self._ssrc, ts, payload, now):
                self.frames_sent[who] += 1

    def close(self) -> None:
        """Stop mixing: the bridge relays both directions again from the next packet on. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.scheduler.remove(self)
        self._untap()
        if self.bridge is not None:
            self._restore(self.bridge)
        self.bridge = None
