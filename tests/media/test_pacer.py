import random

import numpy as np
import pytest

from callcenter.core.clock import FakeClock
from callcenter.media import g711, rtp, tones
from callcenter.media.pacer import Pacer, RtpSender, encode_frames, looping
from callcenter.media.session import DROP_AFTER_FAILURES, MediaScheduler

T0 = 1000.0


def test_pacer_slots_are_absolute_deadlines():
    p = Pacer(0.02, T0)
    assert p.due(T0 - 0.001) == (0, 0)
    assert p.due(T0) == (1, 0)
    assert p.due(T0 + 0.019) == (0, 0)
    assert p.due(T0 + 0.0205) == (1, 0)
    assert p.next_deadline() == pytest.approx(T0 + 0.04)
    assert p.due(T0 + 0.061) == (2, 0)  # two slots late: catch up
    assert p.due(T0 + 0.2) == (1, 6)  # a stall: skip, do not burst
    assert p.next_deadline() == pytest.approx(T0 + 0.22)


def sender(**kw):
    kw.setdefault("ssrc", 0xABCDEF01)
    kw.setdefault("payload_type", 0)
    kw.setdefault("sequence", 65534)
    kw.setdefault("timestamp", 2**32 - 320)
    return RtpSender(**kw)


def test_no_drift_over_ten_simulated_minutes_with_late_wakeups():
    s = sender(idle_frame=b"\xff" * 160)
    sched = MediaScheduler(tick=0.02, clock=FakeClock(T0))
    sent: list[tuple[float, bytes]] = []

    class Stream:
        def on_tick(self, now):
            s.poll(now, lambda pkt: sent.append((now, pkt)))

    s.start(sched.add(Stream()))
    start = s.pacer.start
    rng = random.Random(7)
    now = start
    end = start + 600.0
    while now < end:
        next_at = sched.tick(now)
        # Every wake-up is 0..4 ms late, like a busy event loop. A relative "sleep 20 ms" pacer
        # would fall ~60 s behind over 30 000 packets; absolute deadlines do not.
        now = max(next_at, now) + rng.uniform(0, 0.004)
    assert s.pacer.start == T0
    assert len(sent) == 30000  # 10 minutes of 20 ms: slots 0..29999, none lost, none extra
    assert s.skipped_slots == 0
    last = rtp.parse(sent[-1][1])
    assert last.timestamp == (2**32 - 320 + 29999 * 160) % 2**32
    assert last.sequence == (65534 + 29999) % 65536
    lateness = [t - (start + i * 0.02) for i, (t, _) in enumerate(sent)]
    assert max(lateness) < 0.005  # each packet within one wake-up jitter of its own deadline
    assert min(lateness) >= 0


def test_stall_skips_ahead_and_advances_the_timestamp():
    s = sender(idle_frame=None)
    frames = [bytes([i]) * 160 for i in range(20)]
    s.play(frames)
    s.start(T0)
    out: list[bytes] = []
    for t in (T0, T0 + 0.02):
        assert s.poll(t, out.append) == 1
    assert s.poll(T0 + 0.2, out.append) == 1  # slots 2..10 due: 8 skipped, 1 sent
    assert s.poll(T0 + 0.22, out.append) == 1
    pkts = [rtp.parse(p) for p in out]
    assert [p.sequence for p in pkts] == [65534, 65535, 0, 1]  # no sequence gap: nothing was lost
    ts0 = 2**32 - 320
    assert [p.timestamp for p in pkts] == [ts0, (ts0 + 160) % 2**32, (ts0 + 1600) % 2**32,
                                           (ts0 + 1760) % 2**32]
    assert [p.marker for p in pkts] == [True, False, True, False]  # resync after the jump
    assert [p.payload[0] for p in pkts] == [0, 1, 2, 3]  # the prompt continues where it was
    assert s.skipped_slots == 8


def test_short_lateness_is_caught_up_not_skipped():
    s = sender(idle_frame=b"\xff" * 160)
    s.start(T0)
    out: list[bytes] = []
    s.poll(T0, out.append)
    assert s.poll(T0 + 0.041, out.append) == 2
    ts = [rtp.parse(p).timestamp for p in out]
    assert [(t - ts[0]) % 2**32 for t in ts] == [0, 160, 320]


def test_play_reports_the_end_and_falls_back_to_idle():
    s = sender(idle_frame=b"\xff" * 160)
    s.start(T0)
    done: list[bool] = []
    s.play([b"\x01" * 160, b"\x02" * 160], done.append)
    out: list[bytes] = []
    for i in range(4):
        s.poll(T0 + i * 0.02, out.append)
    assert done == [True]
    assert [rtp.parse(p).payload[0] for p in out] == [1, 2, 0xFF, 0xFF]


def test_barge_in_takes_effect_on_the_next_packet():
    s = sender(idle_frame=b"\xff" * 160)
    s.start(T0)
    done: list[bool] = []
    s.play(looping([b"\x01" * 160]), done.append)
    out: list[bytes] = []
    s.poll(T0, out.append)
    s.stop()
    s.poll(T0 + 0.02, out.append)
    assert done == [False]
    assert [rtp.parse(p).payload[0] for p in out] == [1, 0xFF]


def test_replacing_a_source_ends_the_old_one_and_marks_the_new():
    s = sender(idle_frame=b"\xff" * 160)
    s.start(T0)
    ends: list[tuple[str, bool]] = []
    s.play(looping([b"\x01" * 160]), lambda f: ends.append(("a", f)))
    out: list[bytes] = []
    s.poll(T0, out.append)
    s.poll(T0 + 0.02, out.append)
    s.play(looping([b"\x02" * 160]), lambda f: ends.append(("b", f)))
    s.poll(T0 + 0.04, out.append)
    assert ends == [("a", False)]
    assert [rtp.parse(p).marker for p in out] == [True, False, True]


def test_disabled_sender_keeps_time_but_sends_nothing():
    s = sender(idle_frame=b"\xff" * 160)
    s.start(T0)
    s.enabled = False
    out: list[bytes] = []
    for i in range(5):
        s.poll(T0 + i * 0.02, out.append)
    assert out == []
    s.enabled = True
    s.poll(T0 + 0.1, out.append)
    (pkt,) = [rtp.parse(p) for p in out]
    assert pkt.timestamp == (2**32 - 320 + 5 * 160) % 2**32
    assert pkt.marker


def test_rtp_timestamp_at_maps_the_sampling_clock():
    s = sender()
    s.start(T0)
    assert s.rtp_timestamp_at(T0) == 2**32 - 320
    assert s.rtp_timestamp_at(T0 + 1.0) == (2**32 - 320 + 8000) % 2**32


def test_encode_frames_cuts_and_pads():
    pcm = tones.sine(440, 0.05)  # 400 samples: 2.5 frames
    frames = encode_frames(pcm, "PCMA", 20)
    assert [len(f) for f in frames] == [160, 160, 160]
    assert frames[2][80:] == g711.silence("PCMA", 80)
    joined = g711.decode(b"".join(frames), "PCMA")[:400]
    assert np.array_equal(joined, g711.alaw_decode(g711.alaw_encode(pcm)))


class Flaky:
    def __init__(self, name, calls, fail=0):
        self.name, self.calls, self.fail = name, calls, fail  # fail: the next ``fail`` ticks raise

    def on_tick(self, now):
        self.calls.append(self.name)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("boom")


def test_scheduler_serves_streams_in_fixed_order_and_survives_a_broken_one():
    sched = MediaScheduler(tick=0.02, clock=FakeClock(T0))
    calls: list[str] = []
    a, b, c = Flaky("a", calls), Flaky("b", calls, fail=10**6), Flaky("c", calls)
    for s in (a, b, c):
        sched.add(s)
    for i in range(DROP_AFTER_FAILURES + 1):
        sched.tick(T0 + 0.02 * i)
    # b failed every tick: served (and failing) until the limit, then dropped; the others never missed one
    assert calls.count("a") == calls.count("c") == DROP_AFTER_FAILURES + 1
    assert calls.count("b") == DROP_AFTER_FAILURES
    assert calls[-2:] == ["a", "c"]
    sched.remove(a)
    sched.remove(a)  # harmless
    calls.clear()
    sched.tick(T0 + 0.02 * (DROP_AFTER_FAILURES + 1))
    assert calls == ["c"]
    assert len(sched) == 1


def test_a_stream_failing_now_and_then_is_never_dropped():
    # One bad tick must not end a leg's own sending, RTCP and audio taps for the rest of the call.
    sched = MediaScheduler(tick=0.02, clock=FakeClock(T0))
    calls: list[str] = []
    leg = Flaky("leg", calls)
    sched.add(leg)
    for i in range(5 * DROP_AFTER_FAILURES):
        if i % DROP_AFTER_FAILURES == 0:
            leg.fail = DROP_AFTER_FAILURES - 1  # a bad patch just short of the limit
        sched.tick(T0 + 0.02 * i)
    assert len(calls) == 5 * DROP_AFTER_FAILURES and len(sched) == 1


def test_phased_scheduler_spreads_streams_over_sub_ticks_and_serves_each_every_tick():
    clock = FakeClock(T0)
    sched = MediaScheduler(tick=0.02, clock=clock, phases=4)
    served: list[tuple[str, float]] = []

    class S:
        def __init__(self, name):
            self.name = name

        def on_tick(self, now):
            served.append((self.name, round(now - T0, 4)))

    starts = {name: round(sched.add(S(name)) - T0, 4) for name in "abcdefgh"}
    # Two streams per phase, phases 5 ms apart; each stream's start is its own phase's first tick.
    assert sorted(starts.values()) == [0.0, 0.0, 0.005, 0.005, 0.01, 0.01, 0.015, 0.015]
    now = T0
    for _ in range(16):  # 80 ms of sub-ticks
        sched.tick(now)
        now += 0.005
    per_stream: dict[str, list[float]] = {}
    for name, at in served:
        per_stream.setdefault(name, []).append(at)
    for name, times in per_stream.items():
        assert times[0] == starts[name]
        assert np.allclose(np.diff(times), 0.02), (name, times)  # every 20 ms, on its own phase
        assert len(times) == 4
    # A stall of 60 ms: each phase is served once when the loop comes back, not three times.
    served.clear()
    sched.tick(now + 0.06)
    assert sorted(name for name, _ in served) == sorted("abcdefgh")
