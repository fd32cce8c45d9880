"""Per-call stereo WAV recording: caller on the left, system/agent on the right, 8 kHz 16-bit.

The event loop only enqueues (``queue.SimpleQueue.put``, no I/O, no decoding); one worker thread
shared by all recordings decodes, aligns and writes. Alignment is by time: every frame comes with
``at`` (monotonic seconds, e.g. the scheduler tick that produced it) and lands at sample
``(at - start) * 8000`` of its channel. Frames that follow each other within ``tolerance`` are simply
appended (tick jitter does not open tiny gaps); a larger gap is filled with silence, and a channel
that stays silent (nothing sent or received) is padded with silence once it lags the other by more
than ``max_lag``, so the two channels stay in step. ``close()`` writes what is left and finalises
the WAV header; it resolves to the file's path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from callcenter.core.errors import CallcenterError
from callcenter.media import g711

log = logging.getLogger(__name__)

LEFT: Final = 0  # the caller
RIGHT: Final = 1  # the system (prompts) or the agent
SAMPLE_RATE: Final = 8000


class RecordingError(CallcenterError):
    """The recording file could not be written."""


@dataclass(slots=True)
class _Channel:
    pending: bytearray = field(default_factory=bytearray)  # int16 LE samples not yet written
    end: int = 0  # absolute sample index after the last buffered sample


class _State:
    """A recording as the worker thread sees it (only that thread touches it)."""

    __slots__ = ("path", "start", "rate", "tolerance", "max_lag", "wav", "error", "channels",
                 "written", "latest")

    def __init__(self, path: Path, start: float | None, rate: int, tolerance: float,
                 max_lag: float) -> None:
        self.path = path
        self.start = start
        self.rate = rate
        self.tolerance = round(tolerance * rate)
        self.max_lag = round(max_lag * rate)
        self.wav: Any = None
        self.error: BaseException | None = None
        self.channels = (_Channel(), _Channel())
        self.written = 0  # samples per channel already in the file
        self.latest = 0

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        wav = wave.open(str(self.path), "wb")  # closed by close()
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(self.rate)
        self.wav = wav

    def add(self, channel: int, pcm: np.ndarray[Any, Any], at: float) -> None:
        if self.start is None:
            self.start = at
        ch = self.channels[channel]
        idx = round((at - self.start) * self.rate)
        if idx > ch.end + self.tolerance:
            ch.pending += bytes(2 * (idx - ch.end))
            ch.end = idx
        ch.pending += pcm.astype("<i2", copy=False).tobytes()
        ch.end += len(pcm)
        if ch.end > self.latest:
            self.latest = ch.end
        floor = self.latest - self.max_lag
        for other in self.channels:
            if other.end < floor:
                other.pending += bytes(2 * (floor - other.end))
                other.end = floor
        if min(c.end for c in self.channels) - self.written >= self.rate:
            self.flush(False)

    def flush(self, final: bool) -> None:
        left, right = self.channels
        if final:
            for c in self.channels:
                if c.end < self.latest:
                    c.pending += bytes(2 * (self.latest - c.end))
                    c.end = self.latest
        n = min(left.end, right.end) - self.written
        if n <= 0:
            return
        out = np.empty(2 * n, dtype="<i2")
        out[0::2] = np.frombuffer(left.pending, dtype="<i2", count=n)
        out[1::2] = np.frombuffer(right.pending, dtype="<i2", count=n)
        del left.pending[: 2 * n]
        del right.pending[: 2 * n]
        self.wav.writeframesraw(out.tobytes())
        self.written += n

    def close(self) -> None:
        try:
            if self.wav is not None and self.error is None:
                self.flush(True)
        finally:
            if self.wav is not None:
                self.wav.close()  # patches the RIFF and data sizes into the header


class RecorderWorker:
    """The thread that writes recordings. One per process is enough (``default_worker()``)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, item: tuple[Any, ...]) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="callcenter-recorder",
                                                    daemon=True)
                    self._thread.start()
        self._queue.put(item)

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued, then end the thread (a later ``submit`` starts a new one)."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._handle(item)
            except Exception:  # never let one recording kill the writer of all of them
                log.exception("recorder worker failed on %s", item[0])

    @staticmethod
    def _handle(item: tuple[Any, ...]) -> None:
        op, st = item[0], item[1]
        assert isinstance(st, _State)
        if op == "write":
            if st.error is None:
                _, _, channel, data, codec, at = item
                pcm = data if codec is None else g711.decode(data, codec)
                try:
                    st.add(channel, pcm, at)
                except OSError as e:
                    st.error = e
        elif op == "open":
            try:
                st.open()
            except OSError as e:
                st.error = e
        elif op == "close":
            fut: concurrent.futures.Future[Path] = item[2]
            try:
                st.close()
            except OSError as e:
                st.error = st.error or e
            if st.error is not None:
                fut.set_exception(RecordingError(f"cannot write recording {st.path}: {st.error}"))
            else:
                fut.set_result(st.path)


_default_worker: RecorderWorker | None = None


def default_worker() -> RecorderWorker:
    global _default_worker
    if _default_worker is None:
        _default_worker = RecorderWorker()
    return _default_worker


class CallRecorder:
    """One call's recording. Methods are called from the event loop and never block."""

    def __init__(self, path: str | Path, *, start: float | None = None, rate: int = SAMPLE_RATE,
                 tolerance: float = 0.06, max_lag: float = 0.5,
                 worker: RecorderWorker | None = None) -> None:
        """``start``: the monotonic time of sample 0 (default: the first frame's ``at``)."""
        self.path = Path(path)
        self._worker = worker or default_worker()
        self._state = _State(self.path, start, rate, tolerance, max_lag)
        self._closed: concurrent.futures.Future[Path] | None = None
        self._worker.submit(("open", self._state))

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def write(self, channel: int, pcm: g711.Pcm, at: float) -> None:
        """Add int16 samples (8 kHz) to ``channel`` (``LEFT``/``RIGHT``) at time ``at``."""
        if self._closed is None:
            self._worker.submit(("write", self._state, channel, pcm, None, at))

    def write_g711(self, channel: int, payload: bytes, codec: str, at: float) -> None:
        """Like ``write`` with G.711 codes; decoded in the worker, not on the event loop."""
        if self._closed is None:
            self._worker.submit(("write", self._state, channel, payload, codec, at))

    def tap(self, channel: int) -> Callable[[g711.Pcm, float], None]:
        """An ``RtpSession`` audio tap writing to ``channel``: ``session.add_audio_tap(rec.tap(LEFT))``."""
        def tap(frame: g711.Pcm, now: float) -> None:
            self.write(channel, frame, now)
        return tap

    def close(self) -> concurrent.futures.Future[Path]:
        """Write what remains, finalise the header; the future holds the path (or a
        ``RecordingError``). Idempotent: later calls return the same future."""
        if self._closed is None:
            self._closed = concurrent.futures.Future()
            self._worker.submit(("close", self._state, self._closed))
        return self._closed

    async def aclose(self) -> Path:
        return await asyncio.wrap_future(self.close())
