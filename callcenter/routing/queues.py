"""Queue configuration, waiting callers and pure agent selection.

Callers are served by priority (higher first), then by arrival (FIFO within a priority); an agent who
qualifies for several queues takes the caller who is first in that order across all of them.
A caller's requirement is the queue's skills (or, after ``Escalation.after_s`` seconds of waiting, that
escalation's skills instead) AND the flow's extra skills: an agent needs every skill at or above the
higher of the two levels, and the caller's language when both sides name one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from callcenter.core.errors import ConfigError
from callcenter.routing.agents import Agent, AgentState, language_ok

__all__ = [
    "STRATEGIES",
    "Escalation",
    "QueueConfig",
    "Strategy",
    "Waiting",
    "choose",
    "eligible",
    "required_skills",
    "select",
    "skills_ok",
    "stage_at",
]

Strategy = Literal["longest_idle", "round_robin", "ring_all", "least_talk_time", "skill_weighted"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)


@dataclass(frozen=True)
class Escalation:
    """After ``after_s`` seconds of waiting, ``skills`` replace the queue's required skills."""

    after_s: float
    skills: Mapping[str, int]


@dataclass(frozen=True)
class QueueConfig:
    name: str
    skills: Mapping[str, int] = field(default_factory=dict)  # skill → minimum level (empty = any agent)
    strategy: Strategy = "longest_idle"
    max_wait_s: float | None = None
    max_length: int | None = None
    overflow: str | None = None  # "queue:NAME" | "voicemail" | "callback" | None (the flow decides)
    escalations: tuple[Escalation, ...] = ()
    service_level_s: float = 20.0
    wrap_up_s: float = 0.0
    ring_timeout_s: float = 15.0
    join_when_empty: bool = False  # False: no logged-in agent with the skills → Overflow("no_agents")

    def __post_init__(self) -> None:
        where = f"queue {self.name!r}"
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"{where}: strategy {self.strategy!r}, expected one of {', '.join(STRATEGIES)}")
        for skills in (self.skills, *(e.skills for e in self.escalations)):
            for skill, level in skills.items():
                if not isinstance(level, int) or not 1 <= level <= 5:
                    raise ConfigError(f"{where}: skill {skill!r} needs a level 1-5, got {level!r}")
        afters = [e.after_s for e in self.escalations]
        if afters != sorted(afters) or any(a <= 0 for a in afters):
            raise ConfigError(f"{where}: escalations need increasing after_s > 0, got {afters}")
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError(f"{where}: max_length must be at least 1")
        if self.max_wait_s is not None and self.max_wait_s <= 0:
            raise ConfigError(f"{where}: max_wait_s must be positive")
        if self.overflow is not None and self.overflow not in ("voicemail", "callback") and not (
            self.overflow.startswith("queue:") and len(self.overflow) > 6
        ):
            raise ConfigError(
                f"{where}: overflow {self.overflow!r}, expected queue:NAME, voicemail or callback"
            )
        if self.wrap_up_s < 0 or self.ring_timeout_s <= 0 or self.service_level_s <= 0:
            raise ConfigError(f"{where}: wrap_up_s >= 0, ring_timeout_s > 0 and service_level_s > 0 expected")


@dataclass(eq=False)
class Waiting:
    """A caller in a queue (the router owns these; read them, do not change them)."""

    call_id: str
    queue: str
    priority: int = 0  # higher first
    skills: Mapping[str, int] = field(default_factory=dict)  # extra, from the flow
    language: str | None = None
    enqueued_at: float = 0.0
    offered_to: set[str] = field(default_factory=set)  # agents who missed this caller
    max_wait_s: float | None = None  # the queue's, or the caller's own when given
    stage: int = 0  # escalations applied so far (the router keeps it current)
    seq: int = 0  # arrival order among equal enqueued_at

    @property
    def order(self) -> tuple[int, float, int]:
        """Sort key: priority desc, then arrival."""
        return (-self.priority, self.enqueued_at, self.seq)

    @property
    def deadline(self) -> float:
        return math.inf if self.max_wait_s is None else self.enqueued_at + self.max_wait_s


def stage_at(queue: QueueConfig, waited_s: float) -> int:
    """How many escalations apply after ``waited_s`` seconds."""
    return sum(1 for e in queue.escalations if waited_s >= e.after_s)


def required_skills(queue: QueueConfig, extra: Mapping[str, int], stage: int) -> dict[str, int]:
    """The requirement at an escalation stage: the stage's skills AND the flow's extras (higher level)."""
    base = queue.escalations[stage - 1].skills if stage > 0 else queue.skills
    merged = dict(base)
    for skill, level in extra.items():
        if level > merged.get(skill, 0):
            merged[skill] = level
    return merged


def skills_ok(have: Mapping[str, int], need: Mapping[str, int]) -> bool:
    for skill, level in need.items():
        if have.get(skill, 0) < level:
            return False
    return True


def eligible(agent: Agent, waiting: Waiting, queue: QueueConfig, now: float) -> bool:
    """Available, with every required skill at its level (escalated by ``now``), and the language."""
    if agent.state is not AgentState.AVAILABLE:
        return False
    need = required_skills(queue, waiting.skills, stage_at(queue, now - waiting.enqueued_at))
    return skills_ok(agent.skills, need) and language_ok(agent.languages, waiting.language)


def choose(
    queue: QueueConfig,
    candidates: Sequence[Agent],
    need: Mapping[str, int],
    offered_to: set[str],
    rr_state: MutableMapping[str, str],
) -> list[str]:
    """Pick from eligible ``candidates`` by the queue's strategy. Agents who already missed this caller
    are passed over while anyone else qualifies. Ties go to the longest idle, then the name."""
    if offered_to:
        fresh = [a for a in candidates if a.name not in offered_to]
        if fresh:
            candidates = fresh
    if not candidates:
        return []
    strategy = queue.strategy
    if strategy == "ring_all":
        return sorted(a.name for a in candidates)
    if strategy == "round_robin":
        # The next name after the last one this queue offered, wrapping around.
        last = rr_state.get(queue.name)
        names = sorted(a.name for a in candidates)
        pick = next((n for n in names if last is None or n > last), names[0])
        rr_state[queue.name] = pick
        return [pick]
    if strategy == "least_talk_time":
        best = min(candidates, key=lambda a: (a.talk_s_today, a.idle_since, a.name))
    elif strategy == "skill_weighted":
        # The most skilled on what this caller needs (sum of levels), then longest idle.
        best = min(candidates, key=lambda a: (-sum(a.skills.get(s, 0) for s in need), a.idle_since, a.name))
    else:  # longest_idle
        best = min(candidates, key=lambda a: (a.idle_since, a.name))
    return [best.name]


def select(
    queue: QueueConfig,
    waiting: Waiting,
    agents: Iterable[Agent],
    now: float,
    *,
    rr_state: MutableMapping[str, str],
) -> list[str]:
    """Agent names to ring for ``waiting``: one, or every eligible agent for ring_all; [] when none."""
    need = required_skills(queue, waiting.skills, stage_at(queue, now - waiting.enqueued_at))
    candidates = [
        a for a in agents
        if a.state is AgentState.AVAILABLE and skills_ok(a.skills, need)
        and language_ok(a.languages, waiting.language)
    ]
    return choose(queue, candidates, need, waiting.offered_to, rr_state)
