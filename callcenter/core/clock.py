"""Clocks. Protocol cores never read time themselves: callers pass ``now`` (seconds, monotonic)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock stepped by hand in tests."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        self._now += seconds
        return self._now


def iana_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ValueError for anything else. ``ZoneInfo`` itself raises several
    kinds for user input: not found, a path ("../x"), a folder ("Europe": IsADirectoryError), a name
    too long for the file system (OSError)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{name[:60]!r} is not a known timezone (e.g. Europe/Berlin)") from None


def local_day(wall: float, zone: ZoneInfo | None) -> tuple[str, float]:
    """The local date (ISO) at wall-clock time ``wall`` in ``zone`` (None: the system's zone) and the
    wall-clock time of the next local midnight. Naive local times and ZoneInfo ones both follow the
    zone's rules when turned back into a timestamp, so a day with a DST change is 23 or 25 hours long."""
    here = datetime.fromtimestamp(wall) if zone is None else datetime.fromtimestamp(wall, zone)
    midnight = here.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return here.date().isoformat(), max(wall, midnight.timestamp())
