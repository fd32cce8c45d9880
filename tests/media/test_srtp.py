"""SDES (RFC 4568) crypto attributes, the offer/answer around them, and SRTP through libsrtp."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import pytest

from callcenter.calls.leg_sdp import LegSdp
from callcenter.media import rtcp, rtp, sdp
from callcenter.media.srtp import (
    CryptoParseError,
    SrtpError,
    SrtpKeys,
    SrtpProtector,
    answer_crypto,
    new_key,
    offered_cryptos,
    parse_crypto,
)

# RFC 4568 §4 / §9.1 example key (40 base64 characters = 30 bytes of key||salt).
RFC_KEY_B64 = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
RFC_KEY = base64.b64decode(RFC_KEY_B64)


def offer_sdp(proto: str, *cryptos: str, port: int = 4000) -> bytes:
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        f"m=audio {port} {proto} 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
    ]
    lines += [f"a=crypto:{c}" for c in cryptos]
    return ("\r\n".join(lines) + "\r\n").encode()


# --- the attribute ---------------------------------------------------------------------------------


def test_rfc4568_example_with_lifetime_parses() -> None:
    c = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY_B64}|2^20")
    assert (c.tag, c.suite, c.key, c.lifetime) == (1, "AES_CM_128_HMAC_SHA1_80", RFC_KEY, "2^20")
    assert c.usable
    assert parse_crypto(c.value()) == c  # written back the way it was read


def test_rfc4568_example_with_mki_is_refused() -> None:
    # §9.1's "inline:...|2^20|1:32": an MKI we cannot hand to libsrtp through pylibsrtp.
    with pytest.raises(CryptoParseError, match="MKI"):
        parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY_B64}|2^20|1:32")


def test_rfc4568_section9_offer_lines_are_all_unusable_here() -> None:
    # §9's example offer: FEC_ORDER session parameter, an F8 suite, and two keys with MKIs.
    lines = [
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY_B64}|2^20 FEC_ORDER=FEC_SRTP",
        f"2 F8_128_HMAC_SHA1_80 inline:{RFC_KEY_B64}|2^20|1:4;"
        f"inline:{RFC_KEY_B64}|2^20|2:4 FEC_ORDER=FEC_SRTP",
    ]
    assert offered_cryptos(lines) == []


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x AES_CM_128_HMAC_SHA1_80 inline:" + RFC_KEY_B64,  # tag not a number
        "1234567890 AES_CM_128_HMAC_SHA1_80 inline:" + RFC_KEY_B64,  # tag longer than 9 digits
        "1 AES_CM_128_HMAC_SHA1_80",  # no key params
        "1 AES_CM_128_HMAC_SHA1_80 inline:not*base64!",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(16)).decode(),  # key too short
        "1 AES_CM_128_HMAC_SHA1_80 uri:https://example.com/key",  # a key method we do not know
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + RFC_KEY_B64 + "|lifetime",
    ],
)
def test_malformed_crypto_values_raise(value: str) -> None:
    with pytest.raises(CryptoParseError):
        parse_crypto(value)


def test_unknown_suite_parses_but_is_not_usable() -> None:
    c = parse_crypto(f"3 AEAD_AES_256_GCM inline:{base64.b64encode(bytes(44)).decode()}")
    assert not c.usable


def test_answer_picks_first_usable_line_in_the_offerers_order_with_our_key() -> None:
    ours = new_key()
    offered = [
        "1 NULL_CIPHER inline:" + RFC_KEY_B64,
        "2 AES_CM_128_HMAC_SHA1_32 inline:" + RFC_KEY_B64,
        "3 AES_CM_128_HMAC_SHA1_80 inline:" + RFC_KEY_B64,
    ]
    result = answer_crypto(offered, ours)
    assert result is not None
    attr, keys = result
    assert (attr.tag, attr.suite, attr.key) == (2, "AES_CM_128_HMAC_SHA1_32", ours)
    assert keys == SrtpKeys("AES_CM_128_HMAC_SHA1_32", ours, RFC_KEY)


def test_fresh_keys_differ() -> None:
    assert len(new_key()) == 30 and new_key() != new_key()


# --- SRTP itself (libsrtp) -------------------------------------------------------------------------


def pair(suite: str = "AES_CM_128_HMAC_SHA1_80") -> tuple[SrtpProtector, SrtpProtector]:
    ka, kb = new_key(), new_key()
    return SrtpProtector(SrtpKeys(suite, ka, kb)), SrtpProtector(SrtpKeys(suite, kb, ka))


def voice_packet(seq: int, payload: bytes = b"\x55" * 160) -> bytes:
    return rtp.RtpPacket(
        payload_type=0, sequence=seq, timestamp=160 * seq, ssrc=0x1234, payload=payload
    ).serialize()


@pytest.mark.parametrize("suite,tag", [("AES_CM_128_HMAC_SHA1_80", 10), ("AES_CM_128_HMAC_SHA1_32", 4)])
def test_srtp_round_trip_hides_the_payload(suite: str, tag: int) -> None:
    a, b = pair(suite)
    plain = voice_packet(1, bytes(range(160)))
    wire = a.protect_rtp(plain)
    assert len(wire) == len(plain) + tag
    assert wire[:12] == plain[:12]  # the RTP header stays readable (RFC 3711 §3.1)
    assert bytes(range(160)) not in wire
    assert b.unprotect_rtp(wire) == plain


def test_tampered_replayed_or_plain_packets_are_refused() -> None:
    a, b = pair()
    wire = a.protect_rtp(voice_packet(7))
    forged = wire[:20] + bytes([wire[20] ^ 1]) + wire[21:]
    with pytest.raises(SrtpError):
        b.unprotect_rtp(forged)
    assert b.unprotect_rtp(wire) == voice_packet(7)
    with pytest.raises(SrtpError):
        b.unprotect_rtp(wire)  # replay
    with pytest.raises(SrtpError):
        b.unprotect_rtp(voice_packet(8))  # plain RTP on an SRTP leg


def test_each_direction_has_its_own_key() -> None:
    a, _ = pair()
    wire = a.protect_rtp(voice_packet(1))
    with pytest.raises(SrtpError):
        a.unprotect_rtp(wire)  # our own packet does not authenticate with the peer's key


def test_srtcp_round_trip() -> None:
    a, b = pair("AES_CM_128_HMAC_SHA1_32")
    report = rtcp.serialize_compound([rtcp.ReceiverReport(ssrc=0x99, reports=())])
    wire = a.protect_rtcp(report)
    assert len(wire) == len(report) + 4 + 10  # E-flag/index + 80-bit tag, for both suites (RFC 4568 §6.2.1)
    assert b.unprotect_rtcp(wire) == report


# --- offer/answer ----------------------------------------------------------------------------------


@dataclass
class FakeRtp:
    """What LegSdp uses of an RtpSession."""

    local_port: int = 30000
    closed: bool = False
    applied: list[sdp.NegotiatedMedia] = field(default_factory=list)

    def apply(self, media: sdp.NegotiatedMedia) -> None:
        self.applied.append(media)


def answer(leg: LegSdp, body: bytes) -> tuple[bytes | int, FakeRtp]:
    rtp_ = FakeRtp()
    return leg.answer(body, rtp_), rtp_  # type: ignore[arg-type]


def test_savp_offer_is_answered_savp_with_our_own_key() -> None:
    body = offer_sdp("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY_B64}|2^20")
    result, fake = answer(LegSdp(20, "192.0.2.9"), body)
    assert isinstance(result, bytes)
    m = sdp.parse(result).media[0]
    assert m.proto == "RTP/SAVP"
    (crypto,) = [a.value for a in m.attributes if a.name == "crypto"]
    ours = parse_crypto(crypto or "")
    assert (ours.tag, ours.suite) == (1, "AES_CM_128_HMAC_SHA1_80")
    assert ours.key != RFC_KEY
    assert fake.applied[0].srtp == SrtpKeys("AES_CM_128_HMAC_SHA1_80", ours.key, RFC_KEY)


def test_plain_offer_is_answered_plain() -> None:
    result, fake = answer(LegSdp(20, "192.0.2.9"), offer_sdp("RTP/AVP"))
    assert isinstance(result, bytes)
    m = sdp.parse(result).media[0]
    assert m.proto == "RTP/AVP" and m.attribute("crypto") is None
    assert fake.applied[0].srtp is None


def test_best_effort_crypto_in_rtp_avp_gets_srtp() -> None:
    # baresip's mediaenc=srtp and many phones: RTP/AVP with a=crypto.
    body = offer_sdp("RTP/AVP", f"5 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY_B64}")
    result, fake = answer(LegSdp(20, "192.0.2.9"), body)
    assert isinstance(result, bytes)
    m = sdp.parse(result).media[0]
    assert m.proto == "RTP/AVP" and (m.attribute("crypto") or "").startswith("5 AES_CM_128_HMAC_SHA1_32 ")
    assert fake.applied[0].srtp is not None


@pytest.mark.parametrize(
    "cryptos",
    [
        (f"1 AEAD_AES_256_GCM inline:{base64.b64encode(bytes(44)).decode()}",),  # unknown suite only
        ("1 AES_CM_128_HMAC_SHA1_80 inline:garbage",),  # malformed only
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY_B64}|2^20|1:32",),  # MKI only
        (),  # RTP/SAVP without any crypto line
    ],
)
def test_savp_offer_without_usable_crypto_is_refused_488(cryptos: tuple[str, ...]) -> None:
    result, fake = answer(LegSdp(20, "192.0.2.9"), offer_sdp("RTP/SAVP", *cryptos))
    assert result == 488 and fake.applied == []


def test_malformed_best_effort_crypto_is_ignored() -> None:
    result, fake = answer(LegSdp(20, "192.0.2.9"), offer_sdp("RTP/AVP", "1 AES_CM_128_HMAC_SHA1_80 inline:x"))
    assert isinstance(result, bytes) and sdp.parse(result).media[0].attribute("crypto") is None
    assert fake.applied[0].srtp is None


def test_srtp_off_refuses_savp_and_ignores_crypto() -> None:
    crypto = f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY_B64}"
    assert answer(LegSdp(20, "192.0.2.9", srtp="off"), offer_sdp("RTP/SAVP", crypto))[0] == 488
    result, fake = answer(LegSdp(20, "192.0.2.9", srtp="off"), offer_sdp("RTP/AVP", crypto))
    assert isinstance(result, bytes) and sdp.parse(result).media[0].attribute("crypto") is None


def test_srtp_required_refuses_plain_rtp() -> None:
    assert answer(LegSdp(20, "192.0.2.9", srtp="required"), offer_sdp("RTP/AVP"))[0] == 488
    crypto = f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY_B64}"
    assert isinstance(
        answer(LegSdp(20, "192.0.2.9", srtp="required"), offer_sdp("RTP/AVP", crypto))[0], bytes
    )


def test_savp_offer_and_answer_between_two_legs_carry_audio() -> None:
    """Our offer (agent leg over TLS) answered by another LegSdp: each side's keys fit the other's."""
    caller, agent = LegSdp(20, "192.0.2.1"), LegSdp(20, "192.0.2.2")
    caller.offer_srtp = True
    offer = caller.offer(FakeRtp(local_port=40000))  # type: ignore[arg-type]
    assert offer.media[0].proto == "RTP/SAVP"
    assert [parse_crypto(a.value or "").suite for a in offer.media[0].attributes if a.name == "crypto"] == [
        "AES_CM_128_HMAC_SHA1_80",
        "AES_CM_128_HMAC_SHA1_32",
    ]
    body, agent_rtp = answer(agent, offer.to_bytes())
    assert isinstance(body, bytes)
    mine = sdp.process_answer(offer, body)
    theirs = agent_rtp.applied[0]
    assert mine.srtp is not None and theirs.srtp is not None
    tx, rx = SrtpProtector(mine.srtp), SrtpProtector(theirs.srtp)
    assert rx.unprotect_rtp(tx.protect_rtp(voice_packet(1))) == voice_packet(1)
    assert tx.unprotect_rtp(rx.protect_rtp(voice_packet(2))) == voice_packet(2)


def test_answer_refusing_our_srtp_offer_is_unusable() -> None:
    caller = LegSdp(20, "192.0.2.1")
    caller.offer_srtp = True
    offer = caller.offer(FakeRtp())  # type: ignore[arg-type]
    plain = offer_sdp("RTP/SAVP")  # answers SAVP but names no crypto line of ours
    with pytest.raises(sdp.SdpNegotiationError, match="crypto"):
        sdp.process_answer(offer, plain)


def test_a_hold_reoffer_keeps_srtp_and_the_key() -> None:
    leg = LegSdp(20, "192.0.2.9")
    body = offer_sdp("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY_B64}")
    first, _ = answer(leg, body)
    assert isinstance(first, bytes)
    reoffer = leg.offer(FakeRtp())  # type: ignore[arg-type]
    key = parse_crypto(sdp.parse(first).media[0].attribute("crypto") or "").key
    assert reoffer.media[0].proto == "RTP/SAVP"
    assert all(
        parse_crypto(a.value or "").key == key for a in reoffer.media[0].attributes if a.name == "crypto"
    )
