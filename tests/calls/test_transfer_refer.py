"""The agent's phone REFERs the bridged call (calls/talk.py LiveTalk._on_refer): blind transfers are
accepted (202) and end the agent's part; a Refer-To with Replaces (attended transfer, RFC 5589 §7)
that is malformed gets 400 and one naming no dialog of ours 481 (RFC 3891 §3); a second REFER while
one is under way gets 491. No sockets: the ACD, call and legs are small fakes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from callcenter.calls.acd import Acd, TransferTarget
from callcenter.calls.agent_leg import RingResult
from callcenter.calls.talk import LiveTalk
from callcenter.calls.transfer import HoldLog, Phase
from callcenter.sip.message import Headers, SipRequest


def _refer(refer_to: str) -> SipRequest:
    return SipRequest("REFER", "sip:callcenter@127.0.0.1", Headers([("Refer-To", refer_to)]))


def _talk() -> LiveTalk:
    targets = {"<sip:support@127.0.0.1:5060>": TransferTarget("queue", "support")}
    acd: Any = SimpleNamespace(clock=lambda: 5.0, resolve_transfer=targets.get, _live_talks={})
    acd.agent_calls = SimpleNamespace(find=lambda replaces: None)  # the agent placed no such call
    acd.refer_with_replaces = lambda talk, refer_to: Acd.refer_with_replaces(acd, talk, refer_to)
    control: Any = SimpleNamespace(session=SimpleNamespace(call_id="call-1"))
    leg: Any = SimpleNamespace(on_refer=None)
    answered = RingResult("sam", leg=leg, rtp=SimpleNamespace())  # type: ignore[arg-type]
    return LiveTalk(acd, control, answered, SimpleNamespace(), None, HoldLog())  # type: ignore[arg-type]


async def test_a_blind_refer_is_accepted_once() -> None:
    talk = _talk()
    assert talk._on_refer(_refer("<sip:support@127.0.0.1:5060>")) == 202
    assert talk.state.phase is Phase.ENDED
    assert [t.as_json() for t in talk.state.log.transfers] == [
        {"kind": "blind", "from": "sam", "to": "queue:support", "via": "phone", "outcome": "transferred"}
    ]
    assert talk._on_refer(_refer("<sip:support@127.0.0.1:5060>")) == 491


async def test_a_refer_to_nobody_we_know_is_404() -> None:
    talk = _talk()
    assert talk._on_refer(_refer("<sip:nobody@127.0.0.1:5060>")) == 404
    assert talk.state.phase is Phase.TALKING and talk.state.log.transfers == []


@pytest.mark.parametrize(
    ("refer_to", "status"),
    [
        ("<sip:bob@127.0.0.1:5060?Replaces=abc%3Bto-tag%3Dy>", 400),  # no from-tag
        ("<sip:bob@127.0.0.1:5060?Replaces=%3Bto-tag%3Dy%3Bfrom-tag%3Dx>", 400),  # no Call-ID
        ("<sip:bob@127.0.0.1:5060?Replaces=nosuch%40h%3Bto-tag%3Dy%3Bfrom-tag%3Dx>", 481),
    ],
)
async def test_refer_with_replaces(refer_to: str, status: int) -> None:
    talk = _talk()
    assert talk._on_refer(_refer(refer_to)) == status
    assert talk.state.phase is Phase.TALKING  # the caller stays with the agent


async def test_no_refer_while_a_consultation_runs() -> None:
    talk = _talk()
    talk.state.begin_consult("agent:bob", None, "api", 1.0)
    assert talk._on_refer(_refer("<sip:support@127.0.0.1:5060>")) == 491
