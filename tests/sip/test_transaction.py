"""Transactions (RFC 3261 §17 + RFC 6026) driven by a hand-stepped clock: no sleeping anywhere."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callcenter.sip.message import Headers, SipRequest, SipResponse, make_response
from callcenter.sip.parser import parse_message
from callcenter.sip.transaction import (
    Addr,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    State,
    StrayResponse,
    TransactionLayer,
    TransactionTimeout,
)

T0 = 1000.0
UDP = Addr("udp", "192.0.2.9", 5060)
TCP = Addr("tcp", "192.0.2.9", 5060)


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKbranch1",
    sent_by: str = "192.0.2.9:5060",
    cseq: int = 1,
    cseq_method: str | None = None,
    to_tag: str | None = None,
    call_id: str = "call-1@192.0.2.9",
    from_tag: str = "fromtag",
    routes: tuple[str, ...] = (),
) -> SipRequest:
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP {sent_by}" + (f";branch={branch}" if branch is not None else ""))
    for r in routes:
        h.add("Route", r)
    h.add("Max-Forwards", "70")
    h.add("From", f"<sip:alice@example.com>;tag={from_tag}")
    h.add("To", "<sip:bob@example.net>" + (f";tag={to_tag}" if to_tag else ""))
    h.add("Call-ID", call_id)
    h.add("CSeq", f"{cseq} {cseq_method or method}")
    return SipRequest(method, "sip:bob@example.net", h)


def response_to(req: SipRequest, status: int, to_tag: str = "totag") -> SipResponse:
    return make_response(req, status, to_tag=to_tag)


def run_timers(layer: TransactionLayer, until: float) -> list[tuple[float, int, list[object]]]:
    """Fire every timer up to `until`, each at its own deadline: [(time, sends, events), ...]."""
    fired: list[tuple[float, int, list[object]]] = []
    while True:
        at = layer.get_timer()
        if at is None or at > until:
            return fired
        layer.handle_timer(at)
        fired.append((at - T0, len(layer.outgoing), list(layer.events)))
        layer.outgoing.clear()
        layer.events.clear()


def drain(layer: TransactionLayer) -> tuple[list[tuple[bytes, Addr]], list[object]]:
    out, ev = list(layer.outgoing), list[object](layer.events)
    layer.outgoing.clear()
    layer.events.clear()
    return out, ev


def retransmit_times(fired: list[tuple[float, int, list[object]]]) -> list[float]:
    return [t for t, sends, _ in fired if sends]


def timeouts(fired: list[tuple[float, int, list[object]]]) -> list[float]:
    return [t for t, _, events in fired if any(isinstance(e, TransactionTimeout) for e in events)]


# --- INVITE client transaction (§17.1.1) ------------------------------------------------------


def test_ict_udp_timer_a_doubles_without_cap_until_timer_b() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = layer.send_request(invite, UDP, T0)
    out, _ = drain(layer)
    assert out == [(invite.serialize(), UDP)]
    assert txn.state == State.CALLING

    fired = run_timers(layer, T0 + 100)
    # A: T1, 2T1, 4T1, ... (§17.1.1.2, no T2 cap), until B = 64*T1 = 32 s.
    assert retransmit_times(fired) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert timeouts(fired) == [32.0]
    assert txn.state == State.TERMINATED
    assert layer.client == {}
    assert layer.get_timer() is None


def test_ict_retransmission_is_the_same_bytes() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.send_request(invite, UDP, T0)
    first, _ = drain(layer)
    layer.handle_timer(T0 + 0.5)
    again, _ = drain(layer)
    assert again == first


def test_ict_nothing_fires_before_the_deadline() -> None:
    layer = TransactionLayer()
    layer.send_request(request(), UDP, T0)
    drain(layer)
    assert layer.get_timer() == T0 + 0.5
    layer.handle_timer(T0 + 0.499)
    assert drain(layer) == ([], [])


def test_ict_tcp_never_retransmits_and_times_out_by_timer_b() -> None:
    layer = TransactionLayer()
    layer.send_request(request(), TCP, T0)
    drain(layer)
    fired = run_timers(layer, T0 + 100)
    assert retransmit_times(fired) == []
    assert timeouts(fired) == [32.0]
    assert layer.client == {}


def test_ict_provisional_stops_retransmissions_and_timer_b() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = layer.send_request(invite, UDP, T0)
    drain(layer)
    layer.handle_timer(T0 + 0.5)  # one retransmission
    drain(layer)
    layer.receive_response(response_to(invite, 180), UDP, T0 + 0.7)
    out, events = drain(layer)
    assert out == []
    assert [type(e) for e in events] == [ResponseReceived]
    assert txn.state == State.PROCEEDING
    # No more A, and B does not apply in Proceeding (§17.1.1.2): the TU (CANCEL) ends it.
    assert run_timers(layer, T0 + 1000) == []
    assert layer.client  # still waiting for the final response
    layer.receive_response(response_to(invite, 180), UDP, T0 + 50)  # each 1xx reaches the TU
    assert [type(e) for e in drain(layer)[1]] == [ResponseReceived]


def test_ict_non_2xx_final_is_acked_within_the_transaction() -> None:
    layer = TransactionLayer()
    invite = request(routes=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"), cseq=42)
    txn = layer.send_request(invite, UDP, T0)
    drain(layer)
    layer.receive_response(response_to(invite, 486, to_tag="bob-tag"), UDP, T0 + 1)
    out, events = drain(layer)
    assert len(events) == 1 and isinstance(events[0], ResponseReceived)
    assert events[0].response.status == 486
    assert txn.state == State.COMPLETED
    assert len(out) == 1 and out[0][1] == UDP
    ack = parse_message(out[0][0])
    assert isinstance(ack, SipRequest)
    # §17.1.1.3: same Request-URI, branch, Call-ID, From, Route; To from the response; CSeq ACK.
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.headers.get_all("Via") == invite.headers.get_all("Via")
    assert ack.headers.get("To") == "<sip:bob@example.net>;tag=bob-tag"
    assert ack.headers.get("From") == invite.headers.get("From")
    assert ack.call_id == invite.call_id
    assert ack.headers.get("CSeq") == "42 ACK"
    assert ack.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]

    # A retransmitted final response is re-ACKed and not passed up again.
    layer.receive_response(response_to(invite, 486, to_tag="bob-tag"), UDP, T0 + 2)
    again, events = drain(layer)
    assert again == out
    assert events == []


def test_ict_timer_d_is_32s_over_udp() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.send_request(invite, UDP, T0)
    layer.receive_response(response_to(invite, 603), UDP, T0 + 1)
    drain(layer)
    layer.handle_timer(T0 + 1 + 31.9)
    assert layer.client  # still absorbing retransmissions
    layer.handle_timer(T0 + 1 + 32)
    assert layer.client == {}
    assert drain(layer) == ([], [])  # D ends the transaction quietly


def test_ict_timer_d_is_zero_over_tcp() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.send_request(invite, TCP, T0)
    drain(layer)
    layer.receive_response(response_to(invite, 404), TCP, T0 + 1)
    out, _ = drain(layer)
    assert len(out) == 1  # the ACK still goes out
    assert layer.get_timer() == T0 + 1
    layer.handle_timer(T0 + 1)
    assert layer.client == {}


def test_ict_2xx_goes_to_accepted_and_every_2xx_reaches_the_tu() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = layer.send_request(invite, UDP, T0)
    drain(layer)
    layer.receive_response(response_to(invite, 200), UDP, T0 + 1)
    out, events = drain(layer)
    assert out == []  # the TU acknowledges a 2xx, never the transaction (§13.2.2.4)
    assert [type(e) for e in events] == [ResponseReceived]
    assert txn.state == State.ACCEPTED
    assert txn.final_response is not None and txn.final_response.status == 200
    # RFC 6026 §8.4: retransmissions and forked 2xx are passed up, still no ACK from here.
    layer.receive_response(response_to(invite, 200), UDP, T0 + 2)
    layer.receive_response(response_to(invite, 200, to_tag="fork2"), UDP, T0 + 3)
    out, events = drain(layer)
    assert out == []
    assert [e.response.headers.get("To") for e in events if isinstance(e, ResponseReceived)] == [
        "<sip:bob@example.net>;tag=totag",
        "<sip:bob@example.net>;tag=fork2",
    ]
    # A late non-2xx in Accepted is dropped.
    layer.receive_response(response_to(invite, 500), UDP, T0 + 4)
    assert drain(layer) == ([], [])
    # No retransmission of the INVITE once accepted; timer M (64*T1) ends it without a timeout.
    fired = run_timers(layer, T0 + 100)
    assert retransmit_times(fired) == []
    assert timeouts(fired) == []
    assert [t for t, _, _ in fired if t > 1] == [33.0]
    assert layer.client == {}


# --- non-INVITE client transaction (§17.1.2) --------------------------------------------------


def test_nict_udp_timer_e_doubles_capped_at_t2_until_timer_f() -> None:
    layer = TransactionLayer()
    txn = layer.send_request(request("OPTIONS"), UDP, T0)
    drain(layer)
    assert txn.state == State.TRYING
    fired = run_timers(layer, T0 + 100)
    assert retransmit_times(fired) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert timeouts(fired) == [32.0]
    assert layer.client == {}


def test_nict_proceeding_retransmits_every_t2() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    txn = layer.send_request(options, UDP, T0)
    drain(layer)
    layer.handle_timer(T0 + 0.5)  # E: next at 1.5
    drain(layer)
    layer.receive_response(response_to(options, 100), UDP, T0 + 0.6)
    assert [type(e) for e in drain(layer)[1]] == [ResponseReceived]
    assert txn.state == State.PROCEEDING
    fired = run_timers(layer, T0 + 100)
    assert retransmit_times(fired) == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert timeouts(fired) == [32.0]  # F still applies in Proceeding


def test_nict_final_then_timer_k_5s_over_udp() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    txn = layer.send_request(options, UDP, T0)
    drain(layer)
    layer.receive_response(response_to(options, 200), UDP, T0 + 0.2)
    out, events = drain(layer)
    assert out == [] and [type(e) for e in events] == [ResponseReceived]
    assert txn.state == State.COMPLETED
    # Retransmitted finals are absorbed in Completed.
    layer.receive_response(response_to(options, 200), UDP, T0 + 1)
    assert drain(layer) == ([], [])
    fired = run_timers(layer, T0 + 100)
    assert retransmit_times(fired) == []  # E stopped
    assert [t for t, _, _ in fired] == [pytest.approx(5.2)]
    assert timeouts(fired) == []
    assert layer.client == {}


def test_nict_tcp_no_retransmission_and_timer_k_zero() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    layer.send_request(options, TCP, T0)
    drain(layer)
    assert layer.get_timer() == T0 + 32  # only F
    layer.receive_response(response_to(options, 200), TCP, T0 + 1)
    drain(layer)
    assert layer.get_timer() == T0 + 1  # K = 0
    layer.handle_timer(T0 + 1)
    assert layer.client == {}
    assert layer.get_timer() is None


def test_nict_tcp_timer_f() -> None:
    layer = TransactionLayer()
    layer.send_request(request("BYE", to_tag="x"), TCP, T0)
    drain(layer)
    fired = run_timers(layer, T0 + 100)
    assert retransmit_times(fired) == []
    assert timeouts(fired) == [32.0]


# --- INVITE server transaction (§17.2.1 + RFC 6026 §8.7) --------------------------------------


def new_server(
    layer: TransactionLayer, req: SipRequest, source: Addr = UDP, now: float = T0
) -> ServerTransaction:
    layer.receive_request(req, source, now)
    events = list(layer.events)
    layer.events.clear()
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    assert events[0].transaction is not None
    assert events[0].request is req and events[0].source == source
    return events[0].transaction


def test_ist_absorbs_retransmissions_and_answers_with_last_response() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = new_server(layer, invite)
    assert txn.state == State.PROCEEDING
    layer.receive_request(request(), UDP, T0 + 0.1)
    assert drain(layer) == ([], [])  # nothing sent yet, and the TU does not see it twice
    trying = make_response(invite, 100)
    txn.respond(trying, T0 + 0.2)
    assert drain(layer)[0] == [(trying.serialize(), UDP)]
    ringing = response_to(invite, 180)
    txn.respond(ringing, T0 + 0.3)
    drain(layer)
    layer.receive_request(request(), UDP, T0 + 0.5)
    out, events = drain(layer)
    assert events == []
    assert out == [(ringing.serialize(), UDP)]


def test_ist_non_2xx_udp_timer_g_until_timer_h() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = new_server(layer, invite)
    busy = response_to(invite, 486)
    txn.respond(busy, T0)
    assert drain(layer)[0] == [(busy.serialize(), UDP)]
    assert txn.state == State.COMPLETED
    fired = run_timers(layer, T0 + 100)
    # G: T1 doubling to T2 (§17.2.1); H = 64*T1 reports the missing ACK.
    assert retransmit_times(fired) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert timeouts(fired) == [32.0]
    assert isinstance(fired[-1][2][0], TransactionTimeout) and fired[-1][2][0].transaction is txn
    assert layer.server == {}


def test_ist_retransmitted_invite_in_completed_gets_the_final_again() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = new_server(layer, invite)
    txn.respond(response_to(invite, 486), T0)
    first, _ = drain(layer)
    layer.receive_request(request(), UDP, T0 + 0.2)
    again, events = drain(layer)
    assert again == first and events == []


def test_ist_ack_confirms_stops_g_and_timer_i_ends_it() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = new_server(layer, invite)
    txn.respond(response_to(invite, 486), T0)
    drain(layer)
    layer.handle_timer(T0 + 0.5)  # one G retransmission
    drain(layer)
    ack = request("ACK", to_tag="totag", cseq_method="ACK")
    layer.receive_request(ack, UDP, T0 + 1.0)
    assert drain(layer) == ([], [])  # the ACK of a non-2xx is the transaction's own business
    assert txn.state == State.CONFIRMED
    layer.receive_request(ack, UDP, T0 + 1.2)  # retransmitted ACK absorbed
    layer.receive_request(request(), UDP, T0 + 1.3)  # and so is a late INVITE copy
    assert drain(layer) == ([], [])
    fired = run_timers(layer, T0 + 100)
    assert retransmit_times(fired) == []  # G is dead after the ACK (it was due at 1.5)
    assert timeouts(fired) == []  # so is H
    assert [t for t, _, _ in fired] == [6.0]  # I = T4 after the ACK
    assert layer.server == {}


def test_ist_tcp_no_timer_g_and_timer_i_zero() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = new_server(layer, invite, TCP)
    txn.respond(response_to(invite, 480), T0)
    drain(layer)
    assert layer.get_timer() == T0 + 32  # H only
    layer.receive_request(request("ACK", to_tag="totag", cseq_method="ACK"), TCP, T0 + 1)
    assert txn.state == State.CONFIRMED
    assert layer.get_timer() == T0 + 1
    layer.handle_timer(T0 + 1)
    assert layer.server == {}


def test_ist_tcp_timer_h() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = new_server(layer, invite, TCP)
    txn.respond(response_to(invite, 480), T0)
    drain(layer)
    fired = run_timers(layer, T0 + 100)
    assert retransmit_times(fired) == []
    assert timeouts(fired) == [32.0]
    assert txn.state == State.TERMINATED


def test_ist_2xx_retransmitted_until_ack_then_silent_until_timer_l() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = new_server(layer, invite)
    ok = response_to(invite, 200)
    txn.respond(ok, T0)
    assert drain(layer)[0] == [(ok.serialize(), UDP)]
    assert txn.state == State.ACCEPTED
    fired = run_timers(layer, T0 + 8)
    assert retransmit_times(fired) == [0.5, 1.5, 3.5, 7.5]
    layer.outgoing.clear()
    txn.ack_received(T0 + 9)
    assert txn.acked
    fired = run_timers(layer, T0 + 100)
    assert retransmit_times(fired) == []  # the one due at 11.5 never goes out
    assert timeouts(fired) == []
    assert [t for t, _, _ in fired] == [32.0]  # L = 64*T1 after the 2xx
    assert layer.server == {}


def test_ist_2xx_schedule_is_t1_doubling_capped_at_t2() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = new_server(layer, invite)
    txn.respond(response_to(invite, 200), T0)
    drain(layer)
    fired = run_timers(layer, T0 + 100)
    assert retransmit_times(fired) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    # No ACK within 64*T1: the TU must hear it (it then sends BYE, §13.3.1.4).
    assert timeouts(fired) == [32.0]
    event = fired[-1][2][0]
    assert isinstance(event, TransactionTimeout) and event.transaction is txn
    assert layer.server == {}


def test_ist_2xx_over_tcp_is_retransmitted_too() -> None:
    # §13.3.1.4: the UAS core retransmits the 2xx whatever the first hop (proxies may use UDP).
    layer = TransactionLayer()
    invite = request()
    txn = new_server(layer, invite, TCP)
    txn.respond(response_to(invite, 200), T0)
    drain(layer)
    fired = run_timers(layer, T0 + 2)
    assert retransmit_times(fired) == [0.5, 1.5]


def test_ist_retransmitted_invite_in_accepted_is_absorbed() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = new_server(layer, invite)
    txn.respond(response_to(invite, 200), T0)
    drain(layer)
    layer.receive_request(request(), UDP, T0 + 0.2)
    assert drain(layer) == ([], [])  # no new event, no extra send (RFC 6026 §8.7)
    assert txn.state == State.ACCEPTED


def test_ist_2xx_ack_on_new_branch_goes_to_tu_without_transaction() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = new_server(layer, invite)
    txn.respond(response_to(invite, 200), T0)
    drain(layer)
    ack = request("ACK", branch="z9hG4bKnewbranch", to_tag="totag", cseq_method="ACK")
    layer.receive_request(ack, UDP, T0 + 0.1)
    _, events = drain(layer)
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    assert events[0].transaction is None and events[0].request is ack
    assert layer.server.keys() == {txn.key}  # an ACK never creates a transaction


def test_ist_ack_matching_the_invite_in_accepted_is_passed_to_tu() -> None:
    # RFC 6026 §7.1: ACKs matching an INVITE transaction in Accepted MUST go to the TU (RFC 2543
    # peers build ACK and INVITE with the same transaction key). Absorbing it would make us
    # retransmit the 2xx for 32 s and then hang up a healthy call.
    layer = TransactionLayer()
    invite = request(branch=None)
    txn = new_server(layer, invite)
    txn.respond(response_to(invite, 200), T0)
    drain(layer)
    ack = request("ACK", branch=None, to_tag="totag", cseq_method="ACK")
    layer.receive_request(ack, UDP, T0 + 0.1)
    _, events = drain(layer)
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    assert events[0].request is ack and events[0].transaction is None


def test_ist_respond_after_final_is_ignored() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = new_server(layer, invite)
    txn.respond(response_to(invite, 486), T0)
    drain(layer)
    txn.respond(response_to(invite, 200), T0 + 0.1)
    txn.respond(response_to(invite, 180), T0 + 0.1)
    assert drain(layer) == ([], [])
    assert txn.state == State.COMPLETED and txn.last_status == 486


# --- non-INVITE server transaction (§17.2.2) --------------------------------------------------


def test_nist_trying_proceeding_completed_and_timer_j_udp() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    txn = new_server(layer, options)
    assert txn.state == State.TRYING
    layer.receive_request(request("OPTIONS"), UDP, T0 + 0.1)
    assert drain(layer) == ([], [])  # Trying: retransmissions are discarded
    trying = make_response(options, 100)
    txn.respond(trying, T0 + 0.2)
    drain(layer)
    assert txn.state == State.PROCEEDING
    layer.receive_request(request("OPTIONS"), UDP, T0 + 0.3)
    assert drain(layer) == ([(trying.serialize(), UDP)], [])
    ok = response_to(options, 200)
    txn.respond(ok, T0 + 1)
    drain(layer)
    assert txn.state == State.COMPLETED
    layer.receive_request(request("OPTIONS"), UDP, T0 + 2)
    assert drain(layer) == ([(ok.serialize(), UDP)], [])
    txn.respond(response_to(options, 500), T0 + 2)  # other finals discarded
    assert drain(layer) == ([], [])
    fired = run_timers(layer, T0 + 100)
    assert [t for t, _, _ in fired] == [33.0]  # J = 64*T1
    assert timeouts(fired) == [] and retransmit_times(fired) == []
    assert layer.server == {}


def test_nist_timer_j_zero_over_tcp() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    txn = new_server(layer, options, TCP)
    txn.respond(response_to(options, 200), T0)
    drain(layer)
    assert layer.get_timer() == T0
    layer.handle_timer(T0)
    assert layer.server == {}


def test_nist_does_not_retransmit_on_its_own() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    txn = new_server(layer, options)
    txn.respond(response_to(options, 200), T0)
    drain(layer)
    assert retransmit_times(run_timers(layer, T0 + 100)) == []


# --- matching (§17.1.3, §17.2.3) --------------------------------------------------------------


def test_server_matching_needs_branch_sent_by_and_method() -> None:
    layer = TransactionLayer()
    a = new_server(layer, request())
    b = new_server(layer, request(sent_by="192.0.2.10:5060"))  # same branch, other sender
    c = new_server(layer, request(branch="z9hG4bKother"))
    assert len({id(a), id(b), id(c)}) == 3
    assert len(layer.server) == 3
    # Implicit and explicit default port are the same sent-by.
    layer.receive_request(request(sent_by="192.0.2.9"), UDP, T0)
    assert drain(layer) == ([], [])


def test_cancel_is_its_own_transaction_and_finds_its_invite() -> None:
    layer = TransactionLayer()
    invite = request()
    ist = new_server(layer, invite)
    cancel = request("CANCEL")
    nist = new_server(layer, cancel)
    assert nist is not ist and not nist.is_invite
    assert layer.find_invite_server(cancel) is ist
    other = request("CANCEL", branch="z9hG4bKnomatch")
    assert layer.find_invite_server(other) is None
    elsewhere = request("CANCEL", sent_by="192.0.2.10:5060")
    assert layer.find_invite_server(elsewhere) is None


def test_rfc2543_fallback_matching_without_magic_cookie() -> None:
    layer = TransactionLayer()
    invite = request(branch=None, cseq=7)
    ist = new_server(layer, invite)
    layer.receive_request(request(branch=None, cseq=7), UDP, T0 + 0.1)
    assert drain(layer) == ([], [])  # same Call-ID, From tag, CSeq, Via: a retransmission
    new_server(layer, request(branch=None, cseq=8))  # new CSeq: new transaction
    new_server(layer, request(branch=None, cseq=7, from_tag="otherparty"))
    new_server(layer, request(branch="1234-not-a-cookie", cseq=7))  # other top Via
    cancel = request("CANCEL", branch=None, cseq=7)
    new_server(layer, cancel)
    assert layer.find_invite_server(cancel) is ist
    # The ACK of a non-2xx matches the INVITE.
    ist.respond(response_to(invite, 486), T0 + 1)
    drain(layer)
    layer.receive_request(request("ACK", branch=None, cseq=7, to_tag="totag", cseq_method="ACK"), UDP, T0 + 2)
    assert drain(layer) == ([], [])
    assert ist.state == State.CONFIRMED


def test_client_matching_by_branch_and_cseq_method() -> None:
    layer = TransactionLayer()
    invite = request(branch="z9hG4bKclient")
    layer.send_request(invite, UDP, T0)
    drain(layer)
    # Same branch, but the response is to a CANCEL we never sent: stray, not the INVITE's.
    cancel_resp = response_to(request("CANCEL", branch="z9hG4bKclient"), 200)
    layer.receive_response(cancel_resp, UDP, T0 + 0.1)
    _, events = drain(layer)
    assert len(events) == 1 and isinstance(events[0], StrayResponse)
    # Another branch: stray as well.
    layer.receive_response(response_to(request(branch="z9hG4bKzzz"), 200), UDP, T0 + 0.1)
    assert [type(e) for e in drain(layer)[1]] == [StrayResponse]
    # The right one.
    layer.receive_response(response_to(invite, 180), UDP, T0 + 0.2)
    _, events = drain(layer)
    assert len(events) == 1 and isinstance(events[0], ResponseReceived)
    assert isinstance(events[0].transaction, ClientTransaction)


def test_client_invite_and_cancel_with_same_branch_are_distinct() -> None:
    layer = TransactionLayer()
    invite = request(branch="z9hG4bKsame")
    ict = layer.send_request(invite, UDP, T0)
    cancel = request("CANCEL", branch="z9hG4bKsame")
    nict = layer.send_request(cancel, UDP, T0 + 1)
    drain(layer)
    layer.receive_response(response_to(cancel, 200), UDP, T0 + 1.1)
    layer.receive_response(response_to(invite, 487), UDP, T0 + 1.2)
    _, events = drain(layer)
    assert [(e.transaction, e.response.status) for e in events if isinstance(e, ResponseReceived)] == [
        (nict, 200),
        (ict, 487),
    ]


def test_response_without_via_or_cseq_is_dropped_silently() -> None:
    layer = TransactionLayer()
    layer.send_request(request(), UDP, T0)
    drain(layer)
    bare = SipResponse(200, "OK", Headers([("CSeq", "1 INVITE")]))
    layer.receive_response(bare, UDP, T0)
    bad_cseq = response_to(request(), 200)
    bad_cseq.headers.set("CSeq", "one INVITE")
    layer.receive_response(bad_cseq, UDP, T0)
    assert drain(layer) == ([], [])


def test_ack_without_transaction_never_creates_one() -> None:
    layer = TransactionLayer()
    ack = request("ACK", to_tag="t", cseq_method="ACK")
    layer.receive_request(ack, UDP, T0)
    _, events = drain(layer)
    assert len(events) == 1 and isinstance(events[0], RequestReceived) and events[0].transaction is None
    assert layer.server == {}
    assert layer.get_timer() is None


# --- heap hygiene -----------------------------------------------------------------------------


def test_timers_of_terminated_transactions_never_fire() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = layer.send_request(invite, UDP, T0)
    layer.receive_response(response_to(invite, 404), TCP, T0 + 0.1)  # A was due at 0.5
    drain(layer)
    layer.handle_timer(T0 + 32.1)  # D
    assert txn.state == State.TERMINATED and layer.client == {}
    drain(layer)
    for t in (33, 64, 128, 1000):
        layer.handle_timer(T0 + t)
    assert drain(layer) == ([], [])
    assert layer.get_timer() is None


def test_get_timer_returns_the_earliest_live_deadline() -> None:
    layer = TransactionLayer()
    invite = request()
    ist = new_server(layer, invite)
    ist.respond(response_to(invite, 486), T0)  # G at +0.5
    layer.send_request(request("OPTIONS", branch="z9hG4bKopt"), UDP, T0 + 0.2)  # E at +0.7
    drain(layer)
    assert layer.get_timer() == T0 + 0.5
    layer.receive_request(request("ACK", to_tag="totag", cseq_method="ACK"), UDP, T0 + 0.3)  # G dead
    assert layer.get_timer() == T0 + 0.7
    nict_only = TransactionLayer()
    assert nict_only.get_timer() is None


def test_no_leak_after_every_kind_of_transaction_completes() -> None:
    layer = TransactionLayer()
    for transport in (UDP, TCP):
        tag = transport.transport
        # Client: INVITE 486, INVITE 200, INVITE timeout, OPTIONS 200, OPTIONS timeout.
        for i, status in enumerate((486, 200, None)):
            inv = request(branch=f"z9hG4bKc{tag}{i}")
            layer.send_request(inv, transport, T0)
            if status is not None:
                layer.receive_response(response_to(inv, status), transport, T0 + 1)
        for i, status in enumerate((200, None)):
            opt = request("OPTIONS", branch=f"z9hG4bKo{tag}{i}")
            layer.send_request(opt, transport, T0)
            if status is not None:
                layer.receive_response(response_to(opt, status), transport, T0 + 1)
        # Server: INVITE 486 + ACK, INVITE 486 no ACK, INVITE 200 + ACK, INVITE 200 no ACK, OPTIONS.
        for i, (status, acked) in enumerate(((486, True), (486, False), (200, True), (200, False))):
            inv = request(branch=f"z9hG4bKs{tag}{i}")
            drain(layer)
            txn = new_server(layer, inv, transport)
            txn.respond(response_to(inv, status), T0)
            if acked and status >= 300:
                ack = request("ACK", branch=f"z9hG4bKs{tag}{i}", to_tag="totag", cseq_method="ACK")
                layer.receive_request(ack, transport, T0 + 1)
            elif acked:
                txn.ack_received(T0 + 1)
        opt = request("OPTIONS", branch=f"z9hG4bKso{tag}")
        drain(layer)
        new_server(layer, opt, transport).respond(response_to(opt, 200), T0)
    drain(layer)
    run_timers(layer, T0 + 1000)
    assert layer.server == {}
    assert layer.client == {}
    assert layer.get_timer() is None
    assert layer._heap == []


# --- any sequence of inputs: no leak, no crash --------------------------------------------------

_OPS = st.lists(
    st.tuples(
        st.sampled_from(["respond", "request-again", "ack", "ack_received", "response"]),
        st.sampled_from([100, 180, 200, 486]),
        st.floats(min_value=0.0, max_value=40.0, allow_nan=False),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(
    is_invite=st.booleans(),
    server_side=st.booleans(),
    reliable=st.booleans(),
    ops=_OPS,
)
def test_any_input_sequence_ends_clean(
    is_invite: bool, server_side: bool, reliable: bool, ops: list[tuple[str, int, float]]
) -> None:
    layer = TransactionLayer()
    dest = TCP if reliable else UDP
    method = "INVITE" if is_invite else "OPTIONS"
    req = request(method)
    if server_side:
        layer.receive_request(req, dest, T0)
        txn: ServerTransaction | ClientTransaction = layer.server[server_key_of(layer)]
    else:
        txn = layer.send_request(req, dest, T0)
    now = T0
    timeouts_seen = 0
    for op, status, dt in ops:
        now += dt
        layer.handle_timer(now)
        if server_side:
            assert isinstance(txn, ServerTransaction)
            if op == "respond":
                txn.respond(response_to(req, status), now)
            elif op == "request-again":
                layer.receive_request(request(method), dest, now)
            elif op == "ack" and is_invite:
                layer.receive_request(request("ACK", to_tag="totag", cseq_method="ACK"), dest, now)
            elif op == "ack_received":
                txn.ack_received(now)
        elif op == "response":
            layer.receive_response(response_to(req, status), dest, now)
        timeouts_seen += sum(isinstance(e, TransactionTimeout) for e in layer.events)
        layer.events.clear()
        layer.outgoing.clear()
    layer.handle_timer(now + 1000)
    timeouts_seen += sum(isinstance(e, TransactionTimeout) for e in layer.events)
    assert timeouts_seen <= 1
    # Only transactions waiting for their TU (never answered) or, for an INVITE client, for the
    # final answer after a 1xx (§17.1.1.2: no timer B there) may remain, and none has a timer.
    for t in [*layer.server.values(), *layer.client.values()]:
        assert t.state in (State.TRYING, State.PROCEEDING)
        if isinstance(t, ClientTransaction):
            assert t.is_invite and t.state == State.PROCEEDING
    if txn.state not in (State.TRYING, State.PROCEEDING):
        assert txn.state == State.TERMINATED
    assert layer.get_timer() is None


def server_key_of(layer: TransactionLayer) -> tuple[str, ...]:
    (key,) = layer.server.keys()
    return key
