"""RTCP (RFC 3550 §6), sans-I/O: SR, RR, SDES, BYE and compound packets.

Every RTCP packet starts with

    |V=2|P|  RC/SC  |      PT       |   length (32-bit words − 1)   |

and a compound packet is several of them back to back (§6.1). ``parse_compound`` raises only
``RtcpParseError``; types other than SR/RR/SDES/BYE are kept as ``RtcpUnknown``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from callcenter.core.errors import CallcenterError

PT_SR: Final = 200
PT_RR: Final = 201
PT_SDES: Final = 202
PT_BYE: Final = 203

SDES_CNAME: Final = 1

_COMMON: Final = struct.Struct("!BBH")
_SR_INFO: Final = struct.Struct("!IQIII")  # SSRC, NTP (64), RTP ts, packet count, octet count
# report block: SSRC, fraction lost, cumulative lost (24 bits, signed), ext. seq, jitter, LSR, DLSR
_BLOCK: Final = struct.Struct("!IB3sIIII")
_NTP_UNIX_OFFSET: Final = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01


class RtcpParseError(CallcenterError):
    """Bytes that are not a well-formed (compound) RTCP packet."""


def _u32(name: str, v: int) -> None:
    if not 0 <= v <= 0xFFFFFFFF:
        raise ValueError(f"{name} must be 32-bit unsigned")


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int  # 0..255, fixed point /256, since the previous report
    cumulative_lost: int  # signed 24-bit (duplicates can make it negative)
    highest_sequence: int  # extended: cycles << 16 | highest seq
    jitter: int  # timestamp units
    lsr: int = 0  # middle 32 bits of the last SR's NTP timestamp
    dlsr: int = 0  # delay since that SR, 1/65536 s

    def __post_init__(self) -> None:
        for name in ("ssrc", "highest_sequence", "jitter", "lsr", "dlsr"):
            _u32(name, getattr(self, name))
        if not 0 <= self.fraction_lost <= 255:
            raise ValueError("fraction_lost must be 0..255")
        if not -0x800000 <= self.cumulative_lost <= 0x7FFFFF:
            raise ValueError("cumulative_lost must fit in a signed 24-bit field")

    def _pack(self) -> bytes:
        lost = (self.cumulative_lost & 0xFFFFFF).to_bytes(3, "big")
        return _BLOCK.pack(self.ssrc, self.fraction_lost, lost, self.highest_sequence, self.jitter,
                           self.lsr, self.dlsr)


def _unpack_blocks(body: bytes, pos: int, count: int) -> tuple[ReportBlock, ...]:
    blocks = []
    for _ in range(count):
        ssrc, frac, lost, ext, jit, lsr, dlsr = _BLOCK.unpack_from(body, pos)
        pos += _BLOCK.size
        blocks.append(ReportBlock(ssrc, frac, int.from_bytes(lost, "big", signed=True), ext, jit, lsr, dlsr))
    return tuple(blocks)


def _check_blocks(reports: tuple[ReportBlock, ...], extension: bytes) -> None:
    if len(reports) > 31:
        raise ValueError("at most 31 report blocks per packet")
    if len(extension) % 4:
        raise ValueError("profile-specific extension must be a multiple of 4 octets")


def _wrap(count: int, pt: int, body: bytes) -> bytes:
    # body is always a multiple of 4 here; length counts 32-bit words minus one (§6.4.1).
    return _COMMON.pack(0x80 | count, pt, (len(body) + 4) // 4 - 1) + body


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int  # 64-bit NTP format, see ``ntp_timestamp``
    rtp_timestamp: int
    packet_count: int
    octet_count: int  # payload octets only
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def __post_init__(self) -> None:
        for name in ("ssrc", "rtp_timestamp", "packet_count", "octet_count"):
            _u32(name, getattr(self, name))
        if not 0 <= self.ntp_timestamp < 1 << 64:
            raise ValueError("ntp_timestamp must be 64-bit unsigned")
        _check_blocks(self.reports, self.extension)

    def serialize(self) -> bytes:
        info = _SR_INFO.pack(self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count,
                             self.octet_count)
        body = info + b"".join(b._pack() for b in self.reports) + self.extension
        return _wrap(len(self.reports), PT_SR, body)


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def __post_init__(self) -> None:
        _u32("ssrc", self.ssrc)
        _check_blocks(self.reports, self.extension)

    def serialize(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(b._pack() for b in self.reports) + self.extension
        return _wrap(len(self.reports), PT_RR, body)


@dataclass(frozen=True, slots=True)
class SdesChunk:
    ssrc: int
    items: tuple[tuple[int, bytes], ...]  # (item type 1..255, text of at most 255 octets)

    def __post_init__(self) -> None:
        _u32("ssrc", self.ssrc)
        for kind, text in self.items:
            if not 1 <= kind <= 255 or len(text) > 255:
                raise ValueError("SDES item: type 1..255, text up to 255 octets")


@dataclass(frozen=True, slots=True)
class SourceDescription:
    chunks: tuple[SdesChunk, ...]

    def __post_init__(self) -> None:
        if len(self.chunks) > 31:
            raise ValueError("at most 31 SDES chunks per packet")

    def serialize(self) -> bytes:
        parts = []
        for chunk in self.chunks:
            c = struct.pack("!I", chunk.ssrc) + b"".join(
                bytes([kind, len(text)]) + text for kind, text in chunk.items
            )
            # The item list ends with at least one null octet, padded to 32 bits (§6.5).
            parts.append(c + bytes(4 - len(c) % 4))
        return _wrap(len(self.chunks), PT_SDES, b"".join(parts))


@dataclass(frozen=True, slots=True)
class Bye:
    ssrcs: tuple[int, ...]
    reason: bytes | None = None

    def __post_init__(self) -> None:
        if len(self.ssrcs) > 31:
            raise ValueError("at most 31 SSRCs per BYE")
        for s in self.ssrcs:
            _u32("ssrc", s)
        if self.reason is not None and len(self.reason) > 255:
            raise ValueError("BYE reason is at most 255 octets")

    def serialize(self) -> bytes:
        body = struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        if self.reason is not None:
            r = bytes([len(self.reason)]) + self.reason
            body += r + bytes(-len(r) % 4)
        return _wrap(len(self.ssrcs), PT_BYE, body)


@dataclass(frozen=True, slots=True)
class RtcpUnknown:
    packet_type: int
    count: int  # the 5-bit RC/SC/subtype field
    body: bytes  # after the 4-byte common header, padding removed

    def __post_init__(self) -> None:
        if not 0 <= self.packet_type <= 255 or not 0 <= self.count <= 31 or len(self.body) % 4:
            raise ValueError("bad RTCP packet fields")

    def serialize(self) -> bytes:
        return _wrap(self.count, self.packet_type, self.body)


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | RtcpUnknown


def serialize_compound(packets: list[RtcpPacket] | tuple[RtcpPacket, ...]) -> bytes:
    return b"".join(p.serialize() for p in packets)


def _parse_sdes(body: bytes, count: int) -> SourceDescription:
    chunks = []
    pos = 0
    n = len(body)
    for _ in range(count):
        if pos + 4 > n:
            raise RtcpParseError("SDES chunk runs past the end of the packet")
        (ssrc,) = struct.unpack_from("!I", body, pos)
        pos += 4
        items = []
        while True:
            if pos >= n:
                raise RtcpParseError("SDES item list not terminated")
            kind = body[pos]
            if kind == 0:
                pos = (pos + 4) & ~3  # skip the terminator and the padding to the next word
                break
            if pos + 2 > n or pos + 2 + body[pos + 1] > n:
                raise RtcpParseError("SDES item runs past the end of the packet")
            ln = body[pos + 1]
            items.append((kind, bytes(body[pos + 2 : pos + 2 + ln])))
            pos += 2 + ln
        chunks.append(SdesChunk(ssrc, tuple(items)))
    if pos != n:
        raise RtcpParseError("SDES packet length does not match its chunks")
    return SourceDescription(tuple(chunks))


def _parse_one(pt: int, count: int, body: bytes) -> RtcpPacket:
    n = len(body)
    if pt == PT_SR:
        need = _SR_INFO.size + count * _BLOCK.size
        if n < need:
            raise RtcpParseError(f"SR with {count} report blocks needs {need} octets, has {n}")
        ssrc, ntp, rtp_ts, pkts, octets = _SR_INFO.unpack_from(body)
        return SenderReport(ssrc, ntp, rtp_ts, pkts, octets, _unpack_blocks(body, _SR_INFO.size, count),
                            bytes(body[need:]))
    if pt == PT_RR:
        need = 4 + count * _BLOCK.size
        if n < need:
            raise RtcpParseError(f"RR with {count} report blocks needs {need} octets, has {n}")
        (ssrc,) = struct.unpack_from("!I", body)
        return ReceiverReport(ssrc, _unpack_blocks(body, 4, count), bytes(body[need:]))
    if pt == PT_SDES:
        return _parse_sdes(body, count)
    if pt == PT_BYE:
        need = 4 * count
        if n < need:
            raise RtcpParseError("BYE source list runs past the end of the packet")
        ssrcs = struct.unpack_from(f"!{count}I", body)
        reason = None
        if n > need:
            ln = body[need]
            if need + 1 + ln > n:
                raise RtcpParseError("BYE reason runs past the end of the packet")
            reason = bytes(body[need + 1 : need + 1 + ln])
        return Bye(ssrcs, reason)
    return RtcpUnknown(pt, count, bytes(body))


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse a (compound) RTCP packet; raise ``RtcpParseError`` if any part is malformed."""
    n = len(data)
    if n < 4:
        raise RtcpParseError(f"RTCP packet too short: {n} bytes")
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < n:
        if pos + 4 > n:
            raise RtcpParseError("trailing bytes after the last RTCP packet")
        b0, pt, words = _COMMON.unpack_from(data, pos)
        if b0 >> 6 != 2:
            raise RtcpParseError(f"RTCP version {b0 >> 6}, expected 2")
        end = pos + 4 * (words + 1)
        if end > n:
            raise RtcpParseError("RTCP length runs past the end of the datagram")
        body_end = end
        if b0 & 0x20:
            # Padding (count in the last octet, itself included) is allowed on the last packet only.
            pad = data[end - 1]
            if end != n or pad == 0 or pad > end - pos - 4 or pad % 4:
                raise RtcpParseError(f"bad RTCP padding count {pad}")
            body_end = end - pad
        packets.append(_parse_one(pt, b0 & 0x1F, data[pos + 4 : body_end]))
        pos = end
    return packets


def ntp_timestamp(unix_time: float) -> int:
    """64-bit NTP timestamp (RFC 3550 §4) for a wall-clock time in Unix seconds."""
    return round((unix_time + _NTP_UNIX_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp, as carried in LSR (§6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF
