"""Routing decision time: 1000 agents (random skills and levels), 100 queues, 2000 waiting callers.

After everyone has logged in and the first burst of offers is out, the contact center runs in steady
state: callers keep ~2000 waiting, every agent is busy, and each cycle one call ends (its agent is
free: a decision picks their next caller across every queue they qualify for), the offer is answered,
and a new caller joins (a decision looks for a free agent for them). A "decision" is one ``dispatch``
with the event before it (``call_ended`` or ``enqueue``). Time comes from a simulated clock; the wall
time of each step is measured with perf_counter. Target: p99 <= 1 ms.

    .venv/bin/python scripts/bench/routing_decision.py [--cycles 20000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from callcenter.routing.agents import AgentEvent, AgentState
from callcenter.routing.queues import Escalation, QueueConfig, Strategy
from callcenter.routing.router import Router

SKILLS = [f"skill{i:02d}" for i in range(30)]
LONGEST: Strategy = "longest_idle"
STRATEGIES: list[Strategy] = [LONGEST] * 5 + ["round_robin", "least_talk_time", "skill_weighted", "ring_all"]


def build(rng: random.Random, n_agents: int, n_queues: int) -> Router:
    queues = {}
    for i in range(n_queues):
        need = {s: rng.randint(1, 3) for s in rng.sample(SKILLS, rng.choice([1, 1, 2]))}
        escalations = (Escalation(60.0, {s: 1 for s in need}),) if rng.random() < 0.3 else ()
        queues[f"q{i:03d}"] = QueueConfig(
            f"q{i:03d}", need, rng.choice(STRATEGIES), escalations=escalations, join_when_empty=True,
            wrap_up_s=rng.choice([0.0, 0.0, 10.0]),
        )
    router = Router(queues)
    for i in range(n_agents):
        skills = {s: rng.randint(1, 5) for s in rng.sample(SKILLS, rng.randint(3, 6))}
        langs = rng.choice([(), ("en",), ("en", "zh")])
        router.agents.define(f"agent{i:04d}", skills, langs)
    return router


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--queues", type=int, default=100)
    ap.add_argument("--callers", type=int, default=2000)
    ap.add_argument("--cycles", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    router = build(rng, args.agents, args.queues)
    queue_names = list(router.queues)
    now = 1000.0
    seq = 0

    def new_caller() -> None:
        nonlocal seq
        seq += 1
        extra = {rng.choice(SKILLS): 1} if rng.random() < 0.1 else None
        router.enqueue(f"call{seq}", rng.choice(queue_names), now, priority=rng.choice([0] * 8 + [5, 9]),
                       skills=extra, language=rng.choice([None, None, "en", "zh"]))

    def answer(offers: list) -> None:
        for offer in offers:
            router.offer_answered(offer.call_id, rng.choice(offer.agents), now)

    t0 = time.perf_counter()
    for a in list(router.agents):
        router.agent_event(a.name, AgentEvent.LOGIN, now)
    for _ in range(args.callers):
        new_caller()
    t_setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = router.dispatch(now)
    t_burst = time.perf_counter() - t0
    offers = first
    while offers:  # answer, top the line up again to the target, until no agent is free for anyone
        answer(offers)
        while len(router.waiting) < args.callers:
            new_caller()
        offers = router.dispatch(now)

    on_call = [a.name for a in router.agents if a.state is AgentState.ON_CALL]
    freed: list[float] = []
    joined: list[float] = []
    answered: list[float] = []
    offers_made = 0
    deadline = time.perf_counter() + 45.0  # keep the whole run well under a minute
    cycles = 0
    while cycles < args.cycles and on_call and time.perf_counter() < deadline:
        cycles += 1
        now += 0.05
        agent = on_call.pop(rng.randrange(len(on_call)))
        t0 = time.perf_counter()
        router.call_ended(agent, now)
        router.handle_timer(now)
        offers = router.dispatch(now)
        freed.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for offer in offers:
            pick = rng.choice(offer.agents)
            router.offer_answered(offer.call_id, pick, now)
            on_call.append(pick)
        if offers:
            answered.append(time.perf_counter() - t0)
        offers_made += len(offers)
        # Untimed: keep the line at the target (answered callers replaced, or someone abandons).
        while len(router.waiting) < args.callers - 1:
            new_caller()
        if len(router.waiting) >= args.callers:
            gone = rng.choice(list(router.waiting))
            router.leave(gone, now, reason="abandoned")
        t0 = time.perf_counter()
        new_caller()
        offers = router.dispatch(now)
        joined.append(time.perf_counter() - t0)
        for offer in offers:
            pick = rng.choice(offer.agents)
            router.offer_answered(offer.call_id, pick, now)
            on_call.append(pick)
        offers_made += len(offers)
        if not on_call:  # everyone in wrap-up: let the clock run
            now += 10.0
            router.handle_timer(now)
            for offer in router.dispatch(now):
                answer([offer])
            on_call = [a.name for a in router.agents if a.state is AgentState.ON_CALL]

    decisions = freed + joined
    us = 1e6
    print(f"setup: {args.agents} agents, {args.queues} queues, {args.callers} waiting callers; "
          f"log-in + enqueue {t_setup:.2f} s; first dispatch {len(first)} offers in {t_burst * 1000:.1f} ms")
    print(f"{cycles} cycles, {offers_made} offers; waiting now {len(router.waiting)}")
    for label, values in (
        ("agent freed (call_ended + dispatch)", freed),
        ("caller joins (enqueue + dispatch)", joined),
        ("offer answered", answered),
    ):
        if values:
            print(f"  {label:36} p50 {pct(values, 50) * us:5.0f} us  p99 {pct(values, 99) * us:5.0f} us")
    print(f"routing decision p50 {pct(decisions, 50) * us:.0f} us, p99 {pct(decisions, 99) * us:.0f} us "
          f"(mean {statistics.fmean(decisions) * us:.0f} us; target p99 <= 1000 us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
