"""LiveCallControl against a small fake call: digit rules, barge-in, hang-up, the no-routing answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from live_fakes import SHORT, FakeSession, FakeTts, until

from callcenter.calls.control import IvrRuntime, LiveCallControl
from callcenter.ivr.control import CallerHangup, DigitSpec, PromptItem, QueueRequest, SpeechSpec
from callcenter.speech.cache import PromptCache


@pytest.fixture
def tts() -> FakeTts:
    return FakeTts()


@pytest.fixture
def session() -> FakeSession:
    return FakeSession()


@pytest.fixture
def control(tmp_path: Path, tts: FakeTts, session: FakeSession) -> LiveCallControl:
    runtime = IvrRuntime(flows={}, prompts=PromptCache(tmp_path / "prompts", tts), data_dir=tmp_path)
    return LiveCallControl(session, runtime)


async def test_digits_stop_at_max_digits(control: LiveCallControl) -> None:
    for d in "1234":
        control.on_digit(d)
    result = await control.collect_digits(DigitSpec(max_digits=3, min_digits=1), timeout_s=SHORT)
    assert (result.kind, result.digits, result.terminated) == ("digits", "123", False)
    # the fourth digit stays for the next input (type-ahead)
    again = await control.collect_digits(DigitSpec(max_digits=1), timeout_s=SHORT)
    assert again.digits == "4"


async def test_terminator_ends_input_and_is_not_part_of_the_digits(control: LiveCallControl) -> None:
    for d in "12#9":
        control.on_digit(d)
    result = await control.collect_digits(DigitSpec(max_digits=8, terminator="#"), timeout_s=SHORT)
    assert (result.kind, result.digits, result.terminated) == ("digits", "12", True)


async def test_no_digit_is_a_timeout(control: LiveCallControl) -> None:
    result = await control.collect_digits(DigitSpec(max_digits=4), timeout_s=SHORT)
    assert result.kind == "timeout" and result.digits == ""


async def test_inter_digit_timeout_returns_what_was_pressed(control: LiveCallControl) -> None:
    control.on_digit("7")
    spec = DigitSpec(max_digits=4, inter_digit_timeout_s=SHORT)
    result = await control.collect_digits(spec, timeout_s=SHORT)
    assert (result.kind, result.digits) == ("digits", "7")


async def test_timeout_counts_from_the_end_of_the_prompt(
    control: LiveCallControl, session: FakeSession
) -> None:
    task = asyncio.create_task(
        control.collect_digits(DigitSpec(), prompts=[PromptItem("Press 1.")], timeout_s=SHORT)
    )
    await until(lambda: session.rtp.playing is not None)
    # However long the prompt plays, the input has not timed out while it plays.
    for _ in range(20):
        await asyncio.sleep(SHORT / 2)
    assert not task.done()
    session.rtp.finish_playing()
    assert (await task).kind == "timeout"


async def test_a_digit_during_the_prompt_barges_in(control: LiveCallControl, session: FakeSession) -> None:
    task = asyncio.create_task(
        control.collect_digits(DigitSpec(), prompts=[PromptItem("Press 1."), PromptItem("Or 2.")])
    )
    await until(lambda: session.rtp.playing is not None)
    control.on_digit("2")
    result = await task
    assert (result.kind, result.digits) == ("digits", "2")
    assert session.rtp.stopped == 1 and len(session.rtp.played) == 1  # the second prompt never started


async def test_without_barge_in_digits_during_the_prompt_are_dropped(
    control: LiveCallControl, session: FakeSession
) -> None:
    task = asyncio.create_task(
        control.collect_digits(DigitSpec(), prompts=[PromptItem("Listen.")], barge_in=False, timeout_s=SHORT)
    )
    await until(lambda: session.rtp.playing is not None)
    control.on_digit("3")
    await asyncio.sleep(0)
    assert not task.done() and session.rtp.stopped == 0
    session.rtp.finish_playing()
    assert (await task).kind == "timeout"


async def test_hang_up_while_waiting_for_digits_raises_caller_hangup(control: LiveCallControl) -> None:
    task = asyncio.create_task(control.collect_digits(DigitSpec(), timeout_s=30))
    await asyncio.sleep(0)
    control.caller_gone()
    with pytest.raises(CallerHangup):
        await task


async def test_hang_up_during_a_prompt_raises_caller_hangup(
    control: LiveCallControl, session: FakeSession
) -> None:
    task = asyncio.create_task(control.say("Thank you for calling."))
    await until(lambda: session.rtp.playing is not None)
    control.caller_gone()
    with pytest.raises(CallerHangup):
        await task


async def test_say_uses_the_voice_of_the_language(
    control: LiveCallControl, tts: FakeTts, session: FakeSession
) -> None:
    task = asyncio.create_task(control.say("你好", language="zh-CN"))
    await until(lambda: session.rtp.playing is not None)
    session.rtp.finish_playing()
    await task
    await control.set_language("en-GB")
    task = asyncio.create_task(control.say("Hello"))
    await until(lambda: len(session.rtp.played) == 2)
    session.rtp.finish_playing()
    await task
    assert tts.texts == [("你好", "cmn"), ("Hello", "en-gb")]
    # What the system said is on the call's transcript, in order, as the system's words.
    assert [(u.speaker, u.text) for u in control.transcript] == [("system", "你好"), ("system", "Hello")]
    assert control.transcript[0].start <= control.transcript[1].start


async def test_play_falls_back_to_text_when_the_file_is_missing(
    control: LiveCallControl, tts: FakeTts, session: FakeSession, tmp_path: Path
) -> None:
    task = asyncio.create_task(control.play(str(tmp_path / "missing.wav"), fallback_text="Welcome"))
    await until(lambda: session.rtp.playing is not None)
    session.rtp.finish_playing()
    await task
    assert [t for t, _ in tts.texts] == ["Welcome"]


async def test_listen_without_digits_is_no_input_for_now(control: LiveCallControl) -> None:
    control.on_digit("1")  # not asked for: speech only
    result = await control.listen(SpeechSpec(("sales",)), timeout_s=SHORT)
    assert result.kind == "timeout"
    result = await control.listen(SpeechSpec(("sales",)), timeout_s=SHORT, digits=DigitSpec())
    assert (result.kind, result.digits) == ("digits", "1")


async def test_no_agent_and_no_transfer_yet_so_the_fallback_paths_run(
    control: LiveCallControl, session: FakeSession
) -> None:
    assert (await control.enqueue(QueueRequest("sales"))).outcome == "closed"
    assert (await control.transfer("sip:bob@example.com")).outcome == "failed"
    await control.hangup("bye")
    assert session.hangups == ["bye"]


async def test_record_ends_on_the_terminator_and_keeps_the_message(
    control: LiveCallControl, session: FakeSession, tmp_path: Path
) -> None:
    task = asyncio.create_task(control.record(max_s=60, beep=False, terminator="#"))
    await until(lambda: bool(session.rtp.taps))
    tap = session.rtp.taps[0]
    voice = (np.sin(np.arange(160) / 3) * 5000).astype(np.int16)
    for i in range(50):  # 1 s of the caller speaking
        tap(voice, 100.0 + i * 0.02)
    control.on_digit("#")
    result = await task
    assert result.ended_by == "terminator" and result.file is not None
    assert Path(result.file).parent == tmp_path / "voicemail" and Path(result.file).is_file()
    assert result.duration_s == pytest.approx(1.0)
    assert not session.rtp.taps


async def test_record_ends_after_silence_and_an_empty_message_leaves_no_file(
    control: LiveCallControl, session: FakeSession, tmp_path: Path
) -> None:
    task = asyncio.create_task(control.record(max_s=60, beep=False, max_silence_s=1.0))
    await until(lambda: bool(session.rtp.taps))
    for i in range(60):
        session.rtp.taps[0](np.zeros(160, np.int16), 100.0 + i * 0.02)
    result = await task
    assert (result.file, result.ended_by) == (None, "silence")
    assert not list((tmp_path / "voicemail").glob("*.wav"))


async def test_record_returns_on_hang_up_instead_of_raising(
    control: LiveCallControl, session: FakeSession
) -> None:
    task = asyncio.create_task(control.record(max_s=60, beep=False))
    await until(lambda: bool(session.rtp.taps))
    voice = (np.sin(np.arange(160) / 3) * 5000).astype(np.int16)
    for i in range(10):
        session.rtp.taps[0](voice, 100.0 + i * 0.02)
    control.caller_gone()
    result = await task
    assert result.ended_by == "hangup" and result.file is not None
