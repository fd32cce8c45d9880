"""Bytes → SIP messages (RFC 3261 §7), for datagrams and for streams.

Every input either yields a message or raises :class:`SipParseError`; nothing else escapes. When the
start line or a header is broken but enough of the head is readable to answer, the error carries the
readable headers (``error.headers``) so the transport can send 400 instead of dropping the request.
"""

from __future__ import annotations

import re

from callcenter.sip.message import (
    Headers,
    SipMessage,
    SipParseError,
    SipRequest,
    SipResponse,
    canonical_name,
)

MAX_MESSAGE_BYTES = 65536

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE = re.compile(_TOKEN)
# Request-Line = Method SP Request-URI SP SIP-Version CRLF (exactly one SP each, §7.1)
_REQUEST_LINE_RE = re.compile(rf"({_TOKEN}) ([^\s]+) (SIP/\d+\.\d+)")
# Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF (§7.2)
_STATUS_LINE_RE = re.compile(r"(SIP/\d+\.\d+) (\d{3})(?: (.*))?")


class ParseErrorWithHead(SipParseError):
    """The message is broken, but its headers were readable: a request can still get a 400."""

    def __init__(self, reason: str, start_line: str, headers: Headers) -> None:
        super().__init__(reason)
        self.reason = reason
        self.start_line = start_line
        self.headers = headers
        self.framing_ok = False
        self.parsed_before: list[SipMessage] = []

    @property
    def method(self) -> str | None:
        head = self.start_line.split(" ", 1)[0]
        return head if _TOKEN_RE.fullmatch(head) and not head.startswith("SIP/") else None


def _split_head(data: bytes) -> tuple[bytes, bytes] | None:
    """(head, rest) at the first empty line; tolerate bare LF line ends from sloppy peers."""
    idx = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if idx >= 0 and (lf < 0 or lf > idx):
        return data[:idx], data[idx + 4 :]
    if lf >= 0:
        return data[:lf], data[lf + 2 :]
    return None


def _parse_headers(lines: list[str]) -> Headers:
    """Header lines (already split) → Headers; continuation lines unfold (§7.3.1)."""
    items: list[tuple[str, str]] = []
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":
            if not items:
                raise SipParseError("continuation line before any header")
            name, value = items[-1]
            items[-1] = (name, f"{value} {line.strip()}" if value else line.strip())
            continue
        colon = line.find(":")
        if colon <= 0:
            raise SipParseError(f"header line without a name: {line[:40]!r}")
        name = line[:colon].rstrip(" \t")
        if not _TOKEN_RE.fullmatch(name):
            raise SipParseError(f"bad header name {name[:40]!r}")
        items.append((canonical_name(name), line[colon + 1 :].strip(" \t")))
    headers = Headers()
    headers._items = items
    return headers


def _content_length(headers: Headers) -> int | None:
    values = [v for n, v in headers if n == "Content-Length"]
    if not values:
        return None
    parsed = set()
    for v in values:
        v = v.strip()
        if not v.isdigit() or len(v) > 9:
            raise SipParseError(f"bad Content-Length {v[:20]!r}")
        parsed.add(int(v))
    if len(parsed) > 1:
        raise SipParseError("conflicting Content-Length headers")
    return parsed.pop()


def _parse_head(head: bytes) -> tuple[str, Headers]:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # Keep foreign bytes round-trippable rather than refusing the message outright.
        text = head.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    lines = [line.removesuffix("\r") for line in lines]
    # RFC 3261 §7.5: ignore CRLFs before the start line.
    i = 0
    while i < len(lines) and lines[i] == "":
        i += 1
    if i == len(lines):
        raise SipParseError("empty message")
    start = lines[i]
    headers = _parse_headers(lines[i + 1 :])
    return start, headers


def _build(start: str, headers: Headers, body: bytes) -> SipMessage:
    m = _REQUEST_LINE_RE.fullmatch(start)
    if m is not None and not start.startswith("SIP/"):
        return SipRequest(m.group(1), m.group(2), headers, body, m.group(3))
    m = _STATUS_LINE_RE.fullmatch(start)
    if m is not None:
        if not 100 <= int(m.group(2)) <= 699:
            raise SipParseError(f"status code out of range in {start[:60]!r}")
        return SipResponse(int(m.group(2)), m.group(3) or "", headers, body, m.group(1))
    raise ParseErrorWithHead(f"bad start line {start[:60]!r}", start, headers)


def parse_message(data: bytes, max_size: int = MAX_MESSAGE_BYTES) -> SipMessage:
    """Parse one whole message, as a UDP datagram carries it (§18.3).

    Without Content-Length the body is the rest of the datagram; with it, extra bytes are dropped and
    a body shorter than announced is an error.
    """
    if len(data) > max_size:
        raise SipParseError(f"message of {len(data)} bytes exceeds {max_size}")
    split = _split_head(data)
    if split is None:
        # A datagram with headers but no blank line: treat as a message without body.
        head, rest = data.rstrip(b"\r\n"), b""
    else:
        head, rest = split
    start, headers = _parse_head(head)
    try:
        length = _content_length(headers)
    except SipParseError as exc:
        raise ParseErrorWithHead(str(exc), start, headers) from None
    if length is None:
        body = rest
    elif length > len(rest):
        raise ParseErrorWithHead(
            f"Content-Length {length} exceeds the {len(rest)} body bytes", start, headers
        )
    else:
        body = rest[:length]
    return _build(start, headers, body)


class StreamFramer:
    """Cuts a TCP/TLS byte stream into messages with Content-Length framing (§18.3).

    `feed()` returns complete messages; a malformed one raises SipParseError, after which the
    connection should be closed (framing is lost). CRLF keep-alives (RFC 5626 §3.5.1) between
    messages are skipped and counted in `pings` so the transport can answer with a CRLF pong.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_size
        self.pings = 0

    def feed(self, data: bytes) -> list[SipMessage]:
        self._buf += data
        out: list[SipMessage] = []
        while True:
            # Skip keep-alives: a double CRLF is a ping; lone CRLFs are tolerated padding.
            while self._buf[:2] == b"\r\n":
                if self._buf[:4] == b"\r\n\r\n":
                    self.pings += 1
                    del self._buf[:4]
                else:
                    del self._buf[:2]
            if not self._buf:
                return out
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > self._max:
                    raise SipParseError(f"header section exceeds {self._max} bytes")
                return out
            head = bytes(self._buf[:end])
            start, headers = _parse_head(head)
            try:
                length = _content_length(headers)
            except SipParseError as exc:
                raise ParseErrorWithHead(str(exc), start, headers) from None
            length = length or 0  # §18.3: MUST be present on streams; absent means no body
            total = end + 4 + length
            if total > self._max:
                raise SipParseError(f"message of {total} bytes exceeds {self._max}")
            if len(self._buf) < total:
                return out
            body = bytes(self._buf[end + 4 : total])
            del self._buf[:total]
            try:
                out.append(_build(start, headers, body))
            except ParseErrorWithHead as exc:
                # The frame was consumed: the stream stays usable. Messages parsed before this one
                # ride on the error so none is lost; call feed(b"") to continue after answering.
                exc.framing_ok = True
                exc.parsed_before = out
                raise
