import pytest
from hypothesis import given
from hypothesis import strategies as st

from callcenter.media import sdp
from callcenter.media.sdp import (
    PCMA,
    PCMU,
    Attribute,
    Codec,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    SdpNegotiationError,
    SdpParseError,
    SessionDescription,
)


def offer(m_lines: str, session: str = "c=IN IP4 192.0.2.10\r\n", head: str = "") -> str:
    return ("v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\n" + head + session
            + "t=0 0\r\n" + m_lines)


LINPHONE = offer(
    "m=audio 7078 RTP/AVP 96 97 0 8 101\r\n"
    "a=rtpmap:96 opus/48000/2\r\n"
    "a=fmtp:96 useinbandfec=1\r\n"
    "a=rtpmap:97 speex/16000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=rtcp-fb:* trr-int 1000\r\n"
)


def negotiate(o: str | SessionDescription, **kw) -> sdp.AnswerResult:
    kw.setdefault("session_id", 42)
    kw.setdefault("version", 1)
    return sdp.negotiate_answer(o, "203.0.113.5", 30000, **kw)


def answer(o: str | SessionDescription, **kw) -> sdp.Accepted:
    result = negotiate(o, **kw)
    assert isinstance(result, sdp.Accepted), result
    return result


# --- parsing -------------------------------------------------------------------------------------


def test_parse_typical_offer():
    d = sdp.parse(LINPHONE.encode())
    assert d.origin == Origin("alice", 2890844526, 2890844526, "192.0.2.10", "IP4", "IN")
    assert d.connection == Connection("192.0.2.10")
    (m,) = d.media
    assert (m.media, m.port, m.proto) == ("audio", 7078, "RTP/AVP")
    assert m.payload_types == [96, 97, 0, 8, 101]
    assert m.rtpmaps()[96] == sdp.RtpMap(96, "opus", 48000, 2)
    assert m.fmtp() == {"96": "useinbandfec=1"}
    assert m.format_of(0) == sdp.RtpMap(0, "PCMU", 8000)  # static, no rtpmap needed
    assert m.direction is None and d.media_direction(m) is Direction.SENDRECV


def test_serialise_round_trip_is_exact_for_canonical_text():
    text = offer(
        "m=audio 49170/2 RTP/AVP 0 101\r\n"
        "i=voice\r\n"
        "c=IN IP6 2001:db8::1\r\n"
        "b=AS:64\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-16\r\n"
        "a=ptime:20\r\n"
        "a=sendonly\r\n"
        "m=video 0 RTP/AVP 31\r\n",
        session="c=IN IP4 224.2.1.1/127/3\r\nb=CT:128\r\n",
        head="i=info\r\nu=http://example.com/\r\ne=a@example.com\r\np=+1 555 0100\r\n",
    ).replace("t=0 0\r\n", "t=0 0\r\nr=7d 1h 0 25h\r\na=tool:x\r\n")
    d = sdp.parse(text)
    assert d.serialize() == text
    assert d.connection == Connection("224.2.1.1", ttl=127, count=3)
    assert d.media[0].connection == Connection("2001:db8::1", "IP6")
    assert d.media[0].port_count == 2
    assert d.media[0].ptime == 20
    assert d.media[0].direction is Direction.SENDONLY


def test_lenient_about_lf_blank_lines_and_missing_s_t():
    d = sdp.parse("v=0\no=- 1 2 IN IP4 10.0.0.1\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 0\n\n")
    assert d.times == [(0, 0)]
    assert d.media[0].port == 4000


def test_unknown_line_letters_are_kept():
    d = sdp.parse(offer("m=video 6000 RTP/AVP 96\r\ny=0100000001\r\nf=v/2/5\r\n"))
    assert d.media[0].other == [("y", "0100000001"), ("f", "v/2/5")]
    assert "y=0100000001\r\n" in d.serialize()


MALFORMED = [
    ("", "empty"),
    ("o=- 1 1 IN IP4 1.2.3.4\r\n", "must start with v=0"),
    ("v=1\r\no=- 1 1 IN IP4 1.2.3.4\r\n", "version"),
    ("v=0\r\ns=-\r\n", "o= must follow"),
    ("v=0\r\n", "o= line missing"),
    ("v=0\r\no=- 1 1 IN IP4\r\n", "6 fields"),
    ("v=0\r\no=- abc 1 IN IP4 1.2.3.4\r\n", "session id"),
    (offer("m=audio abc RTP/AVP 0\r\n"), "port"),
    (offer("m=audio 70000 RTP/AVP 0\r\n"), "out of range"),
    (offer("m=audio 4000 RTP/AVP\r\n"), "m= needs"),
    (offer("m=audio 4000 RTP/AVP PCMU\r\n"), "payload type"),
    (offer("m=audio 4000 RTP/AVP 128\r\n"), "payload type"),
    (offer("m=audio 4000 RTP/AVP 0\r\n", session="c=IN IP4\r\n"), "c= needs"),
    (offer("m=audio 4000 RTP/AVP 0\r\n", session="c=IN IP4 999.1.1.1\r\n"), "IPv4"),
    (offer("m=audio 4000 RTP/AVP 0\r\nc=IN IP6 2001:db8::zz\r\n"), "IPv6"),
    (offer("m=audio 4000 RTP/AVP 0\r\na=ptime:abc\r\n"), "packet time"),
    (offer("m=audio 4000 RTP/AVP 0\r\na=rtcp:x\r\n"), "a=rtcp port"),
    (offer("m=audio 4000 RTP/AVP 0\r\ngarbage\r\n"), "expected '<letter>=<value>'"),
    (offer("m=audio 4000 RTP/AVP 0\r\nA=sendrecv\r\n"), "expected '<letter>=<value>'"),
    (offer("m=audio 4000 RTP/AVP 0\r\ns=again\r\n"), "not allowed inside a media section"),
    (offer("m=audio 4000 RTP/AVP 0\r\nb=AS\r\n"), "b= line"),
    (offer("m=audio 4000 RTP/AVP 0\r\na=\r\n"), "attribute name"),
    (offer("m=audio 4000 RTP/AVP 0\r\na=x\0y\r\n"), "NUL"),
    ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nt=0\r\n", "t= needs"),
    ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\no=- 1 1 IN IP4 1.2.3.4\r\n", "repeated"),
]


def test_malformed_rtpmap_only_makes_its_format_unusable():
    """RFC 4475 esc01 carries "a=rtpmap:31 LPC" on a video line: the offer must stay answerable."""
    text = offer("m=audio 4000 RTP/AVP 0 96\r\na=rtpmap:96 OPUS\r\na=rtpmap:xx PCMU/8000\r\n")
    parsed = sdp.parse(text)
    assert set(parsed.media[0].rtpmaps()) == set()
    result = sdp.negotiate_answer(parsed, "127.0.0.1", 5000, session_id=1, version=1)
    assert result.ok and result.media.codec == "PCMU"


def test_origin_address_is_informational():
    """SIPp writes "o=... IN IP6 [::1]"; o= only identifies the session (RFC 4566 §5.2)."""
    parsed = sdp.parse("v=0\r\no=user1 53655765 2353687637 IN IP6 [::1]\r\ns=-\r\nc=IN IP6 ::1\r\n"
                       "t=0 0\r\nm=audio 6000 RTP/AVP 0\r\n")
    assert parsed.origin.address == "[::1]"


@pytest.mark.parametrize(("text", "message"), MALFORMED)
def test_malformed_sdp_raises_sdp_parse_error(text, message):
    with pytest.raises(SdpParseError, match=message):
        sdp.parse(text)


def test_parse_error_names_the_line():
    with pytest.raises(SdpParseError, match="line 6"):
        sdp.parse(offer("m=audio 4000 RTP/AVP x\r\n"))


@given(st.text(max_size=300) | st.binary(max_size=300))
def test_any_input_parses_or_raises_sdp_parse_error(data):
    try:
        sdp.parse(data)
    except SdpParseError:
        pass


def test_fuzzed_around_a_real_offer():
    # Every single-line deletion still parses or raises the own error.
    lines = LINPHONE.split("\r\n")
    for i in range(len(lines)):
        try:
            sdp.parse("\r\n".join(lines[:i] + lines[i + 1 :]))
        except SdpParseError:
            pass


token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=8)
text_value = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"),
                     max_size=12)
ipv4 = st.ip_addresses(v=4).map(str)
conn = st.builds(Connection, address=ipv4)
# Attributes whose values this module checks are covered by their own tests.
free_names = token.filter(lambda n: n not in {"rtpmap", "fmtp", "ptime", "maxptime", "rtcp"})
attrs = st.lists(st.builds(Attribute, free_names, st.none() | text_value), max_size=4)
medias = st.builds(
    MediaDescription,
    media=st.sampled_from(["audio", "video"]),
    port=st.integers(0, 65535),
    proto=st.just("RTP/AVP"),
    formats=st.lists(st.integers(0, 127).map(str), min_size=1, max_size=5),
    connection=st.none() | conn,
    attributes=attrs,
)
descriptions = st.builds(
    SessionDescription,
    origin=st.builds(Origin, token, st.integers(0, 2**63), st.integers(0, 2**63), ipv4),
    session_name=text_value,
    connection=st.none() | conn,
    media=st.lists(medias, max_size=3),
    attributes=attrs,
)


@given(descriptions)
def test_structured_round_trip(d):
    assert sdp.parse(d.serialize()) == d
    assert sdp.parse(d.to_bytes()) == d


# --- answering (UAS) -----------------------------------------------------------------------------

CODEC_TABLE = [
    # (m= line and attributes, expected pt, codec, telephone-event pt)
    (LINPHONE.split("t=0 0\r\n")[1], 0, "PCMU", 101),
    ("m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n", 8, "PCMA", 101),
    ("m=audio 4000 RTP/AVP 8 0\r\n", 8, "PCMA", None),  # static PTs, no rtpmap at all
    ("m=audio 4000 RTP/AVP 18 0\r\n", 0, "PCMU", None),  # G.729 first: skipped
    ("m=audio 4000 RTP/AVP 96 0\r\na=rtpmap:96 PCMA/8000\r\n", 96, "PCMA", None),  # dynamic PT
    ("m=audio 4000 RTP/AVP 97 8\r\n", 8, "PCMA", None),  # dynamic PT without rtpmap: unusable
    ("m=audio 4000 RTP/AVP 0 100\r\na=rtpmap:100 telephone-event/8000\r\n"
     "a=fmtp:100 0-15\r\n", 0, "PCMU", 100),
    ("m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/16000\r\n", 0, "PCMU", None),
    ("m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 pcmu/8000\r\n", 0, "PCMU", None),  # case-insensitive
    ("m=audio 4000 RTP/AVPF 8\r\n", 8, "PCMA", None),
]


@pytest.mark.parametrize(("m_lines", "pt", "codec", "te"), CODEC_TABLE)
def test_codec_choice_follows_offerer_preference(m_lines, pt, codec, te):
    result = answer(offer(m_lines))
    assert result.ok and result.status == 200
    assert (result.media.payload_type, result.media.codec, result.media.telephone_event_pt) == (pt, codec, te)
    (am,) = result.answer.media
    assert am.payload_types == [pt] + ([te] if te is not None else [])
    fmt = am.format_of(pt)
    assert fmt is not None and fmt.encoding == codec
    assert am.port == 30000


def test_supported_list_limits_the_choice():
    result = answer(offer("m=audio 4000 RTP/AVP 0 8\r\n"), supported=[PCMA])
    assert result.media.codec == "PCMA"


def test_telephone_event_fmtp_is_echoed_and_can_be_disabled():
    o = offer("m=audio 4000 RTP/AVP 0 100\r\na=rtpmap:100 telephone-event/8000\r\na=fmtp:100 0-11\r\n")
    assert answer(o).answer.media[0].fmtp() == {"100": "0-11"}
    no_te = answer(o, telephone_event=False)
    assert no_te.media.telephone_event_pt is None
    assert no_te.answer.media[0].payload_types == [0]


REJECTED = [
    ("m=audio 4000 RTP/AVP 18 9\r\n", "none of the offered audio formats"),
    ("m=audio 4000 RTP/SAVP 0\r\n", "unsupported transport"),
    ("m=video 4000 RTP/AVP 31\r\n", "no audio stream"),
    ("m=audio 0 RTP/AVP 0\r\n", "disabled"),
    ("m=audio 4000 RTP/AVP 101\r\na=rtpmap:101 telephone-event/8000\r\n", "none of the offered"),
]


@pytest.mark.parametrize(("m_lines", "why"), REJECTED)
def test_nothing_acceptable_means_488(m_lines, why):
    result = negotiate(offer(m_lines))
    assert not result.ok
    assert isinstance(result, sdp.Rejected)
    assert result.status == 488
    assert why in result.reason


def test_audio_without_any_connection_line_is_488():
    o = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    assert negotiate(o).status == 488


DIRECTIONS = [
    # (offered attribute lines, answered direction, our negotiated direction)
    ("", Direction.SENDRECV),
    ("a=sendrecv\r\n", Direction.SENDRECV),
    ("a=sendonly\r\n", Direction.RECVONLY),  # the caller holds us
    ("a=recvonly\r\n", Direction.SENDONLY),
    ("a=inactive\r\n", Direction.INACTIVE),
]


@pytest.mark.parametrize(("attr", "expected"), DIRECTIONS)
def test_direction_answer_rules(attr, expected):
    result = answer(offer("m=audio 4000 RTP/AVP 0\r\n" + attr))
    assert result.answer.media[0].direction is expected
    assert result.media.direction is expected
    assert result.media.on_hold is not expected.sends


def test_session_level_direction_applies_to_media():
    o = offer("m=audio 4000 RTP/AVP 0\r\n", session="c=IN IP4 192.0.2.10\r\na=sendonly\r\n")
    assert answer(o).media.direction is Direction.RECVONLY


def test_local_direction_restricts_the_answer():
    result = answer(offer("m=audio 4000 RTP/AVP 0\r\n"), local_direction=Direction.SENDONLY)
    assert result.media.direction is Direction.SENDONLY


@pytest.mark.parametrize(("attr", "expected"),
                         [("", Direction.RECVONLY), ("a=recvonly\r\n", Direction.INACTIVE)])
def test_legacy_hold_with_null_connection_address(attr, expected):
    o = offer("m=audio 4000 RTP/AVP 0\r\n" + attr, session="c=IN IP4 0.0.0.0\r\n")
    result = answer(o)
    assert result.media.direction is expected
    assert result.media.on_hold


def test_port_zero_and_extra_streams_are_rejected_with_port_zero():
    o = offer("m=audio 0 RTP/AVP 0\r\n"
              "m=video 5000 RTP/AVP 31\r\n"
              "m=audio 6000 RTP/AVP 8\r\n"
              "m=audio 7000 RTP/AVP 0\r\n")
    result = answer(o)
    ports = [m.port for m in result.answer.media]
    assert ports == [0, 0, 30000, 0]  # same number of m= lines, in order (RFC 3264 §6)
    assert [m.media for m in result.answer.media] == ["audio", "video", "audio", "audio"]
    assert result.media.media_index == 2
    assert result.media.remote_port == 6000
    assert result.media.codec == "PCMA"


def test_remote_address_ptime_and_rtcp_port():
    o = offer("m=audio 4000 RTP/AVP 0\r\nc=IN IP4 198.51.100.7\r\na=ptime:30\r\n")
    m = answer(o).media
    assert (m.remote_address, m.remote_port, m.remote_rtcp_port) == ("198.51.100.7", 4000, 4001)
    assert m.ptime == 30
    m = answer(offer("m=audio 4000 RTP/AVP 0\r\na=ptime:25\r\na=rtcp:4005 IN IP4 198.51.100.9\r\n")).media
    assert m.ptime == 20
    assert (m.remote_rtcp_address, m.remote_rtcp_port) == ("198.51.100.9", 4005)


def test_answer_text_is_what_phones_expect():
    result = answer(LINPHONE)
    text = result.answer.serialize()
    assert text == (
        "v=0\r\no=- 42 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n"
        "m=audio 30000 RTP/AVP 0 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
        "a=ptime:20\r\na=sendrecv\r\n"
    )


def test_ipv6_offer_and_answer():
    o = ("v=0\r\no=- 1 1 IN IP6 2001:db8::10\r\ns=-\r\nc=IN IP6 2001:db8::10\r\nt=0 0\r\n"
         "m=audio 4000 RTP/AVP 0\r\n")
    result = sdp.negotiate_answer(o, "2001:db8::5", 30000, session_id=1, version=1)
    assert isinstance(result, sdp.Accepted)
    assert result.media.remote_address == "2001:db8::10"
    assert result.answer.connection == Connection("2001:db8::5", "IP6")
    assert result.answer.origin.addrtype == "IP6"
    assert "c=IN IP6 2001:db8::5\r\n" in result.answer.serialize()


# --- offering (UAC) ------------------------------------------------------------------------------


def test_make_offer():
    o = sdp.make_offer("203.0.113.5", 31000, session_id=7, version=7)
    (m,) = o.media
    assert m.payload_types == [0, 8, 101]
    assert m.rtpmaps()[101] == sdp.RtpMap(101, "telephone-event", 8000)
    assert m.fmtp() == {"101": "0-16"}
    assert m.ptime == 20
    assert m.direction is Direction.SENDRECV
    assert sdp.parse(o.serialize()) == o


def test_make_offer_assigns_dynamic_types_around_telephone_event():
    o = sdp.make_offer("203.0.113.5", 31000, session_id=7, version=7,
                       codecs=[Codec("L16", 8000), PCMU], telephone_event_pt=96)
    assert o.media[0].payload_types == [97, 0, 96]


def test_offer_answer_both_sides_agree():
    our_offer = sdp.make_offer("203.0.113.5", 31000, session_id=7, version=7, codecs=[PCMA, PCMU])
    result = sdp.negotiate_answer(our_offer.serialize(), "192.0.2.20", 40000, session_id=9, version=9)
    assert isinstance(result, sdp.Accepted)
    ours = sdp.process_answer(our_offer, result.answer.to_bytes())
    theirs = result.media
    assert ours.codec == theirs.codec == "PCMA"
    assert ours.payload_type == theirs.payload_type == 8
    assert ours.telephone_event_pt == theirs.telephone_event_pt == 101
    assert (ours.remote_address, ours.remote_port) == ("192.0.2.20", 40000)
    assert (theirs.remote_address, theirs.remote_port) == ("203.0.113.5", 31000)
    assert ours.direction is theirs.direction is Direction.SENDRECV


def test_hold_and_resume_through_reoffers():
    versions = sdp.SdpVersioner(session_id=1000)
    first = versions.stamp(sdp.make_offer("203.0.113.5", 31000, session_id=0, version=0))
    again = versions.stamp(sdp.make_offer("203.0.113.5", 31000, session_id=0, version=0))
    hold = versions.stamp(sdp.make_offer("203.0.113.5", 31000, session_id=0, version=0,
                                         direction=Direction.SENDONLY))
    resume = versions.stamp(sdp.make_offer("203.0.113.5", 31000, session_id=0, version=0))
    assert [d.origin.session_version for d in (first, again, hold, resume)] == [1000, 1000, 1001, 1002]
    assert {d.origin.session_id for d in (first, again, hold, resume)} == {1000}
    # The peer answers our hold with recvonly; we may send (music on hold), it does not.
    peer = answer(hold)
    assert peer.answer.media[0].direction is Direction.RECVONLY
    assert sdp.process_answer(hold, peer.answer).direction is Direction.SENDONLY
    peer = answer(resume)
    assert sdp.process_answer(resume, peer.answer).direction is Direction.SENDRECV


def test_process_answer_direction_and_legacy_hold():
    o = sdp.make_offer("203.0.113.5", 31000, session_id=1, version=1)
    a = offer("m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n")
    assert sdp.process_answer(o, a).direction is Direction.RECVONLY
    a = offer("m=audio 4000 RTP/AVP 0\r\n", session="c=IN IP4 0.0.0.0\r\n")
    assert sdp.process_answer(o, a).direction is Direction.RECVONLY


def test_process_answer_uses_the_answers_first_common_format():
    o = sdp.make_offer("203.0.113.5", 31000, session_id=1, version=1)
    a = offer("m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:30\r\n")
    neg = sdp.process_answer(o, a)
    assert (neg.codec, neg.payload_type, neg.telephone_event_pt, neg.ptime) == ("PCMA", 8, 101, 30)


@pytest.mark.parametrize(
    ("m_lines", "message"),
    [
        ("m=audio 0 RTP/AVP 0\r\n", "accepts no audio"),
        ("m=audio 4000 RTP/AVP 18\r\n", "not in our offer"),
        ("m=audio 4000 RTP/AVP 0\r\nm=video 0 RTP/AVP 31\r\n", "m= lines"),
    ],
)
def test_process_answer_refuses_unusable_answers(m_lines, message):
    o = sdp.make_offer("203.0.113.5", 31000, session_id=1, version=1)
    with pytest.raises(SdpNegotiationError, match=message):
        sdp.process_answer(o, offer(m_lines))


def test_direction_helpers():
    assert Direction.SENDONLY.reversed() is Direction.RECVONLY
    assert Direction.INACTIVE.reversed() is Direction.INACTIVE
    assert Direction.SENDRECV.restrict(Direction.RECVONLY) is Direction.RECVONLY
    assert str(Direction.SENDONLY) == "sendonly"
