"""INVITE sessions on the UAS side: one per incoming call leg (RFC 3261 §13.3, §15).

The endpoint creates an :class:`IncomingCall` for each new INVITE and hands it to the call layer,
which answers, rejects or hangs up through it and awaits :attr:`IncomingCall.ended`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from callcenter.sip.dialog import Dialog, new_tag
from callcenter.sip.message import SipRequest, make_response
from callcenter.sip.transaction import Addr, ServerTransaction, State
from callcenter.sip.uri import parse_name_addr

if TYPE_CHECKING:
    from callcenter.sip.endpoint import SipEndpoint

# Why a leg ended, as the call record says it.
END_CANCEL = "cancel"  # caller gave up before answer (CANCEL)
END_BYE = "bye"  # the peer sent BYE
END_LOCAL = "local"  # we hung up (BYE or final error response)
END_NO_ACK = "no-ack"  # our 2xx was never acknowledged (§13.3.1.4)
END_ERROR = "error"  # transport failure or timeout of our BYE

ReinviteHandler = Callable[[SipRequest], tuple[int, bytes]]
InfoHandler = Callable[[SipRequest], None]
# A REFER in the dialog (RFC 3515): the handler answers with a status (202 to accept; 4xx to refuse).
ReferHandler = Callable[[SipRequest], int]


class IncomingCall:
    def __init__(
        self, endpoint: SipEndpoint, txn: ServerTransaction, request: SipRequest, source: Addr
    ) -> None:
        self.endpoint = endpoint
        self.txn = txn
        self.invite = request
        self.source = source
        self.local_tag = new_tag()
        self.dialog: Dialog | None = None
        self.state = "early"  # early → confirmed → terminated
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.acked = asyncio.Event()
        self.ack_body = b""
        self.hangup_by: str | None = None  # "caller" | "server"
        self.on_reinvite: ReinviteHandler | None = None
        self.on_info: InfoHandler | None = None
        self.on_refer: ReferHandler | None = None
        self._answer_body = b""
        from_ = parse_name_addr(request.headers.get("From") or "")
        self.remote_tag = from_.tag or ""
        txn.user_data = self

    @property
    def call_id(self) -> str:
        return self.invite.call_id

    @property
    def from_header(self) -> str:
        return self.invite.headers.get("From") or ""

    @property
    def to_header(self) -> str:
        return self.invite.headers.get("To") or ""

    def _respond(
        self,
        status: int,
        reason: str | None = None,
        extra: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        response = make_response(
            self.invite, status, reason, to_tag=self.local_tag, extra=extra or (), body=body
        )
        if 100 < status < 300:
            for rr in self.invite.headers.get_all("Record-Route"):  # §12.1.1
                response.headers.add("Record-Route", rr)
        self.endpoint.respond(self.txn, response)

    def ring(self) -> None:
        if self.state == "early":
            self._respond(180)

    def answer(self, sdp: bytes) -> bool:
        """Send 200 OK with our SDP; False when the caller already went away."""
        if self.state != "early" or self.txn.state != State.PROCEEDING:
            return False
        contact = self.endpoint.contact_for(self.source)
        self._answer_body = sdp
        extra = [("Contact", contact), *self.endpoint.capability_headers()]
        if sdp:
            extra.append(("Content-Type", "application/sdp"))
        self.dialog = Dialog.from_uas(self.invite, self.local_tag, self.source, contact)
        self.state = "confirmed"
        self.endpoint.register_dialog(self.dialog.key, self)
        self._respond(200, extra=extra, body=sdp)
        return True

    def reject(
        self, status: int, reason: str | None = None, extra: list[tuple[str, str]] | None = None
    ) -> None:
        if self.state != "early":
            return
        self._respond(status, reason, extra)
        self._end(END_LOCAL, "server")

    async def hangup(self, reason: str | None = None) -> None:
        """End the leg from our side: BYE when confirmed, 480 before answer. Idempotent."""
        if self.state == "early":
            self.reject(480)
            return
        if self.state != "confirmed" or self.dialog is None:
            return
        self._end(END_LOCAL, "server")
        await self.endpoint.bye(self.dialog, reason)

    # called by the endpoint -------------------------------------------------------------------
    def cancelled(self) -> bool:
        """CANCEL arrived: 487 the INVITE if still unanswered (§9.2)."""
        if self.state != "early":
            return False
        self._respond(487)
        self._end(END_CANCEL, "caller")
        return True

    def ack_received(self, request: SipRequest, now: float) -> None:
        if request.cseq()[0] != (self.dialog.invite_cseq if self.dialog else -1):
            return
        self.txn.ack_received(now)
        if not self.acked.is_set():
            self.ack_body = request.body
            self.acked.set()

    def bye_received(self) -> None:
        if self.state == "early":
            self._respond(487)  # §15.1.2: the INVITE of an early dialog ended by BYE
        self._end(END_BYE, "caller")

    def no_ack(self) -> None:
        """Our 2xx went unacknowledged for 64*T1: the dialog must be torn down with BYE."""
        if self.state == "confirmed" and self.dialog is not None:
            dialog = self.dialog
            self._end(END_NO_ACK, "server")
            self.endpoint.spawn(self.endpoint.request_in_dialog(dialog, "BYE"))

    def reinvite(self, request: SipRequest) -> tuple[int, bytes]:
        if self.on_reinvite is not None:
            return self.on_reinvite(request)
        return 200, self._answer_body

    def _end(self, how: str, by: str) -> None:
        if self.state == "terminated":
            return
        self.state = "terminated"
        if self.hangup_by is None:
            self.hangup_by = by
        if self.dialog is not None:
            self.endpoint.unregister_dialog(self.dialog.key)
        self.endpoint.forget_call(self)
        if not self.ended.done():
            self.ended.set_result(how)

