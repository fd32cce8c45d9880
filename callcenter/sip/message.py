"""SIP messages (RFC 3261 §7): a start line, headers kept in order, and a body.

Header names are kept in their canonical long form (compact forms expanded, §7.3.3); lookups are
case-insensitive. Values are kept as received (after unfolding), so a message re-serialises to what a
peer would consider the same message.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator

from callcenter.core.errors import CallcenterError


class SipParseError(CallcenterError, ValueError):
    """The bytes are not a SIP message this server can read."""


# RFC 3261 §7.3.3 and the registries of later RFCs: compact form → long form.
COMPACT_FORMS: dict[str, str] = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "r": "Refer-To",
    "b": "Referred-By",
    "u": "Allow-Events",
    "x": "Session-Expires",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
    "n": "Identity-Info",
}

_CANONICAL: dict[str, str] = {
    name.lower(): name
    for name in (
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Authentication-Info",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Error-Info",
        "Event",
        "Expires",
        "From",
        "In-Reply-To",
        "Max-Forwards",
        "MIME-Version",
        "Min-Expires",
        "Min-SE",
        "Organization",
        "P-Asserted-Identity",
        "Path",
        "Priority",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "RAck",
        "Reason",
        "Record-Route",
        "Refer-To",
        "Referred-By",
        "Reply-To",
        "Require",
        "Retry-After",
        "Route",
        "RSeq",
        "Server",
        "Session-Expires",
        "Subject",
        "Subscription-State",
        "Supported",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
    )
}
# Every long form of a compact one is canonical too ("accept-contact" → Accept-Contact, like "a").
_CANONICAL.update({long.lower(): long for long in COMPACT_FORMS.values()})
_CANONICAL.update({short: long for short, long in COMPACT_FORMS.items()})

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1): these may be split. Others
# (WWW-Authenticate, Authorization, Date, ...) carry commas inside a single value and never are.
LIST_HEADERS = frozenset(
    name.lower()
    for name in (
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Call-Info",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "Error-Info",
        "In-Reply-To",
        "Path",
        "Proxy-Require",
        "Record-Route",
        "Require",
        "Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
        "P-Asserted-Identity",
        "Reason",
    )
)


def canonical_name(name: str) -> str:
    """`v` → `Via`, `call-id` → `Call-ID`; unknown names keep their spelling."""
    return _CANONICAL.get(name.lower(), name)


def split_list(value: str) -> list[str]:
    """Split a list-header value on commas outside quotes and angle brackets."""
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    out: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            part = value[start:i].strip()
            if part:
                out.append(part)
            start = i + 1
    part = value[start:].strip()
    if part:
        out.append(part)
    return out


class Headers:
    """Ordered multi-map of headers; names canonical, lookups case-insensitive."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def get(self, name: str, default: str | None = None) -> str | None:
        key = canonical_name(name).lower()
        for n, v in self._items:
            if n.lower() == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of a header in order; list headers split on their commas."""
        key = canonical_name(name).lower()
        values = [v for n, v in self._items if n.lower() == key]
        if key in LIST_HEADERS:
            return [part for v in values for part in split_list(v)]
        return values

    def count(self, name: str) -> int:
        key = canonical_name(name).lower()
        return sum(1 for n, _ in self._items if n.lower() == key)

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def prepend(self, name: str, value: str) -> None:
        self._items.insert(0, (canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every value of `name` with one, at the place of the first."""
        cname = canonical_name(name)
        key = cname.lower()
        for i, (n, _) in enumerate(self._items):
            if n.lower() == key:
                self._items[i] = (cname, value)
                self._items[i + 1 :] = [(n2, v2) for n2, v2 in self._items[i + 1 :] if n2.lower() != key]
                return
        self._items.append((cname, value))

    def remove(self, name: str) -> None:
        key = canonical_name(name).lower()
        self._items = [(n, v) for n, v in self._items if n.lower() != key]

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h


class SipMessage:
    __slots__ = ("body", "headers", "version")

    def __init__(self, headers: Headers | None = None, body: bytes = b"", version: str = "SIP/2.0") -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self.version = version

    # Convenience accessors for the headers every layer needs.
    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    def cseq(self) -> tuple[int, str]:
        """(number, method) of CSeq; raises SipParseError when missing or malformed."""
        value = self.headers.get("CSeq")
        if value is None:
            raise SipParseError("missing CSeq")
        parts = value.split()
        # isascii(): "²".isdigit() is True but int("²") raises a bare ValueError.
        if len(parts) != 2 or not (parts[0].isascii() and parts[0].isdigit()) or len(parts[0]) > 10:
            raise SipParseError(f"bad CSeq {value!r}")
        number = int(parts[0])
        if number >= 2**31:  # RFC 3261 §8.1.1.5: less than 2**31
            raise SipParseError(f"CSeq number out of range {value!r}")
        return number, parts[1]

    def start_line(self) -> str:
        raise NotImplementedError

    def serialize(self) -> bytes:
        """Wire bytes; Content-Length always set to the body's real length."""
        lines = [self.start_line()]
        has_length = False
        for name, value in self.headers:
            if name == "Content-Length":
                if has_length:
                    continue
                value = str(len(self.body))
                has_length = True
            lines.append(f"{name}: {value}")
        if not has_length:
            lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.serialize()


class SipRequest(SipMessage):
    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body, version)
        self.method = method
        self.uri = uri

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def __repr__(self) -> str:
        return f"<SipRequest {self.method} {self.uri} call-id={self.call_id!r}>"


class SipResponse(SipMessage):
    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body, version)
        self.status = status
        self.reason = reason

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<SipResponse {self.status} {self.reason} call-id={self.call_id!r}>"


REASONS: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
}


def _has_tag(value: str) -> bool:
    """Whether a To/From value carries a header-level tag; a `;tag=` inside <uri> or inside the
    quoted display name belongs to something else (§20.10)."""
    gt = value.rfind(">")
    params = value[gt + 1 :] if gt >= 0 else value
    return ";tag=" in params.lower().replace(" ", "").replace("\t", "")


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> SipResponse:
    """A response to `request` per RFC 3261 §8.2.6.2: Via, From, To, Call-ID, CSeq copied.

    Record-Route is copied for 2xx/18x to dialog-creating requests (§12.1.1) by the dialog layer,
    not here. When the request's To has no tag, one is added to every response but 100 (§8.2.6.2):
    `to_tag`, or a fresh random one.
    """
    headers = Headers()
    req = request.headers
    for name, value in req:
        if name in ("Via", "From", "Call-ID", "CSeq"):
            headers.add(name, value)
        elif name == "To":
            if status != 100 and not _has_tag(value):
                value = f"{value};tag={to_tag or secrets.token_hex(6)}"
            headers.add(name, value)
        elif name == "Timestamp" and status == 100:  # §8.2.6.1
            headers.add(name, value)
    for name, value in extra:
        headers.add(name, value)
    return SipResponse(status, reason or REASONS.get(status, "Unknown"), headers, body)
