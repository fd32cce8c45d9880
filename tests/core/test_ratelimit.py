"""KeyedBuckets: per-key token buckets with the time passed in, bounded memory."""

from __future__ import annotations

import pytest

from callcenter.core.ratelimit import KeyedBuckets


def test_a_key_spends_its_burst_then_refills_at_the_rate() -> None:
    b = KeyedBuckets(rate=2.0, burst=3)
    assert [b.take("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert b.take("b", 0.0)  # every key has its own bucket
    assert b.retry_after("a", 0.0) == 1
    assert not b.take("a", 0.4) and b.take("a", 0.5)
    assert b.peek("a", 100.0) == 3.0  # never more than the burst


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    b = KeyedBuckets(rate=0.1, burst=1)
    assert b.take("a", 0.0)
    assert b.retry_after("a", 0.0) == 10
    assert b.retry_after("a", 9.5) == 1
    assert b.retry_after("a", 10.0) == 0


def test_many_keys_keep_memory_bounded() -> None:
    b = KeyedBuckets(rate=1.0, burst=2, max_keys=50)
    for i in range(5000):
        b.take(f"k{i}", float(i) / 1000)
    assert len(b) <= 50


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        KeyedBuckets(rate=0.0, burst=1)
    with pytest.raises(ValueError):
        KeyedBuckets(rate=1.0, burst=0)
