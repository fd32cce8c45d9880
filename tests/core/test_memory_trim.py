"""The quiet-after-load trigger: memory is released once, after the load, never while busy."""

from __future__ import annotations

import asyncio

import pytest

from callcenter.core.clock import FakeClock
from callcenter.core.memory import MemoryKeeper, QuietAfterLoad, TrimSettings, malloc_trim, rss_bytes

MB = 1024 * 1024
SETTINGS = TrimSettings(interval_s=5.0, quiet_s=40.0, grow_mb=16.0, min_interval_s=60.0)


class FakeServer:
    """Live calls and RSS as the keeper sees them; counts the collections and trims it asks for."""

    def __init__(self) -> None:
        self.calls = 0
        self.rss = 300 * MB
        self.collects = 0
        self.trims = 0
        self.trim_at: list[float] = []

    def collect(self) -> int:
        self.collects += 1
        return 0

    def trim(self) -> bool:
        self.trims += 1
        self.rss = 310 * MB  # the allocator gave most of it back
        return True


def keeper(server: FakeServer, clock: FakeClock) -> MemoryKeeper:
    return MemoryKeeper(
        lambda: server.calls,
        SETTINGS,
        clock=clock,
        rss=lambda: server.rss,
        collect=server.collect,
        trim=server.trim,
    )


def tick(k: MemoryKeeper, clock: FakeClock, seconds: float) -> list[float]:
    """Run the keeper's looks over ``seconds`` of fake time; the times it released memory."""
    out = []
    for _ in range(int(seconds / SETTINGS.interval_s)):
        clock.advance(SETTINGS.interval_s)
        if asyncio.run(k.step()):
            out.append(clock.now())
    return out


def test_releases_once_after_the_load_ends_and_stays_quiet() -> None:
    server, clock = FakeServer(), FakeClock(0.0)
    k = keeper(server, clock)
    tick(k, clock, 10)  # idle, baseline 300 MB
    server.calls, server.rss = 400, 460 * MB  # an overload: memory grows
    assert tick(k, clock, 120) == []  # busy for two minutes: never while calls are up
    server.calls = 0  # the load ends
    released = tick(k, clock, 300)
    assert released == [135.0 + 40.0]  # quiet seen first at 135 s; released quiet_s later, once
    assert (server.collects, server.trims) == (1, 1)


def test_not_while_busy_even_when_memory_grew() -> None:
    server, clock = FakeServer(), FakeClock(0.0)
    k = keeper(server, clock)
    tick(k, clock, 5)
    server.calls, server.rss = 200, 500 * MB
    assert tick(k, clock, 600) == []
    server.calls = 120  # still more than a quarter of the peak: the load has not ended
    assert tick(k, clock, 600) == []
    assert server.trims == 0


def test_a_short_lull_in_the_load_is_not_quiet() -> None:
    server, clock = FakeServer(), FakeClock(0.0)
    k = keeper(server, clock)
    tick(k, clock, 5)
    server.rss = 450 * MB
    for _ in range(10):  # 30 s of calls, 30 s without: never 40 s in a row
        server.calls = 100
        tick(k, clock, 30)
        server.calls = 0
        assert tick(k, clock, 30) == []
    assert server.trims == 0


def test_quiet_without_growth_does_nothing() -> None:
    server, clock = FakeServer(), FakeClock(0.0)
    k = keeper(server, clock)
    tick(k, clock, 5)
    server.calls = 50
    tick(k, clock, 60)
    server.calls, server.rss = 0, server.rss + 8 * MB  # less than grow_mb: nothing worth giving back
    assert tick(k, clock, 600) == []
    assert server.collects == 0


def test_a_second_load_releases_again_but_not_sooner_than_min_interval() -> None:
    server, clock = FakeServer(), FakeClock(0.0)
    k = keeper(server, clock)
    tick(k, clock, 5)
    server.calls, server.rss = 300, 450 * MB
    tick(k, clock, 20)
    server.calls = 0
    first = tick(k, clock, 45)
    assert len(first) == 1 and server.rss == 310 * MB
    server.calls, server.rss = 300, 420 * MB  # another burst right away, 10 s long
    tick(k, clock, 10)
    server.calls = 0
    second = tick(k, clock, 200)
    assert len(second) == 1
    assert second[0] - first[0] >= SETTINGS.min_interval_s
    assert server.trims == 2


def test_trigger_without_rss_releases_after_a_load_with_calls() -> None:
    t = QuietAfterLoad(SETTINGS)
    assert not any(t.sample(float(s), 0, None) for s in range(0, 200, 5))  # no load at all: nothing
    t.sample(200.0, 10, None)
    due = [s for s in range(205, 400, 5) if t.sample(float(s), 0, None)]
    assert due[0] == 245
    t.released(245.0, 0, None)
    assert not any(t.sample(float(s), 0, None) for s in range(250, 600, 5))


def test_malloc_trim_and_rss_on_this_system() -> None:
    rss = rss_bytes()
    if rss is None:
        pytest.skip("no /proc here")
    assert rss > 1 * MB
    junk = [bytearray(4096) for _ in range(20_000)]  # ~80 MB from glibc, then freed
    del junk
    assert isinstance(malloc_trim(), bool)  # False (not an error) where libc has none
