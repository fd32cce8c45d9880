"""Each node type's behaviour, and the FlowRunner's: a scripted fake CallControl plays the caller."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from textwrap import dedent
from typing import Any

import httpx
import pytest
from ivr_fakes import HANGUP, SILENCE, FakeHttp, FakeKb, FakeTickets, Press, ScriptedCall, Speak

from callcenter.ivr.control import QueueResult, RecordResult, TransferResult
from callcenter.ivr.engine import CallInfo, FlowResult, FlowRunner
from callcenter.ivr.loader import load_flow, load_flow_text
from callcenter.ivr.nodes import HANDLERS
from callcenter.ivr.schema import NODE_TYPES, Flow, Schedule
from callcenter.ivr.services import HttpResponse, HttpxHttp, KeywordIntents, Services

FLOWS = Path(__file__).parent / "flows"
MONDAY_NOON_LONDON = datetime(2025, 6, 2, 11, 0, tzinfo=UTC)


def flow(nodes: str, **header: Any) -> Flow:
    head = {"id": "t", "start": "a", **header}
    text = "".join(f"{k}: {json.dumps(v)}\n" for k, v in head.items()) + "nodes:\n" + dedent(nodes)
    text = "\n".join("  " + line if i > len(head) else line for i, line in enumerate(text.splitlines()))
    return load_flow_text(text)


async def run(f: Flow, call: ScriptedCall, svc: Services | None = None, **kwargs: Any) -> FlowResult:
    result = await FlowRunner(f, call, svc or Services(), call=CallInfo("c9", "+100", "200"), **kwargs).run()
    assert "AssertionError" not in result.reason, result.reason  # the script did not fit the flow
    assert call.script == [], "the flow ended before the caller's script did"
    return result


def test_one_handler_per_node_type() -> None:
    assert set(HANDLERS) == set(NODE_TYPES)


# -- the all-node flow, end to end ----------------------------------------------------------------------


@pytest.fixture
def all_nodes() -> tuple[Flow, Services, FakeHttp, FakeTickets]:
    main = load_flow(FLOWS / "all_nodes.yaml")
    routing = load_flow(FLOWS / "routing.yaml")
    http = FakeHttp(
        {
            "https://crm.example.com/api/accounts/4711/lookup": HttpResponse(
                200, {"customer": {"tier": "gold"}, "balance": 5000}
            )
        }
    )
    tickets = FakeTickets()
    svc = Services(
        http=http,
        tickets=tickets,
        kb=FakeKb({"open": "We are open 9 to 5."}),
        intents=KeywordIntents({"refund": ["refund", "money back"], "opening_hours": ["open", "hours"]}),
        flows={"routing": routing},
        wall_clock=lambda: MONDAY_NOON_LONDON,
    )
    return main, svc, http, tickets


async def test_account_path_through_http_branch_set_and_subflow_transfer(all_nodes: Any) -> None:
    main, svc, http, _ = all_nodes
    call = ScriptedCall(Press("1"), Press("4711#"), Speak("yes"))
    result = await run(main, call, svc)
    assert result.ivr_path == [
        "hello", "jingle", "lang", "hours", "menu", "account", "lookup", "rich", "vip", "pick",
        "routing/choose", "routing/operator",
    ]  # fmt: skip
    assert result.outcome == "transferred" and result.reason == "transferred to agent:operator"
    assert call.hung_up is None  # a transferred call is not hung up by the IVR
    assert result.agent == "operator"
    assert http.requests == [
        (
            "POST",
            "https://crm.example.com/api/accounts/4711/lookup",
            {"account": "4711", "attempts": 0, "source": "ivr"},
        )
    ]
    assert result.variables["tier"] == "gold" and result.variables["balance"] == 5000
    assert result.variables["vip"] is True and result.variables["label"] == "VIP 4711"
    assert result.variables["crm_status"] == 200
    assert ("set_language", "en-GB", "brian") in call.events
    assert call.said[:2] == [
        "Hello , welcome.",
        f"file:{FLOWS / 'sounds' / 'jingle.wav'}",
    ]  # no customer record


async def test_queue_in_a_subflow_returns_to_the_main_flow(all_nodes: Any) -> None:
    main, svc, _, _ = all_nodes
    call = ScriptedCall(Press("2"), Speak("four"))
    result = await run(main, call, svc)
    assert result.ivr_path[-5:] == ["pick", "routing/choose", "routing/queue", "survey", "bye"]
    (request,) = call.enqueued()
    assert request.queue == "support" and request.skills == {"english": 2} and request.priority == 1
    assert request.announce[0].text == "Please hold." and request.announce_position is True
    assert request.max_wait_s == 300 and request.variables["attempts"] == 1  # set by the subflow node
    assert result.variables["csat"] == 4
    assert result.outcome == "hangup" and result.reason == "done"
    assert call.said[-2:] == ["Thanks!", "Goodbye."]


async def test_overflow_and_failed_transfer_fall_through_the_subflow(all_nodes: Any) -> None:
    main, svc, _, _ = all_nodes
    call = ScriptedCall(
        Press("2"),
        SILENCE,
        SILENCE,
        queues={"support": QueueResult("closed")},
        transfer=TransferResult("busy"),
    )
    result = await run(main, call, svc)
    assert result.ivr_path[-6:] == [
        "routing/queue",
        "routing/operator",
        "routing/sorry",
        "routing/done",
        "survey",
        "bye",
    ]
    assert result.variables["transfer_outcome"] == "busy" and result.variables["queue_outcome"] == "closed"
    assert "Returning to the main flow." in call.said


async def test_intent_routes_a_refund_to_a_ticket_with_the_transcript(all_nodes: Any) -> None:
    main, svc, _, tickets = all_nodes
    call = ScriptedCall(Speak("I want my money back"), Press("5"))
    result = await run(main, call, svc)
    assert result.ivr_path[4:7] == ["menu", "what", "refund_ticket"]
    assert result.variables["intent"] == "refund"
    (ticket,) = tickets.created
    assert (
        ticket.subject == "Refund request from +100"
        and ticket.priority == "high"
        and ticket.tags == ("refund",)
    )
    assert [(t.speaker, t.text) for t in ticket.transcript][-1] == ("caller", "I want my money back")
    assert ticket.call_id == "c9"
    assert result.variables["ticket_id"] == "T-1"


async def test_intent_to_knowledge_base(all_nodes: Any) -> None:
    main, svc, _, _ = all_nodes
    call = ScriptedCall(Speak("when are you open"), Press("1"), SILENCE, SILENCE)
    result = await run(main, call, svc)
    assert result.ivr_path[4:8] == ["menu", "what", "faq", "survey"]
    assert "We are open 9 to 5." in call.said
    assert result.variables["kb_helped"] is True and result.variables["kb_article"] == "kb-open"


async def test_closed_hours_go_to_voicemail(all_nodes: Any) -> None:
    main, svc, _, tickets = all_nodes
    svc.wall_clock = lambda: datetime(2025, 12, 25, 11, 0, tzinfo=UTC)  # a holiday
    call = ScriptedCall()
    result = await run(main, call, svc)
    assert result.ivr_path[3:] == ["hours", "closed", "bye"]
    assert result.variables["voicemail_file"] == "/tmp/vm-1.wav"
    assert tickets.created[0].recording == "/tmp/vm-1.wav"
    assert ("record", 60.0, True, "#") in call.events


# -- single nodes ---------------------------------------------------------------------------------------


async def test_menu_input_modes_follow_the_options() -> None:
    f = flow(
        """\
        a: {type: menu, prompt: Press 1, options: [{dtmf: "1", next: b}], timeout_s: 2.5, barge_in: false}
        b: {type: menu, prompt: Say go, options: [{speech: [go], next: c}]}
        c: {type: menu, prompt: Say go or ask, options: [{speech: [go], next: d}], other_speech: d}
        d: {type: hangup}
        """
    )
    call = ScriptedCall(Press("1"), Speak("go"), Speak("where is my parcel"))
    await run(f, call)
    keys_only, speech_only, open_menu = call.inputs
    assert keys_only["speech"] is None and keys_only["digits"].max_digits == 1
    assert keys_only["timeout_s"] == 2.5 and keys_only["barge_in"] is False
    assert speech_only["digits"] is None and speech_only["speech"].phrases == ("go",)
    assert not speech_only["speech"].open  # a closed menu: the phrases may be a grammar
    assert open_menu["speech"].open  # other_speech: anything said counts


async def test_menu_failure_without_a_target_ends_the_flow() -> None:
    f = flow("""a: {type: menu, prompt: Press 1, options: [{dtmf: "1", next: a}], retries: 1}\n""")
    result = await run(f, ScriptedCall(SILENCE, Press("9")))
    assert result.outcome == "completed" and result.ivr_path == ["a"]


async def test_menu_spoken_digit_and_longest_phrase() -> None:
    f = flow(
        """\
        a:
          type: menu
          prompt: Choose
          options:
            - {dtmf: "1", speech: [order], next: one}
            - {dtmf: "2", speech: [order status], next: two}
        one: {type: goto, next: a}
        two: {type: hangup, reason: two}
        """
    )
    result = await run(f, ScriptedCall(Speak("one"), Speak("What is my ORDER STATUS?")))
    assert result.ivr_path == ["a", "one", "a", "two"]


@pytest.mark.parametrize(
    ("script", "value"),
    [
        ([Press("1234#")], "1234"),
        ([Press("12#"), Press("123456789"), Press("5678")], "5678"),  # too short, then too long is cut at 8
        ([Press("12345#"), Press("4321#")], "4321"),  # 12345 fits the lengths, not the pattern
    ],
)
async def test_collect_digits(script: list[Any], value: str) -> None:
    f = flow(
        """\
        a: {type: collect, prompt: "Code?", into: code, min_digits: 4, max_digits: 8, pattern: "[0-9]{4}",
            next: b}
        b: {type: hangup}
        """
    )
    result = await run(f, ScriptedCall(*script))
    assert result.variables["code"] == value


async def test_collect_retries_run_out() -> None:
    f = flow(
        """\
        a: {type: collect, prompt: "Code?", into: code, retries: 1, invalid: Wrong., no_input: "Nothing?",
            next: b, on_failure: c}
        b: {type: hangup}
        c: {type: hangup, reason: failed}
        """
    )
    call = ScriptedCall(SILENCE, Press("#"))
    result = await run(f, call)
    assert result.reason == "failed" and result.variables["code"] is None
    assert call.said == ["Code?", "Nothing?", "Code?", "Wrong."]


async def test_collect_speech_from_a_phrase_list() -> None:
    f = flow(
        """\
        a: {type: collect, input: speech, prompt: "Colour?", into: colour, phrases: [dark blue, red], next: b}
        b: {type: hangup}
        """
    )
    result = await run(f, ScriptedCall(Speak("green"), Speak("uh, Dark Blue I think")))
    assert result.variables["colour"] == "dark blue"


async def test_collect_free_speech() -> None:
    f = flow(
        """\
        a: {type: collect, input: speech, prompt: "Name?", into: name, next: b}
        b: {type: say, text: "Hello ${name}"}
        """
    )
    call = ScriptedCall(Speak("  Grace Hopper "))
    await run(f, call)
    assert call.said[-1] == "Hello Grace Hopper"


async def test_intent_without_a_classifier_or_confidence_goes_to_on_unknown() -> None:
    f = flow(
        """\
        a: {type: intent, prompt: "How can I help?", routes: {refund: b}, on_unknown: c, min_confidence: 0.5}
        b: {type: hangup, reason: refund}
        c: {type: hangup, reason: unknown}
        """
    )
    result = await run(f, ScriptedCall(Speak("refund please")))
    assert result.reason == "unknown" and result.warnings == ["t/a: no intent classifier is configured"]
    svc = Services(intents=KeywordIntents({"refund": ["refund"]}))
    assert (await run(f, ScriptedCall(Speak("refund please")), svc)).reason == "refund"
    assert (await run(f, ScriptedCall(Speak("hello")), svc)).reason == "unknown"


async def test_set_keeps_types_and_branch_compares() -> None:
    f = flow(
        """\
        a: {type: set, vars: {n: 3, copy: "${n}", text: "n=${n}", flag: false}, next: b}
        b:
          type: branch
          cases:
            - {when: "flag", next: x}
            - {when: "copy == 3 and text == 'n=3'", next: y}
          default: x
        x: {type: hangup, reason: x}
        y: {type: hangup, reason: y}
        """,
        vars={"n": 1},
    )
    result = await run(f, ScriptedCall())
    assert result.reason == "y" and result.variables["copy"] == 3


async def test_http_with_the_real_httpx_client() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if "boom" in str(request.url):
            return httpx.Response(500, text="oops")
        return httpx.Response(200, json={"order": {"status": "late", "items": [{"sku": "X"}]}})

    f = flow(
        """\
        a:
          type: http
          method: post
          url: "https://crm.test/orders/${num}?q=1"
          headers: {Authorization: "Bearer ${token}"}
          body: {n: "${num}", list: ["${num}", 2]}
          store: {status: order.status, sku: order.items.0.sku, missing: order.nothing}
          status_into: code
          next: b
          on_error: c
        b: {type: hangup, reason: ok}
        c: {type: hangup, reason: error}
        """
    )
    svc = Services(http=HttpxHttp(httpx.MockTransport(handler)))
    result = await run(f, ScriptedCall(), svc, variables={"num": "7/../8", "token": "s3cret"})
    assert result.reason == "ok"
    assert str(seen[0].url) == "https://crm.test/orders/7%2F..%2F8?q=1"  # caller input cannot change the path
    assert seen[0].method == "POST" and seen[0].headers["authorization"] == "Bearer s3cret"
    assert json.loads(seen[0].content) == {"n": "7/../8", "list": ["7/../8", 2]}
    assert result.variables | {"status": "late", "sku": "X", "missing": None, "code": 200} == result.variables
    result = await run(f, ScriptedCall(), svc, variables={"num": "boom"})
    assert result.reason == "error" and result.variables["code"] == 500
    assert result.variables["http_error"] == "POST https://crm.test/orders/boom?q=1: HTTP 500"


async def test_http_network_error_without_on_error_continues_at_next() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    f = flow("a: {type: http, url: 'http://crm.test/x', next: b}\nb: {type: hangup, reason: next}\n")
    result = await run(f, ScriptedCall(), Services(http=HttpxHttp(httpx.MockTransport(handler))))
    assert result.reason == "next" and "ConnectError" in result.variables["http_error"]


async def test_hours_by_named_schedule() -> None:
    f = flow("a: {type: hours, schedule: office, open: b, closed: c}\nb: {type: hangup, reason: open}\n"
             "c: {type: hangup, reason: closed}\n")  # fmt: skip
    office = Schedule.model_validate({"timezone": "Asia/Shanghai", "weekly": {"mon-fri": ["09:00-18:00"]}})
    at = datetime(2025, 6, 2, 11, 0, tzinfo=UTC)  # 19:00 in Shanghai
    svc = Services(schedules={"office": office}, wall_clock=lambda: at)
    assert (await run(f, ScriptedCall(), svc)).reason == "closed"
    svc.wall_clock = lambda: datetime(2025, 6, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
    assert (await run(f, ScriptedCall(), svc)).reason == "open"
    unknown = await run(f, ScriptedCall(), Services())
    assert unknown.reason == "open" and unknown.warnings == [
        "t/a: no schedule named 'office': treated as always open"
    ]


async def test_language_switch_changes_later_speech() -> None:
    f = flow(
        """\
        a: {type: say, text: Hello, next: b}
        b: {type: language, language: zh-CN, next: c}
        c: {type: say, text: 你好, next: d}
        d: {type: say, text: Hola, language: es-ES, voice: maria}
        """
    )
    call = ScriptedCall()
    result = await run(f, call, None)
    says = [e for e in call.events if e[0] == "say"]
    assert says == [
        ("say", "Hello", "en-US", None),
        ("say", "你好", "zh-CN", None),
        ("say", "Hola", "es-ES", "maria"),
    ]
    assert result.variables["language"] == "zh-CN"


async def test_kb_answer_not_helpful_and_no_kb() -> None:
    f = flow(
        """\
        a:
          type: kb_answer
          question: ${q}
          ask: Your question?
          helped: {prompt: "Helpful?"}
          next: b
          on_unresolved: c
        b: {type: hangup, reason: resolved}
        c: {type: hangup, reason: unresolved}
        """
    )
    kb = Services(kb=FakeKb({"refund": "Refunds take 5 days."}))
    result = await run(f, ScriptedCall(Speak("no")), kb, variables={"q": "refund?"})
    assert result.reason == "unresolved" and result.variables["kb_helped"] is False
    result = await run(f, ScriptedCall(Speak("refund?"), Press("1")), kb)  # asked, because q is empty
    assert result.reason == "resolved"
    result = await run(f, ScriptedCall(SILENCE, SILENCE), kb)
    assert result.reason == "unresolved"
    result = await run(f, ScriptedCall(), Services(), variables={"q": "refund?"})
    assert result.reason == "unresolved" and result.warnings == ["t/a: no knowledge base is configured"]


async def test_ticket_update_and_failure() -> None:
    f = flow(
        """\
        a: {type: ticket, action: update, body: "Called again about ${topic}", next: b, on_error: c}
        b: {type: hangup, reason: ok}
        c: {type: hangup, reason: failed}
        """
    )
    tickets = FakeTickets()
    result = await run(
        f, ScriptedCall(), Services(tickets=tickets), variables={"ticket_id": "T-9", "topic": "x"}
    )
    assert result.reason == "ok" and tickets.updated[0][0] == "T-9"
    assert tickets.updated[0][1].body == "Called again about x"
    assert (await run(f, ScriptedCall(), Services(tickets=FakeTickets(fail=True)))).reason == "failed"
    assert (await run(f, ScriptedCall(), Services(tickets=tickets))).reason == "failed"  # no ticket id


async def test_voicemail_with_nothing_recorded() -> None:
    f = flow(
        "a: {type: voicemail, on_empty: b, next: c}\nb: {type: hangup, reason: empty}\nc: {type: hangup}\n"
    )
    tickets = FakeTickets()
    call = ScriptedCall(record=RecordResult(None, 0.0, "silence"))
    result = await run(f, call, Services(tickets=tickets))
    assert result.reason == "empty" and tickets.created == []


async def test_survey_accepts_keys_and_spoken_numbers_within_the_scale() -> None:
    f = flow("a: {type: survey, prompt: Rate 1 to 3, scale: 3, invalid: 1 to 3 please, retries: 2}\n")
    call = ScriptedCall(Press("7"), Speak("excellent"), Speak("three"))
    result = await run(f, call)
    assert result.variables["csat"] == 3
    assert call.said.count("1 to 3 please") == 2


async def test_play_missing_file_says_the_fallback(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text(
        "id: p\nstart: a\nnodes:\n  a: {type: play, file: there.wav, next: b}\n"
        "  b: {type: play, file: gone.wav, text: Imagine music.}\n"
    )
    (tmp_path / "there.wav").write_bytes(b"RIFF")
    call = ScriptedCall()
    await run(load_flow(tmp_path / "f.yaml"), call)
    assert call.said == [f"file:{tmp_path / 'there.wav'}", "Imagine music."]


# -- the runner -----------------------------------------------------------------------------------------


async def test_step_limit_stops_a_runaway_flow() -> None:
    # the checker refuses this loop; a flow built in code can still contain one
    f = Flow.model_validate(
        {
            "id": "spin",
            "start": "a",
            "nodes": {"a": {"type": "goto", "next": "b"}, "b": {"type": "goto", "next": "a"}},
        }
    )
    call = ScriptedCall()
    result = await run(f, call, max_steps=50)
    assert result.outcome == "step_limit" and len(result.ivr_path) == 50
    assert call.hung_up == "ivr_step_limit"


async def test_a_failing_call_control_ends_the_call_as_an_error() -> None:
    class Broken(ScriptedCall):
        async def say(self, text: str, *, language: str | None = None, voice: str | None = None) -> None:
            raise RuntimeError("tts down")

    call = Broken()
    result = await run(flow("a: {type: say, text: hi}\n"), call)
    assert result.outcome == "error" and result.reason == "RuntimeError: tts down"
    assert call.hung_up == "ivr_error"


async def test_initial_variables_and_call_info() -> None:
    f = flow(
        "a: {type: say, text: '${caller} ${called} ${call_id} ${greeting} ${extra}'}\n",
        vars={"greeting": "hi"},
    )
    call = ScriptedCall()
    await run(f, call, variables={"extra": "x"})
    assert call.said == ["+100 200 c9 hi x"]


async def test_cancelling_the_call_task_leaves_the_path_readable() -> None:
    started = asyncio.Event()

    class Slow(ScriptedCall):
        async def listen(self, *args: Any, **kwargs: Any) -> Any:
            started.set()
            await asyncio.Event().wait()  # the caller never answers; the BYE cancels the task

    f = flow(
        "a: {type: say, text: hi, next: b}\nb: {type: menu, prompt: p, options: [{speech: [x], next: a}]}\n"
    )
    runner = FlowRunner(f, Slow(), Services())
    task = asyncio.create_task(runner.run())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runner.ivr_path == ["a", "b"] and runner.last_node == "b"


async def test_caller_hangup_at_the_first_prompt() -> None:
    result = await run(
        flow("a: {type: menu, prompt: p, options: [{dtmf: '1', next: a}]}\n"), ScriptedCall(HANGUP)
    )
    assert result.outcome == "caller_hangup" and result.reason == "caller hung up at a"
