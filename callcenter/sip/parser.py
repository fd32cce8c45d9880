"""Bytes → SIP messages (RFC 3261 §7), for datagrams and for streams.

Every input either yields a message or raises :class:`SipParseError`; nothing else escapes. When the
start line or a header is broken but enough of the head is readable to answer, the error carries the
readable headers (``error.headers``) so the transport can send 400 instead of dropping the request.
"""

from __future__ import annotations

import re

from callcenter.sip.message import (
    _CANONICAL,
    Headers,
    SipMessage,
    SipParseError,
    SipRequest,
    SipResponse,
)

MAX_MESSAGE_BYTES = 65536

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE = re.compile(_TOKEN)
# Request-Line = Method SP Request-URI SP SIP-Version CRLF (exactly one SP each, §7.1).
# re.ASCII: \d and \s must not match other scripts' digits and spaces.
_REQUEST_LINE_RE = re.compile(rf"({_TOKEN}) (\S+) (SIP/\d+\.\d+)", re.ASCII)
# Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF (§7.2)
_STATUS_LINE_RE = re.compile(r"(SIP/\d+\.\d+) (\d{3})(?: (.*))?", re.ASCII | re.DOTALL)
# The empty line ending the head: CRLF CRLF, or bare LF line ends from sloppy peers (and mixes).
_HEAD_END_RE = re.compile(rb"\n\r?\n")


class ParseErrorWithHead(SipParseError):
    """The message is broken, but its headers were readable: a request can still get a 400.

    On a stream, ``framing_ok`` says whether the broken message was consumed (the connection stays
    usable) and ``parsed_before`` holds the messages framed before it in the same `feed()` call.
    """

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


def _parse_head(head: bytes) -> tuple[str, Headers, str | None]:
    """(start line, headers, first error) of a head without its final empty line.

    A broken header line does not stop the parse: the error is reported with every readable header,
    so the caller can still answer 400 (§21.4.1) instead of dropping the request.
    """
    # surrogateescape: foreign bytes stay round-trippable rather than refusing the message outright.
    lines = head.decode("utf-8", "surrogateescape").split("\n")
    # RFC 3261 §7.5: ignore CRLFs before the start line.
    i, n = 0, len(lines)
    while i < n and lines[i] in ("", "\r"):
        i += 1
    if i == n:
        raise SipParseError("empty message")
    start = lines[i].removesuffix("\r")
    items: list[tuple[str, str]] = []
    error: str | None = None
    folding = False  # whether a continuation line belongs to the last item
    for line in lines[i + 1 :]:
        if line[-1:] == "\r":
            line = line[:-1]
        if not line:
            continue
        first = line[0]
        if first == " " or first == "\t":
            # §7.3.1: a line starting with whitespace continues the previous header; the line break
            # and the whitespace run around it become one SP.
            if folding:
                more = line.strip(" \t")
                if more:
                    name, value = items[-1]
                    items[-1] = (name, f"{value} {more}" if value else more)
            elif error is None:
                error = "continuation line before any header"
            continue
        colon = line.find(":")
        name = line[:colon].rstrip(" \t") if colon > 0 else ""
        canonical = _CANONICAL.get(name.lower())
        if canonical is None:
            if not name or not _TOKEN_RE.fullmatch(name):
                if error is None:
                    error = f"bad header line {line[:40]!r}"
                folding = False
                continue
            canonical = name
        items.append((canonical, line[colon + 1 :].strip(" \t")))
        folding = True
    headers = Headers()
    headers._items = items
    return start, headers, error


def _content_length(headers: Headers) -> int | None:
    length: int | None = None
    for name, value in headers._items:
        if name != "Content-Length":
            continue
        value = value.strip(" \t")
        # isascii(): "²".isdigit() is True but int("²") raises.
        if not (value.isascii() and value.isdigit()) or len(value) > 18:
            raise SipParseError(f"bad Content-Length {value[:20]!r}")
        parsed = int(value)
        if length is not None and parsed != length:
            raise SipParseError("conflicting Content-Length headers")  # RFC 4475 §3.3.9
        length = parsed
    return length


def _build(start: str, headers: Headers, body: bytes) -> SipMessage:
    m = _REQUEST_LINE_RE.fullmatch(start)
    if m is not None and not start.startswith("SIP/"):
        return SipRequest(m.group(1), m.group(2), headers, body, m.group(3))
    m = _STATUS_LINE_RE.fullmatch(start)
    if m is not None and 100 <= int(m.group(2)) <= 699:
        return SipResponse(int(m.group(2)), m.group(3) or "", headers, body, m.group(1))
    raise ParseErrorWithHead(f"bad start line {start[:60]!r}", start, headers)


def parse_message(data: bytes, max_size: int = MAX_MESSAGE_BYTES) -> SipMessage:
    """Parse one whole message, as a UDP datagram carries it (§18.3).

    Without Content-Length the body is the rest of the datagram; with it, extra bytes are dropped and
    a body shorter than announced is an error.
    """
    if len(data) > max_size:
        raise SipParseError(f"message of {len(data)} bytes exceeds {max_size}")
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")  # §7.5: CRLFs before the start line
    m = _HEAD_END_RE.search(data)
    if m is None:
        # A datagram with headers but no empty line (RFC 4475 §3.1.2.15 has one): no body.
        head, rest = data.rstrip(b"\r\n"), b""
    else:
        head, rest = data[: m.start()], data[m.end() :]
    start, headers, error = _parse_head(head)
    if error is not None:
        raise ParseErrorWithHead(error, start, headers)
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
        body = rest[:length] if length < len(rest) else rest
    return _build(start, headers, body)


class StreamFramer:
    """Cuts a TCP/TLS byte stream into messages with Content-Length framing (§18.3).

    `feed()` returns the complete messages so far, the same ones in the same order however the bytes
    are chunked. A message that breaks the framing raises SipParseError; the framer is then dead
    (every later `feed()` raises it again) and the connection should be closed. When messages were
    framed before the broken one in the same call, they are returned first (`failed` is then true) and
    the error is raised by the next call; a ParseErrorWithHead instead carries them in `parsed_before`.
    A ParseErrorWithHead with `framing_ok` consumed its message: answer it, then call `feed(b"")` to
    continue.

    CR/LF before a start line is skipped (§7.5); each CRLF CRLF there is a keep-alive ping (RFC 5626
    §3.5.1), counted in `pings` so the transport can answer with a CRLF pong.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_size
        self._scanned = 0  # bytes of _buf already searched for the end of the head
        # The head of the message whose body is still arriving: (start, headers, body start, end).
        self._pending: tuple[str, Headers, int, int] | None = None
        self._error: SipParseError | None = None
        self.pings = 0

    @property
    def failed(self) -> bool:
        """The stream's framing is lost: close the connection once the returned messages are handled."""
        return self._error is not None

    @property
    def partial(self) -> bool:
        """Part of a message is buffered, waiting for the rest (mere CR/LF keep-alive bytes are not:
        after `feed()` the buffer is empty, a CR/LF prefix of a ping, or starts a message)."""
        return bool(self._buf) and self._buf[0] not in (13, 10)

    def feed(self, data: bytes) -> list[SipMessage]:
        if self._error is not None:
            raise self._error
        self._buf += data
        out: list[SipMessage] = []
        try:
            while self._next(out):
                pass
        except ParseErrorWithHead as exc:
            exc.parsed_before = out
            if not exc.framing_ok:
                self._error = exc
            raise
        except SipParseError as exc:
            self._error = exc
            if not out:
                raise
        return out

    def _next(self, out: list[SipMessage]) -> bool:
        """Frame one message into `out`; False when more bytes are needed."""
        buf = self._buf
        if self._pending is None:
            while buf and buf[0] in (13, 10):
                if buf.startswith(b"\r\n\r\n"):
                    self.pings += 1
                    del buf[:4]
                elif len(buf) < 4 and b"\r\n\r\n".startswith(buf):
                    return False  # maybe half a ping: wait for the rest
                elif buf.startswith(b"\r\n"):
                    del buf[:2]
                else:
                    del buf[:1]
            if not buf:
                return False
            m = _HEAD_END_RE.search(buf, max(0, self._scanned - 2))
            if m is None:
                if len(buf) > self._max:
                    raise SipParseError(f"header section exceeds {self._max} bytes")
                self._scanned = len(buf)
                return False
            start, headers, error = _parse_head(bytes(buf[: m.start()]))
            if error is not None:
                # A broken line might have been the Content-Length: the framing is unknown.
                raise ParseErrorWithHead(error, start, headers)
            try:
                length = _content_length(headers)
            except SipParseError as exc:
                raise ParseErrorWithHead(str(exc), start, headers) from None
            # §18.3: Content-Length MUST be present on streams; absent means no body.
            end = m.end() + (length or 0)
            if end > self._max:
                raise SipParseError(f"message of {end} bytes exceeds {self._max}")
            self._pending = (start, headers, m.end(), end)
        start, headers, body_start, end = self._pending
        if len(buf) < end:
            return False
        body = bytes(buf[body_start:end])
        del buf[:end]
        self._pending = None
        self._scanned = 0
        try:
            out.append(_build(start, headers, body))
        except ParseErrorWithHead as exc:
            exc.framing_ok = True  # the frame was consumed: the stream stays usable
            raise
        return True
