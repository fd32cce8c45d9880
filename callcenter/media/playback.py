"""Prompts from WAV files: converted once to 8 kHz G.711 frames, cached in memory and on disk.

``await load_prompt(path, "PCMU")`` returns a ``Prompt`` whose frames ``RtpSession.play`` sends as
they are. The file is read, mixed down to mono and resampled with soxr (HQ; never naive
interpolation, which aliases) in a worker thread, never on the event loop. WAV files of any rate,
channel count and sample format load: integer PCM of 8/16/24/32 bits, IEEE float of 32/64 bits,
A-law and μ-law, plain or WAVE_FORMAT_EXTENSIBLE.

``PromptCache``: an in-memory LRU (bounded by bytes) keyed by the file's resolved path, mtime, size,
codec and ptime, over an optional disk cache directory holding the converted audio as raw ``.ulaw``
/ ``.alaw`` files, so a restart does not convert again. A changed file (new mtime or size) is
converted anew and its stale cache file removed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import soxr

from callcenter.core.errors import CallcenterError
from callcenter.media import g711

SAMPLE_RATE: Final = 8000
_EXT: Final = {"PCMU": ".ulaw", "PCMA": ".alaw"}
# WAVE format tags (RFC 2361)
_PCM, _FLOAT, _ALAW, _MULAW, _EXTENSIBLE = 0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE
_SUPPORTED: Final = {(_PCM, 1), (_PCM, 2), (_PCM, 3), (_PCM, 4), (_FLOAT, 4), (_FLOAT, 8), (_ALAW, 1),
                     (_MULAW, 1)}


class PromptError(CallcenterError):
    """A prompt file that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True, slots=True)
class Prompt:
    path: Path
    codec: str
    ptime_ms: int
    frames: tuple[bytes, ...]  # one per packet, the last padded with silence

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.frames)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def duration(self) -> float:
        return len(self.frames) * self.ptime_ms / 1000.0

    @property
    def nbytes(self) -> int:
        return sum(len(f) for f in self.frames)


# --- WAV reading -------------------------------------------------------------------------------


def read_wav(path: str | Path) -> tuple[npt.NDArray[np.float64], int]:
    """Samples as float64 in [-1, 1], shape (frames, channels), and the sample rate."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise PromptError(f"prompt {p}: file not found") from None
    except IsADirectoryError:
        raise PromptError(f"prompt {p}: is a directory") from None
    except OSError as e:
        raise PromptError(f"prompt {p}: cannot read: {e.strerror or e}") from None
    try:
        return _parse_wav(data)
    except PromptError as e:
        raise PromptError(f"prompt {p}: {e}") from None


def _parse_wav(data: bytes) -> tuple[npt.NDArray[np.float64], int]:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise PromptError("not a WAV file (no RIFF/WAVE header)")
    pos = 12
    fmt: tuple[int, int, int, int, int] | None = None
    audio: bytes | None = None
    while pos + 8 <= len(data):
        cid, size = data[pos: pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8: pos + 8 + size]  # a streamed file may say 0 or 0xFFFFFFFF: clipped
        if cid == b"fmt ":
            if len(body) < 16:
                raise PromptError("fmt chunk too short")
            tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]  # first two bytes of the SubFormat GUID
            fmt = (tag, channels, rate, block_align, bits)
        elif cid == b"data":
            audio = body if size else data[pos + 8:]
            if fmt is not None:
                break
        pos += 8 + size + (size & 1)  # chunks are padded to even sizes
    if fmt is None:
        raise PromptError("no fmt chunk")
    if audio is None:
        raise PromptError("no data chunk")
    tag, channels, rate, block_align, bits = fmt
    if channels < 1 or rate < 1:
        raise PromptError(f"invalid format: {channels} channels at {rate} Hz")
    width = 1 if tag in (_ALAW, _MULAW) else (bits + 7) // 8
    if (tag, width) not in _SUPPORTED:
        raise PromptError(f"unsupported WAV encoding (format tag 0x{tag:04x}, {bits} bits); "
                          "use PCM, float, A-law or mu-law")
    block_align = width * channels  # trust the format over a wrong nBlockAlign
    usable = len(audio) - len(audio) % block_align
    raw = audio[:usable]
    samples: npt.NDArray[np.float64]
    if tag == _PCM and width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif tag == _PCM and width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    elif tag == _PCM and width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v & 0x800000, v - (1 << 24), v)
        samples = v.astype(np.float64) / float(1 << 23)
    elif tag == _PCM and width == 4:
        samples = np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)
    elif tag == _FLOAT and width == 4:
        samples = np.frombuffer(raw, dtype="<f4").astype(np.float64)
    elif tag == _FLOAT and width == 8:
        samples = np.frombuffer(raw, dtype="<f8").astype(np.float64)
    elif tag == _ALAW:
        samples = g711.alaw_decode(raw).astype(np.float64) / 32768.0
    else:  # _MULAW
        samples = g711.ulaw_decode(raw).astype(np.float64) / 32768.0
    if not samples.size:
        raise PromptError("no audio in the data chunk")
    return samples.reshape(-1, channels), rate


def to_8k_mono(samples: npt.NDArray[np.float64], rate: int) -> g711.Pcm:
    """Mix (frames, channels) float audio down to mono, resample to 8 kHz (soxr HQ), int16."""
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return np.clip(np.rint(mono * 32768.0), -32768, 32767).astype(np.int16)


def split_frames(data: bytes, codec: str, ptime_ms: int) -> tuple[bytes, ...]:
    n = SAMPLE_RATE * ptime_ms // 1000
    if len(data) % n:
        data += g711.silence(codec, n - len(data) % n)
    return tuple(data[i: i + n] for i in range(0, len(data), n))


# --- the cache ---------------------------------------------------------------------------------


class PromptCache:
    """Thread-safe; ``load`` blocks (call it from a worker thread), ``get`` awaits one."""

    def __init__(self, cache_dir: str | Path | None = None, *, max_bytes: int = 64 << 20) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_bytes = max_bytes
        self._lru: OrderedDict[tuple[str, int, int, str, int], Prompt] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, int, int, str, int], threading.Lock] = {}
        self.hits = 0  # served from memory
        self.disk_hits = 0  # read from the disk cache
        self.conversions = 0  # WAV files converted

    async def get(self, path: str | Path, codec: str = "PCMU", ptime_ms: int = 20) -> Prompt:
        return await asyncio.to_thread(self.load, path, codec, ptime_ms)

    def load(self, path: str | Path, codec: str = "PCMU", ptime_ms: int = 20) -> Prompt:
        codec = codec.upper()
        if codec not in _EXT:
            raise ValueError(f"not a G.711 codec: {codec!r}")
        if ptime_ms <= 0 or ptime_ms % 10:
            raise ValueError("ptime_ms must be a positive multiple of 10")
        p = Path(path)
        try:
            real = p.resolve()
            st = real.stat()
        except FileNotFoundError:
            raise PromptError(f"prompt {p}: file not found") from None
        except OSError as e:
            raise PromptError(f"prompt {p}: cannot read: {e.strerror or e}") from None
        key = (str(real), st.st_mtime_ns, st.st_size, codec, ptime_ms)
        with self._lock:
            prompt = self._lookup(key)
            if prompt is not None:
                return prompt
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one thread converts; the others wait and find it cached
            with self._lock:
                prompt = self._lookup(key)
                if prompt is not None:
                    return prompt
            try:
                data = self._encoded(real, st.st_mtime_ns, st.st_size, codec)
                prompt = Prompt(real, codec, ptime_ms, split_frames(data, codec, ptime_ms))
                with self._lock:
                    self._insert(key, prompt)
            finally:
                with self._lock:
                    self._key_locks.pop(key, None)
            return prompt

    def clear(self) -> None:
        """Forget the in-memory entries (the disk cache stays)."""
        with self._lock:
            self._lru.clear()
            self._bytes = 0

    def _lookup(self, key: tuple[str, int, int, str, int]) -> Prompt | None:
        prompt = self._lru.get(key)
        if prompt is not None:
            self._lru.move_to_end(key)
            self.hits += 1
        return prompt

    def _insert(self, key: tuple[str, int, int, str, int], prompt: Prompt) -> None:
        if key in self._lru:
            return
        self._lru[key] = prompt
        self._bytes += prompt.nbytes
        while self._bytes > self.max_bytes and len(self._lru) > 1:
            _, old = self._lru.popitem(last=False)
            self._bytes -= old.nbytes

    def _encoded(self, real: Path, mtime_ns: int, size: int, codec: str) -> bytes:
        """The whole file in ``codec``: from the disk cache, else converted (and then stored)."""
        cache_file = None
        if self.cache_dir is not None:
            path_id = hashlib.sha256(str(real).encode()).hexdigest()[:20]
            cache_file = self.cache_dir / f"{path_id}-{mtime_ns}-{size}{_EXT[codec]}"
            try:
                data = cache_file.read_bytes()
            except OSError:
                pass
            else:
                if data:
                    self.disk_hits += 1
                    return data
        samples, rate = read_wav(real)
        data = g711.encode(to_8k_mono(samples, rate), codec)
        self.conversions += 1
        if cache_file is not None:
            self._store(cache_file, data)
        return data

    @staticmethod
    def _store(cache_file: Path, data: bytes) -> None:
        # Write-then-rename: a crash never leaves a truncated cache file behind. A failure to
        # cache is not a failure to play.
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.{threading.get_ident()}")
            tmp.write_bytes(data)
            os.replace(tmp, cache_file)
            prefix = cache_file.name.split("-", 1)[0] + "-"
            for old in cache_file.parent.glob(f"{prefix}*{cache_file.suffix}"):
                if old != cache_file:
                    old.unlink(missing_ok=True)  # the same file's conversion before it changed
        except OSError:
            pass


_default_cache: PromptCache | None = None


def default_cache() -> PromptCache:
    """A process-wide in-memory cache (no disk directory) for callers that do not configure one."""
    global _default_cache
    if _default_cache is None:
        _default_cache = PromptCache()
    return _default_cache


async def load_prompt(path: str | Path, codec: str = "PCMU", *, ptime_ms: int = 20,
                      cache: PromptCache | None = None) -> Prompt:
    """The prompt at ``path`` as ``codec`` frames of ``ptime_ms``; file work runs in a worker thread.

    Raises ``PromptError`` (file missing, unreadable, not a WAV, unsupported encoding, empty).
    """
    return await (cache or default_cache()).get(path, codec, ptime_ms)
