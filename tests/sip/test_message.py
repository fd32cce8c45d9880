"""SIP message model (§7): headers, list splitting, serialisation, responses (§8.2.6)."""

from __future__ import annotations

import pytest

from callcenter.sip.message import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    canonical_name,
    make_response,
    split_list,
)
from callcenter.sip.parser import parse_message
from callcenter.sip.uri import parse_name_addr

# --- Headers ----------------------------------------------------------------------------------


def test_order_of_interleaved_headers_is_kept() -> None:
    h = Headers([("Via", "v1"), ("To", "t"), ("Via", "v2"), ("X-A", "1"), ("Via", "v3")])
    assert [n for n, _ in h] == ["Via", "To", "Via", "X-A", "Via"]
    assert h.get("via") == "v1"
    assert h.get_all("VIA") == ["v1", "v2", "v3"]
    assert h.count("Via") == 3
    assert len(h) == 5


@pytest.mark.parametrize(
    ("short", "long"),
    [
        ("i", "Call-ID"),
        ("m", "Contact"),
        ("e", "Content-Encoding"),
        ("l", "Content-Length"),
        ("c", "Content-Type"),
        ("f", "From"),
        ("s", "Subject"),
        ("k", "Supported"),
        ("t", "To"),
        ("v", "Via"),
        ("o", "Event"),
        ("r", "Refer-To"),
        ("b", "Referred-By"),
        ("u", "Allow-Events"),
        ("x", "Session-Expires"),
    ],
)
def test_compact_forms_expand_and_match_long_names(short: str, long: str) -> None:
    assert canonical_name(short) == long
    assert canonical_name(short.upper()) == long
    h = Headers([(short, "value")])
    assert list(h) == [(long, "value")]
    assert h.get(long.lower()) == "value"
    assert h.get(short) == "value"
    assert short in h and long.upper() in h


def test_canonical_spelling_and_unknown_names() -> None:
    assert canonical_name("call-id") == "Call-ID"
    assert canonical_name("CSEQ") == "CSeq"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("X-Custom-Thing") == "X-Custom-Thing"
    h = Headers([("x-custom", "1")])
    assert h.get("X-CUSTOM") == "1"


def test_compact_and_long_forms_mix_in_one_message() -> None:
    h = Headers([("v", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("Via", "SIP/2.0/UDP b;branch=z9hG4bK2")])
    assert h.get_all("v") == ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b;branch=z9hG4bK2"]


def test_set_replaces_at_the_first_position_and_drops_the_rest() -> None:
    h = Headers([("X-A", "1"), ("Contact", "c1"), ("X-B", "2"), ("m", "c2"), ("X-C", "3")])
    h.set("contact", "new")
    assert list(h) == [("X-A", "1"), ("Contact", "new"), ("X-B", "2"), ("X-C", "3")]
    h.set("Absent", "x")
    assert list(h)[-1] == ("Absent", "x")


def test_add_prepend_remove_copy() -> None:
    h = Headers([("Via", "v2")])
    h.prepend("v", "v1")
    h.add("Via", "v3")
    assert h.get_all("Via") == ["v1", "v2", "v3"]
    c = h.copy()
    c.remove("VIA")
    assert "Via" not in c and len(c) == 0
    assert h.count("Via") == 3  # the copy is independent
    assert h.get("Missing") is None and h.get("Missing", "d") == "d"
    assert h.get_all("Missing") == []


def test_empty_value_is_present() -> None:
    h = Headers([("Subject", "")])
    assert "Subject" in h and h.get("s") == ""


# --- list splitting ---------------------------------------------------------------------------


def test_split_list_respects_quotes_and_angle_brackets() -> None:
    value = '"Doe, John" <sip:jd@example.com;x=a,b>;q=0.5, <sip:other@example.com>, sip:third@x'
    assert split_list(value) == [
        '"Doe, John" <sip:jd@example.com;x=a,b>;q=0.5',
        "<sip:other@example.com>",
        "sip:third@x",
    ]


def test_split_list_with_escaped_quote_and_empty_items() -> None:
    assert split_list('"a \\", b" <sip:a@b>, , c,') == ['"a \\", b" <sip:a@b>', "c"]
    assert split_list("  ") == []
    assert split_list("single") == ["single"]


def test_list_headers_split_but_others_do_not() -> None:
    h = Headers(
        [
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"),
            ("Via", "SIP/2.0/UDP c;branch=z9hG4bK3"),
            ("Allow", "INVITE,ACK , BYE"),
            ("Route", "<sip:p1;lr>, <sip:p2;lr>"),
            ("WWW-Authenticate", 'Digest realm="a, b", nonce="n", qop="auth,auth-int"'),
            ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
            ("Subject", "Hello, world"),
        ]
    )
    assert h.get_all("Via") == [
        "SIP/2.0/UDP a;branch=z9hG4bK1",
        "SIP/2.0/UDP b;branch=z9hG4bK2",
        "SIP/2.0/UDP c;branch=z9hG4bK3",
    ]
    assert h.get_all("Allow") == ["INVITE", "ACK", "BYE"]
    assert h.get_all("Route") == ["<sip:p1;lr>", "<sip:p2;lr>"]
    assert h.get_all("WWW-Authenticate") == ['Digest realm="a, b", nonce="n", qop="auth,auth-int"']
    assert h.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert h.get_all("Subject") == ["Hello, world"]


# --- CSeq -------------------------------------------------------------------------------------


def test_cseq() -> None:
    req = SipRequest("INVITE", "sip:a@b", Headers([("CSeq", "  0009   INVITE ")]))
    assert req.cseq() == (9, "INVITE")
    req.headers.set("CSeq", f"{2**31 - 1} BYE")
    assert req.cseq() == (2**31 - 1, "BYE")


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "1",
        "INVITE",
        "one INVITE",
        "-1 INVITE",
        "1 INVITE extra",
        f"{2**31} INVITE",
        "12345678901 X",
        "\u00b2 INVITE",
        "\u0665 INVITE",
    ],
)
def test_bad_cseq_raises_parse_error(value: str | None) -> None:
    h = Headers() if value is None else Headers([("CSeq", value)])
    with pytest.raises(SipParseError):
        SipRequest("INVITE", "sip:a@b", h).cseq()


# --- serialisation ----------------------------------------------------------------------------


def test_serialize_sets_a_single_true_content_length() -> None:
    h = Headers([("Via", "v"), ("Content-Length", "999"), ("To", "t"), ("l", "5")])
    msg = SipRequest("MESSAGE", "sip:a@b", h, b"hello, world")
    data = msg.serialize()
    head, _, body = data.partition(b"\r\n\r\n")
    assert body == b"hello, world"
    assert head.split(b"\r\n") == [b"MESSAGE sip:a@b SIP/2.0", b"Via: v", b"Content-Length: 12", b"To: t"]
    assert bytes(msg) == data


def test_serialize_adds_content_length_when_missing() -> None:
    resp = SipResponse(200, "OK", Headers([("Call-ID", "x")]))
    assert resp.serialize() == b"SIP/2.0 200 OK\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n"


def test_serialized_message_parses_back_equal() -> None:
    h = Headers(
        [("v", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("i", "abc"), ("CSeq", "1 OPTIONS"), ("X-Uni", "välue")]
    )
    req = SipRequest("OPTIONS", "sip:a@b", h, b"\x00\xffbody")
    again = parse_message(req.serialize())
    assert isinstance(again, SipRequest)
    assert (again.method, again.uri, again.body) == ("OPTIONS", "sip:a@b", b"\x00\xffbody")
    assert [(n, v) for n, v in again.headers if n != "Content-Length"] == list(req.headers)


# --- make_response ----------------------------------------------------------------------------

REQUEST = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK2;received=192.0.2.3\r\n"
    b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1, SIP/2.0/UDP pc0.example.com;branch=z9hG4bK0\r\n"
    b"Max-Forwards: 69\r\n"
    b"Record-Route: <sip:proxy.example.com;lr>\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.example.com>\r\n"
    b"Timestamp: 54\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n\r\n"
    b"v=0\n"
)


def request() -> SipRequest:
    msg = parse_message(REQUEST)
    assert isinstance(msg, SipRequest)
    return msg


def test_make_response_copies_the_identifying_headers() -> None:
    req = request()
    resp = make_response(req, 486, to_tag="bobtag", extra=[("Retry-After", "60")])
    assert (resp.status, resp.reason) == (486, "Busy Here")
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")  # all of them, in order
    assert resp.headers.get("From") == req.headers.get("From")
    assert resp.headers.get("Call-ID") == "a84b4c76e66710"
    assert resp.headers.get("CSeq") == "314159 INVITE"
    assert resp.headers.get("To") == "Bob <sip:bob@biloxi.example.com>;tag=bobtag"
    assert resp.headers.get("Retry-After") == "60"
    for absent in ("Max-Forwards", "Contact", "Record-Route", "Content-Type", "Timestamp"):
        assert absent not in resp.headers
    assert resp.body == b""


def test_make_response_adds_a_to_tag_except_on_100() -> None:
    req = request()
    trying = make_response(req, 100, to_tag="bobtag")
    assert trying.headers.get("To") == "Bob <sip:bob@biloxi.example.com>"
    assert trying.headers.get("Timestamp") == "54"  # §8.2.6.1
    # §8.2.6.2: a UAS MUST add a To tag to every other response, also without a dialog in mind.
    for status in (180, 200, 400, 481, 501):
        tag = parse_name_addr(make_response(req, status).headers.get("To") or "").tag
        assert tag, status
    assert make_response(req, 200).headers.get("To") != make_response(req, 200).headers.get("To")


def test_make_response_keeps_an_existing_to_tag() -> None:
    req = request()
    req.headers.set("To", "Bob <sip:bob@biloxi.example.com> ; tag = existing")
    resp = make_response(req, 200, to_tag="other")
    assert resp.headers.get("To") == "Bob <sip:bob@biloxi.example.com> ; tag = existing"


@pytest.mark.parametrize(
    "to",
    [
        '"Bob;tag=x" <sip:bob@biloxi.example.com>',  # in the display name
        "<sip:bob@biloxi.example.com;tag=x>",  # a URI parameter, not the header's tag
    ],
)
def test_a_tag_lookalike_is_not_a_tag(to: str) -> None:
    req = request()
    req.headers.set("To", to)
    resp = make_response(req, 200, to_tag="bobtag")
    assert parse_name_addr(resp.headers.get("To") or "").tag == "bobtag"


def test_make_response_reason_and_body() -> None:
    req = request()
    assert make_response(req, 499).reason == "Unknown"
    assert make_response(req, 400, "Missing Call-ID").reason == "Missing Call-ID"
    resp = make_response(req, 200, body=b"v=0\r\n")
    assert resp.body == b"v=0\r\n"
    assert b"Content-Length: 5\r\n" in resp.serialize()


def test_response_start_line_round_trip() -> None:
    resp = make_response(request(), 183, "Session Progress")
    again = parse_message(resp.serialize())
    assert isinstance(again, SipResponse)
    assert (again.status, again.reason) == (183, "Session Progress")
