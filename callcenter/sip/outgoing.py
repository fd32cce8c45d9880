"""INVITE sessions on the UAC side: the server calling out (agents' softphones, transfers).

One :class:`OutgoingCall` per leg (RFC 3261 §13.2): it sends the INVITE, follows provisional
responses, ACKs a 2xx itself (re-ACKing its retransmissions, §13.2.2.4), CANCELs an unanswered
leg (§9.1: only once a provisional response arrived), and tears down extra 2xx from forking
proxies with ACK + BYE.

An offer the peer cannot take (415/488/606) may be re-offered once with another SDP
(``on_offer_refused``, e.g. plain RTP after a refused RTP/SAVP): a new INVITE transaction with the
same Call-ID, From tag and To and CSeq + 1, as §8.1.3.5 prescribes for retries of a refused request.
A request the transport could not deliver ends the leg at once with a local 503
(``TransportFailure``, §8.1.3.1); ``transport_error`` says why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from callcenter.sip.client_auth import Challenge, ClientCredentials, authorize, pick_challenge
from callcenter.sip.dialog import Dialog, new_branch, new_call_id, new_tag
from callcenter.sip.invite import (
    END_BYE,
    END_CANCEL,
    END_ERROR,
    END_LOCAL,
    InfoHandler,
    ReferHandler,
    ReinviteHandler,
)
from callcenter.sip.message import Headers, SipRequest, SipResponse
from callcenter.sip.transaction import Addr, ClientTransaction, ServerTransaction, TransportFailure
from callcenter.sip.uri import format_host, parse_name_addr

if TYPE_CHECKING:
    from callcenter.sip.endpoint import SipEndpoint

ProvisionalHandler = Callable[[SipResponse], None]
# Told the 415/488/606 refusing our offer; returns the SDP to offer instead, or None to give up.
OfferRefusedHandler = Callable[[SipResponse], bytes | None]

# Refusals of the offer itself (RFC 3261 §21.4.13, §21.4.26, §21.6.4) rather than of the call.
OFFER_REFUSED = frozenset({415, 488, 606})


class OutgoingCall:
    def __init__(self, endpoint: SipEndpoint, invite: SipRequest, dest: Addr) -> None:
        self.endpoint = endpoint
        self.invite = invite
        self.dest = dest
        self.dialog: Dialog | None = None
        self.state = "calling"  # calling → early (1xx) → confirmed (2xx) → terminated
        self.final: asyncio.Future[SipResponse | None] = asyncio.get_running_loop().create_future()
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.hangup_by: str | None = None  # "agent" (remote) | "server"
        self.on_provisional: ProvisionalHandler | None = None
        self.on_reinvite: ReinviteHandler | None = None
        self.on_info: InfoHandler | None = None
        self.on_refer: ReferHandler | None = None
        self.txn: ServerTransaction | None = None  # the latest re-INVITE from the peer, for its ACK
        self.client_txn: ClientTransaction | None = None
        self.local_tag = parse_name_addr(invite.headers.get("From") or "").tag or ""
        self._cancel_wanted = False
        # Digest credentials for a 401/407 (RFC 3261 §22.2), e.g. the SIP trunk's; None = no retry.
        self.credentials: ClientCredentials | None = None
        self.auth_rejected = False  # the peer refused our credentials
        self._auth_tries = 0
        self._challenge: Challenge | None = None  # the last one answered, for a re-offer's credentials
        self.on_offer_refused: OfferRefusedHandler | None = None
        self._offer_retried = False
        self._ack_bytes: bytes | None = None
        self._answer_body = b""

    @property
    def call_id(self) -> str:
        return self.invite.call_id

    @property
    def transport_error(self) -> str | None:
        """Why the INVITE never reached the peer (connect refused, certificate refused...), else None."""
        if self.final.done():
            response = self.final.result()
            if isinstance(response, TransportFailure):
                return response.error
        return None

    @property
    def answer_body(self) -> bytes:
        """The SDP answer from the 2xx (our offer was in the INVITE)."""
        return self._answer_body

    async def wait_answer(self, timeout: float) -> SipResponse | None:
        """The final response, or None when none came within `timeout` (the caller then cancels)."""
        try:
            return await asyncio.wait_for(asyncio.shield(self.final), timeout)
        except TimeoutError:
            return None

    def cancel(self) -> None:
        """Give up an unanswered leg (ring timeout, caller gone): CANCEL as soon as it is allowed."""
        if self.state in ("confirmed", "terminated"):
            return
        self._cancel_wanted = True
        if self.state == "early":
            self._send_cancel()

    async def hangup(self, reason: str | None = None) -> None:
        """BYE when answered, CANCEL when not; idempotent."""
        if self.state in ("calling", "early"):
            self.cancel()
            return
        if self.state != "confirmed" or self.dialog is None:
            return
        self._end(END_LOCAL, "server")
        await self.endpoint.bye(self.dialog, reason)

    # --- from the endpoint ---------------------------------------------------------------------
    def response_received(self, response: SipResponse) -> None:
        status = response.status
        to_tag = parse_name_addr(response.headers.get("To") or "").tag or ""
        if status < 200:
            if status > 100 and self.state == "calling":
                self.state = "early"
                if self._cancel_wanted:
                    self._send_cancel()
            if status > 100 and self.on_provisional is not None:
                self.on_provisional(response)
            return
        if status >= 300:
            if (
                status in (401, 407)
                and self.state in ("calling", "early")
                and self._retry_with_credentials(response)
            ):
                return
            if (
                status in OFFER_REFUSED
                and self.state in ("calling", "early")
                and self._retry_with_offer(response)
            ):
                return
            if self.state in ("calling", "early"):
                self._finish(response)
                self._end(END_CANCEL if status == 487 and self._cancel_wanted else END_ERROR, "agent")
            return
        # 2xx: the first makes the dialog; retransmissions are re-ACKed; another To tag (forking) gets
        # ACK + BYE (§13.2.2.4).
        if self.dialog is not None:
            if to_tag == self.dialog.remote_tag:
                if self._ack_bytes is not None:
                    self.endpoint.send(self._ack_bytes, self.dest)
            else:
                self._reject_fork(response)
            return
        if self.state == "terminated":
            self._reject_fork(response)
            return
        self.dialog = Dialog.from_uac(self.invite, response, self.dest)
        self._answer_body = response.body
        self.state = "confirmed"
        self.endpoint.register_dialog(self.dialog.key, self)
        self._send_ack(self.dialog)
        self._finish(response)
        if self._cancel_wanted:  # answered while our CANCEL crossed it: hang up at once
            self.endpoint.spawn(self.hangup("cancelled"))

    def timeout(self) -> None:
        """Timer B: nothing answered the INVITE at all."""
        if self.state in ("calling", "early"):
            self._finish(None)
            self._end(END_ERROR, "server")

    def ack_received(self, request: SipRequest, now: float) -> None:
        if self.txn is not None and self.dialog is not None and request.cseq()[0] == self.dialog.invite_cseq:
            self.txn.ack_received(now)

    def bye_received(self) -> None:
        self._end(END_BYE, "agent")

    def reinvite(self, request: SipRequest) -> tuple[int, bytes]:
        if self.on_reinvite is not None:
            return self.on_reinvite(request)
        return 200, self.invite.body

    def no_ack(self) -> None:
        if self.state == "confirmed" and self.dialog is not None:
            self.endpoint.spawn(self.hangup("no ACK"))

    # --- internals -----------------------------------------------------------------------------
    def _retry_with_credentials(self, response: SipResponse) -> bool:
        """Answer a 401/407 by re-sending the INVITE with credentials (§22.2). A second challenge means
        they were refused, unless it says stale=true (a new nonce, RFC 2617 §3.2.1): one more try."""
        creds = self.credentials
        if creds is None or self._cancel_wanted:
            return False
        challenge = pick_challenge(response, creds.realm)
        if challenge is None:
            return False
        if self._auth_tries >= 1 and not (challenge.stale and self._auth_tries < 2):
            self.auth_rejected = True
            if creds.on_rejected is not None:
                creds.on_rejected(response.status, challenge.realm)
            return False
        self._auth_tries += 1
        self._challenge = challenge
        self._resend(authorize(self.invite, challenge, creds, branch=new_branch()))
        return True

    def _retry_with_offer(self, response: SipResponse) -> bool:
        """Re-offer once after a 415/488/606 when ``on_offer_refused`` has another SDP (§8.1.3.5 rules:
        new transaction, CSeq + 1, same Call-ID, From and To). Credentials already accepted go along,
        freshly computed; should the peer challenge again, that challenge is answered as a first one."""
        if self.on_offer_refused is None or self._cancel_wanted or self._offer_retried:
            return False
        body = self.on_offer_refused(response)
        if body is None:
            return False
        self._offer_retried = True
        invite = _with_body(self.invite, body)
        if self._challenge is not None and self.credentials is not None:
            self._auth_tries = 0
            self._resend(authorize(invite, self._challenge, self.credentials, branch=new_branch()))
        else:
            self._resend(_next_cseq(invite, new_branch()))
        return True

    def _resend(self, invite: SipRequest) -> None:
        """Send ``invite`` as a new INVITE transaction of this leg (after a 401/407 or a refused offer)."""
        self.invite = invite
        self.state = "calling"
        txn = self.endpoint.send_request(self.invite, self.dest)
        txn.user_data = self
        self.client_txn = txn

    def _send_ack(self, dialog: Dialog) -> None:
        host, port = self.endpoint.local_addr_for(self.dest)
        ack = dialog.create_request("ACK", host, port, self.dest.transport)
        self._ack_bytes = ack.serialize()
        self.endpoint.send(self._ack_bytes, self.dest)

    def _reject_fork(self, response: SipResponse) -> None:
        extra = Dialog.from_uac(self.invite, response, self.dest)
        self._send_ack(extra)
        self.endpoint.spawn(self.endpoint.request_in_dialog(extra, "BYE"))

    def _send_cancel(self) -> None:
        """CANCEL mirrors the INVITE's Request-URI, top Via, Call-ID, From, To, CSeq number (§9.1)."""
        if self.client_txn is None:
            return
        inv = self.invite.headers
        headers = Headers()
        headers.add("Via", inv.get_all("Via")[0])
        for route in inv.get_all("Route"):
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", inv.get("From") or "")
        headers.add("To", inv.get("To") or "")
        headers.add("Call-ID", self.invite.call_id)
        headers.add("CSeq", f"{self.invite.cseq()[0]} CANCEL")
        self.endpoint.send_request(SipRequest("CANCEL", self.invite.uri, headers), self.dest)

    def _finish(self, response: SipResponse | None) -> None:
        if not self.final.done():
            self.final.set_result(response)

    def _end(self, how: str, by: str) -> None:
        if self.state == "terminated":
            return
        self.state = "terminated"
        if self.hangup_by is None:
            self.hangup_by = by
        self._finish(None)
        if self.dialog is not None:
            self.endpoint.unregister_dialog(self.dialog.key)
        if not self.ended.done():
            self.ended.set_result(how)


def _with_body(request: SipRequest, body: bytes) -> SipRequest:
    return SipRequest(request.method, request.uri, request.headers.copy(), body)


def _next_cseq(request: SipRequest, branch: str) -> SipRequest:
    """``request`` again as a new transaction: top Via with ``branch``, CSeq + 1 (§8.1.3.5)."""
    number, method = request.cseq()
    out = SipRequest(request.method, request.uri, Headers(), request.body)
    top_done = False
    for name, value in request.headers:
        if name == "Via" and not top_done:
            top_done = True
            via, sep, rest = value.partition(";branch=")
            value = f"{via};branch={branch}" + (";" + rest.partition(";")[2] if sep and ";" in rest else "")
        elif name == "CSeq":
            value = f"{number + 1} {method}"
        out.headers.add(name, value)
    return out


def build_invite(
    endpoint: SipEndpoint,
    request_uri: str,
    dest: Addr,
    *,
    from_user: str,
    from_display: str | None,
    to_uri: str,
    sdp: bytes,
    extra: list[tuple[str, str]] | None = None,
) -> SipRequest:
    """A fresh out-of-dialog INVITE (§8.1.1) with our Via (rport), tags, Contact and SDP offer."""
    host, port = endpoint.local_addr_for(dest)
    transport = dest.transport.upper()
    headers = Headers()
    headers.add("Via", f"SIP/2.0/{transport} {format_host(host)}:{port};branch={new_branch()};rport")
    headers.add("Max-Forwards", "70")
    display = f'"{from_display}" ' if from_display else ""
    headers.add("From", f"{display}<sip:{from_user}@{format_host(host)}>;tag={new_tag()}")
    headers.add("To", f"<{to_uri}>")
    headers.add("Call-ID", new_call_id(host))
    headers.add("CSeq", "1 INVITE")
    headers.add("Contact", endpoint.contact_for(dest))
    for name, value in endpoint.capability_headers():
        headers.add(name, value)
    if endpoint.config.user_agent:
        headers.add("User-Agent", endpoint.config.user_agent)
    for name, value in extra or ():
        headers.add(name, value)
    if sdp:
        headers.add("Content-Type", "application/sdp")
    return SipRequest("INVITE", request_uri, headers, sdp)
