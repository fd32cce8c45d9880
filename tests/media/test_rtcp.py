import pytest
from hypothesis import given
from hypothesis import strategies as st

from callcenter.media import rtcp
from callcenter.media.rtcp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpParseError,
    RtcpUnknown,
    SdesChunk,
    SenderReport,
    SourceDescription,
)

u32 = st.integers(0, 0xFFFFFFFF)
words = st.integers(0, 4).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n))
blocks = st.lists(
    st.builds(ReportBlock, ssrc=u32, fraction_lost=st.integers(0, 255),
              cumulative_lost=st.integers(-0x800000, 0x7FFFFF), highest_sequence=u32, jitter=u32,
              lsr=u32, dlsr=u32),
    max_size=4,
).map(tuple)
srs = st.builds(SenderReport, ssrc=u32, ntp_timestamp=st.integers(0, 2**64 - 1), rtp_timestamp=u32,
                packet_count=u32, octet_count=u32, reports=blocks, extension=words)
rrs = st.builds(ReceiverReport, ssrc=u32, reports=blocks, extension=words)
sdes = st.builds(
    SourceDescription,
    st.lists(st.builds(SdesChunk, u32, st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=40)),
                                                  max_size=3).map(tuple)), max_size=3).map(tuple),
)
byes = st.builds(Bye, st.lists(u32, max_size=4).map(tuple), st.none() | st.binary(max_size=30))
unknowns = st.builds(RtcpUnknown, st.integers(204, 210), st.integers(0, 31), words)
compounds = st.lists(st.one_of(srs, rrs, sdes, byes, unknowns), min_size=1, max_size=5)


@given(compounds)
def test_compound_round_trip(packets):
    assert rtcp.parse_compound(rtcp.serialize_compound(packets)) == packets


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_rtcp_parse_error(data):
    try:
        rtcp.parse_compound(data)
    except RtcpParseError:
        pass


@given(compounds, st.data())
def test_truncated_compounds_raise_own_error(packets, data):
    wire = rtcp.serialize_compound(packets)
    cut = data.draw(st.integers(0, len(wire) - 1))
    try:
        rtcp.parse_compound(wire[:cut])
    except RtcpParseError:
        pass


def test_sender_report_wire_layout():
    block = ReportBlock(ssrc=0x22222222, fraction_lost=64, cumulative_lost=-3, highest_sequence=70000,
                        jitter=25, lsr=0xAABBCCDD, dlsr=65536)
    sr = SenderReport(ssrc=0x11111111, ntp_timestamp=0x0102030405060708, rtp_timestamp=160,
                      packet_count=50, octet_count=8000, reports=(block,))
    wire = sr.serialize()
    assert len(wire) == 52
    # RC=1, PT=200, length = 13 words - 1
    assert wire[:4] == bytes.fromhex("81c8000c")
    assert wire[4:8] == bytes.fromhex("11111111")
    assert wire[8:16] == bytes.fromhex("0102030405060708")
    assert wire[28:32] == bytes.fromhex("22222222")
    assert wire[32:36] == bytes.fromhex("40fffffd")  # fraction 64, cumulative -3 in 24-bit two's complement
    assert rtcp.parse_compound(wire) == [sr]


def test_typical_compound_sr_sdes():
    sr = SenderReport(1, 2, 3, 4, 5)
    sd = SourceDescription((SdesChunk(1, ((rtcp.SDES_CNAME, b"abc@example"),)),))
    wire = rtcp.serialize_compound([sr, sd])
    assert len(wire) % 4 == 0
    assert rtcp.parse_compound(wire) == [sr, sd]


def test_padding_on_the_last_packet_only():
    rr = ReceiverReport(7).serialize()
    header = bytes([rr[0] | 0x20, rr[1]]) + (len(rr) // 4).to_bytes(2, "big")
    padded = header + rr[4:] + bytes.fromhex("00000004")
    assert rtcp.parse_compound(padded) == [ReceiverReport(7)]
    with pytest.raises(RtcpParseError):
        rtcp.parse_compound(padded + rr)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes.fromhex("80c9"),
        bytes.fromhex("40c90001 00000007"),  # version 1
        bytes.fromhex("80c90005 00000007"),  # length past the end
        bytes.fromhex("81c90001 00000007"),  # RR says 1 block, has none
        bytes.fromhex("81ca0001 00000007"),  # SDES chunk without terminator
        bytes.fromhex("81cb0000"),  # BYE says 1 SSRC, has none
        bytes.fromhex("80c90001 00000007 00"),  # trailing byte
    ],
)
def test_malformed_rtcp_raises_own_error(data):
    with pytest.raises(RtcpParseError):
        rtcp.parse_compound(data)


def test_ntp_helpers():
    assert rtcp.ntp_timestamp(0.0) == 2_208_988_800 << 32
    ntp = rtcp.ntp_timestamp(1.5)
    assert ntp & 0xFFFFFFFF == 1 << 31
    assert rtcp.ntp_middle32(0x0102030405060708) == 0x03040506


def test_report_block_limits():
    with pytest.raises(ValueError):
        ReportBlock(1, 256, 0, 0, 0)
    with pytest.raises(ValueError):
        ReportBlock(1, 0, 0x800000, 0, 0)
