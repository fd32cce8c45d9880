"""RtpSession: DTMF in and out (RFC 4733 and in-band), audio taps. Real UDP on 127.0.0.1.

Waits are on events set by callbacks, bounded by a hang guard; nothing asserts on elapsed time.
"""

import asyncio
import dataclasses

import numpy as np
import pytest

from callcenter.core.clock import FakeClock
from callcenter.media import g711, rtp, tones
from callcenter.media.dtmf import encode_event
from callcenter.media.pacer import encode_frames, looping
from callcenter.media.ports import RtpPortAllocator
from callcenter.media.sdp import Direction, NegotiatedMedia
from callcenter.media.session import MediaScheduler, RtpSession

GUARD = 10.0


def media_to(port: int, codec: str = "PCMU", te: int | None = 101) -> NegotiatedMedia:
    return NegotiatedMedia(
        remote_address="127.0.0.1", remote_port=port, remote_rtcp_address="127.0.0.1",
        remote_rtcp_port=port + 1, payload_type=0 if codec == "PCMU" else 8, codec=codec,
        clock_rate=8000, telephone_event_pt=te, ptime=20, direction=Direction.SENDRECV, media_index=0,
    )


class Digits:
    def __init__(self, want: int) -> None:
        self.got: list[tuple[str, str]] = []
        self.want = want
        self.enough = asyncio.Event()

    def __call__(self, digit: str, source: str) -> None:
        self.got.append((digit, source))
        if len(self.got) >= self.want:
            self.enough.set()


@pytest.fixture
async def open_session():
    allocator = RtpPortAllocator(45000, 45999)
    scheduler = MediaScheduler()
    sessions: list[RtpSession] = []

    async def open_(**kw) -> RtpSession:
        s = await RtpSession.open(allocator=allocator, scheduler=scheduler, local_ip="127.0.0.1", **kw)
        sessions.append(s)
        return s

    yield open_
    for s in sessions:
        s.close()
    await scheduler.aclose()


async def test_rfc4733_digits_sent_by_one_session_are_heard_once_by_the_other(open_session):
    digits = Digits(want=4)
    a = await open_session()
    b = await open_session(on_dtmf=digits)
    a.apply(media_to(b.local_port))
    b.apply(media_to(a.local_port))
    a.play(looping(encode_frames(tones.sine(440, 1.0), "PCMU")))
    done = a.send_dtmf("19#*", duration_ms=80)
    assert await asyncio.wait_for(done, GUARD) is True
    await asyncio.wait_for(digits.enough.wait(), GUARD)
    assert digits.got == [("1", "rfc4733"), ("9", "rfc4733"), ("#", "rfc4733"), ("*", "rfc4733")]


async def test_without_telephone_event_digits_go_in_band_and_are_detected(open_session):
    digits = Digits(want=3)
    a = await open_session(codec="PCMA")
    b = await open_session(codec="PCMA", on_dtmf=digits, inband_dtmf=True)
    a.apply(media_to(b.local_port, "PCMA", te=None))
    b.apply(media_to(a.local_port, "PCMA", te=None))
    assert b.inband_dtmf_active
    await asyncio.wait_for(a.send_dtmf("507", duration_ms=100), GUARD)
    await asyncio.wait_for(digits.enough.wait(), GUARD)
    assert digits.got == [("5", "inband"), ("0", "inband"), ("7", "inband")]


async def test_inband_detection_only_when_enabled_and_no_telephone_event(open_session):
    s = await open_session(inband_dtmf=True)
    s.apply(media_to(40000, te=101))
    assert not s.inband_dtmf_active and s.jitter is None  # RFC 4733 negotiated: no decoding at all
    s.apply(media_to(40000, te=None))
    assert s.inband_dtmf_active and s.jitter is not None
    s.inband_dtmf = False
    assert not s.inband_dtmf_active and s.jitter is None


async def test_send_dtmf_validates_and_close_cancels(open_session):
    a = await open_session()
    a.apply(media_to(40002))
    with pytest.raises(ValueError):
        a.send_dtmf("1", duration_ms=10)
    with pytest.raises(ValueError):
        a.send_dtmf("1x")
    fut = a.send_dtmf("123")
    a.close()
    assert await asyncio.wait_for(fut, GUARD) is False


async def test_audio_taps_get_the_received_audio_in_20ms_frames(open_session):
    frames: list[np.ndarray] = []
    enough = asyncio.Event()

    def tap(frame, now):
        frames.append(frame)
        if len(frames) >= 40:
            enough.set()

    a = await open_session()
    b = await open_session()
    a.apply(media_to(b.local_port))
    b.apply(media_to(a.local_port))
    b.add_audio_tap(tap)
    a.play(looping(encode_frames(tones.sine(1000, 1.0), "PCMU")))
    await asyncio.wait_for(enough.wait(), GUARD)
    assert all(f.dtype == np.int16 and len(f) == 160 for f in frames)
    audio = np.concatenate(frames[-25:]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.fft.rfftfreq(len(audio), 1 / 8000)[np.argmax(spectrum)] == pytest.approx(1000, abs=10)
    b.remove_audio_tap(tap)
    assert b.jitter is None
    # what the buffer did stays in the leg's stats (the call record's rtp.playout)
    playout = b.stats().playout
    assert playout.played + playout.concealed >= len(frames) and playout.played >= 25
    a.close()
    assert b.stats().playout == playout  # nothing listens: nothing more is counted


async def test_send_tap_sees_every_audio_payload(open_session):
    sent: list[bytes] = []
    a = await open_session()
    a.set_send_tap(lambda payload, now: sent.append(payload))
    rx = asyncio.Event()
    got: list[rtp.RtpPacket] = []

    def on_packet(p, now):
        got.append(p)
        if len(got) >= 5:
            rx.set()

    b = await open_session(on_packet=on_packet)
    a.apply(media_to(b.local_port))
    a.play(looping(encode_frames(tones.sine(440, 0.2), "PCMU")))
    await asyncio.wait_for(rx.wait(), GUARD)
    assert [p.payload for p in got[:5]] == sent[:5]


async def test_rfc4733_timeout_fires_from_the_tick_on_a_fake_clock():
    clock = FakeClock(100.0)
    allocator = RtpPortAllocator(46000, 46009)
    scheduler = MediaScheduler(clock=clock)
    digits: list[tuple[str, str]] = []
    s = await RtpSession.open(allocator=allocator, scheduler=scheduler, local_ip="127.0.0.1",
                              on_dtmf=lambda d, src: digits.append((d, src)))
    try:
        s.apply(dataclasses.replace(media_to(40000), telephone_event_pt=96))

        def arrive(seq, ts, payload, pt=96):
            s._on_rtp(rtp.header(pt, False, seq, ts, 5) + payload, ("127.0.0.1", 40000))

        arrive(1, 8000, encode_event(3, 160))
        clock.advance(0.02)
        arrive(2, 8000, encode_event(3, 320))  # then the phone goes quiet: no end packets
        for _ in range(30):
            clock.advance(0.02)
            scheduler.tick(clock.now())
        assert digits == [("3", "rfc4733")]
        arrive(3, 8000, encode_event(3, 480, end=True))  # a very late end: not a second digit
        assert digits == [("3", "rfc4733")]
        arrive(4, 9000, g711.silence("PCMU", 160), pt=0)  # voice is not DTMF
        assert len(digits) == 1
    finally:
        s.close()
        await scheduler.aclose()
