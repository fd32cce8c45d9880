"""Where transfers and agents' own calls go: numbers (``number:``, ``tel:``, plain digits, digits at our
host) through the SIP trunk, agents and queues by name; which dialog a Replaces names (RFC 3891 §3);
and which INVITEs come from a registered agent's phone. No sockets: the ACD is built over fakes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from callcenter.calls.acd import Acd, TransferTarget
from callcenter.calls.agent_calls import AgentTarget
from callcenter.calls.transfer import names_dialog, parse_replaces
from callcenter.core.config import Settings, TrunkSettings
from callcenter.ivr.schema import QueueNode, TransferNode
from callcenter.routing.agents import AgentState, Transition
from callcenter.sip.dialog import Dialog
from callcenter.sip.transaction import Addr


class _Registration:
    def __init__(self) -> None:
        self.listeners: list[Any] = []
        self.at: dict[tuple[str, int], list[str]] = {}

    def lookup(self, username: str) -> list[Any]:
        return []

    def agents_at(self, source: Addr) -> list[str]:
        return self.at.get((source.host, source.port), [])


def _acd(trunk: bool = True) -> Acd:
    trunks = {"trunk": TrunkSettings.model_validate({"uri": "127.0.0.1:5070"})} if trunk else {}
    settings = Settings(
        sip={"port": 5060, **trunks},
        routing={"queues": {"support": {"skills": {"support": 1}}}},
        ivr={"numbers": {"100": "hotline_en"}},
    )
    endpoint: Any = SimpleNamespace(client_credentials=None, bound_port=5060)
    acd = Acd(settings, endpoint, SimpleNamespace(), _Registration(), None)  # type: ignore[arg-type]
    acd._define(SimpleNamespace(username="bob", skills={"support": 1}, languages=[]))
    return acd


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("number:+49 30 1234-567", TransferTarget("number", "+49301234567")),
        ("tel:+4930123;phone-context=example.com", TransferTarget("number", "+4930123")),
        ("+4930123", TransferTarget("number", "+4930123")),
        ("<sip:+4930123@127.0.0.1:5060>", TransferTarget("number", "+4930123")),
        ("<sip:bob@127.0.0.1:5060>", TransferTarget("agent", "bob")),
        ("<sip:support@127.0.0.1>", TransferTarget("queue", "support")),
        ("sip:x@pbx.example.com", TransferTarget("uri", "sip:x@pbx.example.com")),
        ("<sip:100@127.0.0.1:5060>", None),  # an IVR number of ours, not a phone number to dial out
        ("number:hello", None),
    ],
)
def test_transfer_targets(to: str, expected: TransferTarget | None) -> None:
    assert _acd().resolve_transfer(to) == expected


def test_numbers_need_a_trunk() -> None:
    acd = _acd(trunk=False)
    assert acd.resolve_transfer("+4930123") is None
    assert acd.resolve_transfer("tel:+4930123") is None
    assert acd.resolve_transfer("agent:bob") == TransferTarget("agent", "bob")


def test_what_an_agent_dials() -> None:
    calls = _acd().agent_calls
    assert str(calls.target("sip:bob@127.0.0.1")) == "agent:bob"
    assert str(calls.target("sip:support@127.0.0.1")) == "queue:support"
    assert str(calls.target("sip:+49-30-123@127.0.0.1")) == "number:+4930123"
    assert calls.target("sip:100@127.0.0.1") == "ivr"  # the IVR, as for any caller
    # the built-in queue is not dialable; unknown names and numbers without a trunk: as for any caller
    assert calls.target("sip:_agent@127.0.0.1") == "ivr"
    assert calls.target("sip:nobody@127.0.0.1") == "ivr"
    assert _acd(trunk=False).agent_calls.target("sip:+4930123@127.0.0.1") == "ivr"


def test_each_target_becomes_a_one_node_flow() -> None:
    (queue,) = AgentTarget("queue", "support").flow().nodes.values()
    assert isinstance(queue, QueueNode) and queue.queue == "support"
    (agent,) = AgentTarget("agent", "bob").flow().nodes.values()
    assert isinstance(agent, TransferNode) and agent.to == "agent:bob"
    (number,) = AgentTarget("number", "+4930123").flow().nodes.values()
    assert isinstance(number, TransferNode) and number.to == "+4930123"


def test_only_invites_from_a_registered_phone_are_agents_calls() -> None:
    acd = _acd()
    registration: Any = acd.registration
    registration.at[("127.0.0.1", 40000)] = ["sam"]
    mine: Any = SimpleNamespace(source=Addr("udp", "127.0.0.1", 40000))
    stranger: Any = SimpleNamespace(source=Addr("udp", "127.0.0.1", 40001))
    assert acd.agent_calls.claims(mine) and not acd.agent_calls.claims(stranger)


def test_replaces_names_a_dialog_by_call_id_and_both_tags() -> None:
    ours = Dialog("abc@host", "srv", "phone", "<sip:a@h>", "<sip:b@h>", "sip:b@h")
    right = parse_replaces("<sip:bob@h?Replaces=abc%40host%3Bto-tag%3Dsrv%3Bfrom-tag%3Dphone>")
    swapped = parse_replaces("<sip:bob@h?Replaces=abc%40host%3Bto-tag%3Dphone%3Bfrom-tag%3Dsrv>")
    other_tag = parse_replaces("<sip:bob@h?Replaces=abc%40host%3Bto-tag%3Dsrv%3Bfrom-tag%3Dx>")
    other_call = parse_replaces("<sip:bob@h?Replaces=abd%40host%3Bto-tag%3Dsrv%3Bfrom-tag%3Dphone>")
    assert names_dialog(ours, right) and names_dialog(ours, swapped)
    assert not names_dialog(ours, other_tag) and not names_dialog(ours, other_call)
    assert not names_dialog(None, right)


class _Writer:
    def __init__(self) -> None:
        self.extras: list[tuple[str, dict[str, Any]]] = []

    def call_extra(self, call_id: str, fields: dict[str, Any]) -> None:
        self.extras.append((call_id, fields))


def test_the_agents_wrap_up_time_lands_on_the_call_it_followed() -> None:
    acd = _acd()
    writer = _Writer()
    acd.writer = writer
    s = AgentState
    acd.router.agents.transitions = [
        Transition("bob", s.ON_CALL, s.WRAP_UP, None, 100.0, "call-1"),
        Transition("bob", s.WRAP_UP, s.AVAILABLE, None, 104.5, "call-1"),  # ended by the timer or early
        Transition("bob", s.AVAILABLE, s.RESERVED, None, 110.0, "call-2"),
        Transition("bob", s.RESERVED, s.AVAILABLE, None, 115.0, "call-2"),  # a missed offer: no wrap-up
    ]
    acd._log_transitions()
    assert writer.extras == [("call-1", {"wrap_up_s": 4.5})]
