"""LiveCallControl: the IVR's :class:`~callcenter.ivr.control.CallControl` over one live call.

What the caller hears goes out through the call's ``RtpSession``: TTS sentences come from one shared
:class:`~callcenter.speech.cache.PromptCache` (synthesis in the TTS engine's worker thread, WAVs on
disk under ``data_dir/prompts``), recordings through ``media.playback.load_prompt`` (file work in a
worker thread). Digits arrive from the session (RFC 4733, SIP INFO, in-band) through :meth:`on_digit`.

Decisions worth knowing:

- Digits pressed while a plain ``say``/``play`` runs are kept as type-ahead for the next input; digits
  pressed during the prompts of an input without ``barge_in`` are dropped (the caller was asked to
  listen). With ``barge_in`` a digit stops the prompt at once (``rtp.stop_playback()``) and counts.
- Timeouts count from the end of the prompts: ``timeout_s`` until the first digit, then
  ``inter_digit_timeout_s`` between digits.
- Once the caller is gone (:meth:`caller_gone`: BYE/CANCEL, or the session ending the call for RTP
  timeout or shutdown) every waiting method raises :class:`CallerHangup`, except ``record``, which
  returns what it has with ``ended_by="hangup"``.
- ``enqueue`` hands the caller to the ACD (calls/acd.py: hold music, agents rung, bridge) and returns
  when the agent hangs up or the caller overflows; without an ACD it answers "closed". ``transfer``
  rings an agent (``agent:NAME``), a queue or an outside SIP URI through the ACD and bridges it.
- ``listen`` feeds the caller's audio (an RTP audio tap) to a VAD segmenter (webrtcvad or Silero,
  ``speech.vad``) from the first prompt on; with ``barge_in`` the start of speech stops the prompt.
  The recogniser follows the call's language (speech/select.py): Vosk, where a model serves the
  language, is fed each frame from the start of speech (grammar mode with the menu's phrases, free mode
  otherwise) and finishes at the end of speech; Whisper tiny.en (English without a Vosk model)
  starts transcribing after ``speech.early_decode_ms`` of silence (dropped if the caller goes on), so
  the text is ready when the end of speech is declared (menus: ``menu_end_silence_ms``). Languages
  with neither answer a speech result with an empty transcript (no match). An utterance the
  recogniser hears nothing in (a cough, line noise) does not end the input: the silence timeout
  starts again. Digits win when a DigitSpec is given.
  Every recognised utterance is appended to ``transcript`` (the CallSession writes it to the record).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar
from urllib.parse import quote

import numpy as np

from callcenter.calls.agent_leg import CallerInfo
from callcenter.calls.assist import AgentAssist, CallAssist
from callcenter.calls.bridge_transcript import LegTranscriber, TranscriptionLimits
from callcenter.core.errors import ConfigError
from callcenter.core.logging import log_event
from callcenter.ivr.control import (
    CallerHangup,
    DigitSpec,
    InputResult,
    PromptItem,
    QueueRequest,
    QueueResult,
    RecordResult,
    SpeechSpec,
    TransferResult,
)
from callcenter.ivr.graph import FlowContext
from callcenter.ivr.intents import load_intents
from callcenter.ivr.loader import FlowLoadError, load_flows
from callcenter.ivr.registry import FlowRegistry
from callcenter.ivr.schema import Flow
from callcenter.ivr.services import Services
from callcenter.media import g711, tones
from callcenter.media.pacer import encode_frames
from callcenter.media.playback import Prompt, PromptError, load_prompt
from callcenter.media.recorder import LEFT, CallRecorder, RecordingError
from callcenter.media.session import RtpSession
from callcenter.speech.base import AsrResult, PcmLike, SpeechEnded, SpeechError, TtsEngine
from callcenter.speech.cache import PromptCache, PromptSpec
from callcenter.speech.select import (
    ClassifierPool,
    LiveRecognition,
    SpeechEngineSettings,
    SpeechRouter,
    StreamingTranscriber,
    close_later,
)
from callcenter.speech.tts import voice_for
from callcenter.speech.vad import Segmenter, VadConfig

if TYPE_CHECKING:
    from callcenter.calls.acd import Acd, QueueVisit
    from callcenter.core.config import SpeechSettings
    from callcenter.media.bridge import Bridge
    from callcenter.store import Store

__all__ = [
    "IvrRuntime",
    "LiveCallControl",
    "LiveSession",
    "SpeechRuntime",
    "Transcriber",
    "Utterance",
    "load_ivr_runtime",
]

log = logging.getLogger("callcenter.calls")
T = TypeVar("T")

FRAME_S = 0.02  # audio taps deliver 20 ms frames
VOICE_RMS = 300.0  # int16 RMS above which a recorded frame counts as the caller speaking (~-40 dBFS)
BEEP_HZ, BEEP_S = 1000.0, 0.3
_voicemail_seq = itertools.count(1)
# Spoken keys per language, for menu grammars (the words ivr.nodes.base.spoken_digit understands).
_DIGIT_WORDS: dict[str, tuple[str, ...]] = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "zh": ("零", "一", "二", "三", "四", "五", "六", "七", "八", "九", "两"),
}


class LiveSession(Protocol):
    """What LiveCallControl needs from a CallSession (tests pass a small fake)."""

    rtp: RtpSession | None

    @property
    def call_id(self) -> str: ...

    def request_hangup(self, reason: str) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
        """Run ``coro`` (which must not raise) in the call's TaskGroup; None once the call is over."""
        ...

    def start_recording(self) -> None:
        """Record the call from now on (both voices), unless it is recorded already."""
        ...


class Transcriber(Protocol):
    """What ``listen`` needs from an ASR engine (``WhisperEngine`` is one)."""

    def supports(self, language: str) -> bool: ...

    async def transcribe(
        self, pcm: PcmLike, phrases: Sequence[str] | None = None, language: str | None = None
    ) -> AsrResult: ...


@dataclass(frozen=True)
class Utterance:
    """One recognised utterance of a call (``start``: seconds from the start of the IVR)."""

    speaker: Literal["caller", "agent", "system"]
    text: str
    start: float
    confidence: float

    def as_json(self) -> dict[str, object]:
        return {
            "speaker": self.speaker,
            "text": self.text,
            "start": round(self.start, 2),
            "confidence": round(self.confidence, 3),
        }


class SpeechRuntime:
    """Recognition and voice activity detection shared by every call.

    The recogniser is a :class:`~callcenter.speech.select.SpeechRouter`: the engine for each call
    language per the ``speech`` settings (Vosk streamed while the caller speaks, Whisper tiny.en
    decoded early in the trailing silence). It is built on first use in a worker thread, and each
    language's engine and model load in their own workers when the language is warmed (at start-up
    for ``languages``, and by every ``listen`` for its language while the prompts play), so nothing
    blocks the loop.
    ``transcriber`` replaces the router (tests)."""

    def __init__(
        self,
        transcriber: Transcriber | None = None,
        vad: VadConfig | None = None,
        *,
        settings: SpeechEngineSettings | None = None,
        models_dir: Path | None = None,
        languages: Sequence[str] = ("en",),
    ) -> None:
        self._preset = transcriber
        self.settings = settings or SpeechEngineSettings()
        self.models_dir = models_dir
        self.languages = tuple(languages)
        self.vad = vad or VadConfig(end_silence_ms=self.settings.end_silence_ms)
        self.classifiers = ClassifierPool(self.settings)
        self.bridge_limits = TranscriptionLimits(
            workers=self.settings.transcription_workers, backlog=self.settings.transcription_backlog
        )
        self._task: asyncio.Task[Transcriber | None] | None = None
        self._ready: Transcriber | None = None
        self._warming: dict[str, asyncio.Task[None]] = {}

    async def open_segmenter(self) -> Segmenter:
        """A segmenter for one ``listen`` (webrtcvad or Silero per ``speech.vad``); give it back with
        :meth:`release_segmenter`."""
        return Segmenter(await self.classifiers.acquire(), self.vad)

    def release_segmenter(self, segmenter: Segmenter) -> None:
        self.classifiers.release(segmenter.classifier)

    def warm(self, languages: Sequence[str] = ()) -> asyncio.Future[Transcriber | None]:
        """Start building the recogniser (once) and loading the engines for ``languages`` (default:
        the runtime's ``languages``); the future gives the recogniser, or None when there is none."""
        task = self._build()
        for language in languages or self.languages:
            key = language.strip().lower()
            if key not in self._warming:
                self._warming[key] = asyncio.ensure_future(self._warm(language))
        return task

    def ready(self) -> Transcriber | None:
        """The recogniser if it is built already (for the audio tap, which cannot wait)."""
        return self._ready

    def state(self) -> str:
        """For /healthz: "idle" (nothing asked for yet), "warming" (the recogniser or a language's
        model is still loading: the first callers may wait), "ready", or "unavailable"."""
        if self._task is None:
            return "idle"
        if not self._task.done() or any(not t.done() for t in self._warming.values()):
            return "warming"
        return "ready" if self._ready is not None else "unavailable"

    async def transcriber(self) -> Transcriber | None:
        return await asyncio.shield(self._build())

    def _build(self) -> asyncio.Task[Transcriber | None]:
        if self._task is None:
            self._task = asyncio.ensure_future(self._load())
        return self._task

    async def _load(self) -> Transcriber | None:
        if self._preset is not None:
            self._ready = self._preset
            return self._preset
        try:
            router = await asyncio.to_thread(SpeechRouter.build, self.settings, self.models_dir)
        except (SpeechError, OSError) as exc:
            log_event(log, "asr_unavailable", level=logging.ERROR, error=str(exc))
            return None
        self._ready = router
        return router

    async def _warm(self, language: str) -> None:
        engine = await self.transcriber()
        if isinstance(engine, SpeechRouter):
            await engine.warm(language)  # logs its own failures

    async def aclose(self) -> None:
        """Stop warm-ups and close the engines (their worker threads)."""
        for task in self._warming.values():
            task.cancel()
        engine = self._ready
        if isinstance(engine, SpeechRouter):
            await engine.aclose()


@dataclass
class IvrRuntime:
    """Everything calls share for the IVR: flows, number plan, the TTS prompt cache, backends."""

    flows: Mapping[str, Flow]
    prompts: PromptCache
    data_dir: Path
    numbers: Mapping[str, str] = field(default_factory=dict)
    default_flow: str | None = None
    services: Services = field(default_factory=Services)
    ptime_ms: int = 20
    speech: SpeechRuntime = field(default_factory=SpeechRuntime)
    acd: Acd | None = None  # routing; None = queue nodes overflow at once (no agents)
    registry: FlowRegistry | None = None  # live versions (publish, rollback, hot reload)
    assist: AgentAssist | None = None  # KB suggestions for agents from each call's transcript

    def flow_for(self, number: str) -> Flow | None:
        """The flow for a dialled number (Request-URI user part), or None (demo behaviour)."""
        started = self.start_flow(number)
        return started[0] if started is not None else None

    def start_flow(self, number: str) -> tuple[Flow, Services] | None:
        """The flow for a dialled number and the services its call keeps, or None (demo behaviour).

        With live versions the whole set of flows is frozen here: the call runs the version it
        started with, and so do the subflows it enters later, whatever is published meanwhile."""
        if self.registry is None:
            flow_id = self.numbers.get(number, self.default_flow)
            flow = self.flows.get(flow_id) if flow_id is not None else None
            return (flow, self.services) if flow is not None else None
        flows = self.registry.snapshot()
        flow_id = self.registry.numbers.get(number, self.registry.default_flow)
        flow = flows.get(flow_id) if flow_id is not None else None
        if flow is None:
            return None
        return flow, replace(self.services, flows=flows)


async def load_ivr_runtime(
    flows_dir: Path,
    numbers: Mapping[str, str],
    default_flow: str | None,
    data_dir: Path,
    *,
    engine: TtsEngine | None = None,
    ptime_ms: int = 20,
    intents_file: Path | None = None,
    store: Store | None = None,
    queues: Collection[str] | None = None,
    speech: SpeechSettings | None = None,
    backends: Services | None = None,
) -> IvrRuntime | None:
    """Load and check the flows (in a worker thread).

    With no number using a flow (``numbers`` empty, no ``default_flow``) every call hears the demo tone,
    but with a ``store`` the runtime still starts — the flows registry and TTS, so an admin can build a
    first flow in the console — unless text-to-speech is missing (then None, as without a store).

    With a ``store`` the flows are live versions in a :class:`FlowRegistry` (every changed file recorded
    as a version; publish, rollback and hot reload keep running calls on their version); ``queues``
    are the configured queue names flows may use; ``backends`` carries the knowledge base, tickets and
    customer directory for the nodes that use them. Raises ConfigError with one line per problem
    (``file:line:column: ...`` for flow errors)."""
    wanted = {**{n: f for n, f in numbers.items()}}
    unused = not wanted and default_flow is None  # nothing calls a flow: only the console needs it
    if unused and store is None:
        return None
    if unused and not flows_dir.is_dir():
        try:  # where the console's first flow is written
            flows_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"ivr.flows_dir: cannot create {flows_dir}: {exc}") from None
    if not flows_dir.is_dir():
        raise ConfigError(f"ivr.flows_dir: {flows_dir} is not a folder (the numbers name flows in it)")
    # An IntentsError is a ConfigError: one file:line:column line per problem, start-up stops.
    intents = await asyncio.to_thread(load_intents, intents_file) if intents_file is not None else None
    registry: FlowRegistry | None = None
    flows: Mapping[str, Flow]
    try:
        if store is not None:
            context = FlowContext(
                queues=frozenset(queues) if queues is not None else None,
                intents=frozenset(intents.names) if intents is not None else None,
            )
            registry = FlowRegistry(store, context=context, numbers=numbers, default_flow=default_flow)
            # Lenient: a file refused by hot reload stays on disk, and its flow must restart on the
            # newest stored version. Errors only stop start-up when a flow a number needs is not live.
            errors = await registry.load(flows_dir, strict=False)
            flows = registry.flows
            needed = {*wanted.values(), *([default_flow] if default_flow else [])}
            if errors and not needed <= set(flows):
                raise FlowLoadError(errors)
        else:
            flows = await asyncio.to_thread(load_flows, [flows_dir])
    except FlowLoadError as exc:
        raise ConfigError("\n".join(str(e) for e in exc.errors)) from None
    problems = [
        f"ivr.numbers: {number} -> {flow_id}: no flow {flow_id!r} in {flows_dir}"
        for number, flow_id in wanted.items()
        if flow_id not in flows
    ]
    if default_flow is not None and default_flow not in flows:
        problems.append(f"ivr.default_flow: no flow {default_flow!r} in {flows_dir}")
    if problems:
        raise ConfigError("\n".join(problems))
    if engine is None:
        from callcenter.speech.tts import EspeakNgEngine

        try:
            engine = EspeakNgEngine()
        except SpeechError as exc:
            if unused:  # no caller needs it: start without the console's flows and TTS preview
                log_event(log, "ivr_console_unavailable", level=logging.WARNING, error=str(exc))
                return None
            raise ConfigError(f"ivr: text-to-speech unavailable: {exc}") from None
    return IvrRuntime(
        flows=flows,
        prompts=PromptCache(data_dir / "prompts", engine),
        data_dir=data_dir,
        numbers=dict(numbers),
        default_flow=default_flow,
        # the knowledge base, tickets and customers the server opened; flows and intents from here
        services=replace(backends or Services(), flows=flows, intents=intents),
        ptime_ms=ptime_ms,
        registry=registry,
        speech=SpeechRuntime(
            settings=speech,
            models_dir=speech.models_dir,
            languages=sorted({f.language for f in flows.values()}),
        )
        if speech is not None
        else SpeechRuntime(),
    )


class LiveCallControl:
    def __init__(
        self,
        session: LiveSession,
        runtime: IvrRuntime,
        *,
        language: str = "en-US",
        transcript: list[Utterance] | None = None,
        caller: str = "",
        caller_name: str | None = None,
    ) -> None:
        self.session = session
        self.runtime = runtime
        self.caller = caller
        self.caller_name = caller_name
        self.queue_visits: list[QueueVisit] = []
        self.voicemails: list[str] = []  # files of messages left on this call
        self.bridge: Bridge | None = None
        self.agent: str | None = None
        self._leg_transcribers: list[LegTranscriber] = []
        self._record_when_bridged = False
        self.transcript_dropped = 0  # bridged utterances not transcribed (recogniser overloaded)
        self.language = language
        self.voice: str | None = None
        self.transcript: list[Utterance] = transcript if transcript is not None else []
        self._digits: deque[str] = deque()
        self._digit_event = asyncio.Event()
        self._gone = asyncio.Event()
        self._started_at = time.monotonic()  # the RTP clock's time base (MonotonicClock)

    # -- events from the session ------------------------------------------------------------------------

    def on_digit(self, digit: str) -> None:
        self._digits.append(digit)
        self._digit_event.set()

    def caller_gone(self) -> None:
        """The call is over: waiting methods raise CallerHangup from now on."""
        self._gone.set()

    # -- helpers ----------------------------------------------------------------------------------------

    def _rtp(self) -> RtpSession:
        rtp = self.session.rtp
        if self._gone.is_set() or rtp is None or rtp.closed:
            raise CallerHangup("the call has ended")
        return rtp

    async def _race(self, aw: Awaitable[T]) -> T:
        """``await aw``, unless the caller goes first: then CallerHangup (and ``aw`` is cancelled)."""
        if self._gone.is_set():
            if asyncio.iscoroutine(aw):
                aw.close()  # never started: no "never awaited" warning
            raise CallerHangup("the call has ended")
        task = asyncio.ensure_future(aw)
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled():
            return task.result()
        raise CallerHangup("the call has ended")

    def _voice(self, language: str | None, voice: str | None) -> str:
        if voice:
            return voice
        if language is None and self.voice:
            return self.voice
        return voice_for(language or self.language)

    async def _tts(self, text: str, language: str | None, voice: str | None) -> Prompt:
        spec = PromptSpec(text, self._voice(language, voice))
        cached = await self._race(self.runtime.prompts.get(spec))
        return await self._race(self._load(cached.path))

    async def _load(self, path: str | Path) -> Prompt:
        return await load_prompt(path, self._rtp().codec, ptime_ms=self.runtime.ptime_ms)

    async def _prompt_audio(self, item: PromptItem) -> Prompt | None:
        if item.file is not None:
            try:
                return await self._race(self._load(item.file))
            except PromptError as exc:
                log_event(
                    log,
                    "ivr_prompt_missing",
                    call_id=self.session.call_id,
                    level=logging.WARNING,
                    file=item.file,
                    error=str(exc),
                )
        if item.text:
            return await self._tts(item.text, item.language, item.voice)
        return None

    async def _play_frames(self, frames: Prompt | tuple[bytes, ...]) -> None:
        await self._race(self._rtp().play(frames))

    async def _play_prompts(
        self, prompts: Sequence[PromptItem], barge_in: bool, speech: asyncio.Event | None = None
    ) -> None:
        """Play ``prompts`` in order; with ``barge_in`` a digit (already pressed or arriving) stops them,
        and so does ``speech`` being set (the caller started talking)."""

        def barged() -> bool:
            return bool(self._digits) or (speech is not None and speech.is_set())

        for item in prompts:
            if barge_in and barged():
                return
            audio = await self._prompt_audio(item)
            if audio is not None:
                self._note_system(item.text)
            if audio is None:
                continue
            rtp = self._rtp()
            if not barge_in:
                await self._race(rtp.play(audio))
                continue
            self._digit_event.clear()
            playing = rtp.play(audio)
            digit = asyncio.ensure_future(self._digit_event.wait())
            waiting: set[asyncio.Future[object]] = {playing, digit}  # type: ignore[arg-type]
            talk = asyncio.ensure_future(speech.wait()) if speech is not None else None
            if talk is not None:
                waiting.add(talk)  # type: ignore[arg-type]
            try:
                await self._race(asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED))
            finally:
                digit.cancel()
                if talk is not None:
                    talk.cancel()
            if barged():
                rtp.stop_playback()  # barge-in: the next packet is silence again
                return

    async def _next_digit(self, timeout_s: float) -> str | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._digits:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self._digit_event.clear()
            try:
                await self._race(self._wait_digit(remaining))
            except TimeoutError:
                return None
        return self._digits.popleft()

    async def _wait_digit(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._digit_event.wait(), timeout_s)

    # -- CallControl ------------------------------------------------------------------------------------

    def _note_system(self, text: str | None) -> None:
        """What the system said goes on the transcript too (speaker ``system``), when it was text."""
        if text:
            self.transcript.append(Utterance("system", text, time.monotonic() - self._started_at, 1.0))

    async def say(self, text: str, *, language: str | None = None, voice: str | None = None) -> None:
        audio = await self._tts(text, language, voice)
        self._note_system(text)
        await self._play_frames(audio)

    async def play(self, file: str, *, fallback_text: str | None = None, language: str | None = None) -> None:
        audio = await self._prompt_audio(PromptItem(fallback_text, file, language))
        if audio is not None:
            self._note_system(fallback_text)
            await self._play_frames(audio)

    async def collect_digits(
        self,
        spec: DigitSpec,
        *,
        prompts: Sequence[PromptItem] = (),
        barge_in: bool = True,
        timeout_s: float = 5.0,
    ) -> InputResult:
        await self._play_prompts(prompts, barge_in)
        if not barge_in:
            self._digits.clear()  # pressed while the caller was asked to listen
        got, terminated = "", False
        timeout = timeout_s
        while len(got) < spec.max_digits:
            digit = await self._next_digit(timeout)
            if digit is None:
                break
            if spec.terminator is not None and digit == spec.terminator:
                terminated = True
                break
            got += digit
            timeout = spec.inter_digit_timeout_s
        if not got and not terminated:
            return InputResult("timeout")
        return InputResult("digits", digits=got, terminated=terminated)

    async def listen(
        self,
        spec: SpeechSpec,
        *,
        prompts: Sequence[PromptItem] = (),
        barge_in: bool = True,
        timeout_s: float = 5.0,
        digits: DigitSpec | None = None,
    ) -> InputResult:
        language = spec.language or self.language
        rtp = self._rtp()
        speech = self.runtime.speech
        speech.warm((language,))  # the recogniser for this language loads while the prompts play
        segmenter = await self._race(speech.open_segmenter())
        menu_ms = speech.settings.menu_end_silence_ms
        if (spec.phrases or digits is not None) and menu_ms < segmenter.config.end_silence_ms:
            # A menu (keys or a phrase list on offer): answers are a word or two, so a shorter
            # trailing silence ends them (VoiceXML's completetimeout vs incompletetimeout idea);
            # free-form questions keep speech.end_silence_ms and are not cut off at a pause.
            segmenter = Segmenter(segmenter.classifier, replace(segmenter.config, end_silence_ms=menu_ms))
        talking = asyncio.Event()
        # ended utterances, each with its live recognition (Vosk, fed while the caller spoke) or None
        # (Whisper, or the recogniser was not built yet: the utterance is transcribed whole)
        ended: deque[tuple[SpeechEnded, LiveRecognition | None]] = deque()
        ended_flag = asyncio.Event()
        first_frame_at: list[float] = []
        current: list[LiveRecognition] = []  # the live recognition of the utterance under way

        def tap(frame: PcmLike, now: float) -> None:
            # On the loop: webrtcvad ~2 µs a frame, Silero ~60 µs; a live feed only queues the audio.
            if not first_frame_at:
                first_frame_at.append(now)
            was_speaking = segmenter.in_speech
            events = segmenter.process(frame)
            if was_speaking and current:
                current[0].feed(frame)
            for event in events:
                if event.kind == "start":
                    talking.set()
                    live = self._open_live(language, spec, keys=digits is not None)
                    if live is not None:
                        live.feed(event.audio)  # the pre-roll, up to and including this frame
                        current[:] = [live]
                else:
                    ended.append((event, current.pop() if current else None))
                    ended_flag.set()

        rtp.add_audio_tap(tap)
        try:
            await self._play_prompts(prompts, barge_in, talking if barge_in else None)
            if not barge_in:
                # input given while the caller was asked to listen does not count
                self._digits.clear()
                while ended:
                    dropped = ended.popleft()[1]
                    if dropped is not None:
                        close_later(dropped)
                ended_flag.clear()
                if not segmenter.in_speech:
                    talking.clear()
            while True:
                got = await self._wait_input(timeout_s, talking, ended_flag, digits is not None)
                if got is None:
                    return InputResult("timeout")
                if got == "digit":
                    assert digits is not None
                    return await self.collect_digits(digits, barge_in=barge_in, timeout_s=timeout_s)
                utterance, live = ended.popleft()
                if not ended:
                    ended_flag.clear()
                try:
                    result = await self._recognise(utterance, spec, language, live)
                finally:
                    if live is not None:
                        close_later(live)  # done with (or failed, or the caller hung up meanwhile)
                if result is None:
                    talking.clear()  # nothing was said after all: listen again, silence counts anew
                    continue
                offset = (first_frame_at[0] - self._started_at) if first_frame_at else 0.0
                if result.text or result.raw_text:
                    self._heard(  # onto the transcript, and agent assist looks it up
                        Utterance(
                            "caller",
                            result.raw_text or result.text,
                            max(0.0, offset + utterance.start),
                            result.confidence,
                        )
                    )
                log_event(
                    log,
                    "ivr_speech",
                    call_id=self.session.call_id,
                    level=logging.DEBUG,
                    text=result.raw_text,
                    match=result.text,
                    confidence=result.confidence,
                )
                # With a phrase list, the matched phrase; what was heard otherwise (the flow's
                # free-speech paths, e.g. a question for the knowledge base, use it).
                return InputResult(
                    "speech", transcript=result.text or result.raw_text, confidence=result.confidence
                )
        finally:
            rtp.remove_audio_tap(tap)
            speech.release_segmenter(segmenter)
            for pending in [*current, *(lv for _, lv in ended if lv is not None)]:
                close_later(pending)  # recognizers go back to the pool, even on hangup

    async def _wait_input(
        self, timeout_s: float, talking: asyncio.Event, ended: asyncio.Event, keys: bool
    ) -> Literal["digit", "speech"] | None:
        """Wait for a digit (when ``keys``) or the end of an utterance; None after ``timeout_s`` of
        silence. Speech under way holds the timeout off; the segmenter ends any utterance after
        ``max_utterance_ms`` of audio, the extra wall-clock bound covers audio that stops arriving."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        hard_deadline = deadline + self.runtime.speech.vad.max_utterance_ms / 1000 + 1.0
        while True:
            if keys and self._digits:
                return "digit"
            if ended.is_set():
                return "speech"
            now = loop.time()
            limit = hard_deadline if talking.is_set() else deadline
            if now >= limit:
                return None
            self._digit_event.clear()
            waiters: set[asyncio.Future[object]] = {
                asyncio.ensure_future(self._digit_event.wait()),
                asyncio.ensure_future(ended.wait()),
            }
            if not talking.is_set():
                waiters.add(asyncio.ensure_future(talking.wait()))
            try:
                await self._race(
                    asyncio.wait(waiters, timeout=limit - now, return_when=asyncio.FIRST_COMPLETED)
                )
            finally:
                for w in waiters:
                    w.cancel()

    def _open_live(self, language: str, spec: SpeechSpec, keys: bool = False) -> LiveRecognition | None:
        """A recognition fed while the caller speaks (Vosk streamed, Whisper with early decoding).

        A Vosk grammar only ever returns its phrases, so when the menu takes keys too, the digit
        words of the language join it: "two" / "二" can then be heard, and the menu maps them to key 2
        (ivr.nodes.menu); an open menu (any speech counts) gets Vosk's free mode instead, its answer
        matched to the options by the menu. Whisper hears any word, so its phrase list stays the
        menu's."""
        engine = self.runtime.speech.ready()
        if not isinstance(engine, StreamingTranscriber) or not engine.supports(language):
            return None
        phrases = self._grammar(engine, spec, language)
        if keys and phrases and isinstance(engine, SpeechRouter) and engine.choice(language).engine == "vosk":
            words = _DIGIT_WORDS.get(language.strip().lower().replace("_", "-").split("-")[0], ())
            phrases = (*phrases, *(w for w in words if w not in phrases))
        return engine.live(language, phrases or None)

    @staticmethod
    def _grammar(engine: object, spec: SpeechSpec, language: str) -> tuple[str, ...]:
        """The phrase list for the recogniser: none for an open menu on Vosk (a grammar would force
        every question onto an option), else the spec's."""
        if spec.open and isinstance(engine, SpeechRouter) and engine.choice(language).engine == "vosk":
            return ()
        return spec.phrases

    async def _recognise(
        self, utterance: SpeechEnded, spec: SpeechSpec, language: str, live: LiveRecognition | None = None
    ) -> AsrResult | None:
        """The utterance recognised (``live`` finished, else the whole utterance transcribed); None when
        the recogniser heard nothing in it. Languages without a recogniser give an empty (no-match)
        result. ``listen`` closes ``live`` afterwards, whatever happened."""
        engine = await self._race(self.runtime.speech.transcriber())
        if engine is None or not engine.supports(language):
            log_event(
                log,
                "ivr_speech_unrecognised",
                call_id=self.session.call_id,
                level=logging.DEBUG,
                language=language,
                reason="no engine for the language",
            )
            return AsrResult("", True, 0.0)
        try:
            if live is not None:
                result = await self._race(live.finish())
            else:
                phrases = self._grammar(engine, spec, language) or None
                result = await self._race(engine.transcribe(utterance.audio, phrases, language))
        except SpeechError as exc:
            log_event(log, "asr_failed", call_id=self.session.call_id, level=logging.WARNING, error=str(exc))
            return AsrResult("", True, 0.0)
        return result if (result.text or result.raw_text) else None

    async def record(
        self, *, max_s: float, beep: bool = True, terminator: str | None = "#", max_silence_s: float = 5.0
    ) -> RecordResult:
        try:
            if beep:
                await self._play_frames(tuple(encode_frames(tones.sine(BEEP_HZ, BEEP_S), self._rtp().codec)))
            rtp = self._rtp()
        except CallerHangup:
            return RecordResult(None, 0.0, "hangup")
        self._digits.clear()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.session.call_id)[:80]
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = self.runtime.data_dir / "voicemail" / f"{stamp}-{safe}-{next(_voicemail_seq)}.wav"
        try:
            recorder = CallRecorder(path)
        except (RecordingError, OSError) as exc:
            log_event(
                log, "voicemail_failed", call_id=self.session.call_id, level=logging.ERROR, error=str(exc)
            )
            return RecordResult(None, 0.0, "silence")
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[Literal["terminator", "silence", "max_length", "hangup"]] = loop.create_future()
        frames = voiced = silent = 0

        def finish(how: Literal["terminator", "silence", "max_length", "hangup"]) -> None:
            if not ended.done():
                ended.set_result(how)

        def tap(frame: g711.Pcm, now: float) -> None:  # counted in audio time, not wall time
            nonlocal frames, voiced, silent
            if ended.done():
                return
            recorder.write(LEFT, frame, now)
            frames += 1
            rms = float(np.sqrt(np.mean(np.square(frame.astype(np.float64))))) if len(frame) else 0.0
            if rms >= VOICE_RMS:
                voiced, silent = voiced + 1, 0
            else:
                silent += 1
            if frames * FRAME_S >= max_s:
                finish("max_length")
            elif silent * FRAME_S >= max_silence_s:
                finish("silence")

        async def keys() -> None:
            while True:
                digit = await self._next_digit(max_s + 1.0)
                if digit is None or digit == terminator:
                    finish("terminator" if digit is not None else "max_length")
                    return

        rtp.add_audio_tap(tap)
        keys_task = asyncio.ensure_future(keys())
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            # the wall-clock bound only matters when no audio arrives at all
            waiting: set[asyncio.Future[object]] = {ended, gone, keys_task}  # type: ignore[arg-type]
            await asyncio.wait(waiting, timeout=max_s + 1.0, return_when=asyncio.FIRST_COMPLETED)
        finally:
            keys_task.cancel()
            gone.cancel()
            rtp.remove_audio_tap(tap)
        how = "hangup" if self._gone.is_set() else (ended.result() if ended.done() else "max_length")
        if keys_task.done() and not keys_task.cancelled() and keys_task.exception() is not None:
            how = "hangup"  # CallerHangup from the key wait
        try:
            await recorder.aclose()
        except RecordingError as exc:
            log_event(
                log, "voicemail_failed", call_id=self.session.call_id, level=logging.ERROR, error=str(exc)
            )
            return RecordResult(None, 0.0, how)
        if voiced == 0:
            await asyncio.to_thread(_unlink, path)
            return RecordResult(None, 0.0, how)
        duration = max(frames - (silent if how == "silence" else 0), 0) * FRAME_S
        log_event(
            log,
            "voicemail_recorded",
            call_id=self.session.call_id,
            file=str(path),
            duration_s=round(duration, 2),
            ended_by=how,
        )
        self.voicemails.append(str(path))
        return RecordResult(str(path), duration, how)

    async def enqueue(self, request: QueueRequest) -> QueueResult:
        """Wait in the queue (hold music, announcements), ring agents, bridge the answer; returns when
        the agent hangs up with the caller still there, or on overflow (see calls/acd.py)."""
        self._rtp()
        acd = self.runtime.acd
        if acd is None:
            log_event(log, "ivr_queue_unavailable", call_id=self.session.call_id, queue=request.queue)
            return QueueResult("closed")
        self._record_when_bridged = self._record_when_bridged or request.record
        return await acd.serve(self, request, self.queue_visits)

    # -- what the ACD needs from the caller's side -------------------------------------------------------

    def caller_info(self, queue: str | None, screen_pop_base: str | None) -> CallerInfo:
        call_id = self.session.call_id
        url = f"{screen_pop_base.rstrip('/')}/calls/{quote(call_id, safe='')}" if screen_pop_base else None
        return CallerInfo(call_id, self.caller, self.caller_name, queue, url)

    async def hold_music(self, file: str | None) -> tuple[bytes, ...]:
        """The queue's hold music in the call's codec: its file, or the built-in tune when there is
        none or it cannot be read (logged)."""
        codec = self._rtp().codec
        if file is not None:
            try:
                return (await self._race(self._load(file))).frames
            except PromptError as exc:
                log_event(log, "hold_music_missing", call_id=self.session.call_id, level=logging.WARNING,
                          file=file, error=str(exc))
        from callcenter.calls.acd import default_hold_music

        return default_hold_music(codec)

    async def announce(self, prompts: Sequence[PromptItem]) -> None:
        """Queue announcements: no barge-in; a digit pressed meanwhile is kept for the flow."""
        await self._play_prompts(prompts, barge_in=False)

    def on_bridge(self, bridge: Bridge | None, agent: str) -> None:
        """Connected to (or disconnected from) an agent: the bridge is where supervisors and live
        transcription of both sides attach (``speech.transcribe_bridged``)."""
        for leg in self._leg_transcribers:
            leg.close()  # speech under way counts as said; the backlog drains in its own task
        self._leg_transcribers = []
        self.bridge = bridge
        self.agent = agent if bridge is not None else self.agent
        if bridge is not None and self._record_when_bridged:
            self.session.start_recording()  # the flow's queue node asked for it (record: true)
        if bridge is not None and self.runtime.speech.settings.transcribe_bridged:
            self.session.spawn(self._transcribe_bridge(bridge))

    async def _transcribe_bridge(self, bridge: Bridge) -> None:
        """Both directions of ``bridge`` onto the transcript until it ends (runs in the call's TaskGroup)."""
        speech = self.runtime.speech
        engine = speech.ready()
        language = self.language
        if engine is None or not engine.supports(language):
            return
        legs: list[LegTranscriber] = []
        for speaker, direction in (("caller", "a_to_b"), ("agent", "b_to_a")):
            segmenter = await speech.open_segmenter()
            leg = LegTranscriber(
                speaker,  # type: ignore[arg-type]
                language,
                segmenter,
                engine,
                self._on_bridge_text,
                speech.bridge_limits,
                call_id=self.session.call_id,
                release=speech.release_segmenter,
            )
            legs.append(leg)
            if self.bridge is bridge:
                bridge.add_tap(direction, leg.tap)  # type: ignore[arg-type]
            else:
                leg.close()  # the bridge ended while the segmenters were fetched
        if self.bridge is bridge:
            self._leg_transcribers = legs
        await asyncio.gather(*(leg.run() for leg in legs))
        self.transcript_dropped += sum(leg.dropped for leg in legs)

    def _on_bridge_text(self, speaker: str, text: str, at: float, confidence: float) -> None:
        self._heard(Utterance(speaker, text, max(0.0, at - self._started_at), confidence))  # type: ignore[arg-type]

    # -- agent assist (calls/assist.py) -------------------------------------------------------------------

    _assist: CallAssist | None = None  # made on the first utterance when the server runs agent assist

    def _heard(self, utterance: Utterance) -> None:
        """A final utterance (caller in the IVR or on the bridge, agent) joins the transcript, and the
        call's KB suggestions are recomputed from it (debounced, in a worker; see calls/assist.py)."""
        self.transcript.append(utterance)
        if utterance.speaker == "system":
            return
        assist = self._assist
        if assist is None:
            # IvrRuntime.assist: the server's AgentAssist, or None (no knowledge base, tests)
            hub = self.runtime.assist
            if hub is None:
                return
            assist = self._assist = hub.for_call(
                self.session.call_id, self.session.spawn, lambda: not self._gone.is_set()
            )
        assist.heard(self.transcript, self.language)

    def assist_suggestions(self) -> list[dict[str, object]]:
        """The call's current KB suggestions for the agent (id, title, snippet, score), best first."""
        return [s.as_json() for s in self._assist.suggestions] if self._assist is not None else []

    async def transfer(
        self, target: str, *, timeout_s: float = 30.0, caller_id: str | None = None
    ) -> TransferResult:
        """Ring ``agent:NAME``, a queue or a SIP URI for the caller and bridge the answer until one side
        hangs up ("answered"); otherwise busy / no_answer / failed and the flow's fallback runs."""
        self._rtp()
        acd = self.runtime.acd
        if acd is None:
            log_event(log, "ivr_transfer_unavailable", call_id=self.session.call_id, target=target)
            return TransferResult("failed", "no routing on this server")
        return await acd.transfer(self, target, timeout_s=timeout_s, caller_id=caller_id)

    async def set_language(self, language: str, voice: str | None = None) -> None:
        self.language, self.voice = language, voice

    async def hangup(self, reason: str) -> None:
        self.session.request_hangup(reason)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
