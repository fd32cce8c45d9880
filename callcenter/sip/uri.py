"""SIP URIs (RFC 3261 §19.1), name-addr values (§20.10, §25.1) and Via (§20.42)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from callcenter.sip.message import SipParseError

_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?")
_IPV6_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_DISPLAY_SEPARATORS_RE = re.compile(r'[,;"<>\\]')
# An empty via-param: ";" followed by ";" or the end, outside quoted strings (RFC 4475 §3.1.2.1).
_EMPTY_PARAM_RE = re.compile(r";[ \t]*(?:;|$)")
_QUOTED_RE = re.compile(r'"(?:[^"\\]|\\.)*"')


def _split_params(text: str) -> dict[str, str | None]:
    """`;a=1;b;c="x;y"` → {'a': '1', 'b': None, 'c': '"x;y"'}; names lower-cased."""
    params: dict[str, str | None] = {}
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t;":
            i += 1
            continue
        j = i
        while j < n and text[j] not in "=;":
            j += 1
        name = text[i:j].strip().lower()
        value: str | None = None
        if j < n and text[j] == "=":
            k = j + 1
            while k < n and text[k] in " \t":
                k += 1
            if k < n and text[k] == '"':
                m = k + 1
                while m < n and text[m] != '"':
                    m += 2 if text[m] == "\\" else 1
                if m >= n:
                    raise SipParseError("unterminated quoted parameter")
                value = text[k : m + 1]
                j = m + 1
            else:
                m = k
                while m < n and text[m] != ";":
                    m += 1
                value = text[k:m].strip()
                j = m
        if name:
            params[name] = value
        i = j
    return params


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


@dataclass(slots=True)
class SipUri:
    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""

    @property
    def transport(self) -> str:
        return (self.params.get("transport") or ("tls" if self.scheme == "sips" else "udp")).lower()

    @property
    def host_for_socket(self) -> str:
        """Host without IPv6 brackets."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
        port = f":{self.port}" if self.port is not None else ""
        headers = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{userinfo}{self.host}{port}{_format_params(self.params)}{headers}"


def format_host(host: str) -> str:
    """An address for a URI or Via: IPv6 literals get brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _parse_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        host = text[: end + 1]
        if end < 0 or not _IPV6_RE.fullmatch(host):
            raise SipParseError(f"bad IPv6 reference {text[:60]!r}")
        rest = text[end + 1 :]
    else:
        host, _, port_text = text.partition(":")
        rest = f":{port_text}" if _ else ""
        if not _HOSTNAME_RE.fullmatch(host):
            raise SipParseError(f"bad host {host[:60]!r}")
    if not rest:
        return host.lower(), None
    digits = rest[1:]
    # isascii(): "²".isdigit() is True but int("²") raises a bare ValueError.
    if not rest.startswith(":") or not (digits.isascii() and digits.isdigit()) or not 0 < int(digits) < 65536:
        raise SipParseError(f"bad port in {text[:60]!r}")
    return host.lower(), int(rest[1:])


def parse_uri(text: str) -> SipUri:
    """Parse a sip:/sips: URI; other schemes (tel:, ...) keep everything after the colon in `host`."""
    text = text.strip()
    colon = text.find(":")
    if colon <= 0 or not _SCHEME_RE.fullmatch(text[:colon]):
        raise SipParseError(f"bad URI {text[:60]!r}")
    scheme = text[:colon].lower()
    rest = text[colon + 1 :]
    if scheme not in ("sip", "sips"):
        if not rest:
            raise SipParseError(f"bad URI {text[:60]!r}")
        return SipUri(scheme=scheme, host=rest)
    user = password = None
    # The user part may hold "?" (user-unreserved, §25.1; RFC 4475 §3.1.1.2) but no header holds a
    # raw "@", so userinfo ends at the last "@" and the headers start at the first "?" after it.
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, sep, pw = userinfo.partition(":")
        password = pw if sep else None
        if not user:
            raise SipParseError(f"empty user in {text[:60]!r}")
    headers = ""
    q = rest.find("?")
    if q >= 0:
        rest, headers = rest[:q], rest[q + 1 :]
    semi = rest.find(";")
    hostport, params_text = (rest, "") if semi < 0 else (rest[:semi], rest[semi:])
    host, port = _parse_hostport(hostport)
    return SipUri(scheme, host, user, password, port, _split_params(params_text), headers)


@dataclass(slots=True)
class NameAddr:
    """`"Alice" <sip:alice@host>;tag=1` — display name, URI text and header parameters."""

    uri: str
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def parsed_uri(self) -> SipUri:
        return parse_uri(self.uri)

    def __str__(self) -> str:
        display = f"{self.display} " if self.display else ""
        return f"{display}<{self.uri}>{_format_params(self.params)}"


def parse_name_addr(text: str) -> NameAddr:
    """From/To/Contact/Route value → NameAddr (§20.10: without <>, params belong to the header)."""
    text = text.strip()
    if not text:
        raise SipParseError("empty address")
    lt = -1
    if text[0] == '"':
        i = 1
        while i < len(text) and text[i] != '"':
            i += 2 if text[i] == "\\" else 1
        if i >= len(text):
            raise SipParseError("unterminated display name")
        display: str | None = text[: i + 1]
        lt = text.find("<", i + 1)
        if lt < 0:
            raise SipParseError("quoted display name without <uri>")
    else:
        lt = text.find("<")
        display = text[:lt].strip() or None if lt >= 0 else None
        # An unquoted display name is tokens and LWS (§25.1); a "," or ";" in it (RFC 4475
        # §3.1.2.15) makes the value ambiguous. Non-ASCII letters are tolerated.
        if display is not None and _DISPLAY_SEPARATORS_RE.search(display):
            raise SipParseError(f"unquoted display name with separators {text[:60]!r}")
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError(f"unterminated <uri> in {text[:60]!r}")
        uri = text[lt + 1 : gt]
        if uri != uri.strip():  # no LWS inside <> (RFC 4475 §3.1.2.14)
            raise SipParseError(f"whitespace inside <uri> in {text[:60]!r}")
        params = _split_params(text[gt + 1 :])
    else:
        # addr-spec: no display name; anything after ';' is a header parameter.
        semi = text.find(";")
        uri, params = (text, {}) if semi < 0 else (text[:semi].strip(), _split_params(text[semi:]))
        # §20.10: a URI with "," "?" or ";" must be in <> (RFC 4475 §3.1.2.13).
        if " " in uri or "," in uri or "?" in uri:
            raise SipParseError(f"bad address {text[:60]!r}")
    if ":" not in uri:
        raise SipParseError(f"address without a URI scheme {text[:60]!r}")
    return NameAddr(uri, display.strip() if display else None, params)


@dataclass(slots=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{_format_params(self.params)}"


# via-parm = sent-protocol LWS sent-by; SLASH and COLON may carry whitespace (§25.1: SLASH = SWS "/" SWS,
# sent-by = host [ COLON port ], COLON = SWS ":" SWS; RFC 4475 §3.1.1.1 uses it).
_VIA_RE = re.compile(
    r"SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-]+)\s+(\[[^\]\s]*\]|[^;\s:\[]+)(?:\s*:\s*([^;\s]*))?\s*(;.*)?",
    re.IGNORECASE | re.DOTALL,
)


def parse_via(text: str) -> Via:
    m = _VIA_RE.fullmatch(text.strip())
    if m is None:
        raise SipParseError(f"bad Via {text[:60]!r}")
    host, port = _parse_hostport(m.group(2) if m.group(3) is None else f"{m.group(2)}:{m.group(3)}")
    params = m.group(4) or ""
    if params and _EMPTY_PARAM_RE.search(_QUOTED_RE.sub('""', params.rstrip())):
        raise SipParseError(f"empty Via parameter in {text[:60]!r}")
    return Via(m.group(1).upper(), host, port, _split_params(params))
