"""Prompt audio cache: TTS output kept as 8 kHz mono 16-bit WAV files, with an in-memory LRU.

Keyed by engine name + engine version + voice + rate + pitch + text (SHA-256), so upgrading espeak-ng
or changing the resampling re-renders instead of playing stale audio. Files live at
``DIR/ab/abcdef....wav``; they are written to a temporary file in the same directory and renamed into
place (``os.replace`` is atomic on POSIX), so a crash never leaves a half-written prompt under a
real name. The WAVs are what ``callcenter.media.playback.load_prompt`` reads, so playback converts
them to G.711 frames once and caches those.

``render_all`` pre-renders every fixed prompt of the flows at start-up or when a flow is published;
dynamic sentences go through ``get`` on demand (one synthesis per distinct key even when many calls
ask at once). File I/O and synthesis run in worker threads. Use one cache per event loop.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from callcenter.speech.audio import read_wav, wav_bytes
from callcenter.speech.base import SAMPLE_RATE, Pcm8k, SpeechError, TtsEngine


@dataclass(frozen=True, slots=True)
class PromptSpec:
    text: str
    voice: str = "en-us"
    rate: float = 1.0
    pitch: float = 1.0


@dataclass(frozen=True, slots=True, eq=False)
class CachedPrompt:
    key: str
    path: Path  # 8 kHz mono 16-bit WAV
    pcm: Pcm8k

    @property
    def duration(self) -> float:
        return len(self.pcm) / SAMPLE_RATE


@dataclass(slots=True)
class CacheStats:
    memory_hits: int = 0
    disk_hits: int = 0
    rendered: int = 0


class PromptCache:
    def __init__(self, directory: str | Path, engine: TtsEngine, *, memory_bytes: int = 32 << 20) -> None:
        self.directory = Path(directory)
        self.engine = engine
        self.memory_bytes = memory_bytes
        self.stats = CacheStats()
        self._lru: OrderedDict[str, CachedPrompt] = OrderedDict()
        self._lru_bytes = 0
        self._inflight: dict[str, asyncio.Task[CachedPrompt]] = {}

    def key(self, spec: PromptSpec) -> str:
        parts = [self.engine.name, self.engine.version, spec.voice, f"{spec.rate:.3f}", f"{spec.pitch:.3f}",
                 spec.text]
        return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()

    def path_for(self, spec: PromptSpec) -> Path:
        k = self.key(spec)
        return self.directory / k[:2] / f"{k}.wav"

    async def get(self, spec: PromptSpec) -> CachedPrompt:
        """The prompt's audio: from memory, else from disk, else synthesised and stored."""
        key = self.key(spec)
        hit = self._lru.get(key)
        if hit is not None:
            self._lru.move_to_end(key)
            self.stats.memory_hits += 1
            return hit
        task = self._inflight.get(key)
        if task is None:
            # A task of its own, so a requester that is cancelled (a caller hanging up) does not
            # cancel the synthesis others are waiting for.
            task = asyncio.get_running_loop().create_task(self._fill(spec, key))
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._forget, key))
        return await asyncio.shield(task)

    async def render_all(
        self, prompts: Iterable[PromptSpec], concurrency: int = 4
    ) -> dict[PromptSpec, CachedPrompt]:
        """Make sure every prompt is on disk (and in memory). Raises ``SpeechError`` naming every
        prompt that failed, after rendering all the others."""
        specs = list(dict.fromkeys(prompts))
        sem = asyncio.Semaphore(concurrency)
        failures: list[str] = []
        out: dict[PromptSpec, CachedPrompt] = {}

        async def one(spec: PromptSpec) -> None:
            async with sem:
                try:
                    out[spec] = await self.get(spec)
                except (SpeechError, ValueError, OSError) as e:
                    failures.append(f"{spec.text[:40]!r} ({spec.voice}): {e}")

        async with asyncio.TaskGroup() as tg:
            for s in specs:
                tg.create_task(one(s))
        if failures:
            raise SpeechError(f"{len(failures)} prompt(s) failed to render: " + "; ".join(failures))
        return out

    # --- internals ----------------------------------------------------------------------------------

    async def _fill(self, spec: PromptSpec, key: str) -> CachedPrompt:
        prompt = await self._load_or_render(spec, key)
        self._remember(prompt)
        return prompt

    def _forget(self, key: str, task: asyncio.Task[CachedPrompt]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here: every requester may have gone away

    async def _load_or_render(self, spec: PromptSpec, key: str) -> CachedPrompt:
        path = self.directory / key[:2] / f"{key}.wav"
        pcm = await asyncio.to_thread(_read_if_valid, path)
        if pcm is not None:
            self.stats.disk_hits += 1
            return CachedPrompt(key, path, pcm)
        pcm = await self.engine.synthesize(spec.text, spec.voice, spec.rate, spec.pitch)
        await asyncio.to_thread(_write_atomic, path, wav_bytes(pcm, SAMPLE_RATE))
        self.stats.rendered += 1
        return CachedPrompt(key, path, pcm)

    def _remember(self, prompt: CachedPrompt) -> None:
        if prompt.key in self._lru:
            return
        size = prompt.pcm.nbytes
        if size > self.memory_bytes:
            return
        self._lru[prompt.key] = prompt
        self._lru_bytes += size
        while self._lru_bytes > self.memory_bytes:
            _, old = self._lru.popitem(last=False)
            self._lru_bytes -= old.pcm.nbytes


def _read_if_valid(path: Path) -> Pcm8k | None:
    try:
        pcm, rate = read_wav(path)
    except FileNotFoundError:
        return None
    except SpeechError:
        return None  # damaged by hand: render again (the atomic write replaces it)
    return pcm if rate == SAMPLE_RATE else None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".wav")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
