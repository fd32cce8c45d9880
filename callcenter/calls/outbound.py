"""Calls out through the SIP trunk (``sip.trunk``): a number becomes a Request-URI at the trunk, the
INVITE answers the trunk's digest challenge (RFC 3261 §22.2, callcenter/sip/client_auth.py), and an
answered call comes back as a leg + RTP session, the same shape as an agent's leg (``RingResult``).

A trunk that refuses our credentials gets one clear ``trunk_auth_failed`` line naming the settings to
check, and the dial ends as ``failed`` at once (no retry loop, no hang). So does a trunk we cannot
reach or whose certificate does not verify: the transport fails the INVITE as a local 503
(RFC 3261 §8.1.3.1), logged once as ``trunk_tls_failed`` with the reason by the TLS transport.

SRTP towards a peer without it (``TrunkRing``). Over TLS with ``media.srtp: optional`` we offer
RTP/SAVP with SDES keys (RFC 4568). A peer that does not do SRTP answers 488 (§21.4.26), sometimes
606 or 415. "Optional" then means what it says: the INVITE is re-offered once as plain RTP/AVP, a new
transaction with CSeq + 1 and the same Call-ID, From tag and To (§8.1.3.5's rule for retried
requests; liblinphone does the same when encryption is not mandatory). Once a plain retry is
answered, the peer is remembered (``sip.trunk.srtp_fallback_s``, or until restart) and offered plain
RTP at once, with one ``trunk_srtp_refused`` line. A gateway answering RTP/AVP to our RTP/SAVP (RFC
3264 §6 says it must not) is taken the same way. With ``media.srtp: required`` nothing is retried: the
call fails, logged ``trunk_srtp_refused`` at ERROR with the setting to change. RFC 5939 capability
negotiation would do this in one offer but few peers support it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import socket
import ssl
import weakref
from dataclasses import dataclass
from typing import Literal

from callcenter.calls.agent_leg import AgentRing, CallerInfo, RingTarget
from callcenter.calls.leg_sdp import SrtpMode
from callcenter.core.config import Settings, Transport, TrunkSettings
from callcenter.core.errors import CallcenterError
from callcenter.core.logging import log_event
from callcenter.media import sdp
from callcenter.media.engine import MediaEngine
from callcenter.media.session import RtpSession
from callcenter.sip.client_auth import ClientCredentials
from callcenter.sip.endpoint import SipEndpoint
from callcenter.sip.message import SipParseError, SipResponse
from callcenter.sip.outgoing import OFFER_REFUSED, OutgoingCall
from callcenter.sip.transaction import Addr
from callcenter.sip.transport.tls import DEFAULT_TLS_PORT, peer_context
from callcenter.sip.uri import format_host, parse_uri

__all__ = [
    "DialResult",
    "PlainRtpPeers",
    "TrunkRing",
    "dial",
    "install_trunk",
    "normalise_number",
    "number_uri",
    "outside_dest",
    "retry_plain",
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


def retry_plain(mode: SrtpMode, offered_srtp: bool, status: int, retried: bool) -> bool:
    """Whether a refused offer is re-offered as plain RTP/AVP: only with ``media.srtp: optional``, for an
    offer that was RTP/SAVP, refused as an offer (415/488/606), and once per call."""
    return mode == "optional" and offered_srtp and status in OFFER_REFUSED and not retried


class PlainRtpPeers:
    """Peers that took plain RTP after refusing SRTP, offered plain RTP until their time is up (sans-I/O:
    ``now`` is monotonic seconds; ``forget_s`` None = until restart)."""

    def __init__(self) -> None:
        self._until: dict[Addr, float] = {}

    def plain(self, peer: Addr, now: float) -> bool:
        until = self._until.get(peer)
        if until is not None and now >= until:
            del self._until[peer]
            return False
        return until is not None

    def refused(self, peer: Addr, now: float, forget_s: float | None) -> bool:
        """Remember ``peer``; True when it was not remembered yet (the moment to say so in the log)."""
        new = not self.plain(peer, now)
        self._until[peer] = float("inf") if forget_s is None else now + forget_s
        return new


_PLAIN_PEERS: weakref.WeakKeyDictionary[SipEndpoint, PlainRtpPeers] = weakref.WeakKeyDictionary()


class TrunkRing(AgentRing):
    """The ring of one call out (the trunk, or an outside SIP URI): an AgentRing to a single target
    that re-offers plain RTP to a peer refusing SRTP (see the module's docstring)."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        media: MediaEngine,
        settings: Settings,
        caller: CallerInfo,
        name: str,
        target: RingTarget,
        *,
        timeout_s: float,
    ) -> None:
        super().__init__(
            endpoint,
            media,
            caller,
            {name: [target]},
            ptime_ms=settings.media.ptime_ms,
            timeout_s=timeout_s,
            srtp=settings.media.srtp,
        )
        self.peer = target.dest
        trunk = settings.sip.trunk
        self._forget_s = trunk.srtp_fallback_s if trunk is not None else 3600.0
        self._peers = _PLAIN_PEERS.setdefault(endpoint, PlainRtpPeers())
        self._retried = False
        self._refusal = ""  # how the peer refused SRTP, once it did
        self.srtp_refused = False  # media.srtp required and the peer would not do SRTP

    @property
    def transport_error(self) -> str | None:
        """Why the INVITE never reached the peer (see OutgoingCall.transport_error), else None."""
        return next((err for _, leg in self._legs if (err := leg.transport_error) is not None), None)

    async def _open_media(self) -> None:
        await super()._open_media()
        known = self._peers.plain(self.peer, self.endpoint.now)
        if known and self.sdp.offer_srtp and self.sdp.srtp == "optional":
            self._plain_offer()

    def _plain_offer(self) -> bytes:
        assert self.rtp is not None
        self.sdp.offer_srtp = False
        self._offer = self.sdp.offer(self.rtp)
        return self._offer.to_bytes()

    def _send_invites(self) -> None:
        super()._send_invites()
        for _, leg in self._legs:
            leg.on_offer_refused = self._offer_refused

    def _offer_refused(self, response: SipResponse) -> bytes | None:
        offered_srtp = self.sdp.offer_srtp
        if not retry_plain(self.sdp.srtp, offered_srtp, response.status, self._retried):
            if offered_srtp and self.sdp.srtp == "required" and response.status in OFFER_REFUSED:
                self.srtp_refused = True
                log_event(
                    log,
                    "trunk_srtp_refused",
                    level=logging.ERROR,
                    call_id=self.caller.call_id,
                    peer=str(self.peer),
                    status=response.status,
                    hint="media.srtp is required, so the call fails: the peer does not take RTP/SAVP; "
                    "media.srtp: optional falls back to plain RTP",
                )
            return None
        self._retried = True
        self._refusal = f"{response.status} {response.reason}"
        return self._plain_offer()

    def _accept(self, leg: OutgoingCall, response: SipResponse) -> bool:
        if self.sdp.offer_srtp and self.sdp.srtp == "optional" and _plain_answer(leg.answer_body):
            self._refusal = "answered RTP/AVP to RTP/SAVP"
            self._plain_offer()  # what the peer answered is now our offer's counterpart
        accepted = super()._accept(leg, response)
        if accepted and self._refusal and self._peers.refused(self.peer, self.endpoint.now, self._forget_s):
            log_event(
                log,
                "trunk_srtp_refused",
                level=logging.WARNING,
                call_id=self.caller.call_id,
                peer=str(self.peer),
                refusal=self._refusal,
                plain_rtp_for_s=self._forget_s,
                detail="the peer does not do SRTP: calls to it use plain RTP (media.srtp: optional)",
            )
        return accepted


def _plain_answer(body: bytes) -> bool:
    """An answer whose first audio stream is plain RTP/AVP(F) without crypto lines."""
    try:
        answer = sdp.parse(body)
    except sdp.SdpParseError:
        return False
    audio = next((m for m in answer.media if m.media == "audio" and m.port != 0), None)
    return (
        audio is not None
        and audio.proto.upper() in ("RTP/AVP", "RTP/AVPF")
        and not any(a.name == "crypto" for a in audio.attributes)
    )


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
    ring = TrunkRing(
        endpoint,
        media,
        settings,
        CallerInfo(for_call or uri, from_user, display or trunk.from_display),
        number,
        target,
        timeout_s=timeout_s or trunk.ring_timeout_s,
    )
    log_event(log, "trunk_dialing", call_id=for_call or None, number=number, uri=uri)
    result = await ring.ring()
    if result.agent is not None and result.leg is not None and result.rtp is not None:
        log_event(log, "trunk_answered", call_id=for_call or None, number=number, leg=result.leg.call_id)
        return DialResult("answered", uri, leg=result.leg, rtp=result.rtp)
    outcome = result.outcomes.get(number, "unreachable")
    error = ring.transport_error
    status: Literal["busy", "no_answer", "failed"] = (
        "busy" if outcome == "rejected" else ("no_answer" if outcome == "no_answer" else "failed")
    )
    if any(leg.auth_rejected for _, leg in ring._legs):
        status, detail = "failed", "the trunk refused our credentials"
    elif error is not None:  # the trunk never saw the call
        status, detail = "failed", f"cannot reach the trunk: {error}"
    elif ring.srtp_refused:
        status, detail = "failed", "the trunk refused SRTP (media.srtp: required)"
    else:
        detail = outcome
    log_event(
        log, "trunk_not_answered", call_id=for_call or None, number=number, outcome=status, detail=detail
    )
    return DialResult(status, uri, detail)
