"""RTP sessions on asyncio UDP sockets, and the one scheduler that sends for all of them.

The only sockets of ``callcenter.media`` live here. Protocol work is delegated to the sans-I/O
parts: ``rtp``/``rtcp`` parsing, ``stats.ReceiveStats``, ``pacer.RtpSender``.

* ``MediaScheduler``: one asyncio task; every ``tick`` (20 ms, absolute deadlines on the monotonic
  clock) it calls ``on_tick(now)`` of every registered stream in a fixed order (insertion order).
* ``RtpSession``: an RTP socket on an even port and RTCP on the next odd one (from
  ``RtpPortAllocator``); sends the current source's pre-encoded frames, receives, keeps
  loss/jitter, exchanges RTCP SR/RR every ~5 s, and does symmetric RTP: it sends to where the
  peer's packets actually come from (phones behind NAT), and to the SDP address until then.
  DTMF: received RFC 4733 events (or, when enabled and no telephone-event was negotiated, tones
  detected in the audio) are delivered to ``on_dtmf(digit, source)``; ``send_dtmf`` sends them.
  Audio taps get the received audio as jitter-buffered 20 ms int16 frames, one per tick.
  SRTP (SDES, ``NegotiatedMedia.srtp``): a ``SrtpProtector`` applied at the socket boundary only —
  protect right before ``sendto``, unprotect right after receiving; everything between sees plain RTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import random
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from callcenter.core.clock import Clock, MonotonicClock
from callcenter.media import g711, rtcp, rtp
from callcenter.media.dtmf import DtmfEvent, DtmfHandler, DtmfSource, Rfc4733Receiver, Rfc4733Transmitter
from callcenter.media.dtmf_inband import InbandDtmfDetector, InbandTransmitter
from callcenter.media.jitter import JitterBuffer
from callcenter.media.pacer import EventTransmitter, Pacer, RtpSender
from callcenter.media.ports import RtpPortAllocator, RtpPortsExhausted
from callcenter.media.sdp import NegotiatedMedia
from callcenter.media.srtp import SrtpError, SrtpKeys, SrtpProtector
from callcenter.media.stats import ReceiveStats

log = logging.getLogger(__name__)

# Seconds the latched peer address must stay silent before packets from another address may take
# over (a NAT rebinding); until then other sources are received but not answered.
RELATCH_AFTER = 1.0
RTCP_INTERVAL = 5.0  # RFC 3550 §6.2 minimum, randomised ×[0.5, 1.5] (§6.3.1)
EARLY_TOLERANCE = 0.001  # s; a scheduler wake-up this early still serves the tick
DROP_AFTER_FAILURES = 50  # ticks in a row (1 s at 20 ms) a stream may fail before it is dropped
DSCP_EF_TOS = 0xB8  # DSCP 46 "expedited forwarding" for voice (RFC 4594)
STATIC_PT = {"PCMU": 0, "PCMA": 8}
PT_CODEC = {0: "PCMU", 8: "PCMA"}
AUDIO_FRAME = 0.02  # s; what audio taps receive per call

Address = tuple[Any, ...]  # (host, port) or (host, port, flowinfo, scope_id)
PacketHandler = Callable[[rtp.RtpPacket, float], None]
RtcpHandler = Callable[[list[rtcp.RtcpPacket], float], None]
AudioTap = Callable[[g711.Pcm, float], None]  # (20 ms int16 frame, now)
SendTap = Callable[[bytes, float], None]  # (G.711 payload in ``RtpSession.codec``, now)


class Ticking(Protocol):
    def on_tick(self, now: float) -> None: ...


class MediaScheduler:
    """Serves every active stream from one periodic tick, in a fixed order.

    With ``phases`` > 1 the tick is cut into that many sub-ticks and each stream is served on one of
    them (the least loaded when it is added), still every ``tick``: a tick's sending work is spread
    over the interval, so the streams served last in a tick are not late by the whole tick's work
    and a slow moment delays one phase's streams, not all of them.
    """

    def __init__(self, tick: float = 0.02, clock: Clock | None = None, phases: int = 1) -> None:
        if phases < 1:
            raise ValueError("phases must be at least 1")
        self.tick_interval = tick
        self.phases = phases
        self.clock: Clock = clock or MonotonicClock()
        # Per phase, insertion order is the send order.
        self._groups: list[dict[Ticking, None]] = [{} for _ in range(phases)]
        self._orders: list[tuple[Ticking, ...]] = [() for _ in range(phases)]
        self._phase_of: dict[Ticking, int] = {}
        self._failures: dict[Ticking, int] = {}  # stream → ticks failed in a row
        self._pacer: Pacer | None = None  # the sub-tick grid
        self._served = -1  # the last sub-tick index served
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._phase_of)

    def add(self, stream: Ticking) -> float:
        """Serve ``stream`` from its phase's next tick on. Returns that tick's time: schedules that
        start there and whose interval is a multiple of the tick fall exactly on its ticks."""
        if not self._phase_of or self._pacer is None:
            self._pacer = Pacer(self.tick_interval / self.phases, self.clock.now())
            self._served = -1
        phase = min(range(self.phases), key=lambda p: len(self._groups[p]))
        self._groups[phase][stream] = None
        self._orders[phase] = tuple(self._groups[phase])
        self._phase_of[stream] = phase
        self._ensure_task()
        self._wake.set()
        index = self._pacer.next_index
        index += (phase - index) % self.phases
        return self._pacer.deadline(index)

    def remove(self, stream: Ticking) -> None:
        self._failures.pop(stream, None)
        phase = self._phase_of.pop(stream, None)
        if phase is not None:
            self._groups[phase].pop(stream, None)
            self._orders[phase] = tuple(self._groups[phase])

    def tick(self, now: float) -> float:
        """Serve the streams whose (sub-)tick has come at ``now``; return the time of the next one."""
        pacer = self._pacer
        if pacer is None:
            pacer = self._pacer = Pacer(self.tick_interval / self.phases, now)
        pacer.due(now)  # advance the grid; after a stall it skips (no burst of ticks)
        last = pacer.next_index - 1
        # Serve every phase whose sub-tick passed since the last call, each once (after a stall the
        # streams' own pacers skip ahead rather than burst).
        first = max(self._served + 1, last - self.phases + 1)
        self._served = last
        for index in range(first, last + 1):
            for stream in self._orders[index % self.phases]:
                try:
                    stream.on_tick(now)
                except Exception:
                    self._failed(stream)
                else:
                    self._failures.pop(stream, None)
        return pacer.next_deadline()

    def _failed(self, stream: Ticking) -> None:
        """One broken stream must not silence every call, nor one bad tick a whole leg: a dropped leg
        goes on relaying (packet-driven) but its own sending, RTCP and audio taps (recording, ASR,
        a supervisor's mix) stop for the rest of the call. So a stream is dropped only after failing
        ``DROP_AFTER_FAILURES`` ticks in a row; the first failure is logged with its traceback."""
        n = self._failures.get(stream, 0) + 1
        self._failures[stream] = n
        if n == 1:
            log.exception("media stream failed in the scheduler (%r); serving it on", stream)
        if n >= DROP_AFTER_FAILURES:
            log.error("media stream failed %d ticks in a row; dropping it (%r)", n, stream)
            self.remove(stream)

    def _ensure_task(self) -> None:
        if self._closed or (self._task is not None and not self._task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (sans-I/O use, tests calling tick() by hand)
        self._task = loop.create_task(self._run(), name="media-scheduler")

    async def _run(self) -> None:
        clock = self.clock
        while not self._closed:
            if not self._phase_of or self._pacer is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            now = clock.now()
            due_at = self._pacer.next_deadline()
            if now < due_at - EARLY_TOLERANCE:
                await asyncio.sleep(due_at - now)
                continue
            # Timers may fire a little early (uvloop counts whole milliseconds on a cached clock):
            # within the tolerance, serve the tick as if on time rather than spin until it.
            next_at = self.tick(now if now > due_at else due_at)
            delay = next_at - clock.now()
            await asyncio.sleep(delay if delay > 0 else 0)

    async def aclose(self) -> None:
        self._closed = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


@dataclass(frozen=True, slots=True)
class SessionStats:
    packets_sent: int
    octets_sent: int
    packets_received: int
    packets_lost: int  # from sequence gaps (RFC 3550 A.3); negative with duplicates
    jitter_ms: float  # interarrival jitter of what we receive (A.8)
    malformed: int  # datagrams on the RTP/RTCP ports that did not parse
    skipped_slots: int  # send slots skipped after stalls of our own
    send_address: Address | None
    last_received_at: float | None
    # What the peer reported about our stream in its last RTCP report block, if any.
    remote_fraction_lost: float | None
    remote_cumulative_lost: int | None
    remote_jitter_ms: float | None
    # What the jitter buffer made of the received audio, summed over the call (zeros while nothing
    # listened to it: no taps, no in-band DTMF). Frames out = played + concealed.
    playout: PlayoutStats = field(default_factory=lambda: PlayoutStats())


@dataclass(frozen=True, slots=True)
class PlayoutStats:
    played: int = 0  # frames of received audio
    concealed: int = 0  # frames made up for missing audio
    late: int = 0  # packets that came after their frame had been played
    dropped: int = 0  # frames skipped to keep the latency bounded
    restarts: int = 0  # new SSRC, timestamp jump, or playout re-anchored after a run of late packets

    @classmethod
    def of(cls, jb: JitterBuffer) -> PlayoutStats:
        return cls(jb.played, jb.concealed, jb.late, jb.dropped, jb.restarts)

    def __add__(self, other: PlayoutStats) -> PlayoutStats:
        return PlayoutStats(self.played + other.played, self.concealed + other.concealed,
                            self.late + other.late, self.dropped + other.dropped,
                            self.restarts + other.restarts)


def _event_over(event: DtmfEvent) -> None:
    """The end of an RFC 4733 event: already reported at its first packet."""


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, handler: Callable[[bytes, Address], None]) -> None:
        self._handler = handler

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._handler(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the peer is not there (yet); keep going.
        log.debug("RTP socket error: %s", exc)


def _bind_udp(family: socket.AddressFamily, ip: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((ip, port))
    except OSError:
        sock.close()
        raise
    with contextlib.suppress(OSError, AttributeError):
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, DSCP_EF_TOS)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, DSCP_EF_TOS)
    return sock


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET


class RtpSession:
    """One call leg's RTP + RTCP. Create with ``await RtpSession.open(...)``; ``close()`` in ``finally``."""

    def __init__(self, *, allocator: RtpPortAllocator, scheduler: MediaScheduler, local_ip: str,
                 codec: str, payload_type: int, ptime_ms: int, on_packet: PacketHandler | None,
                 clock: Clock, cname: str, idle_silence: bool,
                 wallclock: Callable[[], float], on_rtcp: RtcpHandler | None,
                 rtcp_interval: float, on_dtmf: DtmfHandler | None = None, inband_dtmf: bool = False,
                 jitter_depth_ms: int = 60) -> None:
        self.allocator = allocator
        self.scheduler = scheduler
        self.local_ip = local_ip
        self.family = _family(local_ip)
        self.local_port = 0
        self.codec = codec.upper()
        self.telephone_event_pt: int | None = None
        self.on_packet = on_packet
        self.on_rtcp = on_rtcp
        self.rtcp_interval = rtcp_interval
        self.cname = cname
        self._clock = clock
        self._wallclock = wallclock
        self._idle_silence = idle_silence
        self._loop = asyncio.get_running_loop()
        spp = 8 * ptime_ms
        self.sender = RtpSender(
            ssrc=random.getrandbits(32), payload_type=payload_type, sequence=random.getrandbits(16),
            timestamp=random.getrandbits(32), ptime=ptime_ms / 1000.0,
            idle_frame=g711.silence(self.codec, spp) if idle_silence else None,
        )
        self.receive_stats = ReceiveStats(8000)
        self.last_received_at: float | None = None
        self.malformed = 0
        self.remote_report: rtcp.ReportBlock | None = None  # the peer's last report on our stream
        self.remote_bye = False
        self._wants_send = True  # the negotiated direction lets us send
        self._sdp_addr: Address | None = None
        self._send_addr: Address | None = None
        self._latched: Address | None = None
        self._latched_seen = 0.0
        self._sdp_rtcp_addr: Address | None = None
        self._rtcp_addr: Address | None = None
        # RFC 3550 §6.2: the first report may go after half the interval.
        self._next_rtcp = clock.now() + rtcp_interval * random.uniform(0.25, 0.75)
        self._packets_at_last_rtcp = 0
        self._last_sr_mid = 0
        self._last_sr_at: float | None = None
        self._rtp_transport: asyncio.DatagramTransport | None = None
        self._rtcp_transport: asyncio.DatagramTransport | None = None
        self._closed = False
        # DTMF in
        self.on_dtmf = on_dtmf
        # A digit is delivered at its key-down (the event's first packet), not at its end: the IVR
        # reacts while the key is still held (turn latency after a digit, issue 4: <= 150 ms).
        self.dtmf_receiver = Rfc4733Receiver(_event_over, on_press=self._on_dtmf_event)
        self._inband_wanted = inband_dtmf
        self._inband: InbandDtmfDetector | None = None
        # received audio for taps (and in-band DTMF detection), jitter-buffered
        self.jitter_depth_ms = jitter_depth_ms
        self.jitter: JitterBuffer | None = None
        self._past_playout = PlayoutStats()  # jitter buffers dropped when their last tap went
        self._audio_taps: list[AudioTap] = []
        self._audio_pacer: Pacer | None = None
        self._relay: PacketHandler | None = None  # a bridge's forwarder
        self.media_version = 0  # grows with every ``apply`` (bridges re-read codecs and PTs)
        self.protector: SrtpProtector | None = None  # SRTP contexts when the leg negotiated SDES
        self.srtp_failures = 0  # received packets that failed SRTP/SRTCP authentication
        self._update_audio()

    @classmethod
    async def open(
        cls,
        *,
        allocator: RtpPortAllocator,
        scheduler: MediaScheduler,
        local_ip: str,
        codec: str = "PCMU",
        payload_type: int | None = None,
        ptime_ms: int = 20,
        on_packet: PacketHandler | None = None,
        clock: Clock | None = None,
        cname: str | None = None,
        idle_silence: bool = True,
        wallclock: Callable[[], float] = time.time,
        on_rtcp: RtcpHandler | None = None,
        rtcp_interval: float = RTCP_INTERVAL,
        on_dtmf: DtmfHandler | None = None,
        inband_dtmf: bool = False,
        jitter_depth_ms: int = 60,
    ) -> RtpSession:
        """Bind an RTP/RTCP port pair on ``local_ip`` (an IP literal; "0.0.0.0"/"::" for all).

        Nothing is sent until ``apply``/``set_remote`` says where to. ``idle_silence``: send
        silence while no source plays (keeps NAT bindings and the peer's RTP timeout happy).
        ``on_dtmf(digit, source)``: digits received as RFC 4733 events (``"rfc4733"``) or, with
        ``inband_dtmf`` and no telephone-event negotiated, detected in the audio (``"inband"``).
        Raises ``RtpPortsExhausted`` when no pair can be allocated and bound.
        """
        if codec.upper() not in STATIC_PT:
            raise ValueError(f"unsupported codec {codec!r}")
        self = cls(allocator=allocator, scheduler=scheduler, local_ip=local_ip, codec=codec,
                   payload_type=STATIC_PT[codec.upper()] if payload_type is None else payload_type,
                   ptime_ms=ptime_ms, on_packet=on_packet, clock=clock or scheduler.clock,
                   cname=cname or secrets.token_hex(8), idle_silence=idle_silence, wallclock=wallclock,
                   on_rtcp=on_rtcp, rtcp_interval=rtcp_interval, on_dtmf=on_dtmf,
                   inband_dtmf=inband_dtmf, jitter_depth_ms=jitter_depth_ms)
        rtp_sock = rtcp_sock = None
        for _ in range(allocator.capacity):
            port = allocator.allocate()
            try:
                rtp_sock = _bind_udp(self.family, local_ip, port)
                try:
                    rtcp_sock = _bind_udp(self.family, local_ip, port + 1)
                except OSError:
                    rtp_sock.close()
                    raise
            except OSError as e:
                allocator.release(port)
                if e.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue  # someone else holds it; the allocator moves on round-robin
                raise
            self.local_port = port
            break
        else:
            raise RtpPortsExhausted(f"no bindable RTP port pair on {local_ip} in "
                                    f"{allocator.min_port}-{allocator.max_port}")
        assert rtp_sock is not None and rtcp_sock is not None
        try:
            t1, _ = await self._loop.create_datagram_endpoint(lambda: _Datagrams(self._on_rtp),
                                                              sock=rtp_sock)
            self._rtp_transport = t1
            t2, _ = await self._loop.create_datagram_endpoint(lambda: _Datagrams(self._on_rtcp),
                                                              sock=rtcp_sock)
            self._rtcp_transport = t2
        except BaseException:
            self.close()
            rtp_sock.close()
            rtcp_sock.close()
            raise
        return self

    # --- configuration -------------------------------------------------------------------------

    @property
    def local_rtcp_port(self) -> int:
        return self.local_port + 1

    @property
    def send_address(self) -> Address | None:
        return self._send_addr

    @property
    def closed(self) -> bool:
        return self._closed

    def _literal(self, host: str, port: int) -> Address | None:
        # Only IP literals of our family: sendto() with a host name would resolve it, blocking
        # the loop. Without a usable address we wait for the peer's packets (symmetric RTP).
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None
        if port <= 0 or ip.is_unspecified or _family(host) != self.family:
            return None
        return (str(ip), port)

    def set_remote(self, host: str, port: int, rtcp_host: str | None = None,
                   rtcp_port: int | None = None) -> None:
        """The peer's RTP (and RTCP) address from SDP. A changed address forgets the latched one."""
        addr = self._literal(host, port)
        if addr != self._sdp_addr:
            self._sdp_addr = addr
            self._latched = None
            self._send_addr = addr
        rtcp_addr = self._literal(rtcp_host or host, rtcp_port if rtcp_port is not None else port + 1)
        if rtcp_addr != self._sdp_rtcp_addr:
            self._sdp_rtcp_addr = rtcp_addr
            self._rtcp_addr = rtcp_addr
        self._update_enabled()
        self._start()

    def apply(self, media: NegotiatedMedia) -> None:
        """Use a negotiated SDP result (answer sent or answer received; also after re-INVITEs)."""
        codec = media.codec.upper()
        if codec not in STATIC_PT:
            raise ValueError(f"unsupported codec {media.codec!r}")
        self.codec = codec
        if self._idle_silence:
            self.sender.idle_frame = g711.silence(codec, 8 * media.ptime)
        self.sender.payload_type = media.payload_type
        self.telephone_event_pt = media.telephone_event_pt
        self._wants_send = media.sends
        self.sender.set_ptime(media.ptime / 1000.0, self._clock.now())
        self.media_version += 1
        self.set_srtp(media.srtp)
        self._update_audio()
        self.set_remote(media.remote_address, media.remote_port, media.remote_rtcp_address,
                        media.remote_rtcp_port)

    def set_srtp(self, keys: SrtpKeys | None) -> None:
        """Protect the leg with ``keys`` (None: plain RTP). Unchanged keys keep the contexts: a
        re-INVITE that repeats them must not restart libsrtp's rollover counter (RFC 3711 §3.3.1)."""
        if keys is None:
            self.protector = None
        elif self.protector is None or self.protector.keys != keys:
            self.protector = SrtpProtector(keys)

    def _update_enabled(self) -> None:
        self.sender.enabled = self._wants_send and self._send_addr is not None

    def _start(self) -> None:
        if not self.sender.started and not self._closed:
            self.sender.start(self.scheduler.add(self))

    # --- playback ------------------------------------------------------------------------------

    def play(self, frames: Iterable[bytes]) -> asyncio.Future[bool]:
        """Play pre-encoded frames (``pacer.encode_frames`` in ``self.codec``, one per ptime) from the
        next send slot on, replacing what played. The future is True when the frames ran out, False
        when stopped, replaced or closed first."""
        fut: asyncio.Future[bool] = self._loop.create_future()

        def done(finished: bool) -> None:
            if not fut.done():
                fut.set_result(finished)

        self.sender.play(frames, done)
        return fut

    def stop_playback(self) -> None:
        """Barge-in: the next packet (within one ptime) is idle again."""
        self.sender.stop()

    # --- DTMF ------------------------------------------------------------------------------------

    def send_dtmf(self, digits: str, duration_ms: int = 100, *, volume: int = 10,
                  gap_ms: int = 60) -> asyncio.Future[bool]:
        """Send ``digits`` (0-9 * # A-D) from the next slot on, after any queued before.

        As RFC 4733 events when the peer negotiated telephone-event, else as in-band tones in the
        voice stream. Each lasts ``duration_ms`` (40..5000); ``gap_ms`` of ordinary audio separates
        them; ``volume`` is the events' level in -dBm0. The future is True once the last packet went
        out, False if cancelled by ``close``. A prompt playing meanwhile pauses while a digit sounds.
        """
        if not 40 <= duration_ms <= 5000:
            raise ValueError("duration_ms must be 40..5000")
        if gap_ms < 0:
            raise ValueError("gap_ms must be >= 0")
        spp = self.sender.samples_per_packet
        rate = self.sender.clock_rate
        duration = max(rate * duration_ms // 1000, spp)
        gap = rate * gap_ms // 1000
        tx: EventTransmitter
        if self.telephone_event_pt is not None:
            tx = Rfc4733Transmitter(digits, payload_type=self.telephone_event_pt, samples_per_packet=spp,
                                    duration=duration, volume=volume, gap=gap)
        else:
            tx = InbandTransmitter(digits, payload_type=self.sender.payload_type, codec=self.codec,
                                   samples_per_packet=spp, duration=duration, gap=gap)
        fut: asyncio.Future[bool] = self._loop.create_future()

        def done(finished: bool) -> None:
            if not fut.done():
                fut.set_result(finished)

        self.sender.send_events(tx, done)
        return fut

    @property
    def inband_dtmf(self) -> bool:
        """Detect DTMF tones in the received audio when no telephone-event was negotiated."""
        return self._inband_wanted

    @inband_dtmf.setter
    def inband_dtmf(self, enabled: bool) -> None:
        self._inband_wanted = enabled
        self._update_audio()

    @property
    def inband_dtmf_active(self) -> bool:
        return self._inband is not None

    def _on_dtmf_event(self, event: DtmfEvent) -> None:
        self._emit_dtmf(event.digit, "rfc4733")

    def _emit_dtmf(self, digit: str, source: DtmfSource) -> None:
        cb = self.on_dtmf
        if cb is not None:
            try:
                cb(digit, source)
            except Exception:
                log.exception("DTMF handler failed")

    # --- audio taps ------------------------------------------------------------------------------

    def add_audio_tap(self, tap: AudioTap) -> None:
        """Receive what the peer sends as 20 ms int16 frames at 8 kHz, one per scheduler tick once
        audio started (jitter-buffered: in order, losses concealed)."""
        self._audio_taps.append(tap)
        self._update_audio()

    def remove_audio_tap(self, tap: AudioTap) -> None:
        with contextlib.suppress(ValueError):
            self._audio_taps.remove(tap)
        self._update_audio()

    def set_send_tap(self, tap: SendTap | None) -> None:
        """``tap(payload, now)`` with every audio payload sent (in ``self.codec``), e.g. to record it."""
        self.sender.on_frame = tap

    def _update_audio(self) -> None:
        inband = self._inband_wanted and self.telephone_event_pt is None
        if inband and self._inband is None:
            self._inband = InbandDtmfDetector()
        elif not inband:
            self._inband = None
        if self._audio_taps or self._inband is not None:
            if self.jitter is None:
                self.jitter = JitterBuffer(self.codec, depth_ms=self.jitter_depth_ms)
                self._audio_pacer = None
        else:
            if self.jitter is not None:
                self._past_playout += PlayoutStats.of(self.jitter)
            self.jitter = None
            self._audio_pacer = None

    def _pull_audio(self, jb: JitterBuffer, now: float) -> None:
        pacer = self._audio_pacer
        if pacer is None:
            start = self.sender.pacer.start if self.sender.pacer is not None else now
            pacer = self._audio_pacer = Pacer(AUDIO_FRAME, start, max_catchup=5)
            # A tap added mid-stream starts with this tick's frame: a catch-up burst here would put
            # playout frames ahead of the packets, which then all arrive "late".
            n = min(1, pacer.due(now)[0])
        else:
            n, _ = pacer.due(now)  # after a longer stall the buffer drops what it cannot hold
        inband = self._inband
        for _ in range(n):
            frame = jb.pop()
            if frame is None:
                return
            if inband is not None:
                for digit in inband.feed(frame):
                    self._emit_dtmf(digit, "inband")
            for tap in self._audio_taps:
                try:
                    tap(frame, now)
                except Exception:
                    log.exception("audio tap failed")

    # --- relaying (bridges) ----------------------------------------------------------------------

    def set_relay(self, handler: PacketHandler | None) -> None:
        """Hand every received RTP packet to ``handler`` too (a bridge forwarding it)."""
        self._relay = handler

    def send_relayed(self, payload_type: int, marker: bool, src_ssrc: int, src_ts: int, payload: bytes,
                     now: float) -> bool:
        """Send a packet from another leg as part of our stream (see ``RtpSender.relay``)."""
        if self._closed or self._send_addr is None:
            return False
        return self.sender.relay(payload_type, marker, src_ssrc, src_ts, payload, now, self._send_rtp)

    # --- the scheduler's tick -------------------------------------------------------------------

    def on_tick(self, now: float) -> None:
        self.sender.poll(now, self._send_rtp)
        jb = self.jitter
        if jb is not None:
            self._pull_audio(jb, now)
        if self.dtmf_receiver.pending:
            self.dtmf_receiver.handle_timer(now)
        if now >= self._next_rtcp:
            self._send_rtcp(now)

    def _send_rtp(self, packet: bytes) -> None:
        assert self._rtp_transport is not None
        if self.protector is not None:
            try:
                packet = self.protector.protect_rtp(packet)
            except SrtpError:
                log.debug("SRTP protect failed; packet dropped")
                return
        self._rtp_transport.sendto(packet, self._send_addr)

    # --- receiving -----------------------------------------------------------------------------

    def _on_rtp(self, data: bytes, addr: Address) -> None:
        if self.protector is not None:
            try:
                data = self.protector.unprotect_rtp(data)
            except SrtpError:
                self.srtp_failures += 1  # forged, replayed or plain RTP on an SRTP leg
                return
        try:
            packet = rtp.parse(data)
        except rtp.RtpParseError:
            self.malformed += 1
            return
        if 72 <= packet.payload_type <= 76:
            return  # RTCP sent to the RTP port (RFC 5761 §4); we did not offer rtcp-mux
        now = self._clock.now()
        self.last_received_at = now
        self.receive_stats.update(packet.ssrc, packet.sequence, packet.timestamp, now)
        if addr == self._latched:
            self._latched_seen = now
        elif self._latched is None or addr == self._sdp_addr or now - self._latched_seen >= RELATCH_AFTER:
            # Symmetric RTP (RFC 4961): answer where the peer's packets come from. The address the
            # SDP names is always believed (media moved by a re-INVITE).
            self._latched = addr
            self._latched_seen = now
            self._send_addr = addr
            self._update_enabled()
        pt = packet.payload_type
        if pt == self.telephone_event_pt:
            self.dtmf_receiver.feed(packet.ssrc, packet.timestamp, packet.payload, now)
        else:
            if self.dtmf_receiver.pending:
                self.dtmf_receiver.observe(packet.timestamp, now)
            jb = self.jitter
            if jb is not None:
                codec = self.codec if pt == self.sender.payload_type else PT_CODEC.get(pt)
                if codec is not None:
                    jb.put(packet.ssrc, packet.timestamp, packet.payload, codec)
        relay = self._relay
        if relay is not None:
            try:
                relay(packet, now)
            except Exception:
                log.exception("RTP relay failed")
        if self.on_packet is not None:
            try:
                self.on_packet(packet, now)
            except Exception:
                log.exception("RTP packet handler failed")

    def _on_rtcp(self, data: bytes, addr: Address) -> None:
        if self.protector is not None:
            try:
                data = self.protector.unprotect_rtcp(data)
            except SrtpError:
                self.srtp_failures += 1
                return
        try:
            packets = rtcp.parse_compound(data)
        except rtcp.RtcpParseError:
            self.malformed += 1
            return
        now = self._clock.now()
        self._rtcp_addr = addr  # symmetric RTCP
        ours = self.sender.ssrc
        for p in packets:
            blocks: tuple[rtcp.ReportBlock, ...] = ()
            if isinstance(p, rtcp.SenderReport):
                self._last_sr_mid = rtcp.ntp_middle32(p.ntp_timestamp)
                self._last_sr_at = now
                blocks = p.reports
            elif isinstance(p, rtcp.ReceiverReport):
                blocks = p.reports
            elif isinstance(p, rtcp.Bye):
                self.remote_bye = True
            for b in blocks:
                if b.ssrc == ours:
                    self.remote_report = b
        if self.on_rtcp is not None:
            try:
                self.on_rtcp(packets, now)
            except Exception:
                log.exception("RTCP packet handler failed")

    def _rtcp_compound(self, now: float, bye: bool = False) -> bytes:
        ssrc = self.sender.ssrc
        lsr = dlsr = 0
        if self._last_sr_at is not None:
            lsr = self._last_sr_mid
            dlsr = min(round((now - self._last_sr_at) * 65536), 0xFFFFFFFF)
        block = self.receive_stats.report_block(lsr, dlsr)
        blocks = (block,) if block is not None else ()
        report: rtcp.RtcpPacket
        if self.sender.packets_sent != self._packets_at_last_rtcp:
            # We sent since the last report: a sender report (RFC 3550 §6.4).
            report = rtcp.SenderReport(
                ssrc=ssrc, ntp_timestamp=rtcp.ntp_timestamp(self._wallclock()),
                rtp_timestamp=self.sender.rtp_timestamp_at(now),
                packet_count=self.sender.packets_sent & 0xFFFFFFFF,
                octet_count=self.sender.octets_sent & 0xFFFFFFFF, reports=blocks)
        else:
            report = rtcp.ReceiverReport(ssrc=ssrc, reports=blocks)
        self._packets_at_last_rtcp = self.sender.packets_sent
        parts: list[rtcp.RtcpPacket] = [
            report,
            rtcp.SourceDescription((rtcp.SdesChunk(ssrc, ((rtcp.SDES_CNAME, self.cname.encode()),)),)),
        ]
        if bye:
            parts.append(rtcp.Bye((ssrc,)))
        return rtcp.serialize_compound(parts)

    def _send_rtcp(self, now: float) -> None:
        self._next_rtcp = now + self.rtcp_interval * random.uniform(0.5, 1.5)
        if self._rtcp_addr is None or self._rtcp_transport is None:
            return
        self._send_rtcp_packet(self._rtcp_compound(now))

    def _send_rtcp_packet(self, data: bytes) -> None:
        assert self._rtcp_transport is not None
        if self.protector is not None:
            try:
                data = self.protector.protect_rtcp(data)
            except SrtpError:
                return
        self._rtcp_transport.sendto(data, self._rtcp_addr)

    # --- stats and teardown --------------------------------------------------------------------

    def stats(self) -> SessionStats:
        rx = self.receive_stats.snapshot()
        rr = self.remote_report
        return SessionStats(
            packets_sent=self.sender.packets_sent,
            octets_sent=self.sender.octets_sent,
            packets_received=rx.packets_received,
            packets_lost=rx.packets_lost,
            jitter_ms=rx.jitter_ms,
            malformed=self.malformed,
            skipped_slots=self.sender.skipped_slots,
            send_address=self._send_addr,
            last_received_at=self.last_received_at,
            remote_fraction_lost=None if rr is None else rr.fraction_lost / 256.0,
            remote_cumulative_lost=None if rr is None else rr.cumulative_lost,
            remote_jitter_ms=None if rr is None else rr.jitter * 1000.0 / 8000,
            playout=self._past_playout + PlayoutStats.of(self.jitter) if self.jitter is not None
            else self._past_playout,
        )

    def close(self) -> None:
        """Stop sending, say RTCP BYE, close both sockets, give the ports back. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.scheduler.remove(self)
        self.sender.stop()
        self.sender.cancel_events()
        self._relay = None
        if self._rtcp_transport is not None and self._rtcp_addr is not None:
            with contextlib.suppress(Exception):
                self._send_rtcp_packet(self._rtcp_compound(self._clock.now(), bye=True))
        for t in (self._rtp_transport, self._rtcp_transport):
            if t is not None:
                t.close()
        if self.local_port:
            self.allocator.release(self.local_port)
