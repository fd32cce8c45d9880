from __future__ import annotations

from datetime import UTC, datetime, timedelta


class WallClock:
    """A settable wall clock (aware UTC) for dedupe windows: no sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)
