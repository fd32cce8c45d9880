"""The shipped flows in ivr_flows/: they validate, and scripted callers get where the issue says."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from ivr_fakes import (
    HANGUP,
    SILENCE,
    FakeCustomers,
    FakeHttp,
    FakeKb,
    FakeTickets,
    Press,
    ScriptedCall,
    Speak,
)

from callcenter.ivr.control import QueueResult, RecordResult
from callcenter.ivr.engine import CallInfo, FlowResult, FlowRunner
from callcenter.ivr.loader import FlowContext, check_flows, flow_files, load_flow
from callcenter.ivr.schema import Flow
from callcenter.ivr.services import HttpResponse, Services

FLOWS_DIR = Path(__file__).parents[2] / "ivr_flows"
QUEUES = frozenset({"sales", "support", "billing", "general"})
CRM = "http://127.0.0.1:8080/api/demo/orders/"


@pytest.mark.parametrize("path", flow_files([FLOWS_DIR]), ids=lambda p: p.name)
def test_every_shipped_flow_validates(path: Path) -> None:
    assert check_flows([path], FlowContext(queues=QUEUES, skills=frozenset())) == []


def test_the_mandarin_flow_relies_on_declared_tts_fallbacks() -> None:
    flow = load_flow(FLOWS_DIR / "hotline_zh.yaml")
    assert flow.prompts and all(p.text for p in flow.prompts.values())
    assert not any((FLOWS_DIR / p.file).exists() for p in flow.prompts.values())  # none recorded yet


@pytest.fixture(scope="module")
def en() -> Flow:
    return load_flow(FLOWS_DIR / "hotline_en.yaml")


@pytest.fixture(scope="module")
def zh() -> Flow:
    return load_flow(FLOWS_DIR / "hotline_zh.yaml")


def services(**kwargs: object) -> Services:
    defaults: dict[str, object] = {
        "tickets": FakeTickets(),
        "kb": FakeKb({"password": "Use the reset link on the sign-in page."}),
        "http": FakeHttp({f"{CRM}12345": HttpResponse(200, {"status": "shipped", "eta": "Friday"})}),
        "customers": FakeCustomers({"+4930111": {"name": "Ada", "vip": True}}),
        "wall_clock": lambda: datetime(2025, 6, 2, 12, 0, tzinfo=UTC),
    }
    defaults.update(kwargs)
    return Services(**defaults)  # type: ignore[arg-type]


async def run(
    flow: Flow, call: ScriptedCall, svc: Services | None = None, caller: str = "+4930999"
) -> FlowResult:
    result = await FlowRunner(flow, call, svc or services(), call=CallInfo("c1", caller, "100")).run()
    assert "AssertionError" not in result.reason, result.reason  # the script did not fit the flow
    assert call.script == [], "the flow ended before the caller's script did"
    return result


@pytest.mark.parametrize(
    ("step", "queue"),
    [
        (Press("1"), "sales"),
        (Speak("sales"), "sales"),
        (Press("2"), "support"),
        (Speak("I need technical support please"), "support"),
        (Press("3"), "billing"),
        (Speak("Billing."), "billing"),
        (Press("0"), "general"),
        (Speak("agent"), "general"),
    ],
)
async def test_keys_and_words_reach_the_queues(en: Flow, step: Press | Speak, queue: str) -> None:
    call = ScriptedCall(step, Press("5"))
    result = await run(en, call)
    assert result.outcome == "completed"
    assert result.queue == queue and result.agent == "alice"
    assert result.ivr_path == ["welcome", "business_hours", "main_menu", f"queue_{queue}", "survey"]
    assert result.variables["csat"] == 5
    assert [r.queue for r in call.enqueued()] == [queue]
    assert call.said[-1] == "Thank you for your feedback. Goodbye."
    assert call.hung_up == "ivr_completed"


async def test_vip_callers_get_a_higher_priority(en: Flow) -> None:
    vip = ScriptedCall(Press("2"), SILENCE, SILENCE)
    await run(en, vip, caller="+4930111")
    other = ScriptedCall(Press("2"), SILENCE, SILENCE)
    await run(en, other)
    assert [r.priority for r in vip.enqueued() + other.enqueued()] == [10, 0]
    assert vip.enqueued()[0].variables["customer"] == {"name": "Ada", "vip": True}


async def test_order_status_is_read_from_the_crm(en: Flow) -> None:
    svc = services()
    call = ScriptedCall(Speak("order status"), Press("12345#"), Press("1"), Press("2"), Press("4"))
    result = await run(en, call, svc)
    assert svc.http.requests == [("GET", f"{CRM}12345", None)]  # type: ignore[attr-defined]
    assert "You entered 1 2 3 4 5. Press 1 if that is right, or 2 to enter it again." in call.said
    assert "Order 1 2 3 4 5 is shipped. It should arrive on Friday." in call.said
    assert result.ivr_path[3:] == [
        "order_number",
        "order_lookup",
        "order_status",
        "order_with_eta",
        "anything_else",
        "survey",
    ]
    assert result.variables["csat"] == 4


async def test_an_order_number_can_be_entered_again(en: Flow) -> None:
    call = ScriptedCall(
        Press("4"), Press("99#"), Press("54321#"), Press("2"), Press("12345#"), Press("1"), HANGUP
    )
    result = await run(en, call)
    assert "That does not look like an order number." in call.said  # 99 is too short
    assert result.variables["order_number"] == "12345"
    assert result.outcome == "caller_hangup" and result.last_node == "anything_else"


async def test_an_unknown_order_goes_to_support(en: Flow) -> None:
    call = ScriptedCall(Press("4"), Press("777777#"), Press("1"), SILENCE, SILENCE)
    result = await run(en, call)
    assert "Sorry, I could not find order 7 7 7 7 7 7. Let me put you through to support." in call.said
    assert result.queue == "support" and result.last_node == "survey"
    assert result.warnings == [f"hotline_en/order_lookup: GET {CRM}777777: HTTP 404"]


async def test_a_spoken_question_goes_to_the_knowledge_base(en: Flow) -> None:
    svc = services()
    call = ScriptedCall(Speak("how do I reset my password"), Speak("yes"), Press("2"), Press("5"))
    result = await run(en, call, svc)
    assert svc.kb.questions == ["how do I reset my password"]  # type: ignore[union-attr]
    assert "Use the reset link on the sign-in page." in call.said
    assert result.ivr_path[2:] == ["main_menu", "kb", "anything_else", "survey"]
    assert result.queue is None


async def test_key_5_asks_for_the_question_and_unanswered_questions_go_to_support(en: Flow) -> None:
    call = ScriptedCall(Press("5"), Speak("can I bring my dog"), SILENCE, SILENCE)
    result = await run(en, call)
    assert "Please ask your question." in call.said
    assert "Sorry, I do not have an answer to that. Let me put you through to support." in call.said
    assert result.queue == "support"


async def test_voicemail_becomes_a_ticket_with_the_recording(en: Flow) -> None:
    svc = services()
    call = ScriptedCall(Press("9"))
    result = await run(en, call, svc)
    assert result.outcome == "hangup" and result.reason == "voicemail"
    (ticket,) = svc.tickets.created  # type: ignore[union-attr]
    assert ticket.subject == "Voicemail from +4930999"
    assert ticket.recording == "/tmp/vm-1.wav" and ticket.tags == ("voicemail",)
    assert result.variables["ticket_id"] == "T-1"
    assert call.said[-1] == "Thank you, we received your message. Goodbye."


async def test_a_caller_who_hangs_up_while_recording_still_leaves_a_ticket(en: Flow) -> None:
    svc = services()
    call = ScriptedCall(Press("9"), record=RecordResult("/tmp/vm-2.wav", 4.0, "hangup"))
    result = await run(en, call, svc)
    assert result.outcome == "caller_hangup" and result.last_node == "voicemail"
    assert len(svc.tickets.created) == 1  # type: ignore[union-attr]
    assert call.hung_up is None  # nobody left to hang up on


async def test_garbage_and_silence_end_with_a_polite_goodbye(en: Flow) -> None:
    call = ScriptedCall(Press("7"), SILENCE, Speak(""))
    result = await run(en, call)
    assert result.outcome == "hangup" and result.reason == "menu_failed"
    assert result.ivr_path == ["welcome", "business_hours", "main_menu", "goodbye"]
    menu = call.said[1]
    assert call.said[1:] == [
        menu,
        "Sorry, that is not one of the options.",
        menu,
        "Sorry, I did not hear anything.",
        menu,
        "Sorry, that is not one of the options.",
        "Sorry we could not help you this time. Please call again. Goodbye.",
    ]
    assert call.hung_up == "menu_failed"


@pytest.mark.parametrize("when", [0, 1, 2])
async def test_a_hangup_at_any_prompt_is_recorded_where_it_happened(en: Flow, when: int) -> None:
    script = [Press("4"), Press("12345#"), Press("1")][:when]
    call = ScriptedCall(*script, HANGUP)
    result = await run(en, call)
    assert result.outcome == "caller_hangup"
    assert result.last_node == ["main_menu", "order_number", "order_number"][when]
    assert call.hung_up is None


async def test_no_agent_offers_voicemail_or_waiting_again(en: Flow) -> None:
    call = ScriptedCall(Press("1"), Press("2"), Press("3"), queues={"sales": QueueResult("timeout")})
    result = await run(en, call)
    assert result.ivr_path[3:] == ["queue_sales", "offer_voicemail", "queue_general", "survey"]
    assert result.agent == "alice" and result.variables["csat"] == 3


async def test_mandarin_flow_speaks_the_fallback_texts_and_understands_chinese(zh: Flow) -> None:
    call = ScriptedCall(Speak("我想查一下订单"), Press("12345#"), Speak("对"), Speak("五"))
    result = await run(zh, call)
    assert call.said[0] == "感谢致电示例公司。"
    assert "订单 1 2 3 4 5 的状态是：shipped。" in call.said
    assert result.variables["csat"] == 5
    assert {e[2] for e in call.events if e[0] == "say"} == {"zh-CN"}


async def test_mandarin_no_is_not_mistaken_for_yes(zh: Flow) -> None:
    # "不是" (no) contains "是" (yes): the longer phrase wins
    call = ScriptedCall(Press("4"), Press("12345#"), Speak("不是"), Press("12345#"), Press("1"), HANGUP)
    result = await run(zh, call)
    assert result.ivr_path.count("order_number") == 1
    assert [s for s in call.said if s.startswith("您输入的是")] == [
        "您输入的是 1 2 3 4 5。正确请按1，重新输入请按2。"
    ] * 2


async def test_recorded_prompts_are_played_once_they_exist(tmp_path: Path, zh: Flow) -> None:
    flow = zh.model_copy()
    flow.with_source(str(tmp_path / "hotline_zh.yaml"))
    (tmp_path / "prompts" / "zh").mkdir(parents=True)
    (tmp_path / "prompts" / "zh" / "welcome.wav").write_bytes(b"RIFF")
    call = ScriptedCall(HANGUP)
    await run(flow, call)
    welcome = str(tmp_path / "prompts" / "zh" / "welcome.wav")
    assert call.events[0] == ("play", welcome, "感谢致电示例公司。")
    assert call.said[1].startswith("销售请按1")  # the menu's recording is still missing: TTS
