"""One bridged call on the event loop: :class:`~callcenter.calls.transfer.TalkState` made audible.

:class:`LiveTalk` runs inside the caller's flow task (the ACD's ``_talk``) until the current agent's
part ends: the agent hung up (None), or the caller is handed on by a blind transfer (the target).
It owns the bridges (caller ↔ agent, agent ↔ consulted target), the hold music, the consulted
target's leg and the watch on each agent leg. The API and the agent's phone change the state through
synchronous methods that answer at once (or raise :class:`TransferError`) and wake the loop, which
then does the I/O. Every leg it opened is closed and every agent it reserved is released in
``finally``, whatever ends the call.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from callcenter.calls.agent_leg import AgentRing, RingResult, close_leg
from callcenter.calls.transfer import HoldLog, Phase, TalkState, TransferError, Via, has_replaces
from callcenter.core.logging import log_event
from callcenter.ivr.control import CallerHangup
from callcenter.media.bridge import Bridge
from callcenter.media.pacer import looping

if TYPE_CHECKING:
    from callcenter.calls.acd import Acd, QueueVisit, TransferTarget
    from callcenter.calls.control import LiveCallControl
    from callcenter.media.session import RtpSession
    from callcenter.sip.message import SipRequest
    from callcenter.sip.outgoing import OutgoingCall

log = logging.getLogger("callcenter.acd")

_consult_seq = itertools.count(1)
CONSULT_TIMEOUT_S = 30.0


class TalkWatcher(Protocol):
    """A supervisor monitoring the call (calls/monitor.py)."""

    def bridge_changed(self, bridge: Bridge | None) -> None: ...

    def talk_ended(self) -> None: ...


class LiveTalk:
    def __init__(
        self,
        acd: Acd,
        control: LiveCallControl,
        answered: RingResult,
        visit: QueueVisit,
        visits: list[QueueVisit] | None,
        hold_log: HoldLog,
    ) -> None:
        assert answered.agent is not None and answered.leg is not None and answered.rtp is not None
        self.acd = acd
        self.control = control
        self.call_id = control.session.call_id
        self.visit = visit
        self.visits = visits
        self.music: tuple[bytes, ...] = ()
        self.leg: OutgoingCall = answered.leg
        self.rtp: RtpSession = answered.rtp
        self.ring: AgentRing | None = answered.ring
        self.state = TalkState(answered.agent, acd.clock(), hold_log)
        self._wake = asyncio.Event()
        self._blind: tuple[TransferTarget, Via] | None = None
        self._request: str | None = None  # "complete" | "cancel" from the API
        # the consultation: ringing task, then the target's leg and media
        self._ringing: asyncio.Task[RingResult | str] | None = None
        self._consult: RingResult | None = None
        self._consult_visit: QueueVisit | None = None
        # A supervisor listening in (calls/monitor.py): told when the caller↔agent bridge changes and
        # when this talk ends.
        self.monitor: TalkWatcher | None = None
        self._bridge_now: Bridge | None = None
        self._consult_bridge: Bridge | None = None
        self._music_on = False
        # an attended transfer from the phone (join): the leg whose REFER we answer with NOTIFY, sent
        # before the agent's legs are released; and, on the other side, this talk giving up its target
        self._notify: asyncio.Task[Any] | None = None
        self.handed_off = False
        self._released: asyncio.Future[Any] | None = None

    @property
    def agent(self) -> str:
        return self.state.agent

    @property
    def caller_bridge(self) -> Bridge | None:
        """The caller ↔ agent bridge now (None while the caller is on hold or being handed on)."""
        return self._bridge_now

    @property
    def _caller_bridge(self) -> Bridge | None:
        return self._bridge_now

    @_caller_bridge.setter
    def _caller_bridge(self, bridge: Bridge | None) -> None:
        self._bridge_now = bridge
        if self.monitor is not None:
            self.monitor.bridge_changed(bridge)

    # -- commands (API, phone): answer at once, the loop does the I/O --------------------------------

    def phone_hold(self, held: bool) -> None:
        if self.state.phone_hold(held, self.acd.clock()):
            log_event(log, "call_held" if held else "call_resumed", call_id=self.call_id, agent=self.agent,
                      by="phone")
            self._wake.set()

    def hold(self) -> dict[str, Any]:
        self.state.hold(self.acd.clock())
        log_event(log, "call_held", call_id=self.call_id, agent=self.agent, by="api")
        self._wake.set()
        return self.view()

    def resume(self) -> dict[str, Any]:
        self.state.resume(self.acd.clock())
        log_event(log, "call_resumed", call_id=self.call_id, agent=self.agent, by="api")
        self._wake.set()
        return self.view()

    def transfer(self, target: TransferTarget, mode: str, via: Via) -> dict[str, Any]:
        now = self.acd.clock()
        if self._blind is not None:
            raise TransferError("a transfer is already under way")
        if mode == "blind":
            self.state.blind(str(target), via, now)
            self._blind = (target, via)
        else:
            self.state.begin_consult(str(target), target, via, now)
            self._ringing = asyncio.ensure_future(self._ring_consult(target))
        log_event(log, "transfer_started", call_id=self.call_id, agent=self.agent, target=str(target),
                  mode=mode, via=via)
        self._wake.set()
        return self.view()

    def complete(self) -> dict[str, Any]:
        if self.state.phase is not Phase.CONSULTING or self._request is not None:
            raise TransferError("no consultation to complete: the target has not answered")
        self._request = "complete"
        self._wake.set()
        return self.view()

    def cancel(self) -> dict[str, Any]:
        if self.state.phase not in (Phase.CONSULT_RINGING, Phase.CONSULTING) or self._request is not None:
            raise TransferError("no transfer to cancel")
        self._request = "cancel"
        self._wake.set()
        return self.view()

    def view(self) -> dict[str, Any]:
        return {"call_id": self.call_id, **self.state.as_json(self.acd.clock())}

    def _on_refer(self, request: SipRequest) -> int:
        """REFER from the agent's phone (RFC 3515): a blind transfer; with ``Replaces`` in the Refer-To
        URI (RFC 5589 §7) an attended one, joined by the ACD."""
        refer_to = request.headers.get("Refer-To") or ""
        if self._blind is not None or self.state.phase is not Phase.TALKING:
            return 491  # a transfer is already under way (Request Pending)
        if has_replaces(refer_to):
            return self.acd.refer_with_replaces(self, refer_to)
        target = self.acd.resolve_transfer(refer_to)
        if target is None:
            return 404
        self.transfer(target, "blind", "phone")
        return 202

    def join(self, other: LiveTalk, *, notify: Any) -> int:
        """Attended transfer from the agent's phone (RFC 5589 §7): the agent's own call through us
        (``other``: agent ↔ target) gives up its target, who is joined with this call's caller; the
        agent's legs are released once ``notify``'s dialog (where the REFER came) has heard that it
        worked (NOTIFY sipfrag 200, RFC 3515 §2.4.5). Answers the REFER's status: 202, or 491 while
        either call is in a transfer already."""
        if self._blind is not None or self.state.phase is not Phase.TALKING or self._request is not None:
            return 491
        taken = other.hand_off()
        if taken is None:
            return 491
        from callcenter.calls.acd import QueueVisit, TransferTarget

        now = self.acd.clock()
        target = TransferTarget("agent", other.agent) if other.agent in self.acd.router.agents else None
        to = str(target) if target is not None else other.visit.queue.removeprefix("transfer:")
        self.state.begin_consult(to, target, "phone", now)
        self.state.consult_answered(other.agent, now)
        self._consult = taken
        visit = QueueVisit(other.visit.queue, now)
        visit.answered_at, visit.agent = now, other.agent
        self._consult_visit = visit
        other.visit.transferred_to = f"call:{self.call_id}"
        self._request = "complete"
        self._notify = asyncio.ensure_future(self.acd.notify_refer(notify))
        other._released = self._notify  # it hangs up the agent's call only after the NOTIFY
        log_event(log, "transfer_started", call_id=self.call_id, agent=self.agent, target=to,
                  mode="attended", via="phone", consult_call=other.call_id)
        self._wake.set()
        return 202

    def hand_off(self) -> RingResult | None:
        """Give this call's target (its leg and media) to another call: the bridge stops now, the loop
        returns without closing the leg or freeing the target. None when there is nothing to give."""
        if self.handed_off or self.state.phase is not Phase.TALKING or self._blind is not None:
            return None
        if self.leg.state != "confirmed" or self.rtp.closed:
            return None
        self.handed_off = True
        self._unhook()
        if self._caller_bridge is not None:
            self._caller_bridge.stop()
            self._caller_bridge = None
            self.control.on_bridge(None, self.agent)
        self.state.end(self.acd.clock())
        self.visit.hangup_by = "agent"
        self._wake.set()
        return RingResult(self.agent, {self.agent: "answered"}, self.leg, self.rtp, self.ring)

    def _hook(self) -> None:
        self.leg.on_refer = self._on_refer
        if self.ring is not None:
            self.ring.on_hold = self.phone_hold

    def _unhook(self) -> None:
        self.leg.on_refer = None
        if self.ring is not None:
            self.ring.on_hold = None

    # -- the loop -----------------------------------------------------------------------------------

    async def run(self, watch: Callable[[Any, Any], Any]) -> TransferTarget | None:
        """Until the current agent's part ends: None when the agent hung up; the target of a blind
        transfer. Raises CallerHangup when the caller leaves."""
        caller_rtp = self.control.session.rtp
        if caller_rtp is None or caller_rtp.closed:
            raise CallerHangup("the call has ended")
        self.caller_rtp = caller_rtp
        self._watch = watch
        gone: asyncio.Future[Any] = asyncio.ensure_future(watch(self.leg, self.rtp))
        consult_gone: asyncio.Future[Any] | None = None
        wake: asyncio.Task[Any] | None = None
        self._hook()
        try:
            while True:
                if self.handed_off:
                    if self._released is not None:  # the NOTIFY goes out before our BYE
                        await asyncio.wait({self._released}, timeout=5.0)
                    log_event(log, "agent_call_joined", call_id=self.call_id, agent=self.agent)
                    return None
                self._apply_audio()
                if self._blind is not None:
                    target, via = self._blind
                    self.visit.transferred_to, self.visit.hangup_by = str(target), "agent"
                    if via == "phone":
                        await self.acd.finish_refer(self.leg, gone)
                    return target
                wake = asyncio.ensure_future(self._wake.wait())
                waits: set[asyncio.Future[Any]] = {gone, wake}
                if self._ringing is not None:
                    waits.add(self._ringing)
                if consult_gone is not None:
                    waits.add(consult_gone)
                await self.control._race(asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED))
                wake.cancel()
                self._wake.clear()
                now = self.acd.clock()
                if self._ringing is not None and self._ringing.done():
                    consult_gone = self._consult_rang()
                if consult_gone is not None and consult_gone.done():
                    consult_gone = None
                    await self._end_consult("target_hung_up")
                if self._request == "cancel":
                    self._request = None
                    consult_gone = self._cancel_ring(consult_gone)
                    await self._end_consult("cancelled")
                if gone.done() and not self.handed_off:
                    if self.state.phase is Phase.CONSULTING:  # hang-up during consultation: hand over
                        self._request = "complete"
                    else:
                        self.visit.hangup_by = "agent"
                        log_event(log, "agent_hung_up", call_id=self.call_id, agent=self.agent,
                                  how=gone.result())
                        return None
                if self._request == "complete":
                    self._request = None
                    if self.state.phase is Phase.CONSULTING:
                        if consult_gone is not None:
                            consult_gone.cancel()
                        gone.cancel()
                        self._unhook()
                        await self._complete(now)
                        self._hook()
                        consult_gone = None
                        gone = asyncio.ensure_future(watch(self.leg, self.rtp))
        finally:
            self._unhook()
            if wake is not None:
                wake.cancel()
            gone.cancel()
            if consult_gone is not None:
                consult_gone.cancel()
            await self._cleanup()

    def _apply_audio(self) -> None:
        """Bridges and hold music as the state says."""
        state = self.state
        if not state.caller_on_hold and self._blind is None:
            self._stop_consult_bridge()
            if self._music_on:
                self.caller_rtp.stop_playback()
                self._music_on = False
            if self._caller_bridge is None:
                self._caller_bridge = Bridge(self.caller_rtp, self.rtp).start()
                self.control.on_bridge(self._caller_bridge, self.agent)
            return
        if self._caller_bridge is not None:
            self._caller_bridge.stop()
            self._caller_bridge = None
        if self._blind is None and not self._music_on and not self.caller_rtp.closed:
            self.caller_rtp.play(looping(self.music))
            self._music_on = True
        if state.consult_bridged and self._consult is not None and self._consult_bridge is None:
            assert self._consult.rtp is not None
            self._consult_bridge = Bridge(self.rtp, self._consult.rtp).start()
        elif not state.consult_bridged:
            self._stop_consult_bridge()

    def _stop_consult_bridge(self) -> None:
        if self._consult_bridge is not None:
            self._consult_bridge.stop()
            self._consult_bridge = None

    # -- consultation ---------------------------------------------------------------------------------

    async def _ring_consult(self, target: TransferTarget) -> RingResult | str:
        """Ring the target: an outside URI directly, an agent or a queue through the router (the
        target agent is reserved like for any offer). The answer, or why nobody took it."""
        from callcenter.calls.acd import DIRECT_QUEUE, QueueVisit

        acd = self.acd
        names = {"agent": DIRECT_QUEUE, "queue": target.value}
        visit_queue = names.get(target.kind, f"transfer:{target.value}")

        self._consult_visit = QueueVisit(visit_queue, acd.clock())
        if target.outside:
            ring = await acd.outside_ring(self.control, target, timeout_s=CONSULT_TIMEOUT_S)
            if isinstance(ring, str):
                log_event(log, "transfer_unreachable", call_id=self.call_id, target=str(target), why=ring)
                return "failed"
            result = await self.control._race(ring.ring())
            if result.agent is None:
                outcome = result.outcomes.get(target.value, "unreachable")
                return {"rejected": "busy", "no_answer": "no_answer"}.get(outcome, "failed")
            return result
        return await acd.ring_for_consult(
            self.control, target, f"{self.call_id};consult{next(_consult_seq)}", self._consult_visit,
            timeout_s=CONSULT_TIMEOUT_S,
        )

    def _consult_rang(self) -> asyncio.Future[Any] | None:
        """The target answered (watch its leg) or not (back to the agent)."""
        assert self._ringing is not None
        task, self._ringing = self._ringing, None
        if task.cancelled():
            return None
        exc = task.exception()
        if isinstance(exc, CallerHangup):
            raise exc
        result: RingResult | str = "failed" if exc is not None else task.result()
        if exc is not None:
            log_event(log, "transfer_error", level=logging.ERROR, call_id=self.call_id, error=repr(exc))
        now = self.acd.clock()
        if isinstance(result, str):
            log_event(log, "transfer_failed", call_id=self.call_id, agent=self.agent, outcome=result)
            if self.state.phase is Phase.CONSULT_RINGING:
                self.state.consult_failed(result, now)
            return None
        if self.state.phase is not Phase.CONSULT_RINGING:  # cancelled as it answered
            self._consult = result
            self.acd.spawn(self._drop_consult())
            return None
        assert result.agent is not None
        self._consult = result
        self.state.consult_answered(result.agent, now)
        if self._consult_visit is not None:
            self._consult_visit.answered_at, self._consult_visit.agent = now, result.agent
        log_event(log, "transfer_consulting", call_id=self.call_id, agent=self.agent, target=result.agent)
        return asyncio.ensure_future(self._watch(result.leg, result.rtp))

    def _cancel_ring(self, consult_gone: asyncio.Future[Any] | None) -> asyncio.Future[Any] | None:
        if self._ringing is not None:
            self._ringing.cancel()
            self._ringing = None
        if consult_gone is not None:
            consult_gone.cancel()
        return None

    async def _end_consult(self, outcome: str) -> None:
        """Back to the first agent: the target's leg is closed, the target agent released."""
        now = self.acd.clock()
        if self.state.phase in (Phase.CONSULT_RINGING, Phase.CONSULTING):
            if outcome == "cancelled":
                self.state.cancel(now)
            else:
                self.state.consult_failed(outcome, now)
            log_event(log, "transfer_ended", call_id=self.call_id, agent=self.agent, outcome=outcome)
        self._stop_consult_bridge()
        await self._drop_consult()

    async def _drop_consult(self) -> None:
        consult, self._consult = self._consult, None
        if consult is None:
            return
        await close_leg(consult.leg, consult.rtp, "transfer cancelled")
        if consult.agent is not None and consult.agent in self.acd.router.agents:
            self.acd.router.call_ended(consult.agent, self.acd.clock())
            self.acd.kick()

    async def _complete(self, now: float) -> None:
        """Caller ↔ target; the first agent's leg is released (BYE) and the agent freed."""
        assert self._consult is not None and self._consult.leg is not None and self._consult.rtp is not None
        self._stop_consult_bridge()
        if self._caller_bridge is not None:
            self._caller_bridge.stop()
            self._caller_bridge = None
        first_leg, first_rtp = self.leg, self.rtp
        first = self.state.complete(now)
        self.visit.ended_at, self.visit.hangup_by = now, "agent"
        self.visit.transferred_to = self.state.log.transfers[-1].to
        self.leg, self.rtp, self.ring = self._consult.leg, self._consult.rtp, self._consult.ring
        self._consult = None
        visit = self._consult_visit
        if visit is not None:
            visit.answered_at = visit.answered_at or now
            visit.agent, visit.disposition = self.agent, "answered"
            if self.visits is not None:
                self.visits.append(visit)
            self.visit = visit
        self._consult_visit = None
        log_event(log, "transfer_completed", call_id=self.call_id, by=first, agent=self.agent)
        if first in self.acd.router.agents:
            self.acd.router.call_ended(first, now)
            self.acd.kick()
        first_rtp.close()  # the first agent hears nothing more; the BYE follows the NOTIFY, if any
        self.acd.spawn(self._release(first_leg, first_rtp, self._notify))
        self._notify = None

    @staticmethod
    async def _release(leg: OutgoingCall, rtp: RtpSession, notify: asyncio.Future[Any] | None) -> None:
        if notify is not None:
            await asyncio.wait({notify}, timeout=5.0)
        await close_leg(leg, rtp, "transferred")

    async def _cleanup(self) -> None:
        now = self.acd.clock()
        if self._ringing is not None:
            self._ringing.cancel()
            await asyncio.wait({self._ringing}, timeout=5.0)  # its legs CANCELled, its agents freed
            self._ringing = None
        self._stop_consult_bridge()
        if self._caller_bridge is not None:
            self._caller_bridge.stop()
            self._caller_bridge = None
        if self._music_on and not self.caller_rtp.closed:
            self.caller_rtp.stop_playback()
            self._music_on = False
        self.state.end(now)
        if self.monitor is not None:
            self.monitor.talk_ended()
        await self._drop_consult()
