"""The recorded corpus (RFC 4475 torture messages and real-world shapes) through the parser and the
endpoint's request checks, as each manifest entry says (format: messages/README.md).

- ``parse``: the file frames into its messages and every fact of the manifest holds; re-serialising a
  message and parsing it again gives the same message.
- ``reject``: the parser raises SipParseError; when the manifest wants a 400 the error carries a head
  the endpoint can answer, when it wants silence it does not.
- ``parse_then_400``: either a ParseErrorWithHead the endpoint answers with 400, or a message that
  `SipEndpoint._check_request` refuses with the manifest's code.

Codes that a later layer sends (401 from the registrar, 415/488 from the INVITE handler, 481/501 from
dispatch) are out of `_check_request`'s hands; for those the test asserts that the request gets
*through* the checks, so it can reach that layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote as percent_unquote

import pytest
from corpus import CorpusCase, load_all

from callcenter.sip.auth import parse_auth_params
from callcenter.sip.endpoint import SUPPORTED, EndpointConfig, SipEndpoint
from callcenter.sip.message import Headers, SipMessage, SipParseError, SipRequest, SipResponse
from callcenter.sip.parser import ParseErrorWithHead, StreamFramer, parse_message
from callcenter.sip.transaction import Addr
from callcenter.sip.uri import NameAddr, Via, parse_name_addr, parse_uri, parse_via, unquote

ALL = load_all()
BY_NAME = {case.name: case for case in ALL}
SOURCE = Addr("udp", "192.0.2.99", 5099)

# Codes `_check_request` owns (§8.2.1-§8.2.2 and §16.3 checks before any transaction exists).
CHECK_CODES = frozenset({400, 416, 420, 483, 505})
# Cases whose code is in CHECK_CODES but which RFC 4475 assigns to another element or layer.
LATER_LAYER = {
    "unksm2": "registrar: a To that is no SIP/SIPS AOR gets 400 from REGISTER processing (RFC 4475 §3.3.4)",
    "regbadct": "registrar: the Contact is read when bindings are updated (registration._bind)",
}
# `_check_request` does not give these their code yet (strict xfail: drop the entry once it does).
NEEDS_ENDPOINT_PATCH: dict[str, str] = {}
# Headers a message must carry for the endpoint to send a stateless 400 (endpoint._bad_request).
ANSWERABLE = ("Via", "From", "To", "Call-ID", "CSeq")


def _cases(expect: str, kind: str | None = None, checked: bool = False) -> list[Any]:
    """Cases to parametrise over; `checked`: the test asserts `_check_request`'s answer."""
    out: list[Any] = []
    for case in ALL:
        if case.expect != expect or (kind is not None and case.kind != kind):
            continue
        if checked and case.name in NEEDS_ENDPOINT_PATCH:
            reason = NEEDS_ENDPOINT_PATCH[case.name]
            out.append(pytest.param(case, id=case.name, marks=pytest.mark.xfail(reason=reason, strict=True)))
        else:
            out.append(pytest.param(case, id=case.name))
    return out


def _frame(case: CorpusCase) -> list[SipMessage]:
    """The messages of a file, as its transport would frame them."""
    if case.transport == "tcp":
        framer = StreamFramer()
        messages = framer.feed(case.raw)
        assert framer.pings == case.expectations.get("leading_crlf_bytes", 0) // 4
        return messages
    return [parse_message(case.raw)]


def _codes(case: CorpusCase) -> set[int]:
    codes = set(case.expectations.get("alt_codes") or [])
    if case.code is not None:
        codes.add(case.code)
    return codes


def _check(message: SipRequest) -> int | None:
    """The status `_check_request` refuses the request with, or None when it lets it through."""
    endpoint = SipEndpoint(EndpointConfig())  # never started: no sockets
    refused = endpoint._check_request(message, SOURCE)
    return None if refused is None else refused[0]


# --- facts ------------------------------------------------------------------------------------------


def _values(m: SipMessage, name: str) -> list[str]:
    """Every value of a header as received, one per header line (no comma splitting)."""
    key = name.lower()
    return [v for n, v in m.headers if n.lower() == key]


def _vias(m: SipMessage) -> list[Via]:
    return [parse_via(v) for v in m.headers.get_all("Via")]


def _addr(m: SipMessage, name: str) -> NameAddr:
    return parse_name_addr(m.headers.get(name) or "")


def _contacts(m: SipMessage) -> list[NameAddr]:
    return [parse_name_addr(v) for v in m.headers.get_all("Contact")]


def _display(a: NameAddr) -> str | None:
    return None if a.display is None else unquote(a.display)


def _rport(via: Via) -> bool | int:
    if "rport" not in via.params:
        return False
    value = via.params["rport"]
    return True if value is None else int(value)


def _sent_by(via: Via) -> str:
    return via.host if via.port is None else f"{via.host}:{via.port}"


def _declared_length(m: SipMessage) -> Any:
    parsed: list[Any] = [int(v) if v.isdigit() else v for v in _values(m, "Content-Length")]
    return None if not parsed else parsed[0] if len(parsed) == 1 else parsed


def _expires(a: NameAddr) -> int:
    return int(a.params["expires"] or "")


def _user(uri: str) -> str:
    return percent_unquote(parse_uri(uri).user or "")


def _sdp(m: SipMessage, expected: dict[str, Any]) -> dict[str, Any]:
    lines = m.body.decode().splitlines()
    media = next(line for line in lines if line.startswith("m=audio "))
    found: dict[str, Any] = {
        "connection": next(line[2:] for line in lines if line.startswith("c=")),
        "audio_port": int(media.split()[1]),
        "payload_types": [int(pt) for pt in media.split()[3:]],
    }
    for line in lines:
        if line.startswith("a=rtpmap:") and line.endswith(" telephone-event/8000"):
            found["telephone_event_pt"] = int(line[9:].split()[0])
        elif line.startswith("a=ptime:"):
            found["ptime"] = int(line[8:])
    return {key: found.get(key) for key in expected}


def _dtmf(m: SipMessage, key: str) -> str:
    fields = dict(line.split("=", 1) for line in m.body.decode().split() if "=" in line)
    return fields[key]


def _digest(m: SipMessage, expected: dict[str, Any]) -> dict[str, Any]:
    scheme, params = parse_auth_params(m.headers.get("Authorization") or "")
    assert scheme.lower() == "digest"
    # password and method are inputs for recomputing the response (test_auth.py does that).
    return {k: params.get(k) if k not in ("password", "method") else v for k, v in expected.items()}


def _challenges(m: SipMessage) -> list[dict[str, str]]:
    return [parse_auth_params(v)[1] for v in _values(m, "WWW-Authenticate")]


def _cancels(m: SipMessage, name: str) -> bool:
    """§9.1: a CANCEL matches its INVITE on Request-URI, Call-ID, From, To, CSeq number and top Via."""
    assert isinstance(m, SipRequest)
    invite = _frame(BY_NAME[name])[0]
    assert isinstance(invite, SipRequest) and invite.method == "INVITE"
    same = [m.uri == invite.uri, m.cseq()[0] == invite.cseq()[0]]
    same += [m.headers.get(h) == invite.headers.get(h) for h in ("Call-ID", "From", "To")]
    same.append(m.headers.get_all("Via")[0] == invite.headers.get_all("Via")[0])
    return all(same)


FactFn = Callable[[SipMessage, Any], Any]
FACTS: dict[str, FactFn] = {
    "method": lambda m, _: m.method if isinstance(m, SipRequest) else None,
    "request_uri": lambda m, _: m.uri if isinstance(m, SipRequest) else None,
    "version": lambda m, _: m.version,
    "status": lambda m, _: m.status if isinstance(m, SipResponse) else None,
    "reason": lambda m, _: m.reason if isinstance(m, SipResponse) else None,
    "call_id": lambda m, _: m.headers.get("Call-ID"),
    "call_ids": lambda m, _: _values(m, "Call-ID"),
    "cseq_seq": lambda m, _: m.cseq()[0],
    "cseq_method": lambda m, _: m.cseq()[1],
    "cseq_values": lambda m, _: _values(m, "CSeq"),
    "max_forwards": lambda m, _: (
        None if "Max-Forwards" not in m.headers else int(m.headers.get("Max-Forwards") or "")
    ),
    "max_forwards_values": lambda m, _: _values(m, "Max-Forwards"),
    "via_count": lambda m, _: len(m.headers.get_all("Via")),
    "via_branches": lambda m, _: [v.branch for v in _vias(m)],
    "via_transports": lambda m, _: [v.transport for v in _vias(m)],
    "via_rport": lambda m, _: _rport(_vias(m)[0]),
    "via_received": lambda m, _: _vias(m)[0].params.get("received"),
    "via_sent_by": lambda m, _: _sent_by(_vias(m)[0]),
    "top_via_host": lambda m, _: _vias(m)[0].host,
    "second_via_host": lambda m, _: _vias(m)[1].host,
    "second_via_received": lambda m, _: _vias(m)[1].params.get("received"),
    "bottom_via_received": lambda m, _: _vias(m)[-1].params.get("received"),
    "from_tag": lambda m, _: _addr(m, "From").tag,
    "to_tag": lambda m, _: _addr(m, "To").tag,
    "from_display": lambda m, _: _display(_addr(m, "From")),
    "to_display": lambda m, _: _display(_addr(m, "To")),
    # Parameter names are case-insensitive (§7.3.1): the parsed form keeps them lower-cased.
    "from_params": lambda m, exp: {k: _addr(m, "From").params.get(k.lower()) for k in exp},
    "to_uri_port": lambda m, _: parse_uri(_addr(m, "To").uri).port,
    "to_uri_user_unescaped": lambda m, _: _user(_addr(m, "To").uri),
    "from_uri_user_unescaped": lambda m, _: _user(_addr(m, "From").uri),
    "request_uri_user_unescaped": lambda m, _: _user(m.uri) if isinstance(m, SipRequest) else None,
    "contact_count": lambda m, _: len(m.headers.get_all("Contact")),
    "contacts": lambda m, _: m.headers.get_all("Contact"),
    "contact_display": lambda m, _: _display(_contacts(m)[0]),
    "contact_uri": lambda m, _: _contacts(m)[0].uri,
    "contact_uris": lambda m, _: [c.uri for c in _contacts(m)],
    "contact_params": lambda m, _: list(_contacts(m)[0].params),
    "contact_expires": lambda m, exp: (
        [_expires(c) for c in _contacts(m)] if isinstance(exp, list) else _expires(_contacts(m)[0])
    ),
    "contact_instance": lambda m, _: unquote(_contacts(m)[0].params.get("+sip.instance") or ""),
    "expires": lambda m, _: int(m.headers.get("Expires") or ""),
    "routes": lambda m, _: m.headers.get_all("Route"),
    "record_routes": lambda m, _: m.headers.get_all("Record-Route"),
    "record_route_count": lambda m, _: len(m.headers.get_all("Record-Route")),
    "accept_count": lambda m, _: len(m.headers.get_all("Accept")),
    "accept_header_count": lambda m, _: m.headers.count("Accept"),
    "unsupported_as_uas": lambda m, _: [
        tag for tag in m.headers.get_all("Require") if tag.lower() not in SUPPORTED.lower().split(", ")
    ],
    "www_authenticate_count": lambda m, _: m.headers.count("WWW-Authenticate"),
    "www_authenticate_algorithms": lambda m, _: [c.get("algorithm") for c in _challenges(m)],
    "www_authenticate_nonce": lambda m, _: _challenges(m)[0].get("nonce"),
    "digest": _digest,
    "content_length": lambda m, _: _declared_length(m),
    "body_length": lambda m, _: len(m.body),
    "body_nul_octets": lambda m, _: m.body.count(0),
    "headers": lambda m, exp: {name: m.headers.get(name) for name in exp},
    "sdp": _sdp,
    "dtmf_signal": lambda m, _: _dtmf(m, "Signal"),
    "dtmf_duration_ms": lambda m, _: int(_dtmf(m, "Duration")),
    "cancels": lambda m, name: name if _cancels(m, name) else f"not a CANCEL of {name}",
}
# Facts about the file rather than the message.
FILE_FACTS = {"datagram_trailing_bytes"}


def _assert_facts(message: SipMessage, facts: dict[str, Any], skip: frozenset[str] = frozenset()) -> None:
    unknown = set(facts) - set(FACTS) - FILE_FACTS
    assert not unknown, f"manifest facts this test does not know how to check: {sorted(unknown)}"
    for key, expected in facts.items():
        if key in skip or key in FILE_FACTS:
            continue
        assert FACTS[key](message, expected) == expected, key


# --- parse --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _cases("parse"))
def test_parse_cases_frame_and_their_facts_hold(case: CorpusCase) -> None:
    messages = _frame(case)
    assert len(messages) == case.message_count
    for message, facts in zip(messages, case.all_facts, strict=True):
        assert isinstance(message, SipRequest if case.kind == "request" else SipResponse)
        _assert_facts(message, facts)
    if "datagram_trailing_bytes" in case.facts:
        # §18.3: octets past Content-Length in a datagram are discarded, not taken as a body.
        trailing = len(case.raw.split(b"\r\n\r\n", 1)[1]) - len(messages[0].body)
        assert trailing == case.facts["datagram_trailing_bytes"]


@pytest.mark.parametrize("case", [c for c in ALL if c.transport == "tcp"], ids=str)
def test_stream_reads_give_the_same_messages_byte_by_byte(case: CorpusCase) -> None:
    framer = StreamFramer()
    messages = [m for i in range(len(case.raw)) for m in framer.feed(case.raw[i : i + 1])]
    assert [m.serialize() for m in messages] == [m.serialize() for m in _frame(case)]
    assert framer.pings == case.expectations.get("leading_crlf_bytes", 0) // 4


def _normalised(headers: Headers, body: bytes) -> list[tuple[str, str]]:
    """The header list `serialize()` writes: one true Content-Length, at the first one's place."""
    items = [(n, v) for n, v in headers if n != "Content-Length"]
    names = [n for n, _ in headers]
    at = names.index("Content-Length") if "Content-Length" in names else len(names)
    at -= sum(1 for n in names[:at] if n == "Content-Length")
    items.insert(at, ("Content-Length", str(len(body))))
    return items


@pytest.mark.parametrize("case", _cases("parse"))
def test_parse_cases_survive_reserialisation(case: CorpusCase) -> None:
    for message in _frame(case):
        again = parse_message(message.serialize())
        assert again.start_line() == message.start_line()
        assert list(again.headers) == _normalised(message.headers, message.body)
        assert again.body == message.body
        assert again.serialize() == message.serialize()


# --- reject -------------------------------------------------------------------------------------


def _assert_answerable(exc: ParseErrorWithHead) -> None:
    assert exc.method is not None and exc.method != "ACK"
    assert all(exc.headers.get(name) for name in ANSWERABLE), "head too broken to answer"


@pytest.mark.parametrize("case", _cases("reject"))
def test_reject_cases_raise_the_parse_error(case: CorpusCase) -> None:
    try:
        message = _frame(case)[0]
    except ParseErrorWithHead as exc:
        if case.code is None:
            assert exc.method is None, "the endpoint would answer what the RFC says to drop"
        else:
            assert case.code == 400  # what the endpoint sends for a readable head
            _assert_answerable(exc)
        pseudo = SipRequest(exc.method or "X", "sip:invalid", exc.headers)
        _assert_facts(pseudo, case.facts, skip=frozenset({"status", "method", "body_length"}))
        return
    except SipParseError:
        assert case.code is None, "a head the endpoint cannot read gets no answer"
        return
    # RFC 4475 §3.1.2.5 (scalarlg): a lazy parser may frame a response whose broken header is only
    # read later, as long as that header never parses: the transaction layer then drops it (§18.1.2).
    assert case.expectations.get("fault") == "header" and case.kind == "response", "parsed a reject case"
    for name in case.expectations["fault_headers"]:
        assert name == "CSeq"
        with pytest.raises(SipParseError):
            message.cseq()


# --- parse_then_400 -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", _cases("parse_then_400", checked=True))
def test_parse_then_400_cases_get_their_code(case: CorpusCase) -> None:
    assert case.kind == "request"
    try:
        message = _frame(case)[0]
    except ParseErrorWithHead as exc:
        assert 400 in _codes(case)
        _assert_answerable(exc)
        pseudo = SipRequest(exc.method or "", "sip:invalid", exc.headers)
        _assert_facts(pseudo, case.facts, skip=frozenset({"request_uri", "body_length"}))
        return
    assert isinstance(message, SipRequest)
    _assert_facts(message, case.facts)
    if case.name in LATER_LAYER:
        # The checks let it through; the layer that reads the broken header refuses it.
        assert _check(message) is None
        for name in case.expectations["fault_headers"]:
            for value in message.headers.get_all(name):
                with pytest.raises(SipParseError):
                    parse_name_addr(value)
        return
    assert _check(message) in _codes(case)


# --- the endpoint's checks on well-formed requests ----------------------------------------------


@pytest.mark.parametrize("case", _cases("parse", kind="request", checked=True))
def test_check_request_answers_what_the_rfc_wants(case: CorpusCase) -> None:
    for message in _frame(case):
        assert isinstance(message, SipRequest)
        status = _check(message)
        if case.code in CHECK_CODES and case.name not in LATER_LAYER:
            assert status in _codes(case)
        else:
            # A valid request must reach the layer that answers it (or be processed normally).
            assert status is None or status in _codes(case), f"refused with {status}"
