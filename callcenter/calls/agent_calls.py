"""Calls agents place through the server from their registered softphones.

An INVITE whose source is the address an agent's phone registered from is an agent calling out. When
its Request-URI names one of our agents (``sip:bob@us``), a queue (``sip:support@us``) or a phone
number (``sip:+4930123@us``), the phone must prove who it is: 407 with a digest challenge (RFC 3261
§22.3), the agent's SIP credentials in Proxy-Authorization; a wrong password gets 403. The call then
runs as a :class:`~callcenter.calls.session.CallSession` whose "flow" is one node built here: a
transfer to ``agent:NAME`` (the agent's phones ring through the router, reserved like any offer), a
queue node (the agent waits in line like a caller), or a transfer to the number (through the trunk).
So the call has a record, hold and transfers like any other, and a REFER with Replaces naming it joins
the agent's earlier caller with whoever answered (RFC 5589 §7, calls/talk.py ``LiveTalk.join``).

Decisions:

- The agent is identified by the address their REGISTER came from, then by the credentials; the
  credentials must be those of an agent registered from that address (403 otherwise).
- The call is answered at once and the agent hears hold music while the target rings or the queue
  waits (RFC 3261 allows no early media here without SDP in a 183, which phones handle unevenly).
- IVR numbers dialled from an agent's phone reach the IVR as from any caller, without a challenge.
- Internal calls feed no ticket policy (``after_call`` is not called for them).
- Behind Kamailio (issue 10) every INVITE comes from the proxy. The proxy states the phone's own
  address in ``X-Callcenter-Source`` (its ``$su``: ``sip:IP:PORT[;transport=T]``, the same form as the
  ``received`` of the Path it added to the phone's REGISTER); that header is believed only on a request
  whose packet came from a ``sip.protection.trusted`` network, and the proxy removes any copy a phone
  sent. An agent's phone is then recognised by that address, on any node (cluster/bindings.py).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

from callcenter.calls.session import CallDeps, CallSession
from callcenter.calls.transfer import Replaces, has_replaces, names_dialog
from callcenter.core.logging import log_event
from callcenter.ivr.schema import Flow, QueueNode, TransferNode
from callcenter.ivr.services import Services
from callcenter.routing.agents import AgentState
from callcenter.sip.auth import AuthStatus
from callcenter.sip.invite import IncomingCall
from callcenter.sip.message import SipParseError, SipRequest
from callcenter.sip.transaction import Addr
from callcenter.sip.uri import parse_uri

if TYPE_CHECKING:
    from callcenter.calls.acd import Acd
    from callcenter.calls.control import IvrRuntime

__all__ = ["SOURCE_HEADER", "AgentCallSession", "AgentCalls", "AgentTarget", "proxied_source"]

log = logging.getLogger("callcenter.calls.agent")

_NUMBER = re.compile(r"\+?[0-9*#]{1,32}")
AGENT_FLOW = "agent_call"  # the flow id on these calls' records
RING_S = 30.0  # how long an agent or a number rings for a call placed by an agent
SOURCE_HEADER = "X-Callcenter-Source"  # the phone's address, added by a trusted proxy (Kamailio)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def proxied_source(request: SipRequest, source: Addr, trusted: tuple[Network, ...]) -> Addr:
    """Where the phone behind a trusted proxy sent ``request`` from (``X-Callcenter-Source``), or the
    packet's own ``source`` when it did not come from a trusted network or carries no readable header.
    One header only: a proxy that forwards a phone's forged copy next to its own is misconfigured."""
    try:
        sender = ipaddress.ip_address(source.host.strip("[]"))
    except ValueError:
        return source
    if not any(sender in net for net in trusted):
        return source
    values = request.headers.get_all(SOURCE_HEADER)
    if len(values) != 1:
        return source
    try:
        uri = parse_uri(values[0].strip().strip("<>"))
    except (ValueError, SipParseError):
        return source
    if uri.transport not in ("udp", "tcp", "tls"):
        return source
    return Addr(uri.transport, uri.host_for_socket, uri.port or (5061 if uri.transport == "tls" else 5060))


class AgentTarget:
    """What an agent dialled: ``kind`` agent / queue / number, and its name or digits."""

    __slots__ = ("kind", "value")

    def __init__(self, kind: Literal["agent", "queue", "number"], value: str) -> None:
        self.kind = kind
        self.value = value

    def flow(self, language: str = "en-US") -> Flow:
        """The one-node flow that serves the call."""
        node: QueueNode | TransferNode
        if self.kind == "queue":
            node = QueueNode(queue=self.value)
        else:
            to = f"agent:{self.value}" if self.kind == "agent" else self.value
            node = TransferNode(to=to, timeout_s=RING_S)
        return Flow(id=AGENT_FLOW, language=language, start="dial", nodes={"dial": node})

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


class AgentCalls:
    """Agents' calls through the server: which INVITEs are theirs, and the live ones (for Replaces)."""

    def __init__(self, acd: Acd) -> None:
        self.acd = acd
        self.live: dict[tuple[str, str], AgentCallSession] = {}  # (Call-ID, From tag) → answered call
        # (source host, username) of each refused digest attempt, as RegistrationService.on_auth_failed:
        # app.py feeds both to the SIP guard, so guessing passwords by INVITE is banned like by REGISTER.
        self.on_auth_failed: Callable[[str, str | None], object] | None = None
        nets = acd.settings.sip.protection.trusted
        self.trusted: tuple[Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in nets)

    def origin(self, call: IncomingCall) -> Addr:
        """The phone's address: the packet's source, or what a trusted proxy says it was."""
        invite = getattr(call, "invite", None)
        if invite is None or not hasattr(invite, "headers"):  # tests' stand-ins for a call
            return call.source
        return proxied_source(invite, call.source, self.trusted)

    def claims(self, call: IncomingCall) -> bool:
        """Whether ``call`` comes from a registered agent's phone."""
        return bool(self.acd.registration.agents_at(self.origin(call)))

    def session(self, call: IncomingCall, deps: CallDeps) -> AgentCallSession:
        return AgentCallSession(call, deps, self)

    def target(self, request_uri: str) -> AgentTarget | None | Literal["ivr"]:
        """The agent, queue or number dialled; "ivr" for an IVR number or anything else (served as for
        any caller); None when the Request-URI cannot be read."""
        try:
            user = parse_uri(request_uri).user or ""
        except (ValueError, SipParseError):
            return None
        router = self.acd.router
        if user in router.agents:
            return AgentTarget("agent", user)
        from callcenter.calls.acd import DIRECT_QUEUE

        if user in router.queues and user != DIRECT_QUEUE:
            return AgentTarget("queue", user)
        settings = self.acd.settings
        if user in settings.ivr.numbers:
            return "ivr"
        digits = re.sub(r"[\-.()]", "", user)
        if _NUMBER.fullmatch(digits) and settings.sip.trunk is not None:
            return AgentTarget("number", digits)
        return "ivr"  # anything else reaches what any caller dialling it reaches (IVR default, demo)

    def find(self, replaces: Replaces) -> AgentCallSession | None:
        """The answered agent call whose dialog ``replaces`` names."""
        return next((s for s in self.live.values() if names_dialog(s.call.dialog, replaces)), None)


class AgentCallSession(CallSession):
    """A call an agent placed: authenticated first, then served by its one-node flow."""

    def __init__(self, call: IncomingCall, deps: CallDeps, calls: AgentCalls) -> None:
        super().__init__(call, deps)
        self.calls = calls
        self.agent: str | None = None
        self.target: AgentTarget | None = None

    async def run(self) -> None:
        call, acd = self.call, self.calls.acd
        target = self.calls.target(call.invite.uri)
        if target == "ivr":
            await super().run()  # an IVR number: as from any caller
            return
        if target is None:
            call.reject(404)
            return
        agent = await self._authenticate()
        if agent is None:
            return
        if target.kind == "agent" and acd.router.agents[target.value].state is AgentState.OFFLINE:
            call.reject(480, "Agent Offline")
            return
        # From here until the call ends the agent is busy to the router (routing/agents.py: own_call),
        # also while the colleague rings or the queue waits; afterwards back to the state before.
        # No wrap-up follows: an internal call is not a customer contact.
        busy = agent in acd.router.agents
        if busy:
            acd.router.own_call_started(agent, self.call_id, acd.clock())
            acd.kick()  # logs the agent_state change
        try:
            await self._serve(agent, target)
        finally:
            if busy:
                acd.router.own_call_ended(agent, self.call_id, acd.clock())
                acd.kick()  # and dispatches: they may take the next caller now

    async def _serve(self, agent: str, target: AgentTarget) -> None:
        call = self.call
        runtime = self._runtime()
        if runtime is None:
            call.reject(503)
            return
        self.agent, self.target = agent, target
        self.deps = replace(self.deps, ivr=runtime, after_call=None)
        call.on_refer = self._on_refer
        key = (call.call_id, call.remote_tag)
        self.calls.live[key] = self
        log_event(log, "agent_call", call_id=self.call_id, agent=agent, target=str(target))
        try:
            await super().run()
        finally:
            if self.calls.live.get(key) is self:
                del self.calls.live[key]

    async def _authenticate(self) -> str | None:
        """The agent's username once the Proxy-Authorization checks out; else the INVITE is answered
        (407 challenge, or 403) and None."""
        call, registration = self.call, self.calls.acd.registration
        origin = self.calls.origin(call)
        if origin != call.source and registration.banned is not None and registration.banned(origin.host):
            call.reject(403)  # banned behind a trusted proxy: the guard cannot drop the proxy's packets
            return None
        try:
            result = await registration.authenticate(call.invite)
        except Exception as exc:  # noqa: BLE001 - a database hiccup must answer, not hang the phone
            log_event(log, "agent_call_auth_error", level=logging.ERROR, error=repr(exc))
            call.reject(500, extra=[("Retry-After", "5")])
            return None
        if result.status in (AuthStatus.CHALLENGE, AuthStatus.STALE):
            call.reject(407, extra=registration.proxy_challenge(stale=result.status is AuthStatus.STALE))
            return None
        agents = registration.agents_at(origin)
        if result.status is not AuthStatus.OK or result.username not in agents:
            reason = result.reason or "not this phone's agent"
            log_event(log, "agent_call_auth_failed", call_id=call.call_id, username=result.username,
                      source=f"{origin.host}:{origin.port}", reason=reason)
            call.reject(403)
            if self.calls.on_auth_failed is not None:  # the phone's address, also behind Kamailio
                self.calls.on_auth_failed(origin.host, result.username)
            return None
        return result.username

    def _runtime(self) -> IvrRuntime | None:
        """The IVR runtime the call's control uses (the server's, or a bare one when no flow is set up)."""
        acd = self.calls.acd
        runtime = self.deps.ivr
        if runtime is not None:
            return runtime if runtime.acd is acd else replace(runtime, acd=acd)
        from callcenter.calls.control import IvrRuntime
        from callcenter.speech.base import SpeechError
        from callcenter.speech.cache import PromptCache

        prompts = acd.prompts
        if prompts is None:
            from callcenter.speech.tts import EspeakNgEngine

            try:
                prompts = PromptCache(self.deps.settings.data_dir / "prompts", EspeakNgEngine())
            except SpeechError as exc:
                log_event(log, "agent_call_no_tts", level=logging.ERROR, error=str(exc))
                return None
            acd.prompts = prompts
        return IvrRuntime(flows={}, prompts=prompts, data_dir=self.deps.settings.data_dir, acd=acd)

    def _ivr_flow(self) -> tuple[Flow, Services] | None:
        if self.target is None:
            return super()._ivr_flow()
        assert self.deps.ivr is not None
        self.deps.writer.call_extra(self.call_id, {"placed_by": self.agent, "dialled": str(self.target)})
        return self.target.flow(), self.deps.ivr.services

    def _on_refer(self, request: SipRequest) -> int:
        """REFER on the agent's call (RFC 5589 §7 allows either dialog): with Replaces naming the leg
        we rang this agent on for a caller, that caller is joined with whoever answered this call."""
        refer_to = request.headers.get("Refer-To") or ""
        if not has_replaces(refer_to) or self.agent is None:
            return 603  # handing the dialled party on elsewhere (blind) is not offered
        return self.calls.acd.refer_on_agent_call(self.call, self.agent, refer_to)
