"""Bridge: header rewrite on a fake clock, then a loopback of four sessions over real UDP."""

import asyncio
import dataclasses

import numpy as np
import pytest

from callcenter.core.clock import FakeClock
from callcenter.media import g711, rtp, tones
from callcenter.media.bridge import Bridge
from callcenter.media.dtmf import decode_event, encode_event
from callcenter.media.pacer import encode_frames, looping
from callcenter.media.ports import RtpPortAllocator
from callcenter.media.sdp import Direction, NegotiatedMedia
from callcenter.media.session import MediaScheduler, RtpSession

GUARD = 10.0
ADDR = ("127.0.0.1", 40000)


def media_to(port: int, codec: str = "PCMU", te: int | None = 101) -> NegotiatedMedia:
    return NegotiatedMedia(
        remote_address="127.0.0.1", remote_port=port, remote_rtcp_address="127.0.0.1",
        remote_rtcp_port=port + 1, payload_type=0 if codec == "PCMU" else 8, codec=codec,
        clock_rate=8000, telephone_event_pt=te, ptime=20, direction=Direction.SENDRECV, media_index=0,
    )


def peak_hz(payloads: list[bytes], codec: str) -> float:
    audio = g711.decode(b"".join(payloads), codec).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(len(audio), 1 / 8000)[np.argmax(spectrum)])


# --- deterministic: rewrite rules ----------------------------------------------------------------


@pytest.fixture
async def fake_legs():
    clock = FakeClock(100.0)
    allocator = RtpPortAllocator(47000, 47019)
    scheduler = MediaScheduler(clock=clock)
    a = await RtpSession.open(allocator=allocator, scheduler=scheduler, local_ip="127.0.0.1")
    b = await RtpSession.open(allocator=allocator, scheduler=scheduler, local_ip="127.0.0.1", codec="PCMA")
    a.apply(media_to(40000))
    b.apply(media_to(40002, "PCMA", te=96))
    sent_b: list[rtp.RtpPacket] = []
    b._send_rtp = lambda data: sent_b.append(rtp.parse(data))  # capture what leg B sends
    a._send_rtp = lambda data: None
    yield clock, scheduler, a, b, sent_b
    a.close()
    b.close()
    await scheduler.aclose()


def into(session, pt, seq, ts, payload, ssrc=0x5150, marker=False):
    session._on_rtp(rtp.RtpPacket(pt, seq, ts, ssrc, payload, marker).serialize(), ADDR)


async def test_relayed_stream_continues_the_legs_own_stream(fake_legs):
    clock, scheduler, a, b, sent_b = fake_legs
    for _ in range(3):  # B sends its own silence first
        scheduler.tick(clock.now())
        clock.advance(0.02)
    bridge = Bridge(a, b).start()
    ulaw = g711.ulaw_encode(tones.sine(440, 0.02))
    src_ts = 3_000_000_000
    for k in range(5):
        into(a, 0, 700 + k, src_ts + 160 * k, ulaw)
        scheduler.tick(clock.now())  # B's own slots stay silent while relayed packets flow
        clock.advance(0.02)
    own, relayed = sent_b[:3], sent_b[3:]
    assert len(relayed) == 5
    assert {p.ssrc for p in sent_b} == {b.sender.ssrc}
    assert [p.sequence for p in sent_b] == [(own[0].sequence + i) % 65536 for i in range(8)]
    assert relayed[0].timestamp == (own[-1].timestamp + 160) % 2**32  # continues, no jump
    assert [(p.timestamp - relayed[0].timestamp) % 2**32 for p in relayed] == [0, 160, 320, 480, 640]
    assert relayed[0].marker and not any(p.marker for p in relayed[1:])
    assert {p.payload_type for p in relayed} == {8}
    assert relayed[0].payload == g711.ulaw_to_alaw(ulaw)  # transcoded PCMU -> PCMA by table
    assert bridge.stats.a_to_b == 5 and bridge.stats.transcoded == 5

    # The caller's phone switches SSRC and timestamps (e.g. after a re-INVITE): still continuous.
    into(a, 0, 1, 42, ulaw, ssrc=0x7777)
    assert sent_b[-1].timestamp == (relayed[-1].timestamp + 160) % 2**32 and sent_b[-1].marker

    # The bridge stops: B's own audio resumes after the relayed packets, marked.
    bridge.stop()
    n = len(sent_b)
    for _ in range(10):
        clock.advance(0.02)
        scheduler.tick(clock.now())
    resumed = sent_b[n:]
    assert resumed and resumed[0].marker
    assert resumed[0].payload == g711.silence("PCMA", 160)
    assert 0 < (resumed[0].timestamp - sent_b[n - 1].timestamp) % 2**32 < 2**31
    assert resumed[0].sequence == (sent_b[n - 1].sequence + 1) % 65536


async def test_own_audio_fills_in_when_the_other_side_pauses(fake_legs):
    clock, scheduler, a, b, sent_b = fake_legs
    Bridge(a, b).start()
    into(a, 0, 1, 1000, g711.silence("PCMU", 160))
    n = len(sent_b)
    for _ in range(10):  # the caller stops sending (silence suppression, hold)
        clock.advance(0.02)
        scheduler.tick(clock.now())
    filled = sent_b[n:]
    assert len(filled) >= 4  # after relay_hold (0.1 s) B's idle frames keep the stream alive
    stamps = [p.timestamp for p in sent_b]
    assert all(0 < (y - x) % 2**32 < 2**31 for x, y in zip(stamps, stamps[1:], strict=False))


async def test_dtmf_passes_through_with_the_other_legs_payload_type(fake_legs):
    clock, scheduler, a, b, sent_b = fake_legs
    heard: list[str] = []
    a.on_dtmf = lambda d, src: heard.append(d)
    bridge = Bridge(a, b).start()
    for k, (dur, end) in enumerate([(160, False), (320, False), (480, True), (480, True), (480, True)]):
        into(a, 101, 10 + k, 5000, encode_event(4, dur, end=end), marker=k == 0)
    events = [p for p in sent_b if p.payload_type == 96]
    assert [decode_event(p.payload) for p in events][-1] == (4, True, 10, 480)
    assert len(events) == 5 and events[0].marker
    assert len({p.timestamp for p in events}) == 1  # the event keeps one timestamp
    assert heard == ["4"]  # and the receiving leg still reports the digit
    assert bridge.stats.dtmf_forwarded == 5


async def test_dtmf_is_dropped_and_reported_when_the_other_leg_has_no_telephone_event(fake_legs):
    clock, scheduler, a, b, sent_b = fake_legs
    b.apply(media_to(40002, "PCMA", te=None))
    dropped = []
    bridge = Bridge(a, b, on_dtmf_dropped=lambda leg, p: dropped.append(leg)).start()
    into(a, 101, 1, 5000, encode_event(4, 160))
    into(a, 13, 2, 5000, b"\x40")  # comfort noise: not forwarded either
    assert not [p for p in sent_b if p.payload_type not in (8,)]
    assert bridge.stats.dtmf_dropped == 1 and dropped == [a]
    assert bridge.stats.not_forwarded == 1


async def test_same_codec_is_not_transcoded_and_hold_stops_relaying(fake_legs):
    clock, scheduler, a, b, sent_b = fake_legs
    b.apply(media_to(40002, "PCMU", te=96))
    bridge = Bridge(a, b).start()
    payload = bytes(range(160))
    into(a, 0, 1, 1000, payload)
    assert sent_b[-1].payload == payload and sent_b[-1].payload_type == 0
    b.apply(dataclasses.replace(media_to(40002, "PCMU", te=96), direction=Direction.RECVONLY))
    n = len(sent_b)
    into(a, 0, 2, 1160, payload)  # B's peer put us on hold: nothing goes to it
    assert len(sent_b) == n
    assert bridge.stats.transcoded == 0 and bridge.stats.not_forwarded == 1


async def test_bridge_arguments():
    with pytest.raises(ValueError):
        Bridge(object(), object()).add_tap("sideways", lambda f, t: None)  # type: ignore[arg-type]


# --- loopback over UDP -----------------------------------------------------------------------------


class Collector:
    def __init__(self, want: int, ssrc_of=None) -> None:
        self.packets: list[rtp.RtpPacket] = []
        self.want = want
        self.ssrc_of = ssrc_of
        self.enough = asyncio.Event()

    def __call__(self, packet, now) -> None:
        self.packets.append(packet)
        if self.ssrc_of is not None and len(self.relayed()) >= self.want:
            self.enough.set()

    def relayed(self):
        return [p for p in self.packets if p.payload_type in (0, 8) and p.payload != g711.silence(
            "PCMU" if p.payload_type == 0 else "PCMA", 160)]


@pytest.fixture
async def four_sessions():
    allocator = RtpPortAllocator(48000, 48999)
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


async def test_loopback_pcmu_leg_to_pcma_leg_and_back(four_sessions):
    open_ = four_sessions
    at_caller = Collector(40, ssrc_of=True)
    at_agent = Collector(40, ssrc_of=True)
    agent_digits: list[tuple[str, str]] = []
    got_digit = asyncio.Event()

    def on_agent_dtmf(d, src):
        agent_digits.append((d, src))
        got_digit.set()

    caller = await open_(on_packet=at_caller)  # the caller's phone, PCMU
    leg_a = await open_()  # our leg towards the caller, PCMU
    leg_b = await open_(codec="PCMA")  # our leg towards the agent, PCMA
    agent = await open_(codec="PCMA", on_packet=at_agent, on_dtmf=on_agent_dtmf)  # the agent's phone
    caller.apply(media_to(leg_a.local_port, "PCMU", te=101))
    leg_a.apply(media_to(caller.local_port, "PCMU", te=101))
    leg_b.apply(media_to(agent.local_port, "PCMA", te=96))
    agent.apply(media_to(leg_b.local_port, "PCMA", te=96))

    tapped = {"a_to_b": [], "b_to_a": []}
    bridge = Bridge(leg_a, leg_b)
    bridge.add_tap("a_to_b", lambda f, now: tapped["a_to_b"].append(f))
    bridge.add_tap("b_to_a", lambda f, now: tapped["b_to_a"].append(f))
    bridge.start()
    caller.play(looping(encode_frames(tones.sine(440, 1.0, level_db=-6), "PCMU")))
    agent.play(looping(encode_frames(tones.sine(1000, 1.0, level_db=-6), "PCMA")))
    await asyncio.wait_for(asyncio.gather(at_caller.enough.wait(), at_agent.enough.wait()), GUARD)

    to_agent = at_agent.relayed()
    to_caller = at_caller.relayed()
    assert {p.payload_type for p in to_agent} == {8} and {p.ssrc for p in to_agent} == {leg_b.sender.ssrc}
    assert {p.payload_type for p in to_caller} == {0} and {p.ssrc for p in to_caller} == {leg_a.sender.ssrc}
    assert peak_hz([p.payload for p in to_agent[-25:]], "PCMA") == pytest.approx(440, abs=5)
    assert peak_hz([p.payload for p in to_caller[-25:]], "PCMU") == pytest.approx(1000, abs=5)
    # Each far end sees one continuous stream: no sequence gap across the switch to relayed audio.
    for packets in (at_agent.packets, at_caller.packets):
        seqs = [p.sequence for p in packets]
        assert all((y - x) % 65536 == 1 for x, y in zip(seqs, seqs[1:], strict=False))
    assert agent.stats().packets_lost == 0 and caller.stats().packets_lost == 0

    # DTMF from the caller reaches the agent as RFC 4733 with the agent leg's payload type.
    await asyncio.wait_for(caller.send_dtmf("8", duration_ms=80), GUARD)
    await asyncio.wait_for(got_digit.wait(), GUARD)
    assert agent_digits == [("8", "rfc4733")]
    assert any(p.payload_type == 96 for p in at_agent.packets)

    # The taps heard each direction as 20 ms frames.
    assert all(len(f) == 160 for f in tapped["a_to_b"] + tapped["b_to_a"])
    hz_ab = peak_hz([g711.ulaw_encode(f) for f in tapped["a_to_b"][-25:]], "PCMU")
    hz_ba = peak_hz([g711.ulaw_encode(f) for f in tapped["b_to_a"][-25:]], "PCMU")
    assert (hz_ab, hz_ba) == (pytest.approx(440, abs=5), pytest.approx(1000, abs=5))
    bridge.stop()
    assert leg_a.jitter is None and leg_b.jitter is None  # taps removed with the bridge
