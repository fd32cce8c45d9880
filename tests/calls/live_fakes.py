"""Fakes shared by the LiveCallControl tests: a TTS that returns a constant tone, an RTP session that
plays nothing until told, and the call session around it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import numpy as np

SHORT = 0.05  # timeouts that must expire in these tests (no assertion is made on how long anything took)


class FakeTts:
    name = "fake"
    version = "1"

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    async def synthesize(self, text: str, voice: str = "en-us", rate: float = 1.0, pitch: float = 1.0) -> Any:
        self.texts.append((text, voice))
        return np.full(1600, 1000, np.int16)

    async def aclose(self) -> None:
        pass


class FakeRtp:
    """Plays nothing: each play() future stays pending until finish_playing() (or stop_playback)."""

    codec = "PCMU"
    closed = False

    def __init__(self) -> None:
        self.playing: asyncio.Future[bool] | None = None
        self.played: list[int] = []
        self.stopped = 0
        self.taps: list[Any] = []

    def play(self, frames: Iterable[bytes]) -> asyncio.Future[bool]:
        self.played.append(len(list(frames)))
        self.playing = asyncio.get_running_loop().create_future()
        return self.playing

    def finish_playing(self) -> None:
        assert self.playing is not None
        self.playing.set_result(True)

    def stop_playback(self) -> None:
        self.stopped += 1
        if self.playing is not None and not self.playing.done():
            self.playing.set_result(False)

    def add_audio_tap(self, tap: Any) -> None:
        self.taps.append(tap)

    def remove_audio_tap(self, tap: Any) -> None:
        self.taps.remove(tap)


class FakeSession:
    call_id = "call-1@test"

    def __init__(self) -> None:
        self.rtp: Any = FakeRtp()
        self.hangups: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.recordings_started = 0

    def request_hangup(self, reason: str) -> None:
        self.hangups.append(reason)

    def start_recording(self) -> None:
        self.recordings_started += 1

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task


async def until(condition: Any) -> None:
    """Let the loop run until `condition()` holds: first turns of the loop only, then short sleeps so a
    worker thread (prompt files are written in one) gets its turn on a loaded machine. Bounded (~20 s),
    and no assertion is made on how long it took."""
    for i in range(12_000):
        if condition():
            return
        await asyncio.sleep(0 if i < 10_000 else 0.01)
    raise AssertionError("condition never held")
