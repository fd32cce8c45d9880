"""The SIP endpoint: the transaction user that glues transports, the transaction layer and calls.

Everything here runs on the event loop and stays lean: no per-message logging above debug, no I/O
but socket sends. Time is the loop's monotonic clock, passed as ``now`` to the sans-I/O cores.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from callcenter.sip.client_auth import ClientCredentials
from callcenter.sip.dialog import Dialog
from callcenter.sip.guard import GuardSettings, SipGuard, Verdict
from callcenter.sip.invite import IncomingCall
from callcenter.sip.message import (
    SipMessage,
    SipParseError,
    SipRequest,
    SipResponse,
    make_response,
    split_list,
)
from callcenter.sip.outgoing import OutgoingCall, build_invite
from callcenter.sip.overload import (
    OverloadGuard,
    OverloadSettings,
    is_ack_of_refusal,
    overload_tag,
    peek_new_invite,
    refusal_503,
)
from callcenter.sip.parser import ParseErrorWithHead, parse_message
from callcenter.sip.transaction import (
    Addr,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    StrayResponse,
    TransactionLayer,
    TransactionTimeout,
    server_key,
)
from callcenter.sip.transport.limits import ConnectionLimits
from callcenter.sip.transport.tcp import TcpTransport
from callcenter.sip.transport.tls import TlsTransport, client_context, server_context
from callcenter.sip.transport.udp import UdpTransport, open_udp
from callcenter.sip.uri import format_host, parse_name_addr, parse_uri, parse_via

log = logging.getLogger("callcenter.sip")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, REFER, NOTIFY"
ACCEPT = "application/sdp, application/dtmf-relay, application/dtmf"
SUPPORTED = "path"
_SUPPORTED_SET = frozenset({"path"})
# Methods we know but do not serve here: 405 with Allow. Anything else: 501 (§8.2.1).
_KNOWN_UNSERVED = frozenset({"SUBSCRIBE", "MESSAGE", "PUBLISH", "UPDATE", "PRACK"})
_URI_SCHEMES = frozenset({"sip", "sips", "tel"})


@dataclass
class EndpointConfig:
    listen: list[tuple[str, str, int]] = field(default_factory=lambda: [("udp", "127.0.0.1", 5060)])
    public_host: str | None = None
    user_agent: str = "callcenter"
    max_message_bytes: int = 65536
    guard: GuardSettings = field(default_factory=GuardSettings)
    # SIP over TLS: our certificate and key (needed to listen on "tls"), the CA to verify peers we
    # connect to (None: encrypted but unverified; see transport/tls.py).
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    overload: OverloadSettings = field(default_factory=OverloadSettings)
    # Caps and timeouts of TCP/TLS connections (transport/limits.py).
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)


CallLeg = IncomingCall | OutgoingCall
RegisterHandler = Callable[[ServerTransaction, SipRequest, Addr], None]
InviteHandler = Callable[[IncomingCall], None]
# (Request-URI, destination) → the credentials to answer that peer's 401/407 with, or None.
CredentialsLookup = Callable[[str, Addr], ClientCredentials | None]


class SipEndpoint:
    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.layer = TransactionLayer()
        self.udp: dict[int, UdpTransport] = {}  # by address family
        # A connection a registered phone keeps open, asked before the idle timeout closes it (the
        # registration service's binding check, set by the application).
        self.keep_connection: Callable[[Addr], bool] | None = None
        self.tcp = self._new_tcp()
        self.tls = self._new_tls()
        self.dialogs: dict[tuple[str, str, str], CallLeg] = {}
        self.calls: dict[tuple[str, str], IncomingCall] = {}  # (Call-ID, From tag) of live INVITEs
        self.calls_by_host: dict[str, int] = {}  # live incoming calls per source address
        self.guard = SipGuard(config.guard)
        self.overload = OverloadGuard(config.overload)
        self._sampler: asyncio.TimerHandle | None = None
        self._preadmitted = False  # the datagram being handled was admitted by the cheap path
        self._read_bytes = 0
        self.on_invite: InviteHandler | None = None
        self.on_register: RegisterHandler | None = None
        self.client_credentials: CredentialsLookup | None = None  # for calls out (the SIP trunk)
        self.bound_port = 0  # the first port bound (all transports share one unless port 0 was asked)
        self.ports: dict[tuple[str, int], int] = {}  # (transport, family) → port really bound
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._local_ip_cache: dict[str, str] = {}
        self.stats = {"received": 0, "parse_errors": 0, "bad_requests": 0, "dropped": 0}

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind every configured transport; raises OSError naming what failed (port in use...)."""
        self._loop = asyncio.get_running_loop()
        try:
            for transport, host, port in self.config.listen:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                try:
                    if transport == "udp":
                        self.udp[family] = await open_udp(self, host, port)
                        bound = self.udp[family].port
                    elif transport == "tcp":
                        bound = await self.tcp.listen(host, port)
                    elif transport == "tls":
                        bound = await self.tls.listen(host, port)
                    else:
                        raise ValueError(f"unknown SIP transport {transport!r}")
                except OSError as exc:
                    exc.sip_listen = (transport, host, port)  # type: ignore[attr-defined]
                    raise
                self.ports[(transport, family)] = bound
                self.bound_port = self.bound_port or bound
        except BaseException:
            await self.close()
            raise
        if self._sampler is not None:
            self._sampler.cancel()
        self._sample_load(self.now)

    def _sample_load(self, due: float) -> None:
        """Report to the overload guard: the loop thread's CPU time, this callback's lateness, and the
        UDP receive queues (bytes waiting, bytes read)."""
        now = self.now
        queued = 0
        for udp in self.udp.values():
            queued += udp_queued_bytes(udp)
        self.overload.sample(now, time.thread_time(), max(0.0, now - due), queued, self._read_bytes)
        assert self._loop is not None
        at = now + self.overload.settings.interval_s
        self._sampler = self._loop.call_at(at, self._sample_load, at)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        for udp in self.udp.values():
            udp.close()
        self.udp.clear()
        await self.tcp.close()
        self.tcp = self._new_tcp()
        await self.tls.close()
        self.tls = self._new_tls()
        self.bound_port = 0
        self.ports.clear()
        for task in list(self._tasks):
            task.cancel()

    def _new_tcp(self) -> TcpTransport:
        tcp = TcpTransport(self.receive_message, self._bad_request, self.config.max_message_bytes,
                           self.config.connections)
        tcp.needed = self.connection_needed
        tcp.banned = self._banned
        return tcp

    def _banned(self, host: str) -> bool:
        return self.guard.banned(host, self.now)

    def connection_needed(self, peer: Addr) -> bool:
        """Whether the connection to ``peer`` must stay open though idle: a registration binding, a
        call or a dialog uses it, and a phone behind NAT is reachable only through the connection it
        opened (RFC 3261 §18.2.2, RFC 5626 §5.3). Asked once per idle period, so a scan is fine."""
        if self.keep_connection is not None and self.keep_connection(peer):
            return True
        if any(call.source == peer for call in self.calls.values()):
            return True
        return any(leg.dialog is not None and leg.dialog.peer == peer for leg in self.dialogs.values())

    def connection_stats(self) -> dict[str, dict[str, int]]:
        """Per transport (tcp, tls): connections open (in and out, TLS handshakes included), refused
        by a cap, and closed by each timeout (transport/limits.py), for the metrics."""
        out: dict[str, dict[str, int]] = {}
        for name, transport in (("tcp", self.tcp), ("tls", self.tls)):
            out[name] = {"open": len(transport.table), **transport.table.stats}
        return out

    def _new_tls(self) -> TlsTransport:
        """The TLS transport; its server context is loaded only when a "tls" listen address exists
        (raises ConfigError naming an unreadable certificate or key)."""
        c = self.config
        listens = any(t == "tls" for t, _, _ in c.listen)
        server = server_context(c.tls_cert, c.tls_key) if listens and c.tls_cert and c.tls_key else None
        tls = TlsTransport(
            self.receive_message, self._bad_request, c.max_message_bytes,
            server=server, client=client_context(c.tls_ca), verify=c.tls_ca is not None,
            limits=c.connections,
        )
        tls.needed = self.connection_needed
        tls.banned = self._banned
        return tls

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Endpoint-level background work (a BYE after a missed ACK); kept referenced."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    # --- inbound -------------------------------------------------------------------------------
    def receive_datagram(self, data: bytes, source: Addr) -> None:
        if len(data) <= 4 and not data.strip(b"\r\n\x00 "):
            return  # keep-alive (RFC 5626 §4.4.1 CRLF or NAT pinholes)
        # What the datagram weighed in the kernel's receive queue: its skb truesize, from the slab sizes
        # Linux uses (measured: up to ~640 bytes of payload 1280, up to ~1660 2304)
        size = len(data)
        self._read_bytes += 1280 if size <= 640 else 2304 if size <= 1660 else size + 1024
        if self.overload.limiting and self._shed_datagram(data, source):
            return
        try:
            self._receive_datagram(data, source)
        finally:
            self._preadmitted = False

    def _receive_datagram(self, data: bytes, source: Addr) -> None:
        try:
            message = parse_message(data, self.config.max_message_bytes)
        except ParseErrorWithHead as exc:
            self._bad_request(exc, source)
            return
        except SipParseError:
            self.stats["parse_errors"] += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug('{"event":"sip_parse_error","source":"%s"}', source)
            return
        self.receive_message(message, source)

    def _bad_request(self, exc: ParseErrorWithHead, source: Addr) -> None:
        """400 for a request we could frame but not read (when it can be answered at all)."""
        self.stats["bad_requests"] += 1
        if exc.method is None or exc.method == "ACK":
            return
        h = exc.headers
        if not all(h.get(name) for name in ("Via", "From", "To", "Call-ID", "CSeq")):
            return
        fake = SipRequest(exc.method, "sip:invalid", h)
        self._send_stateless_response(fake, source, 400, _reason_text(exc.reason))

    def receive_message(self, message: SipMessage, source: Addr) -> None:
        self.stats["received"] += 1
        now = self.now
        if isinstance(message, SipRequest):
            ua = message.headers.get("User-Agent")
            if self.guard.check(source.host, message.method, ua, now) is Verdict.DROP:
                self.stats["dropped"] += 1
                return
            error = self._check_request(message, source)
            if error is not None:
                if message.method != "ACK":
                    self._send_stateless_response(message, source, *error)
                self._flush()
                return
            if message.method == "INVITE" and self._shed_invite(message, source, now):
                self._flush()
                return
            try:
                self.layer.receive_request(message, source, now)
            except SipParseError as exc:
                if message.method != "ACK":
                    self._send_stateless_response(message, source, 400, _reason_text(str(exc)))
        elif isinstance(message, SipResponse):
            self.layer.receive_response(message, source, now)
        self._process()

    def _shed_datagram(self, data: bytes, source: Addr) -> bool:
        """While the overload guard limits new calls: refuse a new INVITE (and drop the ACK of such a
        refusal) from its raw bytes, without parsing it (see sip/overload.py). True when handled."""
        if is_ack_of_refusal(data):
            return True
        invite = peek_new_invite(data)
        if invite is None or (invite.call_id, invite.from_tag) in self.calls:
            return False  # not a new INVITE, or a retransmission of one admitted: the full path
        now = self.now
        if self.guard.banned(source.host, now):
            self.stats["dropped"] += 1
            return True
        retry_after = self.overload.admit_invite(now, (invite.call_id, invite.from_tag))
        if retry_after is None:
            self._preadmitted = True  # the full path must not count it a second time
            return False
        self.send(refusal_503(invite, source.host, retry_after, self.config.user_agent), source)
        return True

    def _shed_invite(self, request: SipRequest, source: Addr, now: float) -> bool:
        """A new INVITE the overload guard refuses gets 503 + Retry-After at once and statelessly
        (RFC 3261 §8.2.7: a stateless UAS suits exactly this): no transaction, no timers, no call.
        Its ACK then matches nothing and is dropped; a retransmitted INVITE gets another 503, with the
        same To tag (derived from the request, §8.2.7). Re-INVITEs and retransmissions of INVITEs
        already admitted always pass (RFC 6357 §5: shed new work, never work in progress)."""
        if self._preadmitted:
            self._preadmitted = False
            return False
        try:
            if parse_name_addr(request.headers.get("To") or "").tag:
                return False
            if server_key(request) in self.layer.server:
                return False
            from_tag = parse_name_addr(request.headers.get("From") or "").tag or ""
        except SipParseError:
            return False  # the transaction layer answers it 400
        retry_after = self.overload.admit_invite(now, (request.call_id, from_tag))
        if retry_after is None:
            return False
        tag = overload_tag(request.call_id, (request.headers.get("From") or "").strip())  # as the cheap path
        response = make_response(request, 503, to_tag=tag, extra=[("Retry-After", str(retry_after))])
        if self.config.user_agent:
            response.headers.add("Server", self.config.user_agent)
        self.send(response.serialize(), source)
        return True

    def _check_request(self, request: SipRequest, source: Addr) -> tuple[int, str] | None:
        """Checks of §8.2 before a transaction exists; returns (status, reason) to refuse."""
        h = request.headers
        # First: a SIP/7.0 request has a SIP/7.0 Via too, and still gets 505 (RFC 4475 §3.1.2.16).
        if request.version.upper() != "SIP/2.0":
            return 505, "Version Not Supported"
        vias = h.get_all("Via")
        if not vias:
            return 400, "Missing Via"
        try:
            top = parse_via(vias[0])
        except SipParseError:
            return 400, "Bad Via"
        # §18.2.1 received + RFC 3581 rport: remember where the request really came from.
        top.params["received"] = source.host
        if "rport" in top.params:
            top.params["rport"] = str(source.port)
        _replace_top_via(request, str(top))
        for name in ("From", "To", "Call-ID", "CSeq"):
            if not h.get(name):
                return 400, f"Missing {name}"
            if name != "Call-ID" and h.count(name) > 1:
                return 400, f"Multiple {name}"
        if h.count("Call-ID") > 1:
            return 400, "Multiple Call-ID"
        try:
            _, method = request.cseq()
            parse_name_addr(h.get("From") or "")
            parse_name_addr(h.get("To") or "")
        except SipParseError as exc:
            return 400, _reason_text(str(exc))
        if method != request.method:
            return 400, "CSeq method does not match"
        try:
            uri = parse_uri(request.uri)
        except SipParseError:
            return 400, "Bad Request-URI"
        if uri.scheme not in _URI_SCHEMES:
            return 416, "Unsupported URI Scheme"
        if uri.headers:  # §19.1.5: headers are not allowed in a Request-URI (RFC 4475 §3.1.2.11)
            return 400, "Headers in Request-URI"
        max_forwards = h.get("Max-Forwards")
        if max_forwards is not None:
            mf = max_forwards.strip()
            # 1*DIGIT (§25.1; leading zeros are legal, RFC 4475 §3.1.1.1); "²".isdigit() but int() fails
            if not (mf.isascii() and mf.isdigit()) or len(mf) > 10:
                return 400, "Bad Max-Forwards"
            if int(mf) == 0 and request.method == "INVITE":
                return 483, "Too Many Hops"
        if request.method not in ("ACK", "CANCEL"):
            required = {r.lower() for r in h.get_all("Require")}
            if required - _SUPPORTED_SET:
                return 420, "Bad Extension"
        return None

    # --- events from the transaction layer ----------------------------------------------------
    def _process(self) -> None:
        events = self.layer.events
        while events:
            event = events.popleft()
            try:
                if isinstance(event, RequestReceived):
                    self._on_request(event.request, event.source, event.transaction)
                elif isinstance(event, ResponseReceived):
                    self._on_response(event.response, event.transaction)
                elif isinstance(event, TransactionTimeout):
                    self._on_timeout(event.transaction)
                elif isinstance(event, StrayResponse):
                    self._on_stray_response(event.response)
            except SipParseError as exc:  # a header the checks let through but a handler can't use
                if isinstance(event, RequestReceived) and event.transaction is not None:
                    self.respond(event.transaction, make_response(event.request, 400, _reason_text(str(exc))))
        self._flush()

    def _on_request(self, request: SipRequest, source: Addr, txn: ServerTransaction | None) -> None:
        method = request.method
        if txn is None:  # ACK outside any transaction: for a 2xx of ours
            call = self._find_dialog(request)
            if call is not None:
                call.ack_received(request, self.now)
            return
        if method == "INVITE":
            self._on_invite(request, source, txn)
        elif method == "BYE":
            call = self._in_dialog(request, txn, allow_early=True)
            if call is not None:
                self.respond(txn, make_response(request, 200))
                call.bye_received()
        elif method == "CANCEL":
            invite_txn = self.layer.find_invite_server(request)
            target = invite_txn.user_data if invite_txn is not None else None
            if not isinstance(target, IncomingCall):
                self.respond(txn, make_response(request, 481))
                return
            self.respond(txn, make_response(request, 200, to_tag=target.local_tag))
            target.cancelled()
        elif method == "OPTIONS":
            if self.overload.draining:  # shutting down: a dispatcher pinging us takes us out of rotation
                retry = str(self.overload.settings.drain_retry_after_s)
                self.respond(txn, make_response(request, 503, extra=[("Retry-After", retry)]))
            else:
                self.respond(txn, make_response(request, 200, extra=self.capability_headers(accept=True)))
        elif method == "REGISTER":
            if self.on_register is None:
                self.respond(txn, make_response(request, 405, extra=[("Allow", ALLOW)]))
            else:
                self.on_register(txn, request, source)
        elif method == "INFO":
            call = self._in_dialog(request, txn)
            if call is None:
                return
            self.respond(txn, make_response(request, 200))
            if call.on_info is not None:
                call.on_info(request)
        elif method == "REFER":
            self._on_refer(request, source, txn)
        elif method == "NOTIFY":
            # Only in-dialog NOTIFYs exist here (a peer reporting on a REFER we sent): accepted, unused.
            if self._in_dialog(request, txn) is not None:
                self.respond(txn, make_response(request, 200))
        elif method in _KNOWN_UNSERVED:
            self.respond(txn, make_response(request, 405, extra=[("Allow", ALLOW)]))
        else:
            self.respond(txn, make_response(request, 501, extra=[("Allow", ALLOW)]))

    def _on_refer(self, request: SipRequest, source: Addr, txn: ServerTransaction) -> None:
        """RFC 3515 §2.4: a REFER inside a call we hold; outside a dialog → 403 (we take no orders
        from strangers), without a usable Refer-To → 400, a leg that cannot transfer → 603."""
        if not parse_name_addr(request.headers.get("To") or "").tag:
            self.respond(txn, make_response(request, 403, "REFER Outside A Dialog Is Not Accepted"))
            return
        call = self._in_dialog(request, txn)
        if call is None:
            return
        refer_to = request.headers.get_all("Refer-To")
        if len(refer_to) != 1:  # §2.4.1: exactly one Refer-To
            self.respond(txn, make_response(request, 400, "Exactly One Refer-To Required"))
            return
        try:
            parse_name_addr(refer_to[0]).parsed_uri()
        except ValueError:
            self.respond(txn, make_response(request, 400, "Bad Refer-To"))
            return
        handler = call.on_refer
        status = handler(request) if handler is not None else 603
        self.respond(txn, make_response(request, status, "Accepted" if status == 202 else None))

    def _on_invite(self, request: SipRequest, source: Addr, txn: ServerTransaction) -> None:
        to = parse_name_addr(request.headers.get("To") or "")
        if to.tag:  # re-INVITE within a dialog
            call = self._in_dialog(request, txn)
            if call is None:
                return
            status, body = call.reinvite(request)
            extra: list[tuple[str, str]] = [("Contact", self.contact_for(source))]
            if body:
                extra.append(("Content-Type", "application/sdp"))
            self.respond(txn, make_response(request, status, extra=extra, body=body if status < 300 else b""))
            if status < 300 and call.dialog is not None:
                call.dialog.invite_cseq = request.cseq()[0]
                call.txn = txn
                txn.user_data = call
            return
        from_tag = parse_name_addr(request.headers.get("From") or "").tag or ""
        existing = self.calls.get((request.call_id, from_tag))
        if existing is not None:
            # §8.2.2.2 merged request: same Call-ID/From tag/CSeq on another branch → 482.
            if existing.invite.cseq()[0] == request.cseq()[0]:
                self.respond(txn, make_response(request, 482))
            else:
                self.respond(txn, make_response(request, 491))
            return
        if request.body and (request.headers.get("Content-Type") or "").split(";")[0].strip().lower() not in (
            "application/sdp",
            "",
        ):
            self.respond(txn, make_response(request, 415, extra=[("Accept", "application/sdp")]))
            return
        from_host = self.calls_by_host.get(source.host, 0)
        retry_after = self.guard.call_refused(source.host, from_host, len(self.calls))
        if retry_after is not None:
            self.respond(txn, make_response(request, 503, extra=[("Retry-After", str(retry_after))]))
            return
        # Send 100 Trying at once: it stops the caller's retransmissions (and sloppy phones wait for it).
        self.respond(txn, make_response(request, 100))
        call = IncomingCall(self, txn, request, source)
        self.calls[(request.call_id, from_tag)] = call
        self.calls_by_host[source.host] = self.calls_by_host.get(source.host, 0) + 1
        if self.on_invite is None:
            call.reject(480)
        else:
            self.on_invite(call)

    def _on_response(self, response: SipResponse, txn: ClientTransaction) -> None:
        user = txn.user_data
        if isinstance(user, OutgoingCall):
            user.response_received(response)
        elif response.status >= 200 and isinstance(user, asyncio.Future) and not user.done():
            user.set_result(response)

    def _on_stray_response(self, response: SipResponse) -> None:
        """A 2xx to an INVITE whose transaction ended (timer M): re-ACK it (§13.2.2.4)."""
        if not 200 <= response.status < 300:
            return
        try:
            if response.cseq()[1] != "INVITE":
                return
        except SipParseError:
            return
        h = response.headers
        local = parse_name_addr(h.get("From") or "").tag or ""
        remote = parse_name_addr(h.get("To") or "").tag or ""
        leg = self.dialogs.get((response.call_id, local, remote))
        if isinstance(leg, OutgoingCall):
            leg.response_received(response)

    def _on_timeout(self, txn: ClientTransaction | ServerTransaction) -> None:
        user = txn.user_data
        if isinstance(txn, ClientTransaction):
            if isinstance(user, OutgoingCall):
                user.timeout()
            elif isinstance(user, asyncio.Future) and not user.done():
                user.set_result(None)
        elif txn.is_invite and isinstance(user, IncomingCall | OutgoingCall):
            if txn.last_status < 300 and user.txn is txn:
                user.no_ack()

    def _in_dialog(
        self, request: SipRequest, txn: ServerTransaction, allow_early: bool = False
    ) -> CallLeg | None:
        """The call an in-dialog request belongs to, or None after answering 481/500 for it."""
        call = self._find_dialog(request)
        if call is None and allow_early:
            # §15: a BYE may end an early dialog (our 180 carried a To tag); the INVITE gets 487.
            h = request.headers
            from_tag = parse_name_addr(h.get("From") or "").tag or ""
            early = self.calls.get((request.call_id, from_tag))
            to_tag = parse_name_addr(h.get("To") or "").tag
            if early is not None and early.state == "early" and to_tag == early.local_tag:
                return early
        if call is None:
            self.respond(txn, make_response(request, 481))
            return None
        if call.dialog is not None and not call.dialog.accept_remote_cseq(*request.cseq()):
            self.respond(txn, make_response(request, 500, "Out of Order CSeq"))  # §12.2.2
            return None
        return call

    def _find_dialog(self, request: SipRequest) -> CallLeg | None:
        h = request.headers
        to_tag = parse_name_addr(h.get("To") or "").tag or ""
        from_tag = parse_name_addr(h.get("From") or "").tag or ""
        return self.dialogs.get((request.call_id, to_tag, from_tag))

    # --- outbound ------------------------------------------------------------------------------
    def respond(self, txn: ServerTransaction, response: SipResponse) -> None:
        if self.config.user_agent and response.status > 100:
            response.headers.add("Server", self.config.user_agent)
        secure = txn.dest.transport == "tls" and _wants_sips(txn.request, "Record-Route")
        if secure and "Contact" in response.headers:
            self._secure_contact(txn, response)
        txn.respond(response, self.now)
        self._flush()

    def _send_stateless_response(self, request: SipRequest, source: Addr, status: int, reason: str) -> None:
        response = make_response(request, status, reason)
        if status == 405 or status == 501:
            response.headers.add("Allow", ALLOW)
        if status == 420:
            response.headers.add(
                "Unsupported",
                ", ".join(r for r in request.headers.get_all("Require") if r.lower() not in _SUPPORTED_SET),
            )
        self.send(response.serialize(), source)

    async def request_in_dialog(
        self,
        dialog: Dialog,
        method: str,
        *,
        extra: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        timeout: float = 40.0,
    ) -> SipResponse | None:
        """Send a request within `dialog` and wait for its final response (None on timeout)."""
        assert dialog.peer is not None
        host, port = self.local_addr_for(dialog.peer)
        request = dialog.create_request(method, host, port, dialog.peer.transport, extra, body)
        if self.config.user_agent:
            request.headers.add("User-Agent", self.config.user_agent)
        future: asyncio.Future[SipResponse | None] = asyncio.get_running_loop().create_future()
        txn = self.layer.send_request(request, dialog.peer, self.now)
        txn.user_data = future
        self._flush()
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None

    async def bye(self, dialog: Dialog, reason: str | None = None) -> SipResponse | None:
        """End `dialog` with BYE, saying why in a Reason header (RFC 3326) when given."""
        text = _reason_text(reason).replace('"', "'").replace("\\", "/") if reason else ""
        extra = [("Reason", f'SIP;cause=200;text="{text}"')] if reason else []
        return await self.request_in_dialog(dialog, "BYE", extra=extra)

    def send_request(self, request: SipRequest, dest: Addr) -> ClientTransaction:
        """Start a client transaction for an out-of-dialog request (or a CANCEL)."""
        txn = self.layer.send_request(request, dest, self.now)
        self._flush()
        return txn

    def invite(
        self,
        request_uri: str,
        dest: Addr,
        *,
        sdp: bytes,
        from_user: str = "callcenter",
        from_display: str | None = None,
        to_uri: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> OutgoingCall:
        """Call out: INVITE `request_uri` at `dest` (e.g. a registered agent's binding source)."""
        request = build_invite(
            self,
            request_uri,
            dest,
            from_user=from_user,
            from_display=from_display,
            to_uri=to_uri or request_uri,
            sdp=sdp,
            extra=extra,
        )
        if dest.transport == "tls" and _wants_sips(request, "Route"):  # §8.1.1.8
            request.headers.set("Contact", self.contact_for(dest, secure=True))
        leg = OutgoingCall(self, request, dest)
        if self.client_credentials is not None:
            leg.credentials = self.client_credentials(request_uri, dest)
        txn = self.layer.send_request(request, dest, self.now)
        txn.user_data = leg
        leg.client_txn = txn
        self._flush()
        return leg

    def _secure_contact(self, txn: ServerTransaction, response: SipResponse) -> None:
        """RFC 3261 §12.1.1: a dialog begun with a SIPS Request-URI (or top Record-Route) gets a SIPS
        Contact, so the peer's in-dialog requests stay on TLS end to end (RFC 5630 §3.1.3); the
        call's dialog keeps the same Contact for its own requests."""
        contact = self.contact_for(txn.dest, secure=True)
        response.headers.set("Contact", contact)
        call = txn.user_data
        dialog = call.dialog if isinstance(call, IncomingCall | OutgoingCall) else None
        if dialog is not None and dialog.local_contact:
            dialog.local_contact = contact

    def send(self, data: bytes, dest: Addr) -> None:
        if dest.transport == "udp":
            udp = self.udp.get(socket.AF_INET6 if ":" in dest.host else socket.AF_INET)
            if udp is not None:
                udp.send(data, dest)
        elif dest.transport == "tls":
            self.tls.send(data, dest)
        else:
            self.tcp.send(data, dest)

    def _flush(self) -> None:
        outgoing = self.layer.outgoing
        if outgoing:
            for data, dest in outgoing:
                self.send(data, dest)
            outgoing.clear()
        self._rearm()

    def _rearm(self) -> None:
        at = self.layer.get_timer()
        if at is None or at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.layer.handle_timer(self.now)
        self._process()

    # --- dialogs and calls ---------------------------------------------------------------------
    def register_dialog(self, key: tuple[str, str, str], call: CallLeg) -> None:
        self.dialogs[key] = call

    def unregister_dialog(self, key: tuple[str, str, str]) -> None:
        self.dialogs.pop(key, None)

    def forget_call(self, call: IncomingCall) -> None:
        key = (call.call_id, call.remote_tag)
        if self.calls.get(key) is call:
            del self.calls[key]
            host = call.source.host
            left = self.calls_by_host.get(host, 0) - 1
            if left > 0:
                self.calls_by_host[host] = left
            else:
                self.calls_by_host.pop(host, None)

    # --- addresses -----------------------------------------------------------------------------
    def local_ip_for(self, remote_host: str) -> str:
        """The address of ours a peer can reach: configured public host, or the route's source IP."""
        if self.config.public_host:
            return self.config.public_host
        cached = self._local_ip_cache.get(remote_host)
        if cached is not None:
            return cached
        for _, host, _ in self.config.listen:
            if host not in ("0.0.0.0", "::") and (":" in host) == (":" in remote_host):
                self._local_ip_cache[remote_host] = host
                return host
        family = socket.AF_INET6 if ":" in remote_host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((remote_host, 9))  # no packet is sent: this only asks the routing table
                ip = str(probe.getsockname()[0])
        except OSError:
            ip = "127.0.0.1" if family == socket.AF_INET else "::1"
        if len(self._local_ip_cache) > 10000:
            self._local_ip_cache.clear()
        self._local_ip_cache[remote_host] = ip
        return ip

    def local_addr_for(self, peer: Addr) -> tuple[str, int]:
        family = socket.AF_INET6 if ":" in peer.host else socket.AF_INET
        transport = peer.transport if peer.transport in ("udp", "tls") else "tcp"
        return self.local_ip_for(peer.host), self.ports.get((transport, family), self.bound_port)

    def contact_for(self, peer: Addr, user: str = "callcenter", *, secure: bool = False) -> str:
        """Our Contact for ``peer``: ``sip:...;transport=tcp|tls`` (none for UDP), or ``sips:`` over TLS
        when ``secure`` (the request was SIPS, RFC 3261 §8.1.1.8 / §12.1.1)."""
        host, port = self.local_addr_for(peer)
        if secure and peer.transport == "tls":
            return f"<sips:{user}@{format_host(host)}:{port}>"
        transport = "" if peer.transport == "udp" else f";transport={peer.transport}"
        return f"<sip:{user}@{format_host(host)}:{port}{transport}>"

    def capability_headers(self, accept: bool = False) -> list[tuple[str, str]]:
        headers = [("Allow", ALLOW), ("Supported", SUPPORTED)]
        if accept:
            headers.append(("Accept", ACCEPT))
        return headers


_SO_MEMINFO = 55  # Linux <asm-generic/socket.h>; the first u32 is the receive queue's bytes (rmem_alloc)


def udp_queued_bytes(udp: UdpTransport) -> int:
    """Bytes waiting in a UDP socket's receive queue (0 where SO_MEMINFO does not exist)."""
    transport = udp.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return 0
    try:
        return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, 4), sys.byteorder)
    except OSError:
        return 0


def _wants_sips(request: SipRequest, route_header: str) -> bool:
    """True when the Request-URI, or the first ``route_header`` (Route when we send, Record-Route when
    we answer), is a SIPS URI: then our Contact must be SIPS too (RFC 3261 §8.1.1.8, §12.1.1)."""
    if request.uri[:5].lower() == "sips:":
        return True
    routes = request.headers.get_all(route_header)
    if not routes:
        return False
    first = split_list(routes[0])[0]
    try:
        return parse_name_addr(first).uri[:5].lower() == "sips:"
    except SipParseError:
        return False


def _replace_top_via(request: SipRequest, top: str) -> None:
    items = request.headers._items
    for i, (name, value) in enumerate(items):
        if name == "Via":
            items[i] = (name, ", ".join([top, *split_list(value)[1:]]))
            return


def _reason_text(text: str) -> str:
    """A reason phrase must be one line of printable text."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)[:80]
    return cleaned or "Bad Request"
