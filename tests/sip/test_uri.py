"""SIP URIs (§19.1), name-addr values (§20.10) and Via (§20.42)."""

from __future__ import annotations

import pytest

from callcenter.sip.message import SipParseError
from callcenter.sip.uri import (
    NameAddr,
    SipUri,
    Via,
    format_host,
    parse_name_addr,
    parse_uri,
    parse_via,
    unquote,
)

# --- URIs -------------------------------------------------------------------------------------


def test_full_sip_uri() -> None:
    u = parse_uri("sip:alice:secret@atlanta.example.com:5070;transport=tcp;lr?subject=project%20x")
    assert u == SipUri(
        "sip",
        "atlanta.example.com",
        "alice",
        "secret",
        5070,
        {"transport": "tcp", "lr": None},
        "subject=project%20x",
    )
    assert u.transport == "tcp"
    assert str(u) == "sip:alice:secret@atlanta.example.com:5070;transport=tcp;lr?subject=project%20x"


def test_scheme_and_host_are_case_insensitive_user_is_not() -> None:
    u = parse_uri("SIP:Alice@ATLANTA.Example.COM")
    assert (u.scheme, u.user, u.host) == ("sip", "Alice", "atlanta.example.com")
    assert u.transport == "udp"
    assert parse_uri("sips:bob@example.com").transport == "tls"


@pytest.mark.parametrize(
    ("text", "host", "port", "socket_host"),
    [
        ("sip:alice@[2001:db8::10]", "[2001:db8::10]", None, "2001:db8::10"),
        ("sip:alice@[2001:db8::10]:5070;transport=tcp", "[2001:db8::10]", 5070, "2001:db8::10"),
        ("sip:[::1]:5060", "[::1]", 5060, "::1"),
        ("sip:[::ffff:192.0.2.1]", "[::ffff:192.0.2.1]", None, "::ffff:192.0.2.1"),
        ("sip:[2001:DB8::A]", "[2001:db8::a]", None, "2001:db8::a"),
        ("sip:192.0.2.1:5062", "192.0.2.1", 5062, "192.0.2.1"),
    ],
)
def test_host_references(text: str, host: str, port: int | None, socket_host: str) -> None:
    u = parse_uri(text)
    assert (u.host, u.port, u.host_for_socket) == (host, port, socket_host)


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@[2001:db8::10",  # unterminated reference
        "sip:alice@[zz::1]",
        "sip:alice@[::1]5060",  # garbage after ]
        "sip:alice@2001:db8::10",  # IPv6 without brackets
        "sip:alice@host:0",
        "sip:alice@host:65536",
        "sip:alice@host:-1",
        "sip:alice@host:",
        "sip:alice@host:50a",
        "sip:alice@host:\u00b2",  # superscript two: isdigit() but not int()-able
        "sip:alice@host:\u0665",  # Arabic-Indic five
        "sip:@host",
        "sip:",
        "sip:-bad-.example.com",
        "sip:host name",
        ":nothing",
        "1sip:host",
        "tel:",
        "",
    ],
)
def test_bad_uris_raise_parse_error(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_other_schemes_keep_their_body() -> None:
    u = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert (u.scheme, u.host) == ("tel", "+1-201-555-0123;phone-context=example.com")


def test_uri_params_with_quoted_values_and_no_values() -> None:
    u = parse_uri('sip:host;a=1;B;c="x;y=z";d = 4')
    assert u.params == {"a": "1", "b": None, "c": '"x;y=z"', "d": "4"}


def test_unterminated_quoted_param_is_an_error() -> None:
    with pytest.raises(SipParseError):
        parse_uri('sip:host;c="open')


def test_format_host() -> None:
    assert format_host("::1") == "[::1]"
    assert format_host("[::1]") == "[::1]"
    assert format_host("192.0.2.1") == "192.0.2.1"
    assert format_host("example.com") == "example.com"


# --- name-addr --------------------------------------------------------------------------------


def test_name_addr_with_quoted_display_and_params() -> None:
    a = parse_name_addr('"Alice Smith" <sip:alice@atlanta.example.com;transport=tcp>;tag=88sja8x;q=0.5')
    assert a.display == '"Alice Smith"'
    assert a.uri == "sip:alice@atlanta.example.com;transport=tcp"  # URI params stay in the URI
    assert a.params == {"tag": "88sja8x", "q": "0.5"}
    assert a.tag == "88sja8x"
    assert a.parsed_uri().params == {"transport": "tcp"}
    assert str(a) == '"Alice Smith" <sip:alice@atlanta.example.com;transport=tcp>;tag=88sja8x;q=0.5'


def test_display_name_with_escapes() -> None:
    # RFC 4475 §3.1.1.1 (wsinv): "J Rosenberg \\\"" is J Rosenberg, a backslash and a quote.
    a = parse_name_addr('"J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\n  ;\n  tag = 98asjd8')
    assert a.display == '"J Rosenberg \\\\\\""'
    assert unquote(a.display) == 'J Rosenberg \\"'
    assert a.uri == "sip:jdrosen@example.com"
    assert a.tag == "98asjd8"


def test_display_name_containing_angle_brackets_and_semicolons() -> None:
    a = parse_name_addr('"<sip:fake@evil>;tag=no" <sip:real@example.com>;tag=yes')
    assert a.uri == "sip:real@example.com"
    assert a.tag == "yes"


def test_unquoted_display_name() -> None:
    a = parse_name_addr("Bob Two <sip:bob@example.com>")
    assert (a.display, a.uri, a.params) == ("Bob Two", "sip:bob@example.com", {})


def test_addr_spec_params_belong_to_the_header() -> None:
    # §20.10: without <>, everything after the URI's first ';' is a header parameter.
    a = parse_name_addr("sip:alice@atlanta.example.com;tag=1928301774;user=phone")
    assert a.uri == "sip:alice@atlanta.example.com"
    assert a.params == {"tag": "1928301774", "user": "phone"}
    assert a.display is None
    assert str(a) == "<sip:alice@atlanta.example.com>;tag=1928301774;user=phone"


def test_addr_spec_with_spaces_around_params() -> None:
    a = parse_name_addr("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n")
    assert a.uri == "sip:vivekg@chair-dnrc.example.com"
    assert a.tag == "1918181833n"


def test_tag_inside_the_uri_is_not_the_header_tag() -> None:
    a = parse_name_addr("<sip:bob@example.com;tag=inuri>")
    assert a.tag is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        '"unterminated <sip:a@b>',
        '"Alice" sip:alice@example.com',  # quoted display needs <uri>
        "<sip:alice@example.com",
        "Alice <nocolon>",
        "just words",
        "sip:alice@example.com extra",
    ],
)
def test_bad_addresses(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(text)


def test_name_addr_round_trip() -> None:
    a = NameAddr("sip:x@y", '"X"', {"tag": "1", "expires": None})
    assert parse_name_addr(str(a)) == a


# --- Via --------------------------------------------------------------------------------------


def test_plain_via() -> None:
    v = parse_via("SIP/2.0/UDP pc33.atlanta.example.com:5066;branch=z9hG4bK776asdhds;rport")
    assert v == Via("UDP", "pc33.atlanta.example.com", 5066, {"branch": "z9hG4bK776asdhds", "rport": None})
    assert v.branch == "z9hG4bK776asdhds"
    assert str(v) == "SIP/2.0/UDP pc33.atlanta.example.com:5066;branch=z9hG4bK776asdhds;rport"


def test_via_with_spaces_around_slashes_rfc4475() -> None:
    # RFC 4475 §3.1.1.1 (after unfolding).
    v = parse_via("SIP  /   2.0 /UDP     192.0.2.2;rport;branch=390skdjuw")
    assert (v.transport, v.host, v.port, v.branch) == ("UDP", "192.0.2.2", None, "390skdjuw")
    v = parse_via("SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8")
    assert (v.transport, v.host, v.branch) == ("TCP", "spindle.example.com", "z9hG4bK9ikj8")
    v = parse_via("SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239")
    assert (v.host, v.branch) == ("192.168.255.111", "z9hG4bK30239")


def test_via_with_spaces_around_the_port_colon() -> None:
    # sent-by = host [ COLON port ]; COLON = SWS ":" SWS (§25.1).
    v = parse_via("SIP/2.0/UDP host.example.com : 5070;branch=z9hG4bK1")
    assert (v.host, v.port, v.branch) == ("host.example.com", 5070, "z9hG4bK1")


def test_via_ipv6_and_received_params() -> None:
    v = parse_via("SIP/2.0/TCP [2001:db8::9:1]:5061;branch=z9hG4bKx;received=2001:db8::9:255;rport=5062")
    assert (v.host, v.port) == ("[2001:db8::9:1]", 5061)
    assert v.params["received"] == "2001:db8::9:255"
    assert v.params["rport"] == "5062"


def test_via_lowercase_protocol_and_quoted_param() -> None:
    v = parse_via('sip/2.0/udp host;branch=z9hG4bKq;comment="a;b, c"')
    assert v.transport == "UDP"
    assert v.params == {"branch": "z9hG4bKq", "comment": '"a;b, c"'}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0/UDP",
        "SIP/2.0 UDP host",
        "SIP/3.0/UDP host",
        "SIP/2.0/UDP host:99999",
        "SIP/2.0/UDP host:\u00b2",
        "SIP/2.0/UDP host:",
        "SIP/2.0/UDP [::1",
        "SIP/2.0/UDP ::1;branch=z9hG4bK",
        'SIP/2.0/UDP host;branch="open',
    ],
)
def test_bad_vias(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_via(text)
