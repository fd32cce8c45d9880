"""RTP packets (RFC 3550 §5.1), sans-I/O.

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |V=2|P|X|  CC   |M|     PT      |       sequence number         |
    |                           timestamp                           |
    |           synchronization source (SSRC) identifier            |
    |            contributing source (CSRC) identifiers  (CC × 32)  |
    |  defined by profile (16)      |        length (16, words)     |   if X
    |                        header extension                       |
    |                 payload ...   | padding ... | padding count (8) |   if P

``parse`` raises only ``RtpParseError``; ``RtpPacket.serialize`` round-trips what ``parse`` accepts.
The sender's hot path builds headers with ``HEADER.pack`` directly (see ``header``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from callcenter.core.errors import CallcenterError

HEADER: Final = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
_EXT: Final = struct.Struct("!HH")
VERSION_BITS: Final = 0x80  # version 2 in the top two bits


class RtpParseError(CallcenterError):
    """Bytes that are not a well-formed RTP packet."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    # (profile-defined 16 bits, data whose length is a multiple of 4) — RFC 3550 §5.3.1
    extension: tuple[int, bytes] | None = None
    # number of padding octets, count octet included (0 = no padding) — RFC 3550 §5.1 "P"
    padding: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise ValueError("payload_type must be 0..127")
        if not 0 <= self.sequence <= 0xFFFF:
            raise ValueError("sequence must be 0..65535")
        if not 0 <= self.timestamp <= 0xFFFFFFFF or not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise ValueError("timestamp and ssrc must be 32-bit unsigned")
        if len(self.csrcs) > 15 or any(not 0 <= c <= 0xFFFFFFFF for c in self.csrcs):
            raise ValueError("at most 15 CSRCs of 32 bits")
        if self.extension is not None:
            profile, data = self.extension
            if not 0 <= profile <= 0xFFFF or len(data) % 4 or len(data) > 0xFFFF * 4:
                raise ValueError("extension: 16-bit profile, data a multiple of 4 octets")
        if not 0 <= self.padding <= 255:
            raise ValueError("padding must be 0..255 octets")

    def serialize(self) -> bytes:
        b0 = VERSION_BITS | len(self.csrcs)
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        parts = [
            HEADER.pack(b0, self.payload_type | (0x80 if self.marker else 0), self.sequence,
                        self.timestamp, self.ssrc)
        ]
        if self.csrcs:
            parts.append(struct.pack(f"!{len(self.csrcs)}I", *self.csrcs))
        if self.extension is not None:
            profile, data = self.extension
            parts.append(_EXT.pack(profile, len(data) // 4))
            parts.append(data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


def header(payload_type: int, marker: bool, sequence: int, timestamp: int, ssrc: int) -> bytes:
    """The 12-byte fixed header of a plain packet (no CSRC, extension or padding)."""
    return HEADER.pack(VERSION_BITS, payload_type | (0x80 if marker else 0), sequence, timestamp, ssrc)


def parse(data: bytes) -> RtpPacket:
    """Parse one RTP packet; raise ``RtpParseError`` if it is malformed."""
    n = len(data)
    if n < 12:
        raise RtpParseError(f"RTP packet too short: {n} bytes")
    b0, b1, seq, ts, ssrc = HEADER.unpack_from(data)
    if b0 >> 6 != 2:
        raise RtpParseError(f"RTP version {b0 >> 6}, expected 2")
    cc = b0 & 0x0F
    pos = 12 + 4 * cc
    if pos > n:
        raise RtpParseError("CSRC list runs past the end of the packet")
    csrcs = struct.unpack_from(f"!{cc}I", data, 12) if cc else ()
    extension = None
    if b0 & 0x10:
        if pos + 4 > n:
            raise RtpParseError("header extension runs past the end of the packet")
        profile, words = _EXT.unpack_from(data, pos)
        pos += 4
        end = pos + 4 * words
        if end > n:
            raise RtpParseError("header extension runs past the end of the packet")
        extension = (profile, bytes(data[pos:end]))
        pos = end
    end = n
    padding = 0
    if b0 & 0x20:
        padding = data[-1]
        # The count includes itself, so 0 is invalid; it must fit after the headers.
        if padding == 0 or pos + padding > n:
            raise RtpParseError(f"bad RTP padding count {padding}")
        end = n - padding
    return RtpPacket(
        payload_type=b1 & 0x7F,
        sequence=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=bytes(data[pos:end]),
        marker=bool(b1 & 0x80),
        csrcs=csrcs,
        extension=extension,
        padding=padding,
    )
