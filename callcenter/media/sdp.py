"""SDP (RFC 4566) parsing/serialisation and the offer/answer model (RFC 3264), sans-I/O.

``parse`` turns a body into a ``SessionDescription`` or raises ``SdpParseError`` (with the line
number); ``SessionDescription.serialize`` writes it back in the RFC 4566 §5 order with CRLF.

Offer/answer for audio over RTP/AVP with G.711 and telephone-event (RFC 4733), and SRTP keyed by
SDES (RFC 4568, ``media.srtp``): RTP/SAVP offers, and a=crypto in RTP/AVP offers ("best-effort SRTP",
what baresip's ``mediaenc=srtp`` and many phones send), are answered with our own key when the caller
passes ``srtp_key``; the agreed keys travel in ``NegotiatedMedia.srtp``.

* ``negotiate_answer`` (UAS): picks the first format in the *offerer's* order that we support
  (RFC 3264 §6.1 lets the answerer choose; honouring the caller's preference is what phones
  expect), answers with that one codec plus telephone-event if offered, rejects every other
  stream with port 0, and reports 488 when no audio stream is acceptable.
* ``make_offer`` / ``process_answer`` (UAC, agent legs).
* ``SdpVersioner`` keeps o= session id/version: the version grows only when the SDP changes
  (RFC 3264 §8), e.g. a hold re-offer (a=sendonly, §8.4) and the resume after it.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final, Literal

from callcenter.core.errors import CallcenterError
from callcenter.media.srtp import (
    CryptoAttribute,
    SrtpKeys,
    accept_answer_crypto,
    answer_crypto,
    offer_cryptos,
    parse_crypto,
)


class SdpParseError(CallcenterError):
    """A body that is not valid SDP."""


class SdpNegotiationError(CallcenterError):
    """An SDP answer we cannot use (UAC side)."""


class Direction(StrEnum):
    """Stream direction attributes (RFC 4566 §6, RFC 3264 §6.1), from the describing side's view."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @staticmethod
    def from_flags(sends: bool, receives: bool) -> Direction:
        if sends:
            return Direction.SENDRECV if receives else Direction.SENDONLY
        return Direction.RECVONLY if receives else Direction.INACTIVE

    def reversed(self) -> Direction:
        """The direction the other side has: sendonly <-> recvonly."""
        return Direction.from_flags(self.receives, self.sends)

    def restrict(self, other: Direction) -> Direction:
        """Both constraints at once (the intersection of what each allows)."""
        return Direction.from_flags(self.sends and other.sends, self.receives and other.receives)


_DIRECTIONS: Final = {d.value: d for d in Direction}


# --- data model ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Origin:
    """o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>"""

    username: str
    session_id: int
    session_version: int
    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    def serialize(self) -> str:
        return (f"{self.username} {self.session_id} {self.session_version} {self.nettype} "
                f"{self.addrtype} {self.address}")


@dataclass(slots=True)
class Connection:
    """c=<nettype> <addrtype> <connection-address>[/<ttl>][/<number of addresses>]"""

    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"
    ttl: int | None = None
    count: int | None = None

    @property
    def is_null(self) -> bool:
        """c=IN IP4 0.0.0.0: RFC 2543 hold, "send neither RTP nor RTCP" (RFC 3264 §8.4)."""
        return self.addrtype == "IP4" and self.address == "0.0.0.0"

    def serialize(self) -> str:
        addr = self.address
        if self.ttl is not None:
            addr += f"/{self.ttl}"
        if self.count is not None:
            addr += f"/{self.count}"
        return f"{self.nettype} {self.addrtype} {addr}"


@dataclass(slots=True)
class Attribute:
    name: str
    value: str | None = None  # None for property attributes (a=sendonly)

    def serialize(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    """a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]"""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    def value(self) -> str:
        s = f"{self.payload_type} {self.encoding}/{self.clock_rate}"
        return s if self.channels is None else f"{s}/{self.channels}"


@dataclass(slots=True)
class MediaDescription:
    """One m= section: m=<media> <port>[/<number of ports>] <proto> <fmt> ..."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    title: str | None = None  # i=
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)  # b= values, e.g. "AS:64"
    key: str | None = None  # k=
    attributes: list[Attribute] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)  # lines of letters RFC 4566 lacks

    def attribute(self, name: str) -> str | None:
        """Value of the first a=<name>, "" for a property attribute, None if absent."""
        for a in self.attributes:
            if a.name == name:
                return "" if a.value is None else a.value
        return None

    @property
    def is_rtp(self) -> bool:
        return self.proto.upper().startswith("RTP/")

    @property
    def payload_types(self) -> list[int]:
        return [int(f) for f in self.formats] if self.is_rtp else []

    def rtpmaps(self) -> dict[int, RtpMap]:
        out: dict[int, RtpMap] = {}
        for a in self.attributes:
            if a.name == "rtpmap" and a.value is not None:
                try:
                    m = _parse_rtpmap(a.value)
                except SdpParseError:
                    continue  # a malformed rtpmap names a format we cannot use; the rest stays usable
                out.setdefault(m.payload_type, m)
        return out

    def fmtp(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for a in self.attributes:
            if a.name == "fmtp" and a.value is not None:
                fmt, _, params = a.value.partition(" ")
                out.setdefault(fmt, params.strip())
        return out

    @property
    def ptime(self) -> float | None:
        v = self.attribute("ptime")
        return None if v is None else _parse_ms(v)

    @property
    def direction(self) -> Direction | None:
        """The direction attribute of this m= section, if it has one."""
        for a in self.attributes:
            d = _DIRECTIONS.get(a.name)
            if d is not None and a.value is None:
                return d
        return None

    def format_of(self, pt: int) -> RtpMap | None:
        """The encoding of payload type ``pt``: its rtpmap, else the RFC 3551 static assignment."""
        return self.rtpmaps().get(pt) or STATIC_PAYLOAD_TYPES.get(pt)

    def serialize_lines(self) -> list[str]:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        lines = [f"m={self.media} {port} {self.proto} {' '.join(self.formats)}"]
        if self.title is not None:
            lines.append(f"i={self.title}")
        if self.connection is not None:
            lines.append(f"c={self.connection.serialize()}")
        lines += [f"b={b}" for b in self.bandwidths]
        if self.key is not None:
            lines.append(f"k={self.key}")
        lines += [f"a={a.serialize()}" for a in self.attributes]
        lines += [f"{k}={v}" for k, v in self.other]
        return lines


@dataclass(slots=True)
class SessionDescription:
    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    media: list[MediaDescription] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    times: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)])
    bandwidths: list[str] = field(default_factory=list)
    info: str | None = None  # i=
    uri: str | None = None  # u=
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    # r=, z=, k= and lines of letters RFC 4566 does not define, as (letter, value), in order.
    other: list[tuple[str, str]] = field(default_factory=list)

    @property
    def direction(self) -> Direction | None:
        """The session-level direction attribute, if any."""
        for a in self.attributes:
            d = _DIRECTIONS.get(a.name)
            if d is not None and a.value is None:
                return d
        return None

    def media_direction(self, m: MediaDescription) -> Direction:
        """Effective direction of ``m``: its own attribute, else the session's, else sendrecv."""
        return m.direction or self.direction or Direction.SENDRECV

    def media_connection(self, m: MediaDescription) -> Connection | None:
        return m.connection or self.connection

    def serialize(self) -> str:
        lines = ["v=0", f"o={self.origin.serialize()}", f"s={self.session_name}"]
        if self.info is not None:
            lines.append(f"i={self.info}")
        if self.uri is not None:
            lines.append(f"u={self.uri}")
        lines += [f"e={e}" for e in self.emails]
        lines += [f"p={p}" for p in self.phones]
        if self.connection is not None:
            lines.append(f"c={self.connection.serialize()}")
        lines += [f"b={b}" for b in self.bandwidths]
        lines += [f"t={start} {stop}" for start, stop in self.times]
        lines += [f"{k}={v}" for k, v in self.other]
        lines += [f"a={a.serialize()}" for a in self.attributes]
        for m in self.media:
            lines += m.serialize_lines()
        return "\r\n".join(lines) + "\r\n"

    def to_bytes(self) -> bytes:
        return self.serialize().encode("utf-8")

    def __str__(self) -> str:
        return self.serialize()


# --- codecs --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Codec:
    name: str
    clock_rate: int = 8000
    static_pt: int | None = None

    def matches(self, m: RtpMap) -> bool:
        return (m.encoding.lower() == self.name.lower() and m.clock_rate == self.clock_rate
                and m.channels in (None, 1))


PCMU: Final = Codec("PCMU", 8000, 0)
PCMA: Final = Codec("PCMA", 8000, 8)
TELEPHONE_EVENT: Final = Codec("telephone-event", 8000, None)
DEFAULT_CODECS: Final[tuple[Codec, ...]] = (PCMU, PCMA)
DEFAULT_TELEPHONE_EVENT_PT: Final = 101
DEFAULT_PTIME: Final = 20

# RFC 3551 Table 4: static audio payload types (usable without an rtpmap).
STATIC_PAYLOAD_TYPES: Final[dict[int, RtpMap]] = {
    pt: RtpMap(pt, enc, rate, ch)
    for pt, enc, rate, ch in [
        (0, "PCMU", 8000, None), (3, "GSM", 8000, None), (4, "G723", 8000, None),
        (5, "DVI4", 8000, None), (6, "DVI4", 16000, None), (7, "LPC", 8000, None),
        (8, "PCMA", 8000, None), (9, "G722", 8000, None), (10, "L16", 44100, 2),
        (11, "L16", 44100, None), (12, "QCELP", 8000, None), (13, "CN", 8000, None),
        (14, "MPA", 90000, None), (15, "G728", 8000, None), (16, "DVI4", 11025, None),
        (17, "DVI4", 22050, None), (18, "G729", 8000, None),
    ]
}


# --- parsing -------------------------------------------------------------------------------------

# RFC 4566 §9: token-char = %x21 / %x23-27 / %x2A-2B / %x2D-2E / %x30-39 / %x41-5A / %x5E-7E
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+\Z")
_INT = re.compile(r"[0-9]{1,20}\Z")
_HOST = re.compile(r"[A-Za-z0-9.\-]+\Z")  # FQDN form of a unicast/connection address
_IPV4ISH = re.compile(r"[0-9.]+\Z")
# rtpmap value: <pt> <encoding name>/<clock rate>[/<encoding parameters>]
_RTPMAP = re.compile(r"([0-9]{1,3}) +([!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+)/([0-9]{1,10})(?:/([0-9]{1,3}))?\Z")
_MS = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6})?\Z")
_KNOWN_SESSION = set("vosiuepcbtrzkam")


def _parse_rtpmap(value: str) -> RtpMap:
    m = _RTPMAP.match(value.strip())
    if not m or int(m.group(1)) > 127:
        raise SdpParseError(f"bad rtpmap {value!r}")
    ch = m.group(4)
    return RtpMap(int(m.group(1)), m.group(2), int(m.group(3)), None if ch is None else int(ch))


def _parse_ms(value: str) -> float:
    v = value.strip()
    if not _MS.match(v):
        raise SdpParseError(f"bad packet time {value!r}")
    return float(v)


def _int(value: str, what: str, lineno: int) -> int:
    if not _INT.match(value):
        raise SdpParseError(f"line {lineno}: {what} must be a number, got {value!r}")
    return int(value)


def _check_address(addrtype: str, address: str, lineno: int) -> None:
    if addrtype == "IP6":
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            if not _HOST.match(address) or address.replace(".", "").isdigit():
                raise SdpParseError(f"line {lineno}: bad IPv6 address {address!r}") from None
    elif addrtype == "IP4":
        if _IPV4ISH.match(address):
            try:
                ipaddress.IPv4Address(address)
            except ValueError:
                raise SdpParseError(f"line {lineno}: bad IPv4 address {address!r}") from None
        elif not _HOST.match(address):
            raise SdpParseError(f"line {lineno}: bad address {address!r}")
    elif not address or not all(c.isprintable() and not c.isspace() for c in address):
        raise SdpParseError(f"line {lineno}: bad address {address!r}")


def _parse_connection(value: str, lineno: int) -> Connection:
    parts = value.split()
    if len(parts) != 3 or not all(_TOKEN.match(p) for p in parts[:2]) or not parts[2]:
        raise SdpParseError(f"line {lineno}: c= needs '<nettype> <addrtype> <address>', got {value!r}")
    nettype, addrtype, addr = parts
    ttl = count = None
    pieces = addr.split("/")
    address = pieces[0]
    extra = [_int(p, "c= ttl/count", lineno) for p in pieces[1:]]
    if addrtype == "IP4" and len(extra) >= 1:
        ttl = extra[0]
        if len(extra) == 2:
            count = extra[1]
    elif addrtype == "IP6" and len(extra) == 1:
        count = extra[0]
    if len(extra) > (2 if addrtype == "IP4" else 1):
        raise SdpParseError(f"line {lineno}: bad connection address {addr!r}")
    _check_address(addrtype, address, lineno)
    return Connection(address=address, addrtype=addrtype, nettype=nettype, ttl=ttl, count=count)


def _parse_origin(value: str, lineno: int) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpParseError(f"line {lineno}: o= needs 6 fields, got {value!r}")
    user, sid, ver, nettype, addrtype, addr = parts
    if not (_TOKEN.match(nettype) and _TOKEN.match(addrtype)) or not user.isprintable():
        raise SdpParseError(f"line {lineno}: bad o= line {value!r}")
    # The o= address only identifies the session (RFC 4566 §5.2); peers write odd things there
    # (SIPp: "IN IP6 [::1]"), so any printable token is accepted.
    if not all(c.isprintable() and not c.isspace() for c in addr):
        raise SdpParseError(f"line {lineno}: bad o= address {addr!r}")
    return Origin(user, _int(sid, "o= session id", lineno), _int(ver, "o= session version", lineno),
                  addr, addrtype, nettype)


def _parse_media(value: str, lineno: int) -> MediaDescription:
    parts = value.split()
    if len(parts) < 4:
        raise SdpParseError(f"line {lineno}: m= needs '<media> <port> <proto> <fmt> ...', got {value!r}")
    media, port_s, proto, *formats = parts
    if not _TOKEN.match(media) or not re.fullmatch(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~/]+", proto):
        raise SdpParseError(f"line {lineno}: bad m= line {value!r}")
    port_s, _, count_s = port_s.partition("/")
    port = _int(port_s, "m= port", lineno)
    if port > 65535:
        raise SdpParseError(f"line {lineno}: m= port {port} out of range")
    count = _int(count_s, "m= number of ports", lineno) if count_s else None
    if count is not None and count < 1:
        raise SdpParseError(f"line {lineno}: m= number of ports must be positive")
    for f in formats:
        if not _TOKEN.match(f):
            raise SdpParseError(f"line {lineno}: bad format {f!r}")
        if proto.upper().startswith("RTP/") and (not _INT.match(f) or int(f) > 127):
            raise SdpParseError(f"line {lineno}: RTP payload type must be 0..127, got {f!r}")
    return MediaDescription(media=media, port=port, proto=proto, formats=formats, port_count=count)


def _parse_attribute(value: str, lineno: int) -> Attribute:
    name, sep, val = value.partition(":")
    if not _TOKEN.match(name):
        raise SdpParseError(f"line {lineno}: bad attribute name {name!r}")
    attr = Attribute(name, val if sep else None)
    # Check the attributes this module interprets, so their accessors cannot fail later.
    # A malformed a=rtpmap (RFC 4475's "a=rtpmap:31 LPC" has no clock rate) only makes that one
    # format unusable: MediaDescription.rtpmaps() skips it, the offer stays acceptable.
    if name == "fmtp":
        fmt = val.partition(" ")[0]
        if not sep or not _TOKEN.match(fmt):
            _fail(lineno, f"bad fmtp {val!r}")
    elif name in ("ptime", "maxptime"):
        if not sep:
            _fail(lineno, f"a={name} needs a value")
        try:
            _parse_ms(val)
        except SdpParseError as e:
            raise SdpParseError(f"line {lineno}: {e}") from None
    elif name == "rtcp":
        if not sep:
            _fail(lineno, "a=rtcp needs a value")
        _parse_rtcp_attr(val, lineno)
    return attr


def _fail(lineno: int, msg: str) -> None:
    raise SdpParseError(f"line {lineno}: {msg}")


def _parse_rtcp_attr(value: str, lineno: int) -> tuple[int, Connection | None]:
    # RFC 3605: a=rtcp:<port> [<nettype> <addrtype> <connection-address>]
    port_s, _, rest = value.strip().partition(" ")
    port = _int(port_s, "a=rtcp port", lineno)
    if port > 65535:
        _fail(lineno, f"a=rtcp port {port} out of range")
    return port, (_parse_connection(rest, lineno) if rest else None)


def parse(data: bytes | bytearray | memoryview | str) -> SessionDescription:
    """Parse an SDP body; raise ``SdpParseError`` (naming the line) if it is malformed.

    Lenient where real phones are sloppy: LF or CRLF line ends, blank lines, missing s=/t=,
    session-level lines in any order, unknown line letters kept in ``other``.
    """
    if isinstance(data, str):
        text = data
    else:
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")  # RFC 4566 §5.1: a=charset may name another one
    sd: SessionDescription | None = None
    seen_origin = seen_times = False
    current: MediaDescription | None = None
    lineno = 0
    for lineno, line in enumerate(text.split("\n"), 1):
        if line.endswith("\r"):
            line = line[:-1]
        if not line.strip():
            continue
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise SdpParseError(f"line {lineno}: expected '<letter>=<value>', got {line[:60]!r}")
        if "\r" in line or "\0" in line:
            raise SdpParseError(f"line {lineno}: CR or NUL inside a line")
        kind, value = line[0], line[2:]
        if sd is None:
            # RFC 4566 §5: v= first, then o=.
            if kind == "v":
                if value.strip() != "0":
                    raise SdpParseError(f"line {lineno}: unsupported SDP version {value!r}")
                sd = SessionDescription(origin=Origin("-", 0, 0, "0.0.0.0"), times=[])
                continue
            raise SdpParseError(f"line {lineno}: SDP must start with v=0")
        if not seen_origin:
            if kind != "o":
                raise SdpParseError(f"line {lineno}: o= must follow v=")
            sd.origin = _parse_origin(value, lineno)
            seen_origin = True
            continue
        if kind == "m":
            current = _parse_media(value, lineno)
            sd.media.append(current)
        elif kind == "a":
            (current.attributes if current else sd.attributes).append(_parse_attribute(value, lineno))
        elif kind == "c":
            conn = _parse_connection(value, lineno)
            if current is not None:
                current.connection = conn
            else:
                sd.connection = conn
        elif kind == "b":
            if not re.fullmatch(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+:[0-9]{1,20}", value):
                raise SdpParseError(f"line {lineno}: bad b= line {value!r}")
            (current.bandwidths if current else sd.bandwidths).append(value)
        elif kind == "i":
            if current is not None:
                current.title = value
            else:
                sd.info = value
        elif kind == "k" and current is not None:
            current.key = value
        elif current is not None:
            if kind in _KNOWN_SESSION:
                raise SdpParseError(f"line {lineno}: {kind}= is not allowed inside a media section")
            current.other.append((kind, value))
        elif kind == "s":
            sd.session_name = value
        elif kind == "t":
            parts = value.split()
            if len(parts) != 2:
                raise SdpParseError(f"line {lineno}: t= needs '<start> <stop>', got {value!r}")
            sd.times.append((_int(parts[0], "t= start", lineno), _int(parts[1], "t= stop", lineno)))
            seen_times = True
        elif kind == "u":
            sd.uri = value
        elif kind == "e":
            sd.emails.append(value)
        elif kind == "p":
            sd.phones.append(value)
        elif kind in ("v", "o"):
            raise SdpParseError(f"line {lineno}: repeated {kind}= line")
        else:  # r=, z=, k= and letters we do not know
            sd.other.append((kind, value))
    if sd is None:
        raise SdpParseError("empty SDP body")
    if not seen_origin:
        raise SdpParseError(f"line {lineno}: o= line missing")
    if not seen_times:
        sd.times = [(0, 0)]
    return sd


# --- offer/answer --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NegotiatedMedia:
    """What one call leg's RTP needs, from our side's point of view."""

    remote_address: str  # where to send RTP until symmetric RTP learns better
    remote_port: int
    remote_rtcp_address: str
    remote_rtcp_port: int  # RFC 3605 a=rtcp, else RTP port + 1
    payload_type: int  # the voice payload type to send with
    codec: str  # "PCMU" or "PCMA"
    clock_rate: int
    telephone_event_pt: int | None  # RFC 4733 payload type, None if the peer has none
    ptime: int  # ms per packet we send
    direction: Direction  # our direction: do we send, do we receive
    media_index: int  # which m= line
    srtp: SrtpKeys | None = None  # SDES keys (RFC 4568) when the stream is SRTP, else plain RTP

    @property
    def sends(self) -> bool:
        return self.direction.sends

    @property
    def receives(self) -> bool:
        return self.direction.receives

    @property
    def on_hold(self) -> bool:
        """The peer does not want our audio (a=recvonly/inactive from them, or c=0.0.0.0)."""
        return not self.direction.sends


@dataclass(frozen=True, slots=True)
class Accepted:
    """Answer the offer (200 OK / ACK body) with ``answer``; set up RTP from ``media``."""

    answer: SessionDescription
    media: NegotiatedMedia
    status: Literal[200] = 200
    ok: Literal[True] = True


@dataclass(frozen=True, slots=True)
class Rejected:
    """Nothing in the offer is acceptable: answer the INVITE with 488 Not Acceptable Here."""

    reason: str
    status: Literal[488] = 488
    ok: Literal[False] = False


# ``isinstance(result, Rejected)`` (or ``result.ok``) tells which; mypy narrows on either.
AnswerResult = Accepted | Rejected


def _addrtype(ip: str) -> str:
    try:
        return "IP6" if ipaddress.ip_address(ip).version == 6 else "IP4"
    except ValueError:
        return "IP4"  # a host name


def _as_description(sdp: SessionDescription | bytes | str) -> SessionDescription:
    return sdp if isinstance(sdp, SessionDescription) else parse(sdp)


def _send_ptime(m: MediaDescription, default: int) -> int:
    """The packet time to send with: the peer's a=ptime (what it wants to receive) if sane."""
    p = m.ptime
    if p is not None and 10 <= p <= 60 and p % 10 == 0:
        return int(p)
    return default


def _pick(m: MediaDescription, supported: Sequence[Codec]) -> tuple[int, Codec] | None:
    for pt in m.payload_types:
        enc = m.format_of(pt)
        if enc is None:
            continue
        for codec in supported:
            if codec.matches(enc):
                return pt, codec
    return None


def _telephone_event(m: MediaDescription, clock_rate: int) -> int | None:
    rtpmaps = m.rtpmaps()
    for pt in m.payload_types:
        enc = rtpmaps.get(pt)
        if enc is not None and enc.encoding.lower() == "telephone-event" and enc.clock_rate == clock_rate:
            return pt
    return None


def _rtcp_target(sd: SessionDescription, m: MediaDescription, address: str) -> tuple[str, int]:
    v = m.attribute("rtcp")
    if v:
        port, conn = _parse_rtcp_attr(v, 0)
        return (conn.address if conn else address), port
    return address, m.port + 1


def _audio_section(port: int, proto: str, pt: int, codec: Codec, te_pt: int | None, te_fmtp: str,
                   ptime: int, direction: Direction) -> MediaDescription:
    formats = [str(pt)]
    attrs = [Attribute("rtpmap", RtpMap(pt, codec.name, codec.clock_rate).value())]
    if te_pt is not None:
        formats.append(str(te_pt))
        attrs.append(Attribute("rtpmap", RtpMap(te_pt, "telephone-event", codec.clock_rate).value()))
        attrs.append(Attribute("fmtp", f"{te_pt} {te_fmtp}"))
    attrs.append(Attribute("ptime", str(ptime)))
    attrs.append(Attribute(direction.value))
    return MediaDescription(media="audio", port=port, proto=proto, formats=formats, attributes=attrs)


def _skeleton(local_ip: str, session_id: int, version: int, username: str) -> SessionDescription:
    addrtype = _addrtype(local_ip)
    return SessionDescription(
        origin=Origin(username, session_id, version, local_ip, addrtype),
        session_name="-",
        connection=Connection(local_ip, addrtype),
        times=[(0, 0)],
    )


def negotiate_answer(
    offer: SessionDescription | bytes | str,
    local_ip: str,
    local_port: int,
    supported: Sequence[Codec] = DEFAULT_CODECS,
    *,
    session_id: int,
    version: int,
    local_direction: Direction = Direction.SENDRECV,
    ptime: int = DEFAULT_PTIME,
    telephone_event: bool = True,
    username: str = "-",
    srtp_key: bytes | None = None,
    require_srtp: bool = False,
) -> AnswerResult:
    """Answer ``offer`` (RFC 3264 §6) with one audio stream, or tell the caller to send 488.

    ``ptime`` is the packet time we ask to receive; ``local_direction`` restricts ours (e.g. SENDONLY
    when we put the peer on hold while answering its re-offer). ``srtp_key`` (30 bytes, ours): accept
    SDES-keyed SRTP; None refuses RTP/SAVP and ignores crypto lines. ``require_srtp``: refuse plain
    RTP. Raises ``SdpParseError`` if the offer is bytes/str that do not parse (the SIP layer answers
    400 then).
    """
    sd = _as_description(offer)
    answer = _skeleton(local_ip, session_id, version, username)
    chosen: NegotiatedMedia | None = None
    why = "no audio stream offered"
    for index, m in enumerate(sd.media):
        section: MediaDescription | None = None
        if chosen is None and m.media == "audio" and m.port == 0 and why == "no audio stream offered":
            why = "the audio stream is disabled (port 0)"
        if chosen is None and m.media == "audio" and m.port != 0:
            conn = sd.media_connection(m)
            proto = m.proto.upper()
            secure_proto = proto in _SAVP
            pick = _pick(m, supported) if proto in _AVP or proto in _SAVP else None
            keys: tuple[CryptoAttribute, SrtpKeys] | None = None
            if srtp_key is not None and (secure_proto or proto in _AVP):
                # RFC 4568 §7.1.2: answer the first acceptable crypto line. In RTP/AVP the lines are
                # "best-effort SRTP": without an acceptable one the stream stays plain RTP.
                keys = answer_crypto(_crypto_values(m), srtp_key)
            if proto not in _AVP and proto not in _SAVP:
                why = f"unsupported transport {m.proto}"
            elif secure_proto and srtp_key is None:
                why = f"unsupported transport {m.proto} (SRTP is off: media.srtp)"
            elif secure_proto and keys is None:
                why = "none of the offered SRTP crypto suites is supported"
            elif require_srtp and keys is None:
                why = "SRTP is required (media.srtp: required) and the offer has no usable crypto"
            elif conn is None or conn.nettype != "IN":
                why = "no usable c= line for the audio stream"
            elif pick is None:
                why = "none of the offered audio formats is supported"
            else:
                pt, codec = pick
                te_pt = _telephone_event(m, codec.clock_rate) if telephone_event else None
                te_fmtp = (m.fmtp().get(str(te_pt)) or "0-15") if te_pt is not None else ""
                # RFC 3264 §6.1: sendonly → recvonly, recvonly → sendonly, inactive → inactive;
                # c=0.0.0.0 means "send nothing to me" (§8.4).
                offered = sd.media_direction(m)
                mine = offered.reversed().restrict(local_direction)
                if conn.is_null:
                    mine = mine.restrict(Direction.RECVONLY)
                section = _audio_section(local_port, m.proto, pt, codec, te_pt, te_fmtp, ptime, mine)
                if keys is not None:
                    section.attributes.insert(0, Attribute("crypto", keys[0].value()))
                rtcp_addr, rtcp_port = _rtcp_target(sd, m, conn.address)
                chosen = NegotiatedMedia(
                    remote_address=conn.address, remote_port=m.port, remote_rtcp_address=rtcp_addr,
                    remote_rtcp_port=rtcp_port, payload_type=pt, codec=codec.name,
                    clock_rate=codec.clock_rate, telephone_event_pt=te_pt,
                    ptime=_send_ptime(m, DEFAULT_PTIME), direction=mine, media_index=index,
                    srtp=keys[1] if keys is not None else None,
                )
        if section is None:
            # RFC 3264 §6: same number of m= lines; a refused stream gets port 0.
            section = MediaDescription(media=m.media, port=0, proto=m.proto, formats=list(m.formats))
        answer.media.append(section)
    if chosen is None:
        return Rejected(why)
    return Accepted(answer, chosen)


def make_offer(
    local_ip: str,
    local_port: int,
    *,
    session_id: int,
    version: int,
    codecs: Sequence[Codec] = DEFAULT_CODECS,
    telephone_event_pt: int | None = DEFAULT_TELEPHONE_EVENT_PT,
    ptime: int = DEFAULT_PTIME,
    direction: Direction = Direction.SENDRECV,
    username: str = "-",
    srtp_key: bytes | None = None,
) -> SessionDescription:
    """An offer with one audio stream (server-initiated legs, re-offers for hold/resume); with
    ``srtp_key`` an RTP/SAVP one carrying our crypto lines (RFC 4568 §7.1.1)."""
    if not codecs:
        raise ValueError("an offer needs at least one codec")
    offer = _skeleton(local_ip, session_id, version, username)
    formats: list[str] = []
    attrs: list[Attribute] = []
    next_dynamic = 96
    for codec in codecs:
        pt = codec.static_pt
        if pt is None:
            while next_dynamic == telephone_event_pt:
                next_dynamic += 1
            pt, next_dynamic = next_dynamic, next_dynamic + 1
        formats.append(str(pt))
        attrs.append(Attribute("rtpmap", RtpMap(pt, codec.name, codec.clock_rate).value()))
    if telephone_event_pt is not None:
        formats.append(str(telephone_event_pt))
        attrs.append(Attribute("rtpmap", RtpMap(telephone_event_pt, "telephone-event", 8000).value()))
        attrs.append(Attribute("fmtp", f"{telephone_event_pt} 0-16"))
    attrs.append(Attribute("ptime", str(ptime)))
    attrs.append(Attribute(direction.value))
    if srtp_key is not None:
        attrs[:0] = [Attribute("crypto", c.value()) for c in offer_cryptos(srtp_key)]
    offer.media.append(MediaDescription(media="audio", port=local_port,
                                        proto="RTP/AVP" if srtp_key is None else "RTP/SAVP",
                                        formats=formats, attributes=attrs))
    return offer


def process_answer(offer: SessionDescription, answer: SessionDescription | bytes | str) -> NegotiatedMedia:
    """The UAC side: what to send and where, given our ``offer`` and the peer's ``answer``.

    Raises ``SdpNegotiationError`` if the answer refuses audio or does not fit the offer, and
    ``SdpParseError`` if ``answer`` is bytes/str that do not parse.
    """
    ans = _as_description(answer)
    if len(ans.media) != len(offer.media):
        raise SdpNegotiationError(
            f"answer has {len(ans.media)} m= lines, the offer had {len(offer.media)} (RFC 3264 §6)")
    for index, (om, am) in enumerate(zip(offer.media, ans.media, strict=True)):
        if om.media != "audio" or om.port == 0 or am.port == 0 or am.media != om.media:
            continue
        if not am.is_rtp:
            continue
        offered = [c for pt in om.payload_types if (c := _codec_for(om, pt)) is not None]
        pick = _pick(am, offered)
        if pick is None:
            raise SdpNegotiationError("the answer's audio formats were not in our offer")
        pt, codec = pick
        conn = ans.media_connection(am)
        if conn is None:
            raise SdpNegotiationError("the answer has no c= line for its audio stream")
        mine = ans.media_direction(am).reversed().restrict(offer.media_direction(om))
        if conn.is_null:
            mine = mine.restrict(Direction.RECVONLY)
        keys: SrtpKeys | None = None
        ours = _crypto_values(om)
        if ours:
            # RFC 4568 §7.1.3: the answer names one of our tags with its suite, and its own key.
            keys = accept_answer_crypto([parse_crypto(v) for v in ours], _crypto_values(am))
            if keys is None and om.proto.upper() in _SAVP:
                raise SdpNegotiationError("the answer has no crypto line matching our SRTP offer")
        rtcp_addr, rtcp_port = _rtcp_target(ans, am, conn.address)
        return NegotiatedMedia(
            remote_address=conn.address, remote_port=am.port, remote_rtcp_address=rtcp_addr,
            remote_rtcp_port=rtcp_port, payload_type=pt, codec=codec.name, clock_rate=codec.clock_rate,
            telephone_event_pt=_telephone_event(am, codec.clock_rate),
            ptime=_send_ptime(am, DEFAULT_PTIME), direction=mine, media_index=index, srtp=keys,
        )
    raise SdpNegotiationError("the answer accepts no audio stream")


_AVP: Final = frozenset({"RTP/AVP", "RTP/AVPF"})
_SAVP: Final = frozenset({"RTP/SAVP", "RTP/SAVPF"})


def _crypto_values(m: MediaDescription) -> list[str]:
    return [a.value for a in m.attributes if a.name == "crypto" and a.value is not None]


def _codec_for(m: MediaDescription, pt: int) -> Codec | None:
    enc = m.format_of(pt)
    if enc is None or enc.encoding.lower() == "telephone-event":
        return None
    for c in (PCMU, PCMA):
        if c.matches(enc):
            return c
    return Codec(enc.encoding, enc.clock_rate, pt if pt < 96 else None)


class SdpVersioner:
    """Our o= line across one dialog: fixed session id, version bumped only on change (RFC 3264 §8)."""

    def __init__(self, session_id: int, version: int | None = None) -> None:
        self.session_id = session_id
        self.version = session_id if version is None else version
        self._last: SessionDescription | None = None

    def stamp(self, sd: SessionDescription) -> SessionDescription:
        """A copy of ``sd`` with our session id and the right version."""
        out = copy.deepcopy(sd)
        if self._last is not None:
            probe = replace(out, origin=replace(out.origin, session_id=self.session_id,
                                                session_version=self.version))
            if probe != self._last:
                self.version += 1
        out.origin.session_id = self.session_id
        out.origin.session_version = self.version
        self._last = copy.deepcopy(out)
        return out
