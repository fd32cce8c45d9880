"""Any sequence of events keeps the router's promises (hypothesis state machine).

- an agent is reserved exactly when it is in one live offer (never two), on call exactly when bridged;
- every offered agent has the caller's skills (after escalation) and language;
- within the order (priority, arrival) nobody is skipped: after a dispatch no waiting caller has a free
  agent who qualifies, and no offered agent qualified for a caller ahead of theirs who still waits;
- every caller who joined leaves exactly once (the counters add up);
- at the end, hanging up every caller and call leaves no agent reserved, on call or stuck.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from callcenter.routing.agents import TRANSITIONS, AgentEvent, AgentState, InvalidTransition, language_ok
from callcenter.routing.queues import Escalation, QueueConfig, required_skills, skills_ok, stage_at
from callcenter.routing.router import Offer, OfferGone, Overflow, Router

S, E = AgentState, AgentEvent

AGENTS: dict[str, tuple[dict[str, int], tuple[str, ...]]] = {
    "ann": ({"sales": 3}, ("en",)),
    "bob": ({"sales": 1, "support": 2}, ()),
    "cai": ({"support": 5}, ("zh",)),
    "dan": ({}, ()),
    "eve": ({"sales": 5, "support": 5}, ("en", "zh")),
}
QUEUES = [
    QueueConfig("sales", {"sales": 2}, "longest_idle", max_wait_s=120.0, wrap_up_s=5.0,
                escalations=(Escalation(30.0, {"sales": 1}),), join_when_empty=True),
    QueueConfig("support", {"support": 1}, "ring_all", max_length=4, join_when_empty=True),
    QueueConfig("general", {}, "round_robin", ring_timeout_s=10.0, join_when_empty=True),
    QueueConfig("vip", {}, "least_talk_time", escalations=(Escalation(20.0, {}),), wrap_up_s=3.0),
    QueueConfig("expert", {"support": 3}, "skill_weighted", max_wait_s=40.0),
]
PRESENCE = [E.LOGIN, E.LOGOUT, E.SET_AVAILABLE, E.SET_NOT_READY, E.SET_OFFLINE, E.WRAP_UP_DONE]
pick = st.integers(0, 1000)


class RouterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.r = Router({q.name: q for q in QUEUES}, max_missed=2)
        for name, (skills, langs) in AGENTS.items():
            self.r.agents.define(name, skills, langs)
        self.now = 0.0
        self.n = 0
        self.joined: set[str] = set()
        self.left: set[str] = set()
        self.bridged: dict[str, str] = {}  # agent → call

    # -- helpers ------------------------------------------------------------------------------------

    def _qualifies(self, agent: str, call_id: str) -> bool:
        w = self.r.waiting[call_id]
        q = self.r.queues[w.queue]
        a = self.r.agents[agent]
        need = required_skills(q, w.skills, stage_at(q, self.now - w.enqueued_at))
        return skills_ok(a.skills, need) and language_ok(a.languages, w.language)

    def _dispatchable(self) -> list[str]:
        return [
            c for c, w in self.r.waiting.items()
            if c not in self.r.offers and w.deadline > self.now
        ]

    # -- rules --------------------------------------------------------------------------------------

    @rule(agent=st.sampled_from(sorted(AGENTS)), event=st.sampled_from(PRESENCE),
          reason=st.sampled_from([None, "break"]))
    def presence(self, agent: str, event: AgentEvent, reason: str | None) -> None:
        before = self.r.agents[agent].state
        try:
            self.r.agent_event(agent, event, self.now, reason=reason)
        except InvalidTransition:
            assert (before, event) not in TRANSITIONS
            assert self.r.agents[agent].state is before

    @rule(queue=st.sampled_from([q.name for q in QUEUES]), priority=st.integers(0, 2),
          extra=st.sampled_from([{}, {"sales": 4}, {"support": 1}]),
          language=st.sampled_from([None, "en", "zh-CN"]))
    def enqueue(self, queue: str, priority: int, extra: dict[str, int], language: str | None) -> None:
        self.n += 1
        call_id = f"c{self.n}"
        result = self.r.enqueue(call_id, queue, self.now, priority=priority, skills=extra, language=language)
        if isinstance(result, Overflow):
            assert result.reason in ("full", "no_agents")
            assert call_id not in self.r.waiting
        else:
            assert result == self.r.position(call_id)
            self.joined.add(call_id)

    @rule()
    def dispatch(self) -> None:
        avail_before = set(self.r.agents.available)
        offers = self.r.dispatch(self.now)
        offered = [a for o in offers for a in o.agents]
        assert len(offered) == len(set(offered)), "an agent in two offers"
        assert set(offered) <= avail_before, "offered an agent who was not free"
        for o in offers:
            assert self.r.queues[o.queue].strategy == "ring_all" or len(o.agents) == 1
            for a in o.agents:
                assert self._qualifies(a, o.call_id), f"{a} lacks what {o.call_id} needs"
        # Nobody skipped: no free agent qualifies for a caller who still waits, and no offered agent
        # qualified for a caller ahead of the one it got.
        waiting = self._dispatchable()
        for c in waiting:
            for a in self.r.agents.available:
                assert not self._qualifies(a, c), f"{a} is free and qualifies for waiting {c}"
        for o in offers:
            mine = self.r.waiting[o.call_id].order
            for c in waiting:
                if self.r.waiting[c].order < mine:
                    for a in o.agents:
                        assert not self._qualifies(a, c), f"{a} got {o.call_id} while {c} was ahead"

    @precondition(lambda self: self.r.offers)
    @rule(i=pick, j=pick)
    def answer(self, i: int, j: int) -> None:
        offers = sorted(self.r.offers.values(), key=lambda o: o.call_id)
        o: Offer = offers[i % len(offers)]
        agent = o.agents[j % len(o.agents)]
        others = self.r.offer_answered(o.call_id, agent, self.now)
        assert sorted(others) == sorted(set(o.agents) - {agent})
        for other in others:
            assert self.r.agents[other].state in (S.AVAILABLE, S.NOT_READY, S.OFFLINE)
        assert self.r.agents[agent].state is S.ON_CALL
        self.bridged[agent] = o.call_id
        self.left.add(o.call_id)

    @precondition(lambda self: self.r.offers)
    @rule(i=pick, j=pick, missed=st.booleans())
    def fail(self, i: int, j: int, missed: bool) -> None:
        offers = sorted(self.r.offers.values(), key=lambda o: o.call_id)
        o = offers[i % len(offers)]
        agent = o.agents[j % len(o.agents)]
        self.r.offer_failed(o.call_id, agent, self.now, missed=missed)
        assert self.r.agents[agent].state in (S.AVAILABLE, S.NOT_READY, S.OFFLINE)
        assert o.call_id in self.r.waiting

    @precondition(lambda self: self.joined)
    @rule(i=pick, reason=st.sampled_from(["abandoned", "answered", "overflow", "transferred"]))
    def leave(self, i: int, reason: str) -> None:
        calls = sorted(self.joined)
        call_id = calls[i % len(calls)]
        ringing = self.r.offers.get(call_id)
        self.r.leave(call_id, self.now, reason=reason)  # type: ignore[arg-type]
        assert call_id not in self.r.waiting and call_id not in self.r.offers
        for a in ringing.agents if ringing else ():
            assert self.r.agents[a].state is not S.RESERVED
        self.left.add(call_id)

    @precondition(lambda self: self.bridged)
    @rule(i=pick)
    def hang_up(self, i: int) -> None:
        agent = sorted(self.bridged)[i % len(self.bridged)]
        del self.bridged[agent]
        self.r.call_ended(agent, self.now)
        assert self.r.agents[agent].state in (S.WRAP_UP, S.AVAILABLE, S.NOT_READY, S.OFFLINE)

    @rule(agent=st.sampled_from(sorted(AGENTS)), n=st.integers(0, 5))
    def stale_reports(self, agent: str, n: int) -> None:
        """Reports about offers that no longer exist change nothing."""
        call_id = f"c{n}"
        live = self.r.offers.get(call_id)
        if live is not None and agent in live.agents:
            return
        before = self.r.agents[agent].state
        self.r.offer_failed(call_id, agent, self.now, missed=True)
        try:
            self.r.offer_answered(call_id, agent, self.now)
        except OfferGone:
            pass
        else:
            raise AssertionError("answered an offer that does not exist")
        if agent not in self.bridged:
            self.r.call_ended(agent, self.now)
        assert self.r.agents[agent].state is before

    @rule(dt=st.sampled_from([0.5, 5.0, 12.0, 31.0, 60.0]))
    def tick(self, dt: float) -> None:
        self.now += dt
        for ov in self.r.handle_timer(self.now):
            assert ov.reason == "max_wait" and ov.call_id not in self.r.waiting
            self.left.add(ov.call_id)
        timer = self.r.get_timer()
        assert timer is None or timer > self.now

    # -- invariants ---------------------------------------------------------------------------------

    @invariant()
    def one_offer_per_agent(self) -> None:
        holders: dict[str, str] = {}
        for o in self.r.offers.values():
            assert o.agents, "an offer with nobody ringing"
            for name in o.agents:
                assert name not in holders, f"{name} is in two offers"
                holders[name] = o.call_id
        for a in self.r.agents:
            if a.state is S.RESERVED:
                assert holders.get(a.name) == a.call_id, f"{a.name} reserved without a live offer"
            else:
                assert a.name not in holders
            assert (a.state is S.ON_CALL) == (a.name in self.bridged)
            if a.state is S.ON_CALL:
                assert a.call_id == self.bridged[a.name]

    @invariant()
    def indexes_match_states(self) -> None:
        free = {a.name for a in self.r.agents if a.state is S.AVAILABLE}
        assert self.r.agents.available == free
        for skill in ("sales", "support"):
            holders = {n for n in free if skill in self.r.agents[n].skills}
            assert self.r.agents.available_with(skill) == holders

    @invariant()
    def everyone_leaves_once(self) -> None:
        assert set(self.r.waiting) == self.joined - self.left
        for name, s in self.r.stats.items():
            inside = sum(1 for w in self.r.waiting.values() if w.queue == name)
            assert s.offered == s.answered + s.abandoned + s.overflowed + s.transferred + inside
        for name in self.r.queues:
            ranks = sorted(self.r.position(c) or 0 for c, w in self.r.waiting.items() if w.queue == name)
            assert ranks == list(range(1, len(ranks) + 1))

    def teardown(self) -> None:
        for call_id in list(self.r.waiting):
            self.r.leave(call_id, self.now, reason="abandoned")
        for agent in list(self.bridged):
            self.r.call_ended(agent, self.now)
        self.bridged.clear()
        self.now += 1000.0
        self.r.handle_timer(self.now)
        assert self.r.dispatch(self.now) == []
        assert self.r.offers == {} and not self.r.waiting
        for a in self.r.agents:
            assert a.state in (S.AVAILABLE, S.NOT_READY, S.OFFLINE), f"{a.name} stuck {a.state}"
            assert a.call_id is None
        assert self.r.get_timer() is None


RouterMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
TestRouter = RouterMachine.TestCase
