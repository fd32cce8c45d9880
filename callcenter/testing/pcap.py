"""Write pcap files of RTP audio and RFC 4733 digits for SIPp's `play_pcap_audio`.

SIPp replays the UDP payloads with the pcap's timing to the media address of the call; only the RTP
inside matters. Audio is G.711 in 20 ms packets; a digit is a ~160 ms RFC 4733 event (start packet
with the marker bit, updates every 20 ms, then three end packets with the same timestamp, §2.5.1.4).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from callcenter.media import g711

_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}


@dataclass
class Segment:
    """Audio (int16, 8 kHz) or a digit, in the order they are played."""

    pcm: npt.NDArray[np.int16] | None = None
    digit: str | None = None
    digit_ms: int = 160


def _ip_udp(payload: bytes, src_port: int = 6000, dst_port: int = 6000) -> bytes:
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
    total = 20 + len(udp)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 17, 0, bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])
    )
    return ip + udp


def write_rtp_pcap(
    path: Path,
    segments: list[Segment],
    *,
    codec: str = "PCMU",
    telephone_event_pt: int = 101,
    ssrc: int = 0x1234ABCD,
) -> float:
    """Write the pcap; returns its duration in seconds."""
    pt = 0 if codec == "PCMU" else 8
    packets: list[tuple[float, bytes]] = []
    seq, ts, t = 1000, 16000, 0.0

    def rtp(payload_type: int, marker: bool, timestamp: int, payload: bytes) -> bytes:
        nonlocal seq
        header = struct.pack(
            "!BBHII", 0x80, (0x80 if marker else 0) | payload_type, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc
        )
        seq += 1
        return header + payload

    for segment in segments:
        if segment.pcm is not None:
            encoded = g711.encode(segment.pcm, codec)
            for i in range(0, len(encoded) - 159, 160):
                packets.append((t, rtp(pt, False, ts, encoded[i : i + 160])))
                ts += 160
                t += 0.02
        if segment.digit is not None:
            event = _EVENTS[segment.digit.upper()]
            steps = max(1, segment.digit_ms // 20)
            for n in range(1, steps + 1):
                body = struct.pack("!BBH", event, 10, n * 160)
                packets.append((t, rtp(telephone_event_pt, n == 1, ts, body)))
                t += 0.02
            end = struct.pack("!BBH", event, 0x80 | 10, steps * 160)
            for _ in range(3):  # the end packet three times (RFC 4733 §2.5.1.4)
                packets.append((t, rtp(telephone_event_pt, False, ts, end)))
            ts += steps * 160
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # LINKTYPE_ETHERNET
        for when, payload in packets:
            frame = b"\x00" * 12 + b"\x08\x00" + _ip_udp(payload)
            sec = int(when)
            f.write(
                struct.pack("<IIII", 1_700_000_000 + sec, int((when - sec) * 1e6), len(frame), len(frame))
            )
            f.write(frame)
    return t
