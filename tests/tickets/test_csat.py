"""CSAT: a call's survey answer becomes one feedback row per conversation and agent; averages per agent
and per queue."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from ticket_clock import WallClock

from callcenter.core.config import TicketsSettings
from callcenter.ivr.schema import Flow
from callcenter.store.crm import Feedback
from callcenter.tickets import CsatAnswer, HandledCall, TicketService, survey_answer


def flow(scale: int = 5, into: str = "csat") -> Flow:
    return Flow.model_validate(
        {
            "id": "hotline_en",
            "start": "menu",
            "nodes": {
                "menu": {"type": "say", "text": "Hello", "next": "rate"},
                "rate": {"type": "survey", "prompt": "Rate us", "scale": scale, "into": into, "next": "bye"},
                "bye": {"type": "hangup"},
            },
        }
    )


def test_the_answer_is_read_from_the_variable_the_survey_names() -> None:
    assert survey_answer(flow(into="score"), {"score": 4}, ["menu", "rate", "bye"]) == CsatAnswer(4, 5)
    assert survey_answer(flow(into="score"), {"csat": 4}, ["menu", "rate", "bye"]) is None
    assert survey_answer(flow(), {"csat": None}, ["menu", "rate"]) is None  # no answer given
    assert survey_answer(flow(), {"csat": 4}, ["menu"]) is None  # the caller hung up before the survey
    assert survey_answer(flow(scale=3), {"csat": 4}, ["rate"]) is None  # out of its scale
    assert survey_answer(flow(), {"csat": True}, ["rate"]) is None


def test_other_scales_are_mapped_to_five_points() -> None:
    assert [CsatAnswer(s, 3).five_point for s in (1, 2, 3)] == [1, 3, 5]
    assert [CsatAnswer(s, 9).five_point for s in (1, 5, 7, 9)] == [1, 3, 4, 5]
    assert CsatAnswer(2, 5).five_point == 2


def call(clock: WallClock, call_id: str, agent: str | None, queue: str, score: int | None) -> HandledCall:
    return HandledCall(
        call_id=call_id, caller="+4930" + call_id[-4:].rjust(4, "0"),
        started_at=clock.now - timedelta(minutes=5), ended_at=clock.now,
        disposition="answered" if agent else "abandoned", flow="hotline_en", queue=queue, agent=agent,
        csat=CsatAnswer(score) if score is not None else None,
    )  # fmt: skip


def test_answers_become_feedback_per_conversation_and_agent_with_averages(
    engine: Engine, clock: WallClock
) -> None:
    svc = TicketService(engine, TicketsSettings(), now=clock)
    calls = [
        call(clock, "c1001", "al", "support", 5),
        call(clock, "c1002", "al", "support", 4),
        call(clock, "c1003", "bo", "support", 2),
        call(clock, "c1004", "bo", "sales", 3),
        call(clock, "c1005", "bo", "sales", None),  # no answer: no row
    ]
    for c in calls:
        svc.record_call_sync(c)
    svc.record_call_sync(call(clock, "c1003", "bo", "support", 3))  # the hook ran twice: replaced
    with Session(engine) as s:
        rows = sorted((f.agent, f.score) for f in s.exec(select(Feedback)))
    assert rows == [("al", 4), ("al", 5), ("bo", 3), ("bo", 3)]
    by_agent = [(a.key, a.count, a.average, a.satisfied) for a in svc.repo.csat_by_agent()]
    assert by_agent == [("al", 2, 4.5, 1.0), ("bo", 2, 3.0, 0.0)]
    by_queue = [(a.key, a.count, a.average) for a in svc.repo.csat_by_queue()]
    assert by_queue == [("support", 3, 4.0), ("sales", 1, 3.0)]
    assert svc.repo.csat_by_agent(since=clock.now + timedelta(seconds=1)) == []


def test_a_survey_in_a_subflow_is_found_by_the_default_variable() -> None:
    caller = Flow.model_validate({"id": "main", "start": "bye", "nodes": {"bye": {"type": "hangup"}}})
    assert survey_answer(caller, {"csat": 5}, ["go", "survey_en/rate", "bye"]) == CsatAnswer(5, 5)
    assert survey_answer(caller, {"csat": 5}, ["bye"]) is None
