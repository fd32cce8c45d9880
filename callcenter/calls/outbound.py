"""Calls out through the SIP trunk (``sip.trunk``): a number becomes a Request-URI at the trunk, the
INVITE answers the trunk's digest challenge (RFC 3261 §22.2, callcenter/sip/client_auth.py), and an
answered call comes back as a leg + RTP session, the same shape as an agent's leg (``RingResult``).

A trunk that refuses our credentials gets one clear ``trunk_auth_failed`` line naming the settings to
check, and the dial ends as ``failed`` at once (no retry loop, no hang).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Literal

from callcenter.calls.agent_leg import AgentRing, CallerInfo, RingTarget
from callcenter.core.config import Settings, Transport, TrunkSettings
from callcenter.core.errors import CallcenterError
from callcenter.core.logging import log_event
from callcenter.media.engine import MediaEngine
from callcenter.media.session import RtpSession
from callcenter.sip.client_auth import ClientCredentials
from callcenter.sip.endpoint import SipEndpoint
from callcenter.sip.message import SipParseError
from callcenter.sip.outgoing import OutgoingCall
from callcenter.sip.transaction import Addr
from callcenter.sip.transport.tls import DEFAULT_TLS_PORT, peer_context
from callcenter.sip.uri import format_host, parse_uri

__all__ = [
    "DialResult",
    "dial",
    "install_trunk",
    "normalise_number",
    "number_uri",
    "outside_dest",
    "trunk_transport",
]

log = logging.getLogger("callcenter.calls.outbound")

_NUMBER = re.compile(r"\+?[0-9*#]{1,32}")


@dataclass
class DialResult:
    outcome: Literal["answered", "busy", "no_answer", "failed"]
    uri: str
    detail: str = ""
    leg: OutgoingCall | None = None
    rtp: RtpSession | None = None


def _trunk(settings: Settings) -> TrunkSettings:
    trunk = settings.sip.trunk
    if trunk is None:
        raise CallcenterError("no SIP trunk is configured (sip.trunk): cannot call outside numbers")
    return trunk


def normalise_number(trunk: TrunkSettings, number: str) -> str:
    """The dialled digits after the first matching prefix rule (spaces, dashes, dots, brackets dropped)."""
    digits = re.sub(r"[\s\-.()]", "", number)
    if not _NUMBER.fullmatch(digits):
        raise CallcenterError(f"not a phone number: {number!r}")
    for rule in trunk.prefixes:
        if digits.startswith(rule.match):
            return rule.prepend + digits[rule.strip :]
    return digits


def trunk_transport(trunk: TrunkSettings) -> Transport:
    """The trunk's transport: a ``sips:`` URI means TLS whatever ``transport`` says (RFC 3261 §26.2.2)."""
    return "tls" if parse_uri(trunk.uri).scheme == "sips" else trunk.transport


def _default_port(transport: str) -> int:
    return DEFAULT_TLS_PORT if transport == "tls" else 5060  # RFC 3261 §19.1.2


def number_uri(settings: Settings, number: str) -> str:
    """``sip:NUMBER@trunk-host[:port]`` (``;transport=tcp`` / ``;transport=tls`` for such a trunk, or
    ``sips:`` for a sips: trunk); CallcenterError when no trunk is configured or ``number`` is not a
    number."""
    trunk = _trunk(settings)
    digits = normalise_number(trunk, number)
    uri = parse_uri(trunk.uri)
    port = f":{uri.port}" if uri.port else ""
    kind = trunk_transport(trunk)
    # sips: already says TLS (RFC 5630 §3.1.3: transport=tls is deprecated with it)
    transport = f";transport={kind}" if kind != "udp" and uri.scheme != "sips" else ""
    return f"{uri.scheme}:{digits}@{format_host(uri.host_for_socket)}{port}{transport}"


async def outside_dest(endpoint: SipEndpoint, settings: Settings, uri: str) -> Addr:
    """Where to send a request for ``uri`` (a trunk number URI or an outside SIP URI): its host
    resolved, over its transport (sips: → TLS, RFC 3261 §26.2.2). A TLS peer that is the trunk must
    present a certificate that verifies for the trunk's host name (``sip.trunk.tls_verify``, against
    ``sip.tls_ca`` or the system's CAs). Raises OSError when the host does not resolve, ValueError /
    SipParseError when ``uri`` is no SIP URI."""
    parsed = parse_uri(uri)
    if parsed.scheme not in ("sip", "sips"):
        raise ValueError(f"not a SIP URI: {uri}")
    kind = parsed.transport
    transport: Transport = "tls" if kind == "tls" else "tcp" if kind == "tcp" else "udp"
    host, port = parsed.host_for_socket, parsed.port or _default_port(transport)
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    address = infos[0][4]
    dest = Addr(transport, str(address[0]), int(address[1]))
    trunk = settings.sip.trunk
    if transport == "tls" and trunk is not None and _is_trunk(trunk, host, port):
        context = _trunk_context(settings.sip.tls_ca, trunk.tls_verify)
        endpoint.tls.set_peer(dest.host, dest.port, context, host)
    return dest


@functools.lru_cache(maxsize=4)
def _trunk_context(ca: str | None, verify: bool) -> ssl.SSLContext:
    return peer_context(ca, verify)  # one context (the CA file read once) for every call out


def _is_trunk(trunk: TrunkSettings, host: str, port: int) -> bool:
    home = parse_uri(trunk.uri)
    home_port = home.port or _default_port(trunk_transport(trunk))
    return home.host_for_socket.lower() == host.lower() and home_port == port


def install_trunk(endpoint: SipEndpoint, settings: Settings) -> None:
    """Answer the trunk's 401/407 with ``sip.trunk`` credentials on every INVITE sent to it. A TLS
    trunk's CA file is loaded here: an unreadable one is a ConfigError at start-up, not at the first call."""
    trunk = settings.sip.trunk
    if trunk is not None and trunk_transport(trunk) == "tls":
        _trunk_context(settings.sip.tls_ca, trunk.tls_verify)
    if trunk is None or trunk.username is None or trunk.password is None:
        return

    def rejected(status: int, realm: str) -> None:
        log_event(
            log,
            "trunk_auth_failed",
            level=logging.ERROR,
            trunk=trunk.uri,
            username=trunk.username,
            realm=realm,
            status=status,
            hint="the trunk refused our credentials: check sip.trunk.username and sip.trunk.password",
        )

    creds = ClientCredentials(trunk.username, trunk.password, trunk.realm, rejected)

    def lookup(request_uri: str, dest: Addr) -> ClientCredentials | None:
        try:
            uri = parse_uri(request_uri)
        except (ValueError, SipParseError):
            return None
        if _is_trunk(trunk, uri.host_for_socket, uri.port or _default_port(uri.transport)):
            return creds
        return None

    previous = endpoint.client_credentials

    def chained(request_uri: str, dest: Addr) -> ClientCredentials | None:
        found = lookup(request_uri, dest)
        return found if found is not None or previous is None else previous(request_uri, dest)

    endpoint.client_credentials = chained


async def dial(
    endpoint: SipEndpoint,
    media: MediaEngine,
    settings: Settings,
    number: str,
    *,
    for_call: str = "",
    caller_id: str | None = None,
    display: str | None = None,
    timeout_s: float | None = None,
) -> DialResult:
    """Call ``number`` through the trunk; ``answered`` with the leg and its RTP session (the caller
    closes them with ``close_leg``), else busy / no_answer / failed with a reason. Cancelled: the leg
    is cancelled and its RTP closed before CancelledError propagates."""
    trunk = _trunk(settings)
    uri = number_uri(settings, number)
    try:
        dest = await outside_dest(endpoint, settings, uri)
    except OSError as exc:
        host = parse_uri(uri).host_for_socket
        return DialResult("failed", uri, f"cannot resolve the trunk {host}: {exc}")
    target = RingTarget(uri, dest)
    from_user = caller_id or trunk.from_user or trunk.username or "callcenter"
    ring = AgentRing(
        endpoint,
        media,
        CallerInfo(for_call or uri, from_user, display or trunk.from_display),
        {number: [target]},
        ptime_ms=settings.media.ptime_ms,
        timeout_s=timeout_s or trunk.ring_timeout_s,
        srtp=settings.media.srtp,
    )
    log_event(log, "trunk_dialing", call_id=for_call or None, number=number, uri=uri)
    result = await ring.ring()
    if result.agent is not None and result.leg is not None and result.rtp is not None:
        log_event(log, "trunk_answered", call_id=for_call or None, number=number, leg=result.leg.call_id)
        return DialResult("answered", uri, leg=result.leg, rtp=result.rtp)
    outcome = result.outcomes.get(number, "unreachable")
    rejected = any(leg.auth_rejected for _, leg in ring._legs)
    if rejected:
        detail = "the trunk refused our credentials"
    else:
        detail = outcome
    status: Literal["busy", "no_answer", "failed"] = (
        "busy" if outcome == "rejected" else ("no_answer" if outcome == "no_answer" else "failed")
    )
    if rejected:
        status = "failed"
    log_event(
        log, "trunk_not_answered", call_id=for_call or None, number=number, outcome=status, detail=detail
    )
    return DialResult(status, uri, detail)
