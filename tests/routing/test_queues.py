"""Pure selection: skills and levels, languages, escalation, every strategy, missed agents."""

from __future__ import annotations

from typing import Any

import pytest

from callcenter.core.errors import ConfigError
from callcenter.routing.agents import Agent, AgentState
from callcenter.routing.queues import (
    Escalation,
    QueueConfig,
    Waiting,
    eligible,
    required_skills,
    select,
    stage_at,
)


def agent(name: str, skills: dict[str, int], *, idle: float = 0.0, talk: float = 0.0,
          languages: tuple[str, ...] = (), state: AgentState = AgentState.AVAILABLE) -> Agent:
    return Agent(name, skills, frozenset(languages), state=state, idle_since=idle, talk_s_today=talk)


def caller(**kw: Any) -> Waiting:
    return Waiting(kw.pop("call_id", "c1"), kw.pop("queue", "q"), **kw)


def test_levels_are_minimums() -> None:
    q = QueueConfig("q", skills={"sales": 3})
    w = caller()
    assert eligible(agent("a", {"sales": 3}), w, q, 0.0)
    assert eligible(agent("a", {"sales": 5}), w, q, 0.0)
    assert not eligible(agent("a", {"sales": 2}), w, q, 0.0)
    assert not eligible(agent("a", {"support": 5}), w, q, 0.0)


def test_only_available_agents_are_eligible() -> None:
    q = QueueConfig("q")
    for state in AgentState:
        assert eligible(agent("a", {}, state=state), caller(), q, 0.0) is (state is AgentState.AVAILABLE)


def test_flow_skills_add_to_the_queue_skills_at_the_higher_level() -> None:
    q = QueueConfig("q", skills={"sales": 2})
    w = caller(skills={"sales": 4, "spanish": 1})
    assert required_skills(q, w.skills, 0) == {"sales": 4, "spanish": 1}
    assert not eligible(agent("a", {"sales": 3, "spanish": 5}), w, q, 0.0)
    assert eligible(agent("a", {"sales": 4, "spanish": 1}), w, q, 0.0)
    assert not eligible(agent("a", {"sales": 5}), w, q, 0.0)


def test_language_must_match_when_both_name_one() -> None:
    q = QueueConfig("q")
    w = caller(language="zh")
    assert not eligible(agent("a", {}, languages=("en",)), w, q, 0.0)
    assert eligible(agent("a", {}, languages=("en", "zh")), w, q, 0.0)
    assert eligible(agent("a", {}), w, q, 0.0)  # an agent without languages takes anyone


def test_escalation_replaces_the_queue_skills_after_its_delay() -> None:
    q = QueueConfig("q", skills={"billing": 4},
                    escalations=(Escalation(30.0, {"billing": 2}), Escalation(90.0, {})))
    w = caller(enqueued_at=100.0, skills={"vip": 1})
    junior = agent("j", {"billing": 2, "vip": 1})
    anyone = agent("x", {"vip": 1})
    assert [stage_at(q, t) for t in (0, 29.9, 30, 89, 90, 1000)] == [0, 0, 1, 1, 2, 2]
    assert not eligible(junior, w, q, 129.9)
    assert eligible(junior, w, q, 130.0)
    assert not eligible(anyone, w, q, 189.0)
    assert eligible(anyone, w, q, 190.0)
    assert not eligible(agent("y", {}), w, q, 190.0)  # the flow's extra skills still apply


def _names(q: QueueConfig, agents: list[Agent], w: Waiting | None = None,
           rr: dict | None = None) -> list[str]:
    return select(q, w or caller(), agents, 0.0, rr_state=rr if rr is not None else {})


def test_longest_idle() -> None:
    q = QueueConfig("q", strategy="longest_idle")
    agents = [agent("a", {}, idle=30.0), agent("b", {}, idle=10.0), agent("c", {}, idle=20.0)]
    assert _names(q, agents) == ["b"]


def test_least_talk_time_then_longest_idle() -> None:
    q = QueueConfig("q", strategy="least_talk_time")
    agents = [agent("a", {}, talk=300.0), agent("b", {}, talk=100.0, idle=5.0),
              agent("c", {}, talk=100.0, idle=2.0)]
    assert _names(q, agents) == ["c"]


def test_skill_weighted_prefers_the_most_skilled_on_the_needed_skills() -> None:
    q = QueueConfig("q", skills={"sales": 1}, strategy="skill_weighted")
    w = caller(skills={"french": 1})
    agents = [
        agent("a", {"sales": 5, "french": 1, "support": 5}, idle=0.0),
        agent("b", {"sales": 4, "french": 4}, idle=50.0),
        agent("c", {"sales": 5, "french": 3}, idle=60.0),
        agent("d", {"sales": 4, "french": 4}, idle=10.0),
    ]
    # a scores 6 (sales + french levels); b, c and d tie at 8: d is the longest idle of them.
    assert _names(q, agents, w) == ["d"]


def test_round_robin_goes_round_among_free_agents() -> None:
    q = QueueConfig("q", strategy="round_robin")
    agents = [agent(n, {}) for n in ("carol", "alice", "bob")]
    rr: dict[str, str] = {}
    picks = [_names(q, agents, rr=rr)[0] for _ in range(4)]
    assert picks == ["alice", "bob", "carol", "alice"]
    # bob busy: after alice comes carol
    rr["q"] = "alice"
    assert _names(q, [a for a in agents if a.name != "bob"], rr=rr) == ["carol"]


def test_ring_all_rings_every_eligible_agent() -> None:
    q = QueueConfig("q", skills={"sales": 2}, strategy="ring_all")
    agents = [agent("a", {"sales": 2}), agent("b", {"sales": 1}), agent("c", {"sales": 5}),
              agent("d", {"sales": 5}, state=AgentState.ON_CALL)]
    assert _names(q, agents) == ["a", "c"]


def test_agents_who_missed_the_caller_come_last() -> None:
    q = QueueConfig("q", strategy="ring_all")
    agents = [agent("a", {}), agent("b", {})]
    assert _names(q, agents, caller(offered_to={"a"})) == ["b"]
    assert _names(q, agents[:1], caller(offered_to={"a"})) == ["a"]  # alone: offered again
    q2 = QueueConfig("q", strategy="longest_idle")
    agents[0].idle_since = -100.0
    assert _names(q2, agents, caller(offered_to={"a"})) == ["b"]


def test_nobody_eligible_is_an_empty_list() -> None:
    q = QueueConfig("q", skills={"sales": 1})
    assert _names(q, [agent("a", {"support": 5})]) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "random"}, "strategy"),
        ({"skills": {"sales": 0}}, "level 1-5"),
        ({"skills": {"sales": 6}}, "level 1-5"),
        ({"escalations": (Escalation(60, {}), Escalation(30, {}))}, "increasing"),
        ({"escalations": (Escalation(10, {"x": 9}),)}, "level 1-5"),
        ({"overflow": "elsewhere"}, "overflow"),
        ({"overflow": "queue:"}, "overflow"),
        ({"max_length": 0}, "max_length"),
        ({"max_wait_s": 0}, "max_wait_s"),
        ({"ring_timeout_s": 0}, "ring_timeout_s"),
    ],
)
def test_bad_queue_config(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        QueueConfig("q", **kwargs)


def test_good_overflow_targets() -> None:
    for target in ("queue:other", "voicemail", "callback", None):
        assert QueueConfig("q", overflow=target).overflow == target
