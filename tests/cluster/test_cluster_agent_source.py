"""Agents calling out through Kamailio: the proxy's X-Callcenter-Source names the phone, believed only
from a trusted network (calls/agent_calls.py)."""

from __future__ import annotations

import ipaddress

from callcenter.calls.agent_calls import SOURCE_HEADER, proxied_source
from callcenter.sip.message import SipRequest
from callcenter.sip.parser import parse_message
from callcenter.sip.transaction import Addr

TRUSTED = (ipaddress.ip_network("10.0.0.5/32"), ipaddress.ip_network("::1/128"))
PROXY = Addr("udp", "10.0.0.5", 5060)


def _invite(*sources: str) -> SipRequest:
    lines = [
        "INVITE sip:bob@10.0.0.5 SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-k1",
        "Via: SIP/2.0/UDP 192.0.2.7:40000;branch=z9hG4bK-p1",
        "From: <sip:agent1@10.0.0.5>;tag=f1",
        "To: <sip:bob@10.0.0.5>",
        "Call-ID: c1",
        "CSeq: 1 INVITE",
        *(f"{SOURCE_HEADER}: {s}" for s in sources),
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, SipRequest)
    return message


def test_the_trusted_proxys_header_names_the_phone() -> None:
    assert proxied_source(_invite("sip:192.0.2.7:40000"), PROXY, TRUSTED) == Addr("udp", "192.0.2.7", 40000)
    tcp = proxied_source(_invite("sip:192.0.2.7:40001;transport=tcp"), PROXY, TRUSTED)
    assert tcp == Addr("tcp", "192.0.2.7", 40001)
    v6 = proxied_source(_invite("sip:[2001:db8::7]:5062"), Addr("udp", "::1", 5060), TRUSTED)
    assert v6 == Addr("udp", "2001:db8::7", 5062)


def test_the_header_from_anyone_else_is_ignored() -> None:
    phone = Addr("udp", "192.0.2.66", 5060)  # a phone forging an agent's address
    assert proxied_source(_invite("sip:192.0.2.7:40000"), phone, TRUSTED) == phone


def test_no_unreadable_or_repeated_header_keeps_the_packet_source() -> None:
    assert proxied_source(_invite(), PROXY, TRUSTED) == PROXY
    assert proxied_source(_invite("not a uri"), PROXY, TRUSTED) == PROXY
    assert proxied_source(_invite("sip:192.0.2.7:1;transport=sctp"), PROXY, TRUSTED) == PROXY
    both = _invite("sip:192.0.2.66:5060", "sip:192.0.2.7:40000")  # a forged copy the proxy kept
    assert proxied_source(both, PROXY, TRUSTED) == PROXY
