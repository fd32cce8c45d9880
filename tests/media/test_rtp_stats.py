import pytest

from callcenter.media.stats import ReceiveStats


def feed(stats, seqs, ssrc=1, start_ts=0, transit=0.0):
    for i, seq in enumerate(seqs):
        stats.update(ssrc, seq % 65536, (start_ts + 160 * i) & 0xFFFFFFFF, i * 0.02 + transit)


def test_in_order_stream_has_no_loss():
    s = ReceiveStats()
    feed(s, range(100))
    snap = s.snapshot()
    assert (snap.packets_received, snap.packets_expected, snap.packets_lost) == (100, 100, 0)
    assert snap.jitter == pytest.approx(0, abs=1e-6)


def test_gaps_count_as_lost():
    s = ReceiveStats()
    seqs = [q for q in range(100) if q not in (10, 11, 50, 70, 99)]
    feed(s, seqs + [100])
    assert s.snapshot().packets_lost == 5


def test_reordered_packets_are_not_lost():
    s = ReceiveStats()
    feed(s, [0, 1, 3, 2, 4, 6, 5, 7])
    assert s.snapshot().packets_lost == 0
    assert s.extended_max == 7


def test_duplicates_make_loss_negative_as_rfc3550_says():
    s = ReceiveStats()
    feed(s, [0, 1, 2, 2, 3])
    snap = s.snapshot()
    assert snap.packets_received == 5
    assert snap.packets_lost == -1


def test_sequence_wrap_extends_the_highest_sequence():
    s = ReceiveStats()
    feed(s, range(65530, 65550))
    assert s.extended_max == 65536 + 13
    assert s.snapshot().packets_lost == 0


def test_jitter_follows_rfc3550_a8():
    s = ReceiveStats()
    # Transit alternates between 0 and 10 ms (80 timestamp units): |D| is 80 every packet,
    # J += (|D| - J)/16 converges to 80.
    for i in range(400):
        s.update(1, i, 160 * i, i * 0.02 + (0.01 if i % 2 else 0.0))
    assert s.jitter == pytest.approx(80, abs=0.5)
    assert s.snapshot().jitter_ms == pytest.approx(10, abs=0.1)


def test_report_block_fraction_and_cumulative():
    s = ReceiveStats()
    feed(s, [q for q in range(100) if q % 4 != 1])  # 25 of 100 lost (99 is the last, kept)
    b1 = s.report_block()
    assert b1 is not None
    assert b1.cumulative_lost == 25
    assert b1.fraction_lost == 64  # 25/100 * 256
    for q in range(100, 150):
        s.update(1, q, 160 * q, q * 0.02)
    b2 = s.report_block()
    assert b2 is not None
    assert b2.fraction_lost == 0
    assert b2.cumulative_lost == 25
    assert b2.highest_sequence == 149


def test_a_stray_huge_jump_is_ignored_and_a_real_restart_accepted():
    s = ReceiveStats()
    feed(s, range(10))
    assert s.update(1, 40000, 0, 1.0) is False  # stray
    assert s.snapshot().packets_received == 10
    assert s.update(1, 40001, 160, 1.02) is True  # the sender really jumped: resync
    s.update(1, 40002, 320, 1.04)
    assert s.snapshot().packets_lost == 0
    assert s.snapshot().packets_received == 12


def test_ssrc_change_keeps_call_totals():
    s = ReceiveStats()
    feed(s, [0, 1, 3], ssrc=1)  # one lost
    feed(s, [500, 501, 502], ssrc=2)
    snap = s.snapshot()
    assert snap.packets_received == 6
    assert snap.packets_lost == 1
    assert s.ssrc == 2


def test_no_report_before_anything_arrived():
    assert ReceiveStats().report_block() is None
