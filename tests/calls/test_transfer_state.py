"""Hold and transfer state of one bridged call (calls/transfer.py), stepped by hand: what the caller
hears, the hold time and count on the record, and every transfer's outcome — including the ones that
end half-way."""

from __future__ import annotations

import pytest

from callcenter.calls.transfer import (
    HoldLog,
    Phase,
    TalkState,
    TransferError,
    has_replaces,
    parse_replaces,
)


def test_the_phone_holding_puts_the_caller_on_hold_music_and_counts_the_time() -> None:
    talk = TalkState("sam", now=0.0)
    assert not talk.caller_on_hold
    assert talk.phone_hold(True, 10.0)
    assert talk.caller_on_hold and talk.held_by() == ["phone"]
    assert not talk.phone_hold(True, 11.0)  # a repeated re-INVITE changes nothing
    assert talk.phone_hold(False, 14.0)
    assert not talk.caller_on_hold
    talk.phone_hold(True, 20.0)
    talk.end(21.5)  # the call ends while on hold: that stretch counts too
    assert talk.log.holds == 2
    assert talk.log.hold_s == pytest.approx(5.5)


def test_api_hold_and_phone_hold_overlap_as_one_stretch() -> None:
    talk = TalkState("sam", now=0.0)
    talk.hold(1.0)
    talk.phone_hold(True, 2.0)
    talk.resume(3.0)  # the phone still holds: the caller keeps hearing music
    assert talk.caller_on_hold and talk.held_by() == ["phone"]
    talk.phone_hold(False, 5.0)
    assert talk.log.holds == 1 and talk.log.hold_s == pytest.approx(4.0)


def test_resume_without_hold_is_refused() -> None:
    talk = TalkState("sam", now=0.0)
    with pytest.raises(TransferError, match="not on hold"):
        talk.resume(1.0)
    talk.phone_hold(True, 1.0)
    with pytest.raises(TransferError, match="resume it there"):
        talk.resume(2.0)


def test_attended_transfer_completed_hands_the_caller_to_the_target() -> None:
    log = HoldLog()
    talk = TalkState("sam", now=0.0, log=log)
    talk.begin_consult("queue:support", object(), "api", 10.0)
    assert talk.phase is Phase.CONSULT_RINGING and talk.caller_on_hold and not talk.consult_bridged
    with pytest.raises(TransferError):
        talk.complete(11.0)  # the target has not answered yet
    talk.consult_answered("bob", 12.0)
    assert talk.consult_bridged and talk.caller_on_hold
    assert talk.complete(15.0) == "sam"
    assert talk.agent == "bob" and not talk.caller_on_hold and talk.phase is Phase.TALKING
    assert log.holds == 1 and log.hold_s == pytest.approx(5.0)
    assert [t.as_json() for t in log.transfers] == [
        {"kind": "attended", "from": "sam", "to": "queue:support", "via": "api", "outcome": "completed",
         "agent": "bob"}
    ]


@pytest.mark.parametrize("outcome", ["no_answer", "busy", "target_hung_up"])
def test_a_failed_consultation_brings_the_caller_back_to_the_agent(outcome: str) -> None:
    talk = TalkState("sam", now=0.0)
    talk.begin_consult("agent:bob", object(), "api", 1.0)
    if outcome == "target_hung_up":
        talk.consult_answered("bob", 2.0)
    talk.consult_failed(outcome, 3.0)
    assert talk.agent == "sam" and talk.phase is Phase.TALKING and not talk.caller_on_hold
    assert talk.log.transfers[-1].outcome == outcome
    talk.begin_consult("agent:bob", object(), "api", 4.0)  # and may try again
    assert talk.log.holds == 2


def test_cancel_while_ringing_or_consulting() -> None:
    talk = TalkState("sam", now=0.0)
    with pytest.raises(TransferError):
        talk.cancel(0.5)
    talk.begin_consult("agent:bob", object(), "api", 1.0)
    talk.cancel(2.0)
    assert talk.log.transfers[-1].outcome == "cancelled" and not talk.caller_on_hold


def test_no_second_transfer_or_hold_during_a_consultation() -> None:
    talk = TalkState("sam", now=0.0)
    talk.begin_consult("agent:bob", object(), "api", 1.0)
    with pytest.raises(TransferError):
        talk.begin_consult("agent:ann", object(), "api", 2.0)
    with pytest.raises(TransferError):
        talk.blind("queue:support", "api", 2.0)
    with pytest.raises(TransferError):
        talk.hold(2.0)


def test_the_call_ending_mid_consultation_records_it_cancelled() -> None:
    talk = TalkState("sam", now=0.0)
    talk.begin_consult("agent:bob", object(), "phone", 1.0)
    talk.end(4.0)
    assert talk.log.transfers[-1].outcome == "cancelled"
    assert talk.log.hold_s == pytest.approx(3.0) and not talk.caller_on_hold
    assert not talk.phone_hold(True, 5.0)  # nothing changes after the end


def test_blind_transfer_ends_the_agents_part() -> None:
    talk = TalkState("sam", now=0.0)
    record = talk.blind("queue:support", "phone", 3.0)
    assert record.as_json() == {"kind": "blind", "from": "sam", "to": "queue:support", "via": "phone",
                                "outcome": "transferred"}
    assert talk.phase is Phase.ENDED


def test_hold_log_spans_several_agents_of_one_call() -> None:
    log = HoldLog()
    first = TalkState("sam", 0.0, log)
    first.hold(1.0)
    first.end(3.0)
    second = TalkState("bob", 10.0, log)
    second.phone_hold(True, 11.0)
    second.end(12.0)
    assert log.as_json() == {"holds": 2, "hold_s": 3.0, "transfers": []}


# -- Replaces in a Refer-To (RFC 3891 §6.1 example, RFC 5589 §7) ---------------------------------------


def test_replaces_from_the_rfc_example() -> None:
    refer_to = (
        "<sip:bob@biloxi.example.org?Replaces=12345%40192.168.118.3%3Bto-tag%3D12345%3Bfrom-tag%3D5FFE-3994>"
    )
    assert has_replaces(refer_to)
    r = parse_replaces(refer_to)
    assert (r.call_id, r.to_tag, r.from_tag) == ("12345@192.168.118.3", "12345", "5FFE-3994")
    assert not r.early_only


def test_replaces_parameters_in_any_order_and_early_only() -> None:
    r = parse_replaces("<sip:bob@h?Replaces=abc%3Bfrom-tag%3Dx%3Bearly-only%3Bto-tag%3Dy>")
    assert (r.call_id, r.to_tag, r.from_tag, r.early_only) == ("abc", "y", "x", True)


def test_no_replaces_is_a_blind_refer() -> None:
    assert not has_replaces("<sip:support@127.0.0.1:5060>")
    assert not has_replaces("<sip:support@127.0.0.1;transport=udp>")


@pytest.mark.parametrize(
    "refer_to",
    [
        "<sip:bob@h?Replaces=abc%3Bto-tag%3Dy>",  # no from-tag
        "<sip:bob@h?Replaces=abc%3Bfrom-tag%3Dx>",  # no to-tag
        "<sip:bob@h?Replaces=abc%3Bto-tag%3Dy%3Bto-tag%3Dz%3Bfrom-tag%3Dx>",  # two to-tags
        "<sip:bob@h?Replaces=%3Bto-tag%3Dy%3Bfrom-tag%3Dx>",  # no Call-ID
        "<sip:bob@h?Replaces=a%20b%3Bto-tag%3Dy%3Bfrom-tag%3Dx>",  # a space in the Call-ID
        "<sip:bob@h?Replaces=abc%3Bto-tag%3D%3Bfrom-tag%3Dx>",  # empty tag
        "<sip:bob@h?Replaces=a%3Bto-tag%3Dy%3Bfrom-tag%3Dx&Replaces=b%3Bto-tag%3Dy%3Bfrom-tag%3Dx>",
        "not a uri",
    ],
)
def test_malformed_replaces_is_refused(refer_to: str) -> None:
    with pytest.raises(ValueError):
        parse_replaces(refer_to)
