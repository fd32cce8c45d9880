"""Jitter buffer: reorder, loss, duplicates, late packets, concealment, restarts, wrap-around."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callcenter.media import g711
from callcenter.media.jitter import JitterBuffer

SSRC = 0xCAFE


def code(i: int) -> int:
    """A distinct μ-law code per packet index, all loud (never confused with silence or a fade)."""
    return i % 64 if i % 128 < 64 else 0x80 + i % 64


def payload(i: int, n: int = 160) -> bytes:
    return bytes([code(i)]) * n


def level(i: int) -> int:
    return int(g711.ULAW_TO_LINEAR[code(i)])


def frame_of(frame) -> int | None:
    """The packet index whose audio fills ``frame`` (a constant frame), or None."""
    if frame is None or not (frame == frame[0]).all():
        return None
    for i in range(128):
        if level(i) == frame[0]:
            return i
    return None


def test_nothing_before_the_first_packet_then_a_lead_in_of_depth():
    jb = JitterBuffer(depth_ms=60)
    assert jb.pop() is None
    jb.put(SSRC, 1000, payload(0))
    out = []
    for i in range(1, 6):
        out.append(jb.pop())
        jb.put(SSRC, 1000 + 160 * i, payload(i))
    assert [frame_of(f) for f in out[:3]] == [None, None, None]
    assert not any(f.any() for f in out[:3])  # the lead-in is silence
    assert [frame_of(f) for f in out[3:]] == [0, 1]
    assert (jb.played, jb.concealed, jb.lost) == (2, 3, 0)


def test_reordering_within_the_depth_is_undone():
    jb = JitterBuffer(depth_ms=60)
    order = [0, 2, 1, 4, 3, 5, 7, 6, 8, 9]
    out = []
    for i in order:
        jb.put(SSRC, 5000 + 160 * i, payload(i))
        out.append(jb.pop())
    out += [jb.pop() for _ in range(3)]
    assert [frame_of(f) for f in out[3:]] == list(range(10))
    assert jb.late == jb.lost == jb.duplicates == 0


def test_late_packet_is_dropped_after_its_frame_was_concealed():
    jb = JitterBuffer(depth_ms=40)
    jb.put(SSRC, 0, payload(0))
    for _ in range(2):
        jb.pop()  # lead-in
    assert frame_of(jb.pop()) == 0
    lost = jb.pop()  # packet 1 has not come
    assert frame_of(lost) is None
    assert not jb.put(SSRC, 160, payload(1))
    assert (jb.late, jb.lost, jb.concealed) == (1, 1, 3)


def test_duplicates_before_and_after_playout():
    jb = JitterBuffer(depth_ms=20)
    assert jb.put(SSRC, 0, payload(0))
    assert not jb.put(SSRC, 0, payload(0))  # still buffered
    jb.pop()
    assert frame_of(jb.pop()) == 0
    assert not jb.put(SSRC, 0, payload(0))  # already played
    assert (jb.duplicates, jb.late, jb.packets) == (2, 0, 1)


def test_concealment_repeats_then_fades_then_is_silent():
    jb = JitterBuffer(depth_ms=0)
    jb.put(SSRC, 0, payload(3))
    played = jb.pop()
    f1, f2, f3, f4 = (jb.pop() for _ in range(4))
    assert frame_of(played) == 3
    v = float(level(3))
    assert f1[0] == played[0]  # starts as a repeat ...
    assert abs(f1[-1]) == pytest.approx(abs(v) * 0.6, rel=0.02)  # ... fading, without a step
    assert abs(f2[0]) == pytest.approx(abs(v) * 0.6, rel=0.02)
    assert abs(f3[-1]) < abs(v) * 0.01
    assert not f4.any()
    assert (jb.played, jb.concealed, jb.lost) == (1, 4, 4)


def test_a_new_ssrc_restarts_the_buffer():
    jb = JitterBuffer(depth_ms=20)
    jb.put(SSRC, 1000, payload(0))
    jb.pop()
    assert frame_of(jb.pop()) == 0
    jb.put(0xBEEF, 77_000_000, payload(5))  # a different source and timeline
    assert jb.restarts == 1 and jb.ssrc == 0xBEEF
    assert frame_of(jb.pop()) is None  # lead-in again
    assert frame_of(jb.pop()) == 5


def test_timestamp_jump_is_followed_only_when_the_next_packet_confirms_it():
    jb = JitterBuffer(depth_ms=20)
    for i in range(3):
        jb.put(SSRC, 160 * i, payload(i))
        jb.pop()
    assert not jb.put(SSRC, 9_000_000, payload(50))  # one stray packet: ignored
    jb.put(SSRC, 480, payload(3))
    assert jb.strays == 1 and jb.restarts == 0
    jb.put(SSRC, 5_000_000, payload(60))
    assert jb.put(SSRC, 5_000_160, payload(61))  # the sender really jumped (no SSRC change)
    assert jb.restarts == 1 and jb.strays == 1  # the first stray stays one
    frames = [frame_of(jb.pop()) for _ in range(3)]
    assert frames == [None, 60, 61]


def test_packets_of_30_ms_fill_20_ms_frames():
    jb = JitterBuffer(depth_ms=60)
    pcm = (np.arange(240 * 8) * 7 % 4000 - 2000).astype(np.int16)
    data = g711.ulaw_encode(pcm)
    out = []
    for k in range(8):
        jb.put(SSRC, 240 * k, data[240 * k: 240 * (k + 1)])
        out.append(jb.pop())
        if k % 2:
            out.append(jb.pop())  # 3 frames per 2 packets, roughly on time
    out += [jb.pop() for _ in range(3)]
    audio = np.concatenate(out[3:])[: len(pcm)]
    assert np.array_equal(audio, g711.ulaw_decode(data))


def test_pcma_packets_into_a_pcmu_buffer_are_transcoded():
    jb = JitterBuffer("PCMU", depth_ms=0)
    pcm = np.full(160, 1234, dtype=np.int16)
    jb.put(SSRC, 0, g711.alaw_encode(pcm), codec="PCMA")
    out = jb.pop()
    assert abs(int(out[0]) - 1234) < 40


def test_latency_stays_bounded_after_a_burst():
    jb = JitterBuffer(depth_ms=60)
    jb.put(SSRC, 0, payload(0))
    for _ in range(4):
        jb.pop()
    for i in range(1, 30):  # 0.6 s of packets arrive at once
        jb.put(SSRC, 160 * i, payload(i))
    assert jb.dropped > 0
    assert jb.buffered <= 480 + 2 * 160
    frames = [frame_of(jb.pop()) for _ in range(4)]
    assert frames == [25, 26, 27, 28]  # the newest audio, not 0.6 s behind


def _play(jb: JitterBuffer, arrivals_ms: list[float], until_ms: float) -> list[int | None]:
    """Packet i arrives at ``arrivals_ms[i]``; a frame is popped every 20 ms (at 10, 30, ... ms)."""
    events = sorted([(t, 0, i) for i, t in enumerate(arrivals_ms)]
                    + [(t + 10.0, 1, -1) for t in range(0, int(until_ms), 20)])
    out: list[int | None] = []
    for _, kind, i in events:
        if kind == 0:
            jb.put(SSRC, 160 * i, payload(i))
        else:
            out.append(frame_of(jb.pop()))
    return out


def test_a_lasting_delay_step_re_anchors_playout_after_a_short_gap():
    # From packet 100 on the network delay is 300 ms longer (the route changed, the sender stalled
    # and did not catch up): every packet would be late for good.
    jb = JitterBuffer(depth_ms=60)
    arrivals = [20.0 * i + (300.0 if i >= 100 else 0.0) for i in range(400)]
    out = _play(jb, arrivals, 20 * 400 + 500)
    played = [f for f in out if f is not None]
    assert played[:100] == [i % 128 for i in range(100)]
    # a gap of the step plus the few late packets it takes to be sure, then everything in order
    resumed = out.index(105 % 128, 100)
    assert [f for f in out[resumed:] if f is not None] == [i % 128 for i in range(105, 400)]
    assert jb.late == 4 and jb.restarts == 1 and jb.dropped == 0


def test_a_sender_clock_running_slow_keeps_being_heard():
    # 0.5 % slow: 60 ms behind after 12 s; a fixed timeline would then drop every packet as late.
    jb = JitterBuffer(depth_ms=60)
    n = 3000  # 60 s
    out = _play(jb, [20.0 * i * 1.005 for i in range(n)], 20 * n * 1.005 + 200)
    assert sum(f is not None for f in out) >= 0.97 * n
    assert jb.restarts >= 1


def test_isolated_late_packets_do_not_move_playout():
    jb = JitterBuffer(depth_ms=40)
    # every fourth packet is 100 ms late: dropped, but never four in a row
    arrivals = [20.0 * i + (100.0 if i % 4 == 3 else 0.0) for i in range(200)]
    out = _play(jb, arrivals, 20 * 200 + 300)
    assert jb.restarts == 0 and jb.late == 50
    assert [f for f in out if f is not None] == [i % 128 for i in range(200) if i % 4 != 3]


def test_late_resync_must_be_positive():
    with pytest.raises(ValueError):
        JitterBuffer(late_resync=0)


def test_oversized_and_empty_payloads_are_ignored():
    jb = JitterBuffer()
    assert not jb.put(SSRC, 0, b"")
    assert not jb.put(SSRC, 0, b"\xff" * 20000)
    assert jb.ignored == 2 and jb.pop() is None


# --- the property ------------------------------------------------------------------------------


def serial_lt(a: int, b: int) -> bool:
    return 0 < (b - a) % 2**32 < 2**31


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start_ts=st.one_of(st.integers(0, 2**32 - 1), st.integers(2**32 - 8000, 2**32 - 1)),
    n=st.integers(1, 100),
    depth_ms=st.sampled_from([0, 20, 40, 60, 100]),
    data=st.data(),
)
def test_random_reorder_loss_and_duplication(start_ts, n, depth_ms, data):
    lost = data.draw(st.sets(st.integers(0, n - 1), max_size=n // 3))
    dups = data.draw(st.sets(st.integers(0, n - 1), max_size=n // 3))
    delays = data.draw(st.lists(st.integers(0, 160), min_size=n, max_size=n))  # ms
    dup_delays = data.draw(st.lists(st.integers(0, 300), min_size=n, max_size=n))
    phase = data.draw(st.integers(0, 19))

    # (time in ms, kind, packet index); at equal times arrivals come before the pop.
    events = []
    for i in range(n):
        if i in lost:
            continue
        events.append((20 * i + delays[i], 0, i))
        if i in dups:
            events.append((20 * i + delays[i] + dup_delays[i], 0, i))
    deliveries = len(events)
    end = max((t for t, _, _ in events), default=0) + 400
    events += [(t, 1, -1) for t in range(phase, end, 20)]
    events.sort()

    def ts_of(i: int) -> int:
        return (start_ts + 160 * i) % 2**32

    # A fixed timeline: with up to 160 ms of random delay, runs of late packets would re-anchor
    # playout (tested on its own below); here every packet is judged against one timeline.
    jb = JitterBuffer(depth_ms=depth_ms, late_resync=10**9)
    accepted: set[int] = set()
    first_ts: int | None = None
    outputs = []  # (timestamp, frame, packets accepted before this pop)
    for _, kind, i in events:
        if kind == 0:
            if first_ts is None:
                first_ts = ts_of(i)
            behind = jb.started and serial_lt(ts_of(i), jb.next_timestamp)
            if jb.put(SSRC, ts_of(i), payload(i)):
                assert i not in accepted  # taken at most once
                accepted.add(i)
            elif i not in accepted:
                assert behind  # refused on first arrival only when its frame had been played
        else:
            ts = jb.next_timestamp if jb.started else None
            frame = jb.pop()
            if frame is None:
                assert first_ts is None  # None only before the first packet
                continue
            assert frame.dtype == np.int16 and len(frame) == 160
            outputs.append((ts, frame, set(accepted)))

    # Exactly one frame per slot, in timestamp order: each step is one frame, or more when frames
    # were dropped to bound the latency (and then exactly as many as were counted).
    steps = [(b[0] - a[0]) % 2**32 for a, b in zip(outputs, outputs[1:], strict=False)]
    assert all(s > 0 and s % 160 == 0 for s in steps)
    assert sum(s // 160 - 1 for s in steps) <= jb.dropped
    # A frame holds the audio of its timestamp's packet exactly when that packet had been taken.
    played = lost_frames = 0
    for ts, frame, taken in outputs:
        offset = (ts - start_ts) % 2**32
        idx = offset // 160 if offset < 160 * n else None
        if idx is not None and idx in taken:
            assert frame_of(frame) == idx % 128
            played += 1
        else:
            assert idx is None or frame_of(frame) != idx % 128
            if first_ts is not None and not serial_lt(ts, first_ts):
                lost_frames += 1
    # The counters agree with what came out and what went in.
    assert jb.played == played
    assert jb.played + jb.concealed == len(outputs)
    assert jb.lost == lost_frames
    assert jb.packets == len(accepted)
    assert jb.packets + jb.duplicates + jb.late + jb.strays + jb.ignored == deliveries
    assert jb.restarts == jb.strays == jb.ignored == 0


@given(depth_ms=st.sampled_from([20, 40, 60]), n=st.integers(5, 200), start_ts=st.integers(0, 2**32 - 1),
       jitter_ms=st.integers(0, 19), seed=st.integers(0, 2**16))
def test_jitter_below_one_frame_loses_nothing(depth_ms, n, start_ts, jitter_ms, seed):
    rng = np.random.default_rng(seed)
    delays = rng.integers(0, jitter_ms + 1, size=n)
    events = sorted([(20 * i + int(delays[i]), 0, i) for i in range(n)]
                    + [(t, 1, -1) for t in range(19, 20 * n + depth_ms + 100, 20)])
    jb = JitterBuffer(depth_ms=depth_ms)
    got = []
    for _, kind, i in events:
        if kind == 0:
            jb.put(SSRC, (start_ts + 160 * i) % 2**32, payload(i))
        else:
            f = jb.pop()
            if f is not None and frame_of(f) is not None:
                got.append(frame_of(f))
    assert got == [i % 128 for i in range(n)]
    assert jb.late == jb.dropped == jb.duplicates == 0
