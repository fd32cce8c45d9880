"""Give memory back to the system once a load has ended (issue 11, "Overload").

What an overload leaves behind, measured with ``scripts/bench/overload.py`` (1800 calls/s offered for
10 s, ~5 500 completed; tracemalloc, ``sys._debugmallocstats``, glibc ``malloc_stats``, smaps):

- Every call's SIP objects (IncomingCall, Dialog, transactions, parsed messages) form reference
  cycles (the CallSession was in them too until it unhooked itself from the call at the end), so
  they go only when the collector's oldest generation is scanned — and CPython scans it only after
  enough *new* allocations. Once the load stops nothing allocates: the last few
  thousand calls' objects stay, unreachable, indefinitely (this is why a second round did not grow
  RSS: it first freed the previous round's garbage). ``gc.collect()`` frees them (~0.2 s, once).
- The freed memory stays in the allocators. glibc's main arena (the ``brk`` heap that holds blocks
  above pymalloc's 512 bytes) grew by 30–55 MB and gives back only what sits at its very top;
  ``malloc_trim(0)`` also releases the free pages in its middle (glibc >= 2.8, ``madvise``).
- pymalloc keeps an arena (1 MiB) until every object in it is gone; a few survivors scattered across
  the arenas the load added pin them (~30 MB after a collection). Only ``PYTHONMALLOC=malloc`` set
  before the process starts avoids that (then glibc holds every object and ``malloc_trim`` releases
  it): see the deployment notes in README.md. Worker-thread arenas barely grew (the writer and
  ``to_thread`` workers allocate little), so ``MALLOC_ARENA_MAX`` does not matter here.

So, when the server has gone quiet after a load — the live-call count fell to at most a quarter of
its peak since the last release and stayed there ``quiet_s``, and RSS grew ``grow_mb`` since then —
:class:`MemoryKeeper` runs one full collection on the event loop (where the automatic collector runs
anyway: finalizers may touch the loop) and ``malloc_trim(0)`` in a worker thread (ctypes releases the
GIL; trimming walks every arena under its lock), at most once per ``min_interval_s``. ``quiet_s``
exceeds 64*T1 (32 s, RFC 3261 §17.2.1/§17.2.2 Timers J and L), so the load's last transactions — which
still hold their calls — and the overload guard's memory of refusals are gone first. Where libc has no
``malloc_trim`` (musl, macOS) only the collection runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from callcenter.core.clock import Clock, MonotonicClock
from callcenter.core.logging import log_event

__all__ = ["MemoryKeeper", "QuietAfterLoad", "TrimSettings", "malloc_trim", "rss_bytes"]

log = logging.getLogger("callcenter.core.memory")

_MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class TrimSettings:
    interval_s: float = 5.0  # how often the keeper looks
    quiet_s: float = 40.0  # quiet this long (> 64*T1 = 32 s) before releasing
    quiet_share: float = 0.25  # "quiet": live calls at most this share of the peak since the last release
    grow_mb: float = 16.0  # ... and RSS grew at least this much since then
    min_interval_s: float = 60.0  # at most one release per this long


class QuietAfterLoad:
    """Sans-I/O trigger: fed (now, live calls, RSS) samples, says when a release is due."""

    def __init__(self, settings: TrimSettings | None = None) -> None:
        self.settings = settings or TrimSettings()
        self.baseline: int | None = None  # RSS after the last release (or at the first sample)
        self.peak_calls = 0  # live calls at most, since the last release
        self._quiet_since: float | None = None
        self._released_at = float("-inf")

    def sample(self, now: float, live_calls: int, rss: int | None) -> bool:
        """True when memory should be released now; ``rss`` None when it cannot be read."""
        s = self.settings
        if self.baseline is None and rss is not None:
            self.baseline = rss
        self.peak_calls = max(self.peak_calls, live_calls)
        if live_calls > s.quiet_share * self.peak_calls:
            self._quiet_since = None  # busy: the load has not ended
            return False
        if self._quiet_since is None:
            self._quiet_since = now
        if now - self._quiet_since < s.quiet_s or now - self._released_at < s.min_interval_s:
            return False
        if rss is not None and self.baseline is not None:
            return rss - self.baseline >= s.grow_mb * _MB
        return self.peak_calls > 0  # RSS unknown: release after any load that had calls

    def released(self, now: float, live_calls: int, rss: int | None) -> None:
        """A release ran: measure the next growth from here."""
        self._released_at = now
        self.peak_calls = live_calls
        self._quiet_since = None
        if rss is not None:
            self.baseline = rss


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        fn = libc.malloc_trim  # glibc only (a GNU extension)
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_malloc_trim = _load_malloc_trim()


def malloc_trim() -> bool:
    """glibc's ``malloc_trim(0)``: free pages of every arena back to the kernel. True when some
    were; False when none were or libc has no such function. Blocks for a few ms (call off the loop)."""
    return bool(_malloc_trim(0)) if _malloc_trim is not None else False


def rss_bytes() -> int | None:
    """This process's resident set (Linux /proc), None elsewhere."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class MemoryKeeper:
    """Samples every ``interval_s``; when :class:`QuietAfterLoad` says so, collects and trims."""

    def __init__(
        self,
        live_calls: Callable[[], int],
        settings: TrimSettings | None = None,
        *,
        clock: Clock | None = None,
        rss: Callable[[], int | None] = rss_bytes,
        collect: Callable[[], int] = gc.collect,
        trim: Callable[[], bool] = malloc_trim,
    ) -> None:
        self.trigger = QuietAfterLoad(settings)
        self.clock = clock or MonotonicClock()
        self._live_calls = live_calls
        self._rss = rss
        self._collect = collect
        self._trim = trim
        self.releases = 0

    async def step(self) -> bool:
        """One look; True when it released memory."""
        now = self.clock.now()
        before = self._rss()
        if not self.trigger.sample(now, self._live_calls(), before):
            return False
        collected = self._collect()  # on the loop, like the automatic collector
        trimmed = await asyncio.to_thread(self._trim)
        after = self._rss()
        self.trigger.released(self.clock.now(), self._live_calls(), after)
        self.releases += 1
        log_event(
            log,
            "memory_released",
            collected=collected,
            trimmed=trimmed,
            rss_before_mb=round(before / _MB, 1) if before is not None else None,
            rss_after_mb=round(after / _MB, 1) if after is not None else None,
        )
        return True

    async def run(self) -> None:
        """Until cancelled."""
        while True:
            await asyncio.sleep(self.trigger.settings.interval_s)
            try:
                await self.step()
            except Exception:  # never let housekeeping take the server down
                log_event(log, "memory_release_failed", level=logging.WARNING, exc_info=True)
