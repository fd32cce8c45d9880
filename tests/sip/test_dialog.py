"""Dialogs (RFC 3261 §12): creation on both sides, in-dialog requests, remote CSeq ordering."""

from __future__ import annotations

from callcenter.sip.dialog import Dialog, dialog_key, new_branch, new_call_id, new_tag
from callcenter.sip.message import SipRequest, SipResponse, make_response
from callcenter.sip.parser import parse_message
from callcenter.sip.transaction import MAGIC_COOKIE, Addr
from callcenter.sip.uri import parse_name_addr, parse_via

PEER = Addr("udp", "192.0.2.1", 5060)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP proxy2.example.com;branch=z9hG4bK2\r\n"
    b"Via: SIP/2.0/UDP proxy1.example.com;branch=z9hG4bK1\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK0\r\n"
    b"Record-Route: <sip:proxy2.example.com;lr>\r\n"
    b"Record-Route: <sip:proxy1a.example.com;lr>, <sip:proxy1b.example.com;lr>\r\n"
    b"Max-Forwards: 68\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com;transport=tcp>;expires=60\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def invite() -> SipRequest:
    msg = parse_message(INVITE)
    assert isinstance(msg, SipRequest)
    return msg


def uas_dialog() -> Dialog:
    return Dialog.from_uas(invite(), "bobtag", PEER, "<sip:callcenter@192.0.2.4:5060>")


def test_uas_dialog_from_invite() -> None:
    d = uas_dialog()
    assert d.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert d.local_tag == "bobtag"
    assert d.remote_tag == "1928301774"
    assert d.key == dialog_key(d.call_id, "bobtag", "1928301774")
    # §12.1.1: route set = Record-Route in order, over repeated and comma-joined headers.
    assert d.route_set == [
        "<sip:proxy2.example.com;lr>",
        "<sip:proxy1a.example.com;lr>",
        "<sip:proxy1b.example.com;lr>",
    ]
    assert d.remote_target == "sip:alice@pc33.atlanta.example.com;transport=tcp"
    assert d.remote_cseq == 314159 and d.invite_cseq == 314159
    assert parse_name_addr(d.remote_uri).tag is None
    assert parse_name_addr(d.remote_uri).uri == "sip:alice@atlanta.example.com"
    assert parse_name_addr(d.local_uri).uri == "sip:bob@biloxi.example.com"
    assert d.peer == PEER


def test_uas_in_dialog_bye() -> None:
    d = uas_dialog()
    first = d.local_cseq
    bye = d.create_request("BYE", "192.0.2.4", 5070, "udp")
    assert bye.method == "BYE"
    assert bye.uri == "sip:alice@pc33.atlanta.example.com;transport=tcp"  # remote target
    assert bye.headers.get_all("Route") == d.route_set
    assert bye.call_id == d.call_id
    assert parse_name_addr(bye.headers.get("From") or "").tag == "bobtag"
    assert parse_name_addr(bye.headers.get("From") or "").uri == "sip:bob@biloxi.example.com"
    assert parse_name_addr(bye.headers.get("To") or "").tag == "1928301774"
    assert parse_name_addr(bye.headers.get("To") or "").uri == "sip:alice@atlanta.example.com"
    assert bye.cseq() == (first + 1, "BYE")
    via = parse_via(bye.headers.get("Via") or "")
    assert (via.transport, via.host, via.port) == ("UDP", "192.0.2.4", 5070)
    assert (via.branch or "").startswith(MAGIC_COOKIE)
    assert "rport" in via.params
    assert bye.headers.get("Max-Forwards") == "70"
    # The request re-parses from its own bytes.
    again = parse_message(bye.serialize())
    assert isinstance(again, SipRequest) and again.cseq() == bye.cseq()


def test_local_cseq_increments_and_branches_are_fresh() -> None:
    d = uas_dialog()
    a = d.create_request("INFO", "192.0.2.4", 5060, "udp")
    b = d.create_request("BYE", "192.0.2.4", 5060, "udp")
    assert b.cseq()[0] == a.cseq()[0] + 1
    assert a.headers.get("Via") != b.headers.get("Via")


def test_ack_reuses_the_invite_cseq_and_does_not_consume_one() -> None:
    d = uas_dialog()
    reinvite = d.create_request("INVITE", "192.0.2.4", 5060, "udp", body=b"v=0\r\n")
    assert reinvite.headers.get("Contact") == "<sip:callcenter@192.0.2.4:5060>"  # target refresh
    ack = d.create_request("ACK", "192.0.2.4", 5060, "udp")
    assert ack.cseq() == (reinvite.cseq()[0], "ACK")
    bye = d.create_request("BYE", "192.0.2.4", 5060, "udp")
    assert bye.cseq()[0] == reinvite.cseq()[0] + 1
    assert "Contact" not in bye.headers


def test_ipv6_and_tcp_via() -> None:
    d = uas_dialog()
    req = d.create_request("BYE", "2001:db8::4", 5062, "tcp")
    via = parse_via(req.headers.get("Via") or "")
    assert (via.transport, via.host, via.port) == ("TCP", "[2001:db8::4]", 5062)


def test_extra_headers_and_body() -> None:
    d = uas_dialog()
    req = d.create_request("INFO", "h", 5060, "udp", [("Content-Type", "application/dtmf-relay")], b"x")
    assert req.headers.get("Content-Type") == "application/dtmf-relay"
    assert req.body == b"x"


def uac_pair() -> tuple[SipRequest, SipResponse]:
    req = invite()
    req.headers.remove("Record-Route")
    req.headers.set("Contact", "<sip:alice@pc33.atlanta.example.com>")
    resp = make_response(req, 200, to_tag="bobtag", extra=[("Contact", "<sip:bob@192.0.2.4:5080>")])
    for rr in ("<sip:p2.example.com;lr>, <sip:p1.example.com;lr>", "<sip:p0.example.com;lr>"):
        resp.headers.add("Record-Route", rr)
    return req, resp


def test_uac_dialog_route_set_is_reversed() -> None:
    req, resp = uac_pair()
    d = Dialog.from_uac(req, resp, PEER)
    # §12.1.2: Record-Route of the response, in reverse order.
    assert d.route_set == ["<sip:p0.example.com;lr>", "<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert d.local_tag == "1928301774"
    assert d.remote_tag == "bobtag"
    assert d.remote_target == "sip:bob@192.0.2.4:5080"
    assert d.local_cseq == 314159
    assert d.key == ("a84b4c76e66710@pc33.atlanta.example.com", "1928301774", "bobtag")
    bye = d.create_request("BYE", "192.0.2.1", 5060, "udp")
    assert bye.cseq() == (314160, "BYE")
    assert parse_name_addr(bye.headers.get("From") or "").tag == "1928301774"
    assert parse_name_addr(bye.headers.get("To") or "").tag == "bobtag"
    assert bye.headers.get_all("Route") == d.route_set
    ack = d.create_request("ACK", "192.0.2.1", 5060, "udp")
    assert ack.cseq() == (314159, "ACK")


def test_uac_dialog_without_contact_targets_the_request_uri() -> None:
    req, resp = uac_pair()
    resp.headers.remove("Contact")
    d = Dialog.from_uac(req, resp, PEER)
    assert d.remote_target == "sip:bob@biloxi.example.com"


def test_strict_router_first_hop() -> None:
    # §12.2.1.1: first route without ;lr → it becomes the Request-URI, remote target goes last.
    d = uas_dialog()
    d.route_set = ["<sip:strict.example.com;maddr=192.0.2.77>", "<sip:next.example.com;lr>"]
    req = d.create_request("BYE", "h", 5060, "udp")
    assert req.uri == "sip:strict.example.com;maddr=192.0.2.77"
    assert req.headers.get_all("Route") == [
        "<sip:next.example.com;lr>",
        "<sip:alice@pc33.atlanta.example.com;transport=tcp>",
    ]


def test_remote_without_tag_gets_no_empty_tag() -> None:
    req = invite()
    req.headers.set("From", "<sip:alice@atlanta.example.com>")  # RFC 2543 peer
    d = Dialog.from_uas(req, "bobtag", PEER, "")
    bye = d.create_request("BYE", "h", 5060, "udp")
    assert ";tag=" not in (bye.headers.get("To") or "")


def test_remote_cseq_ordering() -> None:
    d = uas_dialog()  # remote CSeq 314159
    assert not d.accept_remote_cseq(314158, "BYE")  # lower: out of order (500)
    assert not d.accept_remote_cseq(314159, "INFO")  # reused number
    assert d.accept_remote_cseq(314159, "ACK")  # ACK and CANCEL carry the INVITE's number
    assert d.accept_remote_cseq(1, "CANCEL")
    assert d.accept_remote_cseq(314160, "INFO")
    assert d.remote_cseq == 314160
    assert d.accept_remote_cseq(400000, "BYE")  # gaps are fine
    assert not d.accept_remote_cseq(314161, "BYE")


def test_uac_remote_cseq_starts_empty() -> None:
    req, resp = uac_pair()
    d = Dialog.from_uac(req, resp, PEER)
    assert d.accept_remote_cseq(5, "BYE")  # any first number from the peer
    assert not d.accept_remote_cseq(4, "INFO")


def test_identifiers_are_random_and_well_formed() -> None:
    assert new_tag() != new_tag()
    assert new_branch().startswith(MAGIC_COOKIE) and new_branch() != new_branch()
    cid = new_call_id("192.0.2.4")
    assert cid.endswith("@192.0.2.4") and cid != new_call_id("192.0.2.4")
