import pytest
from hypothesis import given
from hypothesis import strategies as st

from callcenter.media import rtp
from callcenter.media.rtp import RtpPacket, RtpParseError

u32 = st.integers(0, 0xFFFFFFFF)

packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=u32,
    ssrc=u32,
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrcs=st.lists(u32, max_size=15).map(tuple),
    extension=st.none() | st.tuples(st.integers(0, 0xFFFF),
                                     st.integers(0, 10).flatmap(lambda n: st.binary(min_size=4 * n,
                                                                                  max_size=4 * n))),
    padding=st.integers(0, 255),
)


@given(packets)
def test_round_trip(pkt):
    assert rtp.parse(pkt.serialize()) == pkt


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_rtp_parse_error(data):
    try:
        pkt = rtp.parse(data)
    except RtpParseError:
        return
    # What parses re-serialises to the same header and payload (padding octets may differ).
    out = pkt.serialize()
    assert len(out) == len(data)
    assert out[: len(out) - pkt.padding] == data[: len(data) - pkt.padding]


def test_known_packet():
    # V=2, M=1, PT=0, seq=1, ts=160, SSRC=0x12345678, 4 payload octets
    data = bytes.fromhex("80 80 0001 000000a0 12345678") + b"\xff\xfe\xfd\xfc"
    pkt = rtp.parse(data)
    fields = (pkt.payload_type, pkt.marker, pkt.sequence, pkt.timestamp, pkt.ssrc)
    assert fields == (0, True, 1, 160, 0x12345678)
    assert pkt.payload == b"\xff\xfe\xfd\xfc"
    assert pkt.csrcs == () and pkt.extension is None and pkt.padding == 0
    assert rtp.header(0, True, 1, 160, 0x12345678) == data[:12]


def test_csrc_extension_and_padding():
    data = (bytes.fromhex("b2 08 ffff ffffffff 00000001")  # V=2 P X CC=2, PT 8
            + bytes.fromhex("00000002 00000003")  # CSRCs
            + bytes.fromhex("bede 0001 10ab0000")  # one-word extension
            + b"abc" + bytes.fromhex("000003"))  # payload, 3 octets of padding
    pkt = rtp.parse(data)
    assert pkt.csrcs == (2, 3)
    assert pkt.extension == (0xBEDE, bytes.fromhex("10ab0000"))
    assert pkt.payload == b"abc"
    assert pkt.padding == 3
    assert pkt.serialize() == data


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(11),
        bytes.fromhex("40000001000000a012345678"),  # version 1
        bytes.fromhex("83000001000000a012345678") + bytes(8),  # CC=3, only 2 CSRCs
        bytes.fromhex("90000001000000a012345678"),  # X without extension header
        bytes.fromhex("90000001000000a012345678 bede0002 00000000"),  # extension says 2 words, has 1
        bytes.fromhex("a0000001000000a012345678 aabb00"),  # padding count 0
        bytes.fromhex("a0000001000000a012345678 aabb09"),  # padding longer than the payload
    ],
)
def test_malformed_packets_raise_own_error(data):
    with pytest.raises(RtpParseError):
        rtp.parse(data)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"payload_type": 128}, {"sequence": 65536}, {"timestamp": -1}, {"csrcs": tuple(range(16))},
        {"extension": (1, b"abc")}, {"padding": 256},
    ],
)
def test_invalid_fields_are_refused_when_building(kwargs):
    base = {"payload_type": 0, "sequence": 0, "timestamp": 0, "ssrc": 0}
    with pytest.raises(ValueError):
        RtpPacket(**(base | kwargs))
