"""The monitoring mixer: who hears whom per mode (pure), then on three legs with a fake clock."""

from __future__ import annotations

import numpy as np
import pytest

from callcenter.core.clock import FakeClock
from callcenter.media import g711, rtp, tones
from callcenter.media.bridge import Bridge
from callcenter.media.dtmf import decode_event, encode_event
from callcenter.media.mixer import HEARS, MODES, LiveMix, Mixer, direct_partner, mix
from callcenter.media.ports import RtpPortAllocator
from callcenter.media.sdp import Direction, NegotiatedMedia
from callcenter.media.session import MediaScheduler, RtpSession

# A tone per participant: what a listener's frame contains tells whom it hears.
FREQ = {"caller": 400.0, "agent": 1000.0, "supervisor": 2200.0}
ADDR = ("127.0.0.1", 40000)


def frame(who: str, level_db: float = -10.0) -> np.ndarray:
    return tones.sine(FREQ[who], 0.02, level_db=level_db)


def heard(pcm: np.ndarray) -> set[str]:
    """The participants whose tone is clearly present in ``pcm`` (one or several 20 ms frames)."""
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(pcm), 1 / 8000)
    floor = max(spectrum.max(), 1.0) * 0.1
    return {who for who, f in FREQ.items() if spectrum[np.argmin(np.abs(freqs - f))] > floor}


# --- pure: the matrix ----------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "expected"), [
    ("listen", {"caller": {"agent"}, "agent": {"caller"}, "supervisor": {"caller", "agent"}}),
    ("whisper", {"caller": {"agent"}, "agent": {"caller", "supervisor"}, "supervisor": {"caller", "agent"}}),
    ("barge", {"caller": {"agent", "supervisor"}, "agent": {"caller", "supervisor"},
               "supervisor": {"caller", "agent"}}),
])
def test_who_hears_whom(mode, expected):
    frames = {who: frame(who) for who in FREQ}
    out = mix(frames, HEARS[mode])
    assert {who: heard(pcm) for who, pcm in out.items()} == expected


def test_nobody_hears_their_own_voice_in_any_mode():
    for mode in MODES:
        for who in FREQ:
            out = mix({who: frame(who)}, HEARS[mode])  # only one participant speaks
            assert not out[who].any(), (mode, who)


def test_the_sum_saturates_instead_of_wrapping():
    loud = np.full(160, 30000, dtype=np.int16)
    out = mix({"caller": loud, "agent": loud, "supervisor": -loud}, HEARS["barge"])
    assert (out["supervisor"] == 32767).all()  # 60000 clipped, not wrapped to a negative value
    assert (out["caller"] == 0).all()  # 30000 - 30000
    low = np.full(160, -30000, dtype=np.int16)
    assert (mix({"caller": low, "agent": low}, HEARS["listen"])["supervisor"] == -32768).all()


def test_sum_is_exact_below_full_scale():
    a, b = frame("caller", -20.0), frame("agent", -20.0)
    out = mix({"caller": a, "agent": b}, HEARS["listen"])
    assert np.array_equal(out["supervisor"], a + b)
    assert np.array_equal(out["agent"], a)  # caller's voice unchanged for the agent


def test_direct_partner_only_where_hearing_is_exactly_the_partner():
    assert direct_partner("listen", "caller") == "agent"
    assert direct_partner("listen", "agent") == "caller"
    assert direct_partner("whisper", "caller") == "agent"
    assert direct_partner("whisper", "agent") is None
    assert direct_partner("barge", "caller") is None
    for mode in MODES:
        assert direct_partner(mode, "supervisor") is None


def test_a_participant_without_a_frame_is_silence():
    mixer = Mixer("barge")
    mixer.push("caller", frame("caller"))
    out = mixer.tick()  # the agent's and supervisor's jitter buffers ran dry this tick
    assert heard(out["agent"]) == {"caller"} and heard(out["supervisor"]) == {"caller"}
    assert not out["caller"].any()
    assert mixer.underruns == {"caller": 0, "agent": 1, "supervisor": 1}
    assert not any(f.any() for f in mixer.tick().values())  # nothing queued: all silence


def test_mode_changes_apply_from_the_next_tick():
    mixer = Mixer("listen")
    for mode, agent_hears, caller_hears in [("listen", {"caller"}, {"agent"}),
                                            ("whisper", {"caller", "supervisor"}, {"agent"}),
                                            ("barge", {"caller", "supervisor"}, {"agent", "supervisor"}),
                                            ("listen", {"caller"}, {"agent"})]:
        mixer.set_mode(mode)
        for who in FREQ:
            mixer.push(who, frame(who))  # type: ignore[arg-type]
        out = mixer.tick()
        assert heard(out["agent"]) == agent_hears and heard(out["caller"]) == caller_hears
    with pytest.raises(ValueError):
        mixer.set_mode("shout")


def test_queue_is_bounded_and_keeps_the_newest():
    mixer = Mixer("listen")
    for level in (-40.0, -30.0, -20.0, -10.0, -5.0):
        mixer.push("caller", frame("caller", level))
    peaks = [int(np.abs(mixer.tick()["supervisor"]).max()) for _ in range(4)]
    assert peaks[0] < peaks[1] < peaks[2] and peaks[3] == 0  # three kept (oldest two dropped)
    with pytest.raises(ValueError):
        mixer.push("agent", np.zeros(80, dtype=np.int16))


# --- on three legs, fake clock -----------------------------------------------------------------------


def media_to(port: int, codec: str = "PCMU", te: int | None = 101) -> NegotiatedMedia:
    return NegotiatedMedia(
        remote_address="127.0.0.1", remote_port=port, remote_rtcp_address="127.0.0.1",
        remote_rtcp_port=port + 1, payload_type=0 if codec == "PCMU" else 8, codec=codec,
        clock_rate=8000, telephone_event_pt=te, ptime=20, direction=Direction.SENDRECV, media_index=0,
    )


class Legs:
    def __init__(self, clock, scheduler, legs, sent):
        self.clock, self.scheduler, self.legs, self.sent = clock, scheduler, legs, sent
        self.seq = dict.fromkeys(legs, 0)

    def say(self, who: str, k: int) -> None:
        """One 20 ms packet of ``who``'s tone arrives at their leg."""
        codec = self.legs[who].codec
        pkt = rtp.RtpPacket(0 if codec == "PCMU" else 8, k & 0xFFFF, 1000 + 160 * k, 0x1000 + len(who),
                            g711.encode(frame(who), codec), False)
        self.legs[who]._on_rtp(pkt.serialize(), ADDR)

    def run(self, ticks: int, speakers=("caller", "agent", "supervisor")) -> None:
        for _ in range(ticks):
            for who in speakers:
                self.say(who, self.seq[who])
                self.seq[who] += 1
            self.scheduler.tick(self.clock.now())
            self.clock.advance(0.02)

    def heard_by(self, who: str, since: int) -> set[str]:
        packets = [p for p in self.sent[who][since:] if p.payload_type in (0, 8)]
        codec = self.legs[who].codec
        return heard(np.concatenate([g711.decode(p.payload, codec) for p in packets]))


@pytest.fixture
async def legs():
    clock = FakeClock(100.0)
    allocator = RtpPortAllocator(47100, 47139)
    scheduler = MediaScheduler(clock=clock)
    out: dict[str, RtpSession] = {}
    sent: dict[str, list[rtp.RtpPacket]] = {}
    for i, (who, codec) in enumerate([("caller", "PCMU"), ("agent", "PCMA"), ("supervisor", "PCMU")]):
        leg = await RtpSession.open(allocator=allocator, scheduler=scheduler, local_ip="127.0.0.1",
                                    codec=codec, jitter_depth_ms=20)
        leg.apply(media_to(40000 + 2 * i, codec))
        sent[who] = []
        leg._send_rtp = lambda data, box=sent[who]: box.append(rtp.parse(data))
        out[who] = leg
    yield Legs(clock, scheduler, out, sent)
    for leg in out.values():
        leg.close()
    await scheduler.aclose()


async def test_live_mix_follows_the_mode_matrix_on_real_legs(legs):
    caller, agent, sup = (legs.legs[w] for w in ("caller", "agent", "supervisor"))
    bridge = Bridge(caller, agent).start()
    legs.run(5)
    mixer = LiveMix(legs.scheduler, sup, "listen")
    mixer.attach(bridge)
    expectations = {
        "listen": {"caller": {"agent"}, "agent": {"caller"}, "supervisor": {"caller", "agent"}},
        "whisper": {"caller": {"agent"}, "agent": {"caller", "supervisor"},
                    "supervisor": {"caller", "agent"}},
        "barge": {"caller": {"agent", "supervisor"}, "agent": {"caller", "supervisor"},
                  "supervisor": {"caller", "agent"}},
    }
    for mode in ("listen", "whisper", "barge", "listen"):
        mixer.set_mode(mode)
        legs.run(4)  # settle: the jitter buffers and the switch
        marks = {w: len(legs.sent[w]) for w in legs.legs}
        legs.run(10)
        assert {w: legs.heard_by(w, marks[w]) for w in legs.legs} == expectations[mode], mode
    # Each leg kept one SSRC and consecutive sequence numbers through every switch (RFC 3550 §8.2).
    for who, packets in legs.sent.items():
        assert {p.ssrc for p in packets} == {legs.legs[who].sender.ssrc}, who
        seqs = [p.sequence for p in packets]
        assert seqs == [(seqs[0] + i) % 65536 for i in range(len(seqs))], who
        stamps = [p.timestamp for p in packets]
        assert all((y - x) % 2**32 < 2**31 for x, y in zip(stamps, stamps[1:], strict=False)), who
    mixer.close()
    n = len(legs.sent["supervisor"])
    marks = {w: len(legs.sent[w]) for w in legs.legs}
    legs.run(10)
    assert legs.heard_by("caller", marks["caller"]) == {"agent"}  # the plain bridge again
    assert legs.heard_by("agent", marks["agent"]) == {"caller"}
    assert not any(p.payload != g711.silence("PCMU", 160) for p in legs.sent["supervisor"][n + 6:])


async def test_switching_costs_no_more_than_a_frame_of_silence(legs):
    """Caller and agent keep a packet every tick through mode switches: no stream gap of ours."""
    caller, agent, sup = (legs.legs[w] for w in ("caller", "agent", "supervisor"))
    bridge = Bridge(caller, agent).start()
    legs.run(5)
    mixer = LiveMix(legs.scheduler, sup, "listen")
    mixer.attach(bridge)
    mark = len(legs.sent["agent"])
    for mode in ("whisper", "barge", "listen", "barge", "whisper", "listen"):
        mixer.set_mode(mode)
        legs.run(6)
    for who in ("caller", "agent"):
        packets = legs.sent[who][mark:]
        assert len(packets) >= 36 - 1, who  # ~one per tick, nothing held back
        silent = [p.payload == g711.silence(legs.legs[who].codec, 160) for p in packets]
        longest = max((len(run) for run in "".join("s" if s else "." for s in silent).split(".")), default=0)
        assert longest <= 1, who


async def test_caller_dtmf_still_reaches_the_agent_while_mixed(legs):
    caller, agent, sup = (legs.legs[w] for w in ("caller", "agent", "supervisor"))
    digits: list[str] = []
    caller.on_dtmf = lambda d, src: digits.append(d)
    bridge = Bridge(caller, agent).start()
    mixer = LiveMix(legs.scheduler, sup, "barge")
    mixer.attach(bridge)
    legs.run(6)
    for k, (dur, end) in enumerate([(160, False), (320, False), (480, True), (480, True), (480, True)]):
        pkt = rtp.RtpPacket(101, 500 + k, 90000, 0x1006, encode_event(7, dur, end=end), k == 0)
        caller._on_rtp(pkt.serialize(), ADDR)
        legs.run(1, speakers=("agent", "supervisor"))
        legs.seq["caller"] += 1  # the caller's voice timeline goes on under the event
    events = [p for p in legs.sent["agent"] if p.payload_type == 101]
    assert len(events) == 5 and decode_event(events[-1].payload)[0] == 7
    assert len({p.timestamp for p in events}) == 1
    assert digits == ["7"]
    mark = len(legs.sent["agent"])
    legs.run(10)  # the mixed voice comes back after the event
    assert legs.heard_by("agent", mark) == {"caller", "supervisor"}
    assert {p.ssrc for p in legs.sent["agent"]} == {agent.sender.ssrc}
    mixer.close()


async def test_hold_detaches_and_a_new_bridge_is_followed(legs):
    caller, agent, sup = (legs.legs[w] for w in ("caller", "agent", "supervisor"))
    bridge = Bridge(caller, agent).start()
    mixer = LiveMix(legs.scheduler, sup, "barge")
    mixer.attach(bridge)
    legs.run(6)
    bridge.stop()  # hold: the call drops its bridge and tells the monitor
    mixer.attach(None)
    mark = {w: len(legs.sent[w]) for w in legs.legs}
    legs.run(10)
    assert legs.heard_by("supervisor", mark["supervisor"]) == {"caller", "agent"}
    own = legs.sent["caller"][mark["caller"]:]  # the caller hears its own leg's audio, not the mix
    assert own and all(p.payload == g711.silence("PCMU", 160) for p in own)
    bridge = Bridge(caller, agent).start()  # resume
    mixer.attach(bridge)
    mark = {w: len(legs.sent[w]) for w in legs.legs}
    legs.run(10)
    assert legs.heard_by("caller", mark["caller"]) == {"agent", "supervisor"}
    mixer.close()
    mixer.close()  # idempotent
    assert not caller._audio_taps and not agent._audio_taps and not sup._audio_taps
