"""The server's leg to an agent's softphone: ring every registered contact, bridge the first answer.

One :class:`AgentRing` per offer. It opens one RTP session for the agent side and sends the same
SDP offer to every contact of every offered agent (a ring-all offer rings several agents; an agent
registered from two phones rings on both), the way a forking proxy would (RFC 3261 §16.7): the first
2xx wins, the other branches get CANCEL, a 2xx that crosses our CANCEL gets ACK + BYE (OutgoingCall).

Outcomes per agent feed the router: answered; rejected (486/603/other final) and no answer (ring
timeout) count as a missed offer; the caller hanging up during ringing cancels every branch and does
not count against the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from callcenter.calls.leg_sdp import LegSdp, SrtpMode
from callcenter.core.logging import log_event
from callcenter.media import sdp
from callcenter.media.engine import MediaEngine
from callcenter.media.session import RtpSession
from callcenter.sip.endpoint import SipEndpoint
from callcenter.sip.message import SipRequest, SipResponse
from callcenter.sip.outgoing import OutgoingCall
from callcenter.sip.registrar import Binding
from callcenter.sip.transaction import Addr

log = logging.getLogger("callcenter.calls.agent")

Outcome = Literal["answered", "rejected", "no_answer", "unreachable", "cancelled"]


@dataclass(frozen=True)
class CallerInfo:
    """What the agent's phone shows: the caller's number and name, and a screen-pop link."""

    call_id: str
    number: str
    display_name: str | None = None
    queue: str | None = None
    screen_pop_url: str | None = None


@dataclass(frozen=True)
class RingTarget:
    """One branch to ring: the Request-URI and where to send it."""

    uri: str
    dest: Addr
    route: tuple[str, ...] = ()  # Route headers: the binding's Path (RFC 3327 §5.3)

    @classmethod
    def from_binding(cls, binding: Binding) -> RingTarget:
        # Registered through a proxy (Kamailio in front of a cluster): its Path is the route set and
        # its first entry the next hop, whichever node registered the phone.
        hop = binding.first_hop()
        if hop is not None:
            transport = hop[0] if hop[0] in ("udp", "tcp", "tls") else "udp"
            return cls(binding.contact, Addr(transport, hop[1], hop[2]), binding.path)
        # Send to where the REGISTER came from (NAT, RFC 5626 §5.3), over the transport it used.
        transport = binding.transport if binding.transport in ("udp", "tcp", "tls") else "udp"
        return cls(binding.contact, Addr(transport, binding.source[0], binding.source[1]))


@dataclass
class RingResult:
    agent: str | None  # who answered
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # per offered agent
    leg: OutgoingCall | None = None
    rtp: RtpSession | None = None
    ring: AgentRing | None = None  # the ring that answered: its hooks follow the leg (hold)


def _quote(text: str) -> str:
    return text.replace("\\", "").replace('"', "'")[:64]


class AgentRing:
    """Ring ``agents`` (name → their branches: registered contacts, or an outside URI) for
    ``timeout_s``; the first answer wins."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        media: MediaEngine,
        caller: CallerInfo,
        agents: Mapping[str, Sequence[RingTarget]],
        *,
        ptime_ms: int,
        timeout_s: float,
        srtp: SrtpMode = "optional",
    ) -> None:
        self.endpoint = endpoint
        self.media = media
        self.caller = caller
        self.agents = agents
        self.ptime_ms = ptime_ms
        self.timeout_s = timeout_s
        self.rtp: RtpSession | None = None
        self._offer: sdp.SessionDescription | None = None
        self.sdp = LegSdp(ptime_ms, srtp=srtp)
        self._legs: list[tuple[str, OutgoingCall]] = []
        # told True/False when the answered leg's phone holds / resumes (RFC 3264 §8.4)
        self.on_hold: Callable[[bool], None] | None = None

    async def ring(self) -> RingResult:
        """Ring until one agent answers, all refuse, or the timeout; cancelled (the caller hung up) →
        every branch is cancelled and the RTP session closed before CancelledError propagates."""
        result = RingResult(None, {name: "unreachable" for name in self.agents})
        answered = False
        try:
            await self._open_media()
            self._send_invites()
            if not self._legs:
                return result
            answered = await self._wait(result)
            return result
        except asyncio.CancelledError:
            for name in self.agents:
                result.outcomes[name] = "cancelled"
            raise
        finally:
            if not answered:
                self._cancel_all(None)
                if self.rtp is not None:
                    self.rtp.close()
                    self.rtp = None

    async def _open_media(self) -> None:
        first = next((b for bindings in self.agents.values() for b in bindings), None)
        if first is None:
            return
        self.sdp.local_ip = self.endpoint.local_ip_for(first.dest.host)
        # One offer goes to every branch: SRTP only when each of them registered over TLS (a plain
        # phone would refuse RTP/SAVP), or when media.srtp is required.
        targets = [t for ts in self.agents.values() for t in ts]
        tls = all(t.dest.transport == "tls" for t in targets)
        self.sdp.offer_srtp = self.sdp.srtp == "required" or (self.sdp.srtp != "off" and tls)
        self.sdp.secure_signalling = tls
        self.rtp = await RtpSession.open(
            allocator=self.media.ports,
            scheduler=self.media.scheduler,
            local_ip="::" if ":" in self.sdp.local_ip else "0.0.0.0",
            ptime_ms=self.ptime_ms,
        )
        self._offer = self.sdp.offer(self.rtp)

    def _send_invites(self) -> None:
        assert self._offer is not None
        body = self._offer.to_bytes()
        caller = self.caller
        extra: list[tuple[str, str]] = []
        if caller.screen_pop_url:
            extra.append(("Call-Info", f"<{caller.screen_pop_url}>;purpose=info"))
        if caller.queue:
            extra.append(("X-Callcenter-Queue", caller.queue))
        extra.append(("X-Callcenter-Call-ID", caller.call_id))
        for name, targets in self.agents.items():
            for target in targets:
                leg = self.endpoint.invite(
                    target.uri,
                    target.dest,
                    sdp=body,
                    from_user=caller.number or "anonymous",
                    from_display=_quote(caller.display_name) if caller.display_name else None,
                    to_uri=target.uri,
                    extra=[*(("Route", route) for route in target.route), *extra],
                )
                self._legs.append((name, leg))
                log_event(
                    log,
                    "agent_offer_sent",
                    level=logging.DEBUG,
                    call_id=caller.call_id,
                    agent=name,
                    contact=target.uri,
                    leg=leg.call_id,
                )

    async def _wait(self, result: RingResult) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        pending = {leg.final: (name, leg) for name, leg in self._legs}
        refused: dict[str, int] = {}
        while pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            done, _ = await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                break
            for fut in done:
                name, leg = pending.pop(fut)
                response = fut.result()
                if response is not None and 200 <= response.status < 300 and leg.state == "confirmed":
                    if result.agent is None and self._accept(leg, response):
                        result.agent, result.leg, result.rtp, result.ring = name, leg, self.rtp, self
                        result.outcomes[name] = "answered"
                        self._cancel_all(leg)
                        for other in self.agents:
                            if other != name and result.outcomes[other] != "rejected":
                                result.outcomes[other] = "cancelled"
                        return True
                    self.endpoint.spawn(leg.hangup("answered elsewhere"))
                    continue
                refused[name] = response.status if response is not None else 408
                if all(leg_name != name for leg_name, _ in pending.values()):
                    status = refused[name]
                    result.outcomes[name] = (
                        "rejected"
                        if status in (486, 600, 603)
                        else ("no_answer" if status in (408, 480, 487) else "unreachable")
                    )
        for _name, leg in pending.values():
            leg.cancel()
        for name in {n for n, _ in pending.values()}:
            result.outcomes[name] = "no_answer"
        return False

    def _accept(self, leg: OutgoingCall, response: SipResponse) -> bool:
        """Apply the agent's SDP answer; a leg whose answer we cannot use is hung up."""
        assert self.rtp is not None and self._offer is not None
        try:
            media = sdp.process_answer(self._offer, leg.answer_body)
        except (sdp.SdpParseError, sdp.SdpNegotiationError) as exc:
            log_event(
                log,
                "agent_answer_unusable",
                level=logging.WARNING,
                call_id=self.caller.call_id,
                leg=leg.call_id,
                error=str(exc),
            )
            self.endpoint.spawn(leg.hangup("unusable SDP answer"))
            return False
        self.rtp.apply(media)
        leg.on_reinvite = self._on_reinvite
        return True

    def _on_reinvite(self, request: SipRequest) -> tuple[int, bytes]:
        """Hold/resume from the agent's phone (RFC 3264 §8): a=sendonly/inactive or the legacy
        c=0.0.0.0 (§8.4) means the phone does not want our audio — the caller gets hold music."""
        status, body = self.sdp.reinvite(request, self.rtp)
        media = self.sdp.media
        if status == 200 and request.body and media is not None and self.on_hold is not None:
            self.on_hold(media.on_hold)
        return status, body

    def _cancel_all(self, keep: OutgoingCall | None) -> None:
        for _name, leg in self._legs:
            if leg is keep:
                continue
            if leg.state in ("calling", "early"):
                leg.cancel()
            elif leg.state == "confirmed":
                self.endpoint.spawn(leg.hangup("answered elsewhere"))


async def close_leg(leg: OutgoingCall | None, rtp: RtpSession | None, reason: str) -> None:
    """End an agent leg (BYE if it is up) and free its RTP ports; safe to call twice."""
    if rtp is not None:
        rtp.close()
    if leg is not None and leg.state != "terminated":
        with contextlib.suppress(Exception):
            await leg.hangup(reason)
