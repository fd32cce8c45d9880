"""Agent assist on a live call: suggestions from the real knowledge base (sample KB on SQLite), timed by a
fake clock (the debounce waits advance it; nothing sleeps), shown in the call's live view."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from callcenter.calls.assist import AgentAssist, Suggestion
from callcenter.calls.control import IvrRuntime, LiveCallControl, Utterance
from callcenter.calls.session import CallSession
from callcenter.core.clock import FakeClock
from callcenter.kb.io import load_sample_if_empty
from callcenter.kb.repo import KbRepo, SearchHit
from callcenter.kb.service import KbService
from callcenter.speech.cache import PromptCache
from callcenter.store.db import make_engine

sys.path.insert(0, str(Path(__file__).parents[1] / "calls"))
from live_fakes import FakeSession, FakeTts  # noqa: E402

RETURN = "I ordered a pair of shoes last week but they are the wrong size, I want to send them back"
PASSWORD = "also I cannot log in to my account, I forgot my password"


@pytest.fixture
def kb(tmp_path: Path) -> Iterator[KbService]:
    engine = make_engine(f"sqlite:///{tmp_path / 'kb.db'}")
    repo = KbRepo(engine)
    repo.ensure_schema()
    load_sample_if_empty(repo)
    yield KbService(repo)
    engine.dispose()


class Rig:
    """A call's LiveCallControl with agent assist on, a fake clock and the listener's notes."""

    def __init__(self, tmp_path: Path, suggester: Any, language: str = "en-US") -> None:
        self.clock = FakeClock()
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self.sleeper_added = asyncio.Event()
        self.hub = AgentAssist(suggester, clock=self.clock, sleep=self._sleep)
        self.published: list[tuple[str, tuple[Suggestion, ...]]] = []
        self.hub.add_listener(lambda call_id, s: self.published.append((call_id, s)))
        runtime = IvrRuntime(
            flows={}, prompts=PromptCache(tmp_path / "prompts", FakeTts()), data_dir=tmp_path
        )
        setattr(runtime, "assist", self.hub)  # noqa: B010 - IvrRuntime.assist, wired by app.py
        self.session = FakeSession()
        self.control = LiveCallControl(self.session, runtime, language=language)

    async def _sleep(self, seconds: float) -> None:
        """The runner's debounce wait: over when the test's clock reaches the deadline."""
        waiter = asyncio.get_running_loop().create_future()
        self.sleepers.append((self.clock.now() + seconds, waiter))
        self.sleeper_added.set()
        await waiter

    def _fire_next(self) -> None:
        self.sleepers.sort(key=lambda s: s[0])
        deadline, waiter = self.sleepers.pop(0)
        self.clock.advance(max(0.0, deadline - self.clock.now()))
        if not waiter.done():
            waiter.set_result(None)

    async def quiet(self) -> None:
        """Until the runner waits on the fake clock or is done (a search under way finishes first)."""
        assist = self.control._assist
        task = assist._task if assist is not None else None
        while task is not None and not task.done() and not self.sleepers:
            self.sleeper_added.clear()
            added = asyncio.ensure_future(self.sleeper_added.wait())
            await asyncio.wait({task, added}, return_when=asyncio.FIRST_COMPLETED)
            added.cancel()

    async def advance(self, seconds: float, *, searches_finish: bool = True) -> None:
        """Let ``seconds`` of fake time pass, waking each wait that falls due on the way; searches
        take no fake time (unless ``searches_finish`` is False: a held search stays held)."""
        target = self.clock.now() + seconds
        while True:
            for _ in range(20):  # let the runner reach its next wait (or its search)
                await asyncio.sleep(0)
            if searches_finish:
                await self.quiet()
            if not any(deadline <= target for deadline, _ in self.sleepers):
                break
            self._fire_next()
        self.clock.advance(max(0.0, target - self.clock.now()))

    def say(self, speaker: str, text: str) -> float:
        """A final utterance on the bridge now; returns the clock time it was heard."""
        self.control._on_bridge_text(speaker, text, 0.0, 0.9)
        return self.clock.now()

    async def settled(self) -> None:
        """Run fake time forward until the call's pending computation is done."""
        assist = self.control._assist
        assert assist is not None
        while True:
            await self.quiet()
            if not self.sleepers:
                break
            self._fire_next()
        await assist.settled()

    @property
    def slugs(self) -> list[str]:
        return [str(s["title"]) for s in self.control.assist_suggestions()]


async def test_suggestions_follow_an_utterance_within_a_second(
    tmp_path: Path, kb: KbService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="callcenter.calls.assist")
    rig = Rig(tmp_path, kb)
    heard_at = rig.say("caller", RETURN)
    await rig.settled()
    suggestions = rig.control.assist_suggestions()
    returns = kb.repo.get_article("en-return-item")
    assert returns is not None
    assert suggestions and suggestions[0]["id"] == returns.id and suggestions[0]["title"] == returns.title
    assert len(suggestions) <= 3
    assert all(set(s) == {"id", "title", "snippet", "score"} for s in suggestions)
    assert str(suggestions[0]["snippet"]) and 0 < float(suggestions[0]["score"]) <= 1  # type: ignore[arg-type]
    assistant = rig.control._assist
    assert assistant is not None and assistant.updated_at is not None
    assert assistant.updated_at - heard_at <= 1.0
    assert rig.published[-1][0] == rig.session.call_id
    assert [s.as_json() for s in rig.published[-1][1]] == suggestions
    assert [u.text for u in rig.control.transcript] == [RETURN]  # the transcript still gets it
    # the live channel's event (a call_ event: the call's agent and supervisors get it)
    events = [r for r in caplog.records if r.getMessage() == "call_suggestions"]
    assert len(events) == 1 and events[0].__dict__["cc_call_id"] == rig.session.call_id
    assert events[0].__dict__["cc_fields"]["suggestions"] == suggestions


async def test_the_agents_words_count_and_the_topic_can_change(tmp_path: Path, kb: KbService) -> None:
    rig = Rig(tmp_path, kb)
    rig.say("caller", RETURN)
    await rig.settled()
    first = rig.control.assist_suggestions()[0]["title"]
    rig.clock.advance(5)
    rig.say("agent", "I can help with that. Do you remember your password reset email?")
    rig.say("caller", PASSWORD)
    await rig.settled()
    assert rig.control.assist_suggestions()[0]["title"] != first
    reset = kb.repo.get_article("en-reset-password")
    assert reset is not None and rig.control.assist_suggestions()[0]["id"] == reset.id


async def test_chinese_call_gets_chinese_articles(tmp_path: Path, kb: KbService) -> None:
    rig = Rig(tmp_path, kb, language="zh-CN")
    rig.say("caller", "您好，我上周买了一双鞋，尺码不对，我想退货")
    await rig.settled()
    returns = kb.repo.get_article("zh-return-item")
    assert returns is not None and rig.control.assist_suggestions()[0]["id"] == returns.id


class Gated:
    """A suggester whose searches wait for the test to open the gate; counts overlapping calls."""

    def __init__(self, kb: KbService) -> None:
        self.kb = kb
        self.gate = asyncio.Event()
        self.texts: list[str] = []
        self.running = self.most_running = 0

    async def suggest(self, text: str, language: str | None, limit: int = 3) -> list[SearchHit]:
        self.texts.append(text)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.gate.wait()
            return await self.kb.suggest(text, language, limit)
        finally:
            self.running -= 1


async def test_one_computation_in_flight_and_later_words_folded_into_the_next(
    tmp_path: Path, kb: KbService
) -> None:
    gated = Gated(kb)
    rig = Rig(tmp_path, gated)
    rig.say("caller", RETURN)
    await rig.advance(1.0, searches_finish=False)  # past the debounce wait, into the (held) search
    assert len(gated.texts) == 1 and gated.running == 1
    rig.say("agent", "Sure, let me look at that.")
    await rig.advance(0.3, searches_finish=False)
    rig.say("caller", PASSWORD)
    await rig.advance(1.0, searches_finish=False)
    assert len(gated.texts) == 1  # still one, held
    gated.gate.set()
    await rig.settled()
    assert gated.most_running == 1
    assert len(gated.texts) == 2 and PASSWORD in gated.texts[1]  # both later utterances, one search
    reset = kb.repo.get_article("en-reset-password")
    assert reset is not None and rig.control.assist_suggestions()[0]["id"] == reset.id


async def test_steady_talk_does_not_postpone_the_update(tmp_path: Path, kb: KbService) -> None:
    rig = Rig(tmp_path, kb)
    first_at = rig.say("caller", "I ordered shoes")
    done_by: dict[float, int] = {}
    for words in ["they are", "the wrong size", "so I would", "like to", "send them", "back"]:
        await rig.advance(0.2)  # each under the debounce: a pure debounce would wait for silence
        assistant = rig.control._assist
        assert assistant is not None
        done_by[round(rig.clock.now() - first_at, 1)] = assistant.computations
        rig.say("caller", words)
    assert done_by[1.0] >= 1  # updated within a second of the first words, while the caller talks on
    await rig.settled()
    returns = kb.repo.get_article("en-return-item")
    assert returns is not None and rig.control.assist_suggestions()[0]["id"] == returns.id


async def test_system_prompts_and_calls_without_assist(tmp_path: Path, kb: KbService) -> None:
    rig = Rig(tmp_path, kb)
    rig.control._heard(Utterance("system", "Press one for returns.", 0.0, 1.0))
    assert rig.control._assist is None and rig.control.assist_suggestions() == []
    runtime = IvrRuntime(flows={}, prompts=PromptCache(tmp_path / "p2", FakeTts()), data_dir=tmp_path)
    plain = LiveCallControl(FakeSession(), runtime)  # the server runs no agent assist
    plain._on_bridge_text("caller", RETURN, 0.0, 0.9)
    assert plain.assist_suggestions() == [] and [u.text for u in plain.transcript] == [RETURN]


async def test_nothing_is_computed_once_the_caller_is_gone(tmp_path: Path, kb: KbService) -> None:
    gated = Gated(kb)
    rig = Rig(tmp_path, gated)
    rig.control.caller_gone()
    rig.say("caller", RETURN)
    await rig.settled()
    assert gated.texts == [] and rig.control.assist_suggestions() == []


async def test_a_failing_listener_or_search_does_not_break_the_call(tmp_path: Path, kb: KbService) -> None:
    class Broken:
        async def suggest(self, text: str, language: str | None, limit: int = 3) -> list[SearchHit]:
            raise RuntimeError("database gone")

    rig = Rig(tmp_path, Broken())
    rig.say("caller", RETURN)
    await rig.settled()
    assert rig.control.assist_suggestions() == []
    rig = Rig(tmp_path, kb)

    def boom(call_id: str, suggestions: tuple[Suggestion, ...]) -> None:
        raise RuntimeError("socket closed")

    rig.hub.add_listener(boom)
    rig.say("caller", RETURN)
    await rig.settled()
    assert rig.control.assist_suggestions() and rig.published  # the other listener still heard


async def test_live_view_shows_the_suggestions(tmp_path: Path, kb: KbService) -> None:
    rig = Rig(tmp_path, kb)
    call = SimpleNamespace(
        call_id=rig.session.call_id,
        from_header='"Ann" <sip:100@example.com>',
        to_header="<sip:200@example.com>",
        invite=SimpleNamespace(uri="sip:200@example.com"),
        source=SimpleNamespace(transport="udp"),
        state="confirmed",
    )
    deps = SimpleNamespace(settings=SimpleNamespace(media=SimpleNamespace(ptime_ms=20, srtp="optional")))
    session = CallSession(call, deps)  # type: ignore[arg-type]
    assert session.live_view()["suggestions"] == []
    session.control = rig.control
    rig.say("caller", RETURN)
    await rig.settled()
    view = session.live_view()
    assert view["suggestions"] == rig.control.assist_suggestions() and view["suggestions"]


def test_live_view_shows_the_intent_the_ivr_found_so_far(tmp_path: Path) -> None:
    call = SimpleNamespace(
        call_id="c-1",
        from_header="<sip:100@example.com>",
        to_header="<sip:200@example.com>",
        invite=SimpleNamespace(uri="sip:200@example.com"),
        source=SimpleNamespace(transport="udp"),
        state="confirmed",
    )
    deps = SimpleNamespace(settings=SimpleNamespace(media=SimpleNamespace(ptime_ms=20, srtp="optional")))
    session = CallSession(call, deps)  # type: ignore[arg-type]
    assert session.live_view()["intent"] is None
    runner = SimpleNamespace(flow=SimpleNamespace(id="main"), ivr_path=["start", "ask"], variables={})
    session.runner = runner  # type: ignore[assignment]
    assert session.live_view()["intent"] is None  # asked, not found yet
    runner.variables["intent"] = "refund"
    assert session.live_view()["intent"] == "refund"
