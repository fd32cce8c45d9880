"""RtpSession with SRTP on real loopback UDP: protect at send, unprotect at receive, nothing in clear.

Waits are bounded by a hang guard on events the receivers set; nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import pytest

from callcenter.media import rtp, tones
from callcenter.media.pacer import encode_frames, looping
from callcenter.media.ports import RtpPortAllocator
from callcenter.media.rtp import RtpPacket
from callcenter.media.sdp import Direction, NegotiatedMedia
from callcenter.media.session import MediaScheduler, RtpSession
from callcenter.media.srtp import SrtpKeys, SrtpProtector, new_key

GUARD = 10.0  # seconds; a hang guard, not an assertion
SUITE = "AES_CM_128_HMAC_SHA1_80"


def media_to(port: int, keys: SrtpKeys | None) -> NegotiatedMedia:
    return NegotiatedMedia(
        remote_address="127.0.0.1",
        remote_port=port,
        remote_rtcp_address="127.0.0.1",
        remote_rtcp_port=port + 1,
        payload_type=0,
        codec="PCMU",
        clock_rate=8000,
        telephone_event_pt=101,
        ptime=20,
        direction=Direction.SENDRECV,
        media_index=0,
        srtp=keys,
    )


class Collector:
    def __init__(self, want: int) -> None:
        self.packets: list[RtpPacket] = []
        self.want = want
        self.enough = asyncio.Event()

    def __call__(self, packet: RtpPacket, now: float) -> None:
        self.packets.append(packet)
        if len(self.packets) >= self.want:
            self.enough.set()


@pytest.fixture
async def open_session():
    allocator = RtpPortAllocator(43000, 43999)
    scheduler = MediaScheduler()
    sessions: list[RtpSession] = []

    async def open_(**kw: object) -> RtpSession:
        s = await RtpSession.open(allocator=allocator, scheduler=scheduler, local_ip="127.0.0.1", **kw)
        sessions.append(s)
        return s

    yield open_
    for s in sessions:
        s.close()
    await scheduler.aclose()


async def test_two_srtp_sessions_exchange_the_tone_decoded(open_session) -> None:
    ka, kb = new_key(), new_key()
    rx = Collector(want=25)
    a = await open_session()
    b = await open_session(on_packet=rx)
    a.apply(media_to(b.local_port, SrtpKeys(SUITE, ka, kb)))
    b.apply(media_to(a.local_port, SrtpKeys(SUITE, kb, ka)))
    frames = list(encode_frames(tones.sine(440, 1.0), "PCMU"))
    a.play(looping(frames))
    await asyncio.wait_for(rx.enough.wait(), GUARD)
    tone = [p.payload for p in rx.packets if p.payload in frames]
    assert len(tone) >= 20  # the tone, decoded, arrives as it was played (some idle frames first)
    assert b.srtp_failures == 0


async def test_what_goes_on_the_wire_is_not_the_plain_audio(open_session) -> None:
    sniffer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sniffer.bind(("127.0.0.1", 0))
    sniffer.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        port = sniffer.getsockname()[1]
        ka, kb = new_key(), new_key()
        a = await open_session()
        a.apply(media_to(port, SrtpKeys(SUITE, ka, kb)))
        frames = set(encode_frames(tones.sine(440, 1.0), "PCMU"))
        a.play(looping(list(frames)))
        peer = SrtpProtector(SrtpKeys(SUITE, kb, ka))  # the phone's side
        decoded: list[RtpPacket] = []
        while len(decoded) < 10:
            wire = await asyncio.wait_for(loop.sock_recv(sniffer, 2048), GUARD)
            packet = rtp.parse(wire)
            assert len(packet.payload) == 160 + 10  # encrypted payload + 80-bit tag
            assert packet.payload[:160] not in frames
            decoded.append(rtp.parse(peer.unprotect_rtp(wire)))
        assert any(p.payload in frames for p in decoded)
    finally:
        sniffer.close()


async def test_plain_or_forged_packets_are_dropped_and_counted(open_session) -> None:
    ka, kb = new_key(), new_key()
    rx = Collector(want=1)
    b = await open_session(on_packet=rx)
    b.apply(media_to(9, SrtpKeys(SUITE, kb, ka)))
    phone = SrtpProtector(SrtpKeys(SUITE, ka, kb))
    good = RtpPacket(payload_type=0, sequence=2, timestamp=320, ssrc=77, payload=b"\xff" * 160)
    plain = dataclasses.replace(good, sequence=1, timestamp=160).serialize()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(plain, ("127.0.0.1", b.local_port))
        s.sendto(phone.protect_rtp(good.serialize()), ("127.0.0.1", b.local_port))
        await asyncio.wait_for(rx.enough.wait(), GUARD)
    assert [p.sequence for p in rx.packets] == [2]
    assert b.srtp_failures == 1


async def test_reapplying_the_same_keys_keeps_the_contexts(open_session) -> None:
    keys = SrtpKeys(SUITE, new_key(), new_key())
    a = await open_session()
    a.apply(media_to(9, keys))
    first = a.protector
    a.apply(media_to(9, keys))  # a re-INVITE repeating the crypto line
    assert a.protector is first
    a.apply(media_to(9, None))  # renegotiated to plain RTP
    assert a.protector is None
