"""The SIP parser on bytes: datagrams (`parse_message`) and streams (`StreamFramer`).

Properties (hypothesis): any bytes give a message or SipParseError; generated valid messages survive
serialise → parse, also when written the way sloppy or compact peers write them; a stream of messages
gives the same messages however it is chunked. Examples pin the framing rules of RFC 3261 §7 and §18.3.
"""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callcenter.sip.message import (
    _CANONICAL,
    COMPACT_FORMS,
    Headers,
    SipMessage,
    SipParseError,
    SipRequest,
    SipResponse,
    canonical_name,
)
from callcenter.sip.parser import MAX_MESSAGE_BYTES, ParseErrorWithHead, StreamFramer, parse_message

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Byte-by-byte feeding costs a call per byte: fewer, still varied, examples.
STREAM_PROPERTY = settings(PROPERTY, max_examples=120)

# --- strategies -----------------------------------------------------------------------------------

TOKEN_CHARS = string.ascii_letters + string.digits + "-.!%*_+`'~"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
methods = st.one_of(
    st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "MESSAGE"]), tokens
)
hosts = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,8}[a-z0-9])?(\.[a-z]{2,6}){0,2}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
USER_CHARS = string.ascii_letters + string.digits + "-_.!~*'()&=+$,;?/"
uri_params = st.lists(st.sampled_from([";lr", ";transport=tcp", ";user=phone", ";x", ";ob"]), max_size=3)


@st.composite
def uris(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["sip", "sips", "tel", "urn"]))
    if scheme in ("tel", "urn"):
        return f"{scheme}:{draw(st.text(string.digits + '+-', min_size=1, max_size=12))}"
    user = draw(st.one_of(st.none(), st.text(USER_CHARS, min_size=1, max_size=10)))
    port = draw(st.one_of(st.none(), st.integers(1, 65535)))
    out = f"{scheme}:{'' if user is None else user + '@'}{draw(hosts)}"
    return out + ("" if port is None else f":{port}") + "".join(draw(uri_params))


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Visible characters of any script (no separators, no controls): a "word" inside a header value.
visible = st.characters(categories=["L", "N", "P", "S"])
quoted_content = st.text(st.one_of(visible, st.sampled_from(' \t"\\')), max_size=12).map(
    lambda s: re.sub(r"[ \t]{2,}", " ", s)
)
words = st.one_of(
    tokens,
    uris().map(lambda u: f"<{u}>"),
    quoted_content.map(_quote),
    st.text(visible, min_size=1, max_size=8),
    st.sampled_from([";", ",", "=", ";tag=1928301774", ";branch=z9hG4bK776", ";rport", ";q=0.7", "/"]),
)
# Header values as the parser keeps them: no CR/LF, no leading/trailing whitespace, words one SP apart.
values = st.lists(words, max_size=6).map(" ".join)
EXTENSION_NAMES = ["X-Custom", "P-Preferred-Identity", "NewFangledHeader", "x-lower"]
header_names = st.one_of(
    st.sampled_from(sorted(set(_CANONICAL.values()) - {"Content-Length"})),
    st.sampled_from(sorted(set(COMPACT_FORMS) - {"l"})),
    st.sampled_from(EXTENSION_NAMES),
    tokens.filter(lambda t: canonical_name(t) != "Content-Length"),
)
header_lists = st.lists(st.tuples(header_names, values), max_size=12)
bodies = st.one_of(st.just(b""), st.binary(max_size=200), st.text(max_size=80).map(str.encode))
reasons = st.text(st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=20)


@st.composite
def messages(draw: st.DrawFn) -> SipMessage:
    headers = Headers(draw(header_lists))
    body = draw(bodies)
    if draw(st.booleans()):
        version = draw(st.sampled_from(["SIP/2.0", "SIP/2.0", "SIP/3.1"]))
        return SipRequest(draw(methods), draw(uris()), headers, body, version)
    return SipResponse(draw(st.integers(100, 699)), draw(reasons), headers, body)


def _expected(message: SipMessage) -> list[tuple[str, str]]:
    """The header list a parse of `message.serialize()` gives: Content-Length appended when absent."""
    items = list(message.headers)
    if "Content-Length" not in message.headers:
        items.append(("Content-Length", str(len(message.body))))
    return items


def _same(parsed: SipMessage, message: SipMessage) -> None:
    assert type(parsed) is type(message)
    assert parsed.start_line() == message.start_line()
    assert list(parsed.headers) == _expected(message)
    assert parsed.body == message.body


def _case_variant(name: str, flips: list[bool]) -> str:
    return "".join(
        c.swapcase() if flip else c for c, flip in zip(name, flips + [False] * len(name), strict=False)
    )


@st.composite
def sloppy_wire(draw: st.DrawFn, eol: str | None = None) -> tuple[bytes, SipMessage]:
    """`message` written the way real peers write it: compact or odd-case names, LWS around the
    colon, folded values, bare LF line ends, Content-Length anywhere (or its compact form)."""
    message = draw(messages())
    line_end = eol if eol is not None else draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
    items = list(message.headers)
    at = draw(st.integers(0, len(items)))
    items.insert(at, ("Content-Length", str(len(message.body))))
    long_to_compact = {long: short for short, long in COMPACT_FORMS.items()}
    lines = [message.start_line()]
    for name, value in items:
        if name in long_to_compact and draw(st.booleans()):
            wire_name = long_to_compact[name]
        elif name in _CANONICAL.values() or name in _CANONICAL:
            wire_name = _case_variant(name, draw(st.lists(st.booleans(), max_size=len(name))))
        else:
            wire_name = name  # an extension header keeps its spelling
        colon = draw(st.sampled_from([":", ": ", " : ", ":\t", "\t:   "]))
        # Fold at single spaces between non-blank characters: unfolding gives that one SP back.
        spots = [i for i in range(1, len(value) - 1) if value[i] == " " and value[i - 1] not in " \t"]
        spots = [i for i in spots if value[i + 1] not in " \t"]
        folds = sorted(draw(st.sets(st.sampled_from(spots), max_size=3))) if spots else []
        pieces, last = [], 0
        for i in folds:
            pieces.append(value[last:i])
            last = i + 1
        pieces.append(value[last:])
        indent = line_end + draw(st.sampled_from([" ", "\t", "   "]))
        lines.append(f"{wire_name}{colon}{indent.join(pieces)}")
    head = line_end.join(lines) + line_end + line_end
    prefix = draw(st.sampled_from(["", "", "\r\n", "\r\n\r\n"]))  # §7.5: CRLFs before the start line
    return (prefix + head).encode("utf-8", "surrogateescape") + message.body, message


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid message with a few bytes inserted, deleted or replaced: near-misses find more bugs
    than uniform noise."""
    data = bytearray(draw(sloppy_wire())[0])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        chunk = draw(
            st.sampled_from(
                [b"\r\n", b"\n", b":", b" ", b"\x00", b"\xff", b"\r\n\r\n", b"9", b"\t", "\u00b2".encode()]
            )
        )
        if op == "insert":
            data[at:at] = chunk
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            data[at : at + len(chunk)] = chunk
    return bytes(data)


any_bytes = st.one_of(st.binary(max_size=600), mutated())


def _normalised(message: SipMessage) -> list[tuple[str, str]]:
    """What `serialize()` does to the header list: one true Content-Length, where the first was."""
    items: list[tuple[str, str]] = []
    seen = False
    for name, value in message.headers:
        if name == "Content-Length":
            if seen:
                continue
            value, seen = str(len(message.body)), True
        items.append((name, value))
    if not seen:
        items.append(("Content-Length", str(len(message.body))))
    return items


def _drain(framer: StreamFramer, chunks: list[bytes]) -> tuple[list[bytes], str | None]:
    """Feed chunks; (serialised messages, class name of the error that ended the stream or None)."""
    out: list[bytes] = []
    for chunk in chunks:
        while True:
            try:
                out += [m.serialize() for m in framer.feed(chunk)]
            except ParseErrorWithHead as exc:
                out += [m.serialize() for m in exc.parsed_before]
                if not exc.framing_ok:
                    return out, type(exc).__name__
                chunk = b""
                continue
            except SipParseError as exc:
                return out, type(exc).__name__
            break
    # A framer that failed keeps failing; one that did not has nothing pending to report.
    try:
        out += [m.serialize() for m in framer.feed(b"")]
    except SipParseError as exc:
        return out, type(exc).__name__
    return out, None


def _chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    out, pos, i = [], 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)] if sizes else len(data)
        out.append(data[pos : pos + size])
        pos += size
        i += 1
    return out


# --- properties -----------------------------------------------------------------------------------


@PROPERTY
@given(any_bytes)
def test_any_bytes_give_a_message_or_a_parse_error(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipParseError:
        return
    assert isinstance(message, SipRequest | SipResponse)
    # What parsed once re-serialises to the same message (a proxy or log never changes a message).
    again = parse_message(message.serialize())
    assert again.start_line() == message.start_line()
    assert list(again.headers) == _normalised(message)
    assert again.body == message.body


@PROPERTY
@given(any_bytes, st.lists(st.integers(1, 64), max_size=6))
def test_any_stream_gives_messages_or_a_parse_error(data: bytes, sizes: list[int]) -> None:
    # _drain lets only SipParseError through: anything else fails the test.
    whole = _drain(StreamFramer(), [data])
    assert _drain(StreamFramer(), _chunks(data, sizes)) == whole


@PROPERTY
@given(messages())
def test_generated_messages_round_trip(message: SipMessage) -> None:
    _same(parse_message(message.serialize()), message)
    framer = StreamFramer()
    (parsed,) = framer.feed(message.serialize())
    _same(parsed, message)


@PROPERTY
@given(sloppy_wire())
def test_sloppy_spellings_parse_to_the_canonical_message(wire_and_message: tuple[bytes, SipMessage]) -> None:
    wire, message = wire_and_message
    parsed = parse_message(wire)
    assert parsed.start_line() == message.start_line()
    # Compact forms and odd case become the canonical names; folded values come back unfolded.
    assert [(n, v) for n, v in parsed.headers if n != "Content-Length"] == list(message.headers)
    assert parsed.headers.get("Content-Length") == str(len(message.body))
    assert parsed.body == message.body


keepalives = st.sampled_from(["", "", "\r\n\r\n", "\r\n", "\r\n\r\n\r\n\r\n"])


@STREAM_PROPERTY
@given(
    st.lists(st.tuples(keepalives, sloppy_wire()), min_size=1, max_size=4),
    st.lists(st.integers(1, 200), min_size=1, max_size=8),
)
def test_a_stream_frames_the_same_however_it_is_chunked(
    parts: list[tuple[str, tuple[bytes, SipMessage]]], sizes: list[int]
) -> None:
    stream = b"".join(ka.encode() + wire.lstrip(b"\r\n") for ka, (wire, _) in parts)
    expected = [message for _, (_, message) in parts]
    pings = sum(ka.count("\r\n\r\n") for ka, _ in parts)
    for chunks in ([stream], _chunks(stream, sizes), _chunks(stream, [1])):
        framer = StreamFramer()
        got = [m for chunk in chunks for m in framer.feed(chunk)]
        assert len(got) == len(expected)
        for parsed, message in zip(got, expected, strict=True):
            assert parsed.start_line() == message.start_line()
            assert [(n, v) for n, v in parsed.headers if n != "Content-Length"] == list(message.headers)
            assert parsed.body == message.body
        assert framer.pings == pings


# --- datagrams: framing ---------------------------------------------------------------------------

OPTIONS = (
    "OPTIONS sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK74bf9\r\n"
    "From: <sip:alice@example.com>;tag=9fxced76sl\r\n"
    "To: <sip:bob@example.com>\r\n"
    "Call-ID: 3848276298220188511@192.0.2.1\r\n"
    "CSeq: 1 OPTIONS\r\n"
    "Max-Forwards: 70\r\n"
)


def _options(extra: str = "", body: bytes = b"", length: int | None = None) -> bytes:
    cl = "" if length is None else f"Content-Length: {length}\r\n"
    return (OPTIONS + extra + cl + "\r\n").encode() + body


def test_content_length_shorter_than_the_datagram_truncates_the_body() -> None:
    # §18.3: octets past Content-Length in a datagram are discarded.
    message = parse_message(_options(body=b"v=0\r\nextra junk", length=3))
    assert message.body == b"v=0"


def test_content_length_longer_than_the_datagram_is_an_answerable_error() -> None:
    with pytest.raises(ParseErrorWithHead) as info:
        parse_message(_options(body=b"v=0\r\n", length=50))
    assert info.value.method == "OPTIONS"
    assert info.value.headers.get("Call-ID") == "3848276298220188511@192.0.2.1"


def test_without_content_length_a_datagram_body_is_the_rest() -> None:
    assert parse_message(_options(body=b"v=0\r\n")).body == b"v=0\r\n"


@pytest.mark.parametrize("value", ["-1", "abc", "1 0", "\u00b2", "\u0663", "9" * 30, ""])
def test_bad_content_length_is_an_answerable_error(value: str) -> None:
    # "²".isdigit() is True and "٣" is an Arabic-Indic 3: neither is a Content-Length (DIGIT is ASCII).
    with pytest.raises(ParseErrorWithHead) as info:
        parse_message(_options(f"Content-Length: {value}\r\n"))
    assert info.value.method == "OPTIONS"


def test_conflicting_content_lengths_are_an_error_but_repeated_equal_ones_are_not() -> None:
    with pytest.raises(ParseErrorWithHead):
        parse_message(_options("Content-Length: 3\r\nl: 2\r\n", body=b"abc"))
    assert parse_message(_options("Content-Length: 3\r\nl: 3\r\n", body=b"abc")).body == b"abc"


def test_oversized_datagram_is_refused() -> None:
    pad = MAX_MESSAGE_BYTES - len(_options(length=0)) - len("X-Pad: \r\n")
    at_limit = _options("X-Pad: " + "b" * pad + "\r\n", length=0)
    assert len(at_limit) == MAX_MESSAGE_BYTES
    assert parse_message(at_limit).headers.get("X-Pad")
    with pytest.raises(SipParseError):
        parse_message(at_limit + b"\r\n")
    with pytest.raises(SipParseError):
        parse_message(_options(body=b"x" * MAX_MESSAGE_BYTES, length=MAX_MESSAGE_BYTES))


def test_bare_lf_message_from_a_sloppy_peer_parses() -> None:
    wire = _options(body=b"hello", length=5).replace(b"\r\n", b"\n")
    message = parse_message(wire)
    assert isinstance(message, SipRequest)
    assert message.method == "OPTIONS"
    assert message.headers.get("CSeq") == "1 OPTIONS"
    assert message.body == b"hello"


def test_mixed_line_ends_parse() -> None:
    wire = (
        b"OPTIONS sip:b@example.com SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 OPTIONS\n\r\nbody"
    )
    message = parse_message(wire)
    assert list(message.headers) == [("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("CSeq", "1 OPTIONS")]
    assert message.body == b"body"


def test_crlfs_before_the_start_line_are_ignored() -> None:
    # §7.5
    assert parse_message(b"\r\n\r\n" + _options(length=0)).headers.get("CSeq") == "1 OPTIONS"


def test_head_without_an_empty_line_is_a_message_without_body() -> None:
    # RFC 4475 §3.1.2.15's file ends after the last header's CRLF.
    assert parse_message(OPTIONS.encode()).headers.get("Max-Forwards") == "70"


# --- headers ----------------------------------------------------------------------------------------


def test_folded_headers_unfold_to_one_space() -> None:
    # §7.3.1: CRLF followed by whitespace continues the value; the break and the run become one SP.
    wire = _options(
        "Subject: I know you're there,\r\n   pick up the phone\r\n\tand talk to me!\r\n"
        "NewFangledHeader:\r\n  newfangled value \r\n continued\r\n",
        length=0,
    )
    h = parse_message(wire).headers
    assert h.get("Subject") == "I know you're there, pick up the phone and talk to me!"
    assert h.get("NewFangledHeader") == "newfangled value continued"
    assert h.get("Max-Forwards") == "70"


def test_repeated_headers_keep_their_order_among_others() -> None:
    wire = (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bK1\r\n"
        b"Record-Route: <sip:p1.example.com;lr>\r\n"
        b"v: SIP/2.0/UDP p2.example.com;branch=z9hG4bK2, SIP/2.0/UDP ua.example.com;branch=z9hG4bK3\r\n"
        b"Record-Route: <sip:p2.example.com;lr>\r\n"
        b"VIA: SIP/2.0/UDP last.example.com;branch=z9hG4bK4\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    h = parse_message(wire).headers
    assert [n for n, _ in h] == ["Via", "Record-Route", "Via", "Record-Route", "Via", "Content-Length"]
    assert [v.split(";")[0][12:] for v in h.get_all("Via")] == [
        "p1.example.com",
        "p2.example.com",
        "ua.example.com",
        "last.example.com",
    ]
    assert h.get_all("Record-Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]


@pytest.mark.parametrize("short", sorted(COMPACT_FORMS))
def test_compact_forms_on_the_wire_map_to_long_names(short: str) -> None:
    long = COMPACT_FORMS[short]
    for spelling in (short, short.upper()):
        value = "0" if long == "Content-Length" else "some value"
        message = parse_message(_options(f"{spelling}: {value}\r\n"))
        assert list(message.headers)[-1] == (long, value)
        assert message.headers.get_all(long)[-1] == value


def test_header_names_are_case_insensitive_and_keep_lws_before_the_colon() -> None:
    h = parse_message(_options("cAlL-iD  : other\r\nX-Mine\t: x\r\n", length=0)).headers
    assert h.get_all("Call-ID") == ["3848276298220188511@192.0.2.1", "other"]
    assert [n for n, _ in h][-3:] == ["Call-ID", "X-Mine", "Content-Length"]
    assert h.get("x-mine") == "x"


def test_quoted_strings_and_escapes_are_kept_verbatim() -> None:
    value = '"J Rosenberg \\\\\\"" <sip:jdrosen@example.com>;tag=98asjd8'
    assert parse_message(_options(f"Contact: {value}\r\n", length=0)).headers.get("Contact") == value


@pytest.mark.parametrize(
    "line",
    ["NoColonHere", "Bad Name: x", ": no name", "Na\u00efve: x", "\u00ff\u00fe: x"],
)
def test_a_broken_header_line_still_leaves_an_answerable_head(line: str) -> None:
    # §21.4.1: a malformed request gets 400, which needs the other headers.
    with pytest.raises(ParseErrorWithHead) as info:
        parse_message(_options(line + "\r\n", length=0))
    assert info.value.method == "OPTIONS"
    assert info.value.headers.get("CSeq") == "1 OPTIONS"
    assert info.value.headers.get("Content-Length") == "0"


def test_continuation_before_any_header_is_an_answerable_error() -> None:
    wire = b"OPTIONS sip:b@example.com SIP/2.0\r\n  stray\r\nCall-ID: x\r\n\r\n"
    with pytest.raises(ParseErrorWithHead) as info:
        parse_message(wire)
    assert info.value.headers.get("Call-ID") == "x"


def test_undecodable_bytes_survive_a_round_trip() -> None:
    wire = _options(length=0).replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nX-Raw: caf\xe9 \xff\r\n")
    message = parse_message(wire)
    assert message.headers.get("X-Raw") is not None
    assert message.serialize() == wire


# --- start lines ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "start",
    [
        "INVITE  sip:a@example.com SIP/2.0",  # two SP (RFC 4475 §3.1.2.9)
        "INVITE sip:a@example.com SIP/2.0 ",  # trailing SP (§3.1.2.10)
        "INVITE sip:a@example.com; lr SIP/2.0",  # LWS in the URI (§3.1.2.8)
        "INVITE sip:a@example.com",
        "INV:TE sip:a@example.com SIP/2.0",
        "INVITE sip:a@example.com SIP/\u0662.0",  # not ASCII digits
    ],
)
def test_bad_request_lines_leave_an_answerable_head(start: str) -> None:
    with pytest.raises(ParseErrorWithHead) as info:
        parse_message(_options(length=0).replace(OPTIONS.split("\r\n")[0].encode(), start.encode()))
    assert info.value.headers.get("Call-ID") == "3848276298220188511@192.0.2.1"


@pytest.mark.parametrize(
    "start",
    [
        "SIP/2.0 4294967301 big",
        "SIP/2.0 099 Low",
        "SIP/2.0 700 High",
        "SIP/2.0 2OO OK",
        "SIP/2.0 \u0662\u0660\u0660 OK",
    ],
)
def test_bad_status_lines_are_errors_nobody_answers(start: str) -> None:
    with pytest.raises(ParseErrorWithHead) as info:
        parse_message(f"{start}\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n".encode())
    assert info.value.method is None  # a response is never answered


def test_status_line_without_reason_phrase() -> None:
    for start in ("SIP/2.0 100 ", "SIP/2.0 100"):
        message = parse_message(f"{start}\r\nContent-Length: 0\r\n\r\n".encode())
        assert isinstance(message, SipResponse)
        assert (message.status, message.reason) == (100, "")


def test_empty_and_blank_input_are_parse_errors() -> None:
    for data in (b"", b"\r\n", b"\r\n\r\n", b"\n\n\n", b" "):
        with pytest.raises(SipParseError):
            parse_message(data)


# --- streams ----------------------------------------------------------------------------------------


def _stream_message(n: int, body: bytes = b"") -> bytes:
    return _options(f"X-N: {n}\r\n", body=body, length=len(body))


def test_stream_splits_back_to_back_messages_by_content_length() -> None:
    framer = StreamFramer()
    got = framer.feed(_stream_message(1, b"abc\r\n\r\n") + _stream_message(2) + _stream_message(3, b"x"))
    assert [(m.headers.get("X-N"), m.body) for m in got] == [("1", b"abc\r\n\r\n"), ("2", b""), ("3", b"x")]


def test_stream_waits_for_the_body_announced() -> None:
    framer = StreamFramer()
    wire = _stream_message(1, b"0123456789")
    assert framer.feed(wire[:-4]) == []
    assert framer.feed(wire[-4:-1]) == []
    (message,) = framer.feed(wire[-1:])
    assert message.body == b"0123456789"


def test_stream_without_content_length_has_no_body() -> None:
    # §18.3: Content-Length is mandatory on streams; without it the next bytes start the next message.
    framer = StreamFramer()
    got = framer.feed(_options() + _stream_message(2))
    assert [m.body for m in got] == [b"", b""]
    assert got[1].headers.get("X-N") == "2"


def test_stream_keepalives_are_skipped_and_pings_counted_even_when_split() -> None:
    # RFC 5626 §3.5.1: CRLF CRLF is a ping (the transport answers CRLF); a lone CRLF is not.
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n") == []
    assert framer.pings == 1
    (message,) = framer.feed(b"\r\n" + _stream_message(1))
    assert message.headers.get("X-N") == "1"
    assert framer.pings == 1


def test_stream_bare_lf_message_frames() -> None:
    wire = _stream_message(1, b"hi").replace(b"\r\n", b"\n")
    framer = StreamFramer()
    got = [m for i in range(len(wire)) for m in framer.feed(wire[i : i + 1])] + framer.feed(
        _stream_message(2)
    )
    assert [(m.headers.get("X-N"), m.body) for m in got] == [("1", b"hi"), ("2", b"")]


def test_stream_refuses_an_oversized_body_before_it_arrives() -> None:
    framer = StreamFramer()
    with pytest.raises(SipParseError):
        framer.feed(_options(length=MAX_MESSAGE_BYTES))  # only the head was sent


def test_stream_refuses_an_endless_head() -> None:
    framer = StreamFramer()
    framer.feed(OPTIONS.encode())
    with pytest.raises(SipParseError):
        for _ in range(MAX_MESSAGE_BYTES // 1000 + 1):
            framer.feed(b"X-Junk: " + b"j" * 990 + b"\r\n")


def test_stream_accepts_a_message_of_exactly_the_limit() -> None:
    body = b"b" * (MAX_MESSAGE_BYTES - len(_options(length=10000)))  # a 5-digit Content-Length
    wire = _options(body=body, length=len(body))
    assert len(wire) == MAX_MESSAGE_BYTES
    (message,) = StreamFramer().feed(wire)
    assert message.body == body
    with pytest.raises(SipParseError):
        StreamFramer().feed(_options(body=body + b"12", length=len(body) + 2))


def test_stream_bad_start_line_is_answerable_and_the_stream_goes_on() -> None:
    framer = StreamFramer()
    broken = _stream_message(2).replace(b"OPTIONS sip:bob@example.com SIP/2.0", b"OPTIONS  sip:bob SIP/2.0")
    with pytest.raises(ParseErrorWithHead) as info:
        framer.feed(_stream_message(1) + broken + _stream_message(3))
    assert info.value.framing_ok
    assert [m.headers.get("X-N") for m in info.value.parsed_before] == ["1"]
    assert info.value.headers.get("X-N") == "2"
    assert [m.headers.get("X-N") for m in framer.feed(b"")] == ["3"]


def test_stream_bad_content_length_is_answerable_then_the_framer_is_dead() -> None:
    framer = StreamFramer()
    with pytest.raises(ParseErrorWithHead) as info:
        framer.feed(_stream_message(1) + _options("Content-Length: -5\r\n"))
    assert not info.value.framing_ok
    assert info.value.method == "OPTIONS"
    assert [m.headers.get("X-N") for m in info.value.parsed_before] == ["1"]
    with pytest.raises(SipParseError):
        framer.feed(_stream_message(3))


def test_stream_messages_before_a_fatal_error_are_returned_first() -> None:
    # Nothing framed is lost: the error surfaces on the next call, and every call after it.
    framer = StreamFramer()
    got = framer.feed(_stream_message(1) + _options(length=MAX_MESSAGE_BYTES))
    assert [m.headers.get("X-N") for m in got] == ["1"]
    assert framer.failed  # the transport can close right away
    for _ in range(2):
        with pytest.raises(SipParseError):
            framer.feed(_stream_message(2))
