"""Real UDP on 127.0.0.1: two RtpSessions talking to each other through one MediaScheduler.

Waits are on events set by the receiving callbacks, bounded by a generous timeout that only
guards against hangs; nothing asserts on elapsed time.
"""

import asyncio
import socket

import numpy as np
import pytest

from callcenter.core.clock import FakeClock
from callcenter.media import g711, rtcp, rtp, tones
from callcenter.media.pacer import encode_frames, looping
from callcenter.media.ports import RtpPortAllocator, RtpPortsExhausted
from callcenter.media.rtp import RtpPacket
from callcenter.media.sdp import Direction, NegotiatedMedia
from callcenter.media.session import MediaScheduler, RtpSession

GUARD = 10.0  # seconds; a hang guard, not an assertion


def media_to(port: int, codec: str = "PCMU", direction: Direction = Direction.SENDRECV,
             address: str = "127.0.0.1") -> NegotiatedMedia:
    return NegotiatedMedia(
        remote_address=address, remote_port=port, remote_rtcp_address=address, remote_rtcp_port=port + 1,
        payload_type=0 if codec == "PCMU" else 8, codec=codec, clock_rate=8000, telephone_event_pt=101,
        ptime=20, direction=direction, media_index=0,
    )


class Collector:
    def __init__(self, want: int) -> None:
        self.packets: list[RtpPacket] = []
        self.want = want
        self.enough = asyncio.Event()

    def __call__(self, packet, now) -> None:
        self.packets.append(packet)
        if len(self.packets) >= self.want:
            self.enough.set()


@pytest.fixture
async def env():
    allocator = RtpPortAllocator(41000, 41999)
    scheduler = MediaScheduler()
    sessions: list[RtpSession] = []

    async def open_session(**kw) -> RtpSession:
        s = await RtpSession.open(allocator=allocator, scheduler=scheduler, local_ip="127.0.0.1", **kw)
        sessions.append(s)
        return s

    yield allocator, open_session
    for s in sessions:
        s.close()
    await scheduler.aclose()


async def test_two_sessions_exchange_a_tone(env):
    allocator, open_session = env
    rx = Collector(want=60)
    a = await open_session()
    b = await open_session(on_packet=rx)
    a.apply(media_to(b.local_port))
    b.apply(media_to(a.local_port))
    a.play(looping(encode_frames(tones.sine(440, 1.0), "PCMU")))
    await asyncio.wait_for(rx.enough.wait(), GUARD)

    seqs = [p.sequence for p in rx.packets]
    assert all((y - x) % 65536 == 1 for x, y in zip(seqs, seqs[1:], strict=False))
    stamps = [p.timestamp for p in rx.packets]
    steps = [(y - x) % 2**32 for x, y in zip(stamps, stamps[1:], strict=False)]
    # 160 per packet; a loaded machine may stall the loop, after which the sender skips ahead.
    assert all(step % 160 == 0 and 0 < step <= 160 * (1 + a.sender.skipped_slots) for step in steps)
    assert rx.packets[0].marker and rx.packets[0].payload_type == 0
    assert b.stats().packets_lost == 0
    assert b.stats().packets_received >= 60

    audio = g711.ulaw_decode(b"".join(p.payload for p in rx.packets[:50])).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(audio))
    freqs = np.fft.rfftfreq(len(audio), 1 / 8000)
    assert freqs[np.argmax(spectrum)] == pytest.approx(440, abs=2)


async def test_symmetric_rtp_answers_where_packets_come_from(env):
    allocator, open_session = env
    a_rx = Collector(want=5)
    a = await open_session(on_packet=a_rx)
    b = await open_session()
    # B's SDP says the peer is somewhere else (a NAT's private address, say); A's packets arrive
    # from A's real port, and B must answer there.
    wrong = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wrong.bind(("127.0.0.1", 0))
    try:
        b.apply(media_to(wrong.getsockname()[1]))
        a.apply(media_to(b.local_port))
        await asyncio.wait_for(a_rx.enough.wait(), GUARD)
    finally:
        wrong.close()
    assert b.send_address == ("127.0.0.1", a.local_port)
    assert all(p.ssrc == b.sender.ssrc for p in a_rx.packets)


async def test_rtcp_reports_flow_both_ways(env):
    allocator, open_session = env
    got_sr = asyncio.Event()
    reports: list[rtcp.RtcpPacket] = []

    def on_rtcp(packets, now):
        reports.extend(packets)
        if any(isinstance(p, rtcp.SenderReport) and p.reports for p in packets):
            got_sr.set()

    a = await open_session(rtcp_interval=0.1)
    b = await open_session(rtcp_interval=0.1, on_rtcp=on_rtcp)
    a.apply(media_to(b.local_port))
    b.apply(media_to(a.local_port))
    await asyncio.wait_for(got_sr.wait(), GUARD)
    sr = next(p for p in reports if isinstance(p, rtcp.SenderReport) and p.reports)
    assert sr.ssrc == a.sender.ssrc
    assert sr.packet_count > 0 and sr.octet_count == 160 * sr.packet_count
    assert sr.reports[0].ssrc == b.sender.ssrc  # A reports on what it receives from B
    assert any(isinstance(p, rtcp.SourceDescription) for p in reports)


async def test_play_future_completes_and_close_releases_ports(env):
    allocator, open_session = env
    rx = Collector(want=1)
    a = await open_session()
    b = await open_session(on_packet=rx)
    assert allocator.in_use == 2
    a.apply(media_to(b.local_port))
    done = a.play(encode_frames(tones.sine(440, 0.1), "PCMU"))  # 5 frames
    assert await asyncio.wait_for(done, GUARD) is True
    looping_done = a.play(looping(encode_frames(tones.sine(440, 0.1), "PCMU")))
    a.stop_playback()
    assert await asyncio.wait_for(looping_done, GUARD) is False
    a.close()
    a.close()  # idempotent
    b.close()
    assert allocator.in_use == 0
    assert a.closed


async def test_hold_stops_sending_and_resume_restarts(env):
    allocator, open_session = env
    rx = Collector(want=3)
    a = await open_session()
    b = await open_session(on_packet=rx)
    a.apply(media_to(b.local_port, direction=Direction.RECVONLY))  # the peer holds us
    assert not a.sender.enabled
    a.apply(media_to(b.local_port))  # resumed
    assert a.sender.enabled
    await asyncio.wait_for(rx.enough.wait(), GUARD)
    assert rx.packets[0].marker


async def test_pcma_session_uses_payload_type_8_and_alaw_silence(env):
    allocator, open_session = env
    rx = Collector(want=2)
    a = await open_session(codec="PCMA")
    b = await open_session(on_packet=rx)
    a.apply(media_to(b.local_port, codec="PCMA"))
    await asyncio.wait_for(rx.enough.wait(), GUARD)
    assert rx.packets[0].payload_type == 8
    assert rx.packets[0].payload == g711.silence("PCMA", 160)


async def test_malformed_datagrams_are_counted_not_fatal(env):
    allocator, open_session = env
    rx = Collector(want=1)
    b = await open_session(on_packet=rx)
    a = await open_session()
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        junk.sendto(b"\x00garbage", ("127.0.0.1", b.local_port))
        junk.sendto(b"\x00garbage", ("127.0.0.1", b.local_rtcp_port))
        a.apply(media_to(b.local_port))
        await asyncio.wait_for(rx.enough.wait(), GUARD)
    finally:
        junk.close()
    assert b.stats().malformed == 2


async def test_ports_in_use_elsewhere_are_skipped_and_exhaustion_is_reported():
    allocator = RtpPortAllocator(43000, 43003)  # pairs 43000 and 43002
    scheduler = MediaScheduler()
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", 43001))  # another program holds the first pair's RTCP port
    try:
        s = await RtpSession.open(allocator=allocator, scheduler=scheduler, local_ip="127.0.0.1")
        assert (s.local_port, s.local_rtcp_port) == (43002, 43003)
        with pytest.raises(RtpPortsExhausted):
            await RtpSession.open(allocator=allocator, scheduler=scheduler, local_ip="127.0.0.1")
        assert allocator.in_use == 1
        s.close()
        assert allocator.in_use == 0
    finally:
        squatter.close()
        await scheduler.aclose()


async def test_last_received_at_tracks_inbound_media(env):
    allocator, open_session = env
    rx = Collector(want=2)
    a = await open_session()
    b = await open_session(on_packet=rx)
    assert b.last_received_at is None
    a.apply(media_to(b.local_port))
    await asyncio.wait_for(rx.enough.wait(), GUARD)
    assert b.last_received_at is not None
    assert b.stats().last_received_at == b.last_received_at


async def test_latching_rules_on_a_fake_clock():
    clock = FakeClock(100.0)
    allocator = RtpPortAllocator(44000, 44009)
    scheduler = MediaScheduler(clock=clock)
    s = await RtpSession.open(allocator=allocator, scheduler=scheduler, local_ip="127.0.0.1")
    try:
        s.set_remote("127.0.0.1", 50000)
        assert s.send_address == ("127.0.0.1", 50000)

        def arrive(port: int, seq: int) -> None:
            s._on_rtp(rtp.header(0, False, seq, seq * 160, 77) + b"\xff" * 160, ("127.0.0.1", port))

        arrive(50010, 1)  # first packet: latch (NAT moved the peer's port)
        assert s.send_address == ("127.0.0.1", 50010)
        clock.advance(0.5)
        arrive(50020, 2)  # someone else while the latched source is alive: not followed
        assert s.send_address == ("127.0.0.1", 50010)
        arrive(50000, 3)  # the SDP address is always believed
        assert s.send_address == ("127.0.0.1", 50000)
        clock.advance(1.5)  # the latched source went quiet (NAT rebinding)
        arrive(50030, 4)
        assert s.send_address == ("127.0.0.1", 50030)
        s.set_remote("127.0.0.1", 50040)  # re-INVITE moved the media
        assert s.send_address == ("127.0.0.1", 50040)
        assert s.stats().packets_received == 4
    finally:
        s.close()
        await scheduler.aclose()
