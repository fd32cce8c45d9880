"""Supervisor listen / whisper / barge on a bridged call: the supervisor's phone is rung, then mixed in.

:class:`Monitors` is what the API calls (``start``, ``set_mode``, ``stop``, ``view``); each
:class:`Monitor` is one supervisor on one call, run as a task in the caller's call TaskGroup
(``CallSession.spawn``), so it ends with the call whatever ends it.

* The phone: the supervisor's linked agent (an admin may name any agent). Its registered contacts are
  rung like an offer (``AgentRing``) with the caller ID saying what is monitored ("Listen: support
  1234"); the phone should auto-answer. While ringing and monitoring, that agent is in ``own_call``
  (the router's state for calls an agent has of their own): no queue call is offered to them, and
  afterwards they are back where they were, without wrap-up.
* The audio: a :class:`~callcenter.media.mixer.LiveMix` on the call's caller↔agent bridge. Mode
  changes apply from the next 20 ms tick, without a re-INVITE. The call's own hold and transfer keep
  working: the mix follows the bridge (``LiveTalk.monitor.bridge_changed``); the talk ending (caller
  or agent hung up, blind transfer) ends the monitor with a BYE to the supervisor.
* The record: ``call_monitor`` events (``action`` ringing / started / mode / ended) on the log and so
  on the event bus; the call record gets ``monitors: [{supervisor, phone, mode, modes, start, end,
  outcome}]``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from callcenter.calls.agent_leg import AgentRing, RingTarget, close_leg
from callcenter.core.errors import CallcenterError
from callcenter.core.logging import log_event
from callcenter.media.mixer import LiveMix, Mode, check_mode
from callcenter.routing.agents import AgentState, InvalidTransition

if TYPE_CHECKING:
    from callcenter.calls.acd import Acd
    from callcenter.calls.talk import LiveTalk
    from callcenter.media.bridge import Bridge
    from callcenter.media.session import RtpSession
    from callcenter.sip.outgoing import OutgoingCall

__all__ = ["Monitor", "MonitorError", "Monitors"]

log = logging.getLogger("callcenter.calls.monitor")

RING_TIMEOUT_S = 20.0
_seq = itertools.count(1)
_BUSY = (AgentState.RESERVED, AgentState.ON_CALL, AgentState.OWN_CALL)


class MonitorError(CallcenterError):
    """Not now (409): the call is not bridged, already monitored, the phone is busy or absent."""


def _utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Monitor:
    """One supervisor on one call, from ringing their phone to the BYE."""

    def __init__(self, monitors: Monitors, talk: LiveTalk, supervisor: str, phone: str, mode: Mode) -> None:
        self.monitors = monitors
        self.talk = talk
        self.call_id = talk.call_id
        self.id = f"{talk.call_id};monitor{next(_seq)}"  # the phone's own call, for the router
        self.supervisor = supervisor
        self.phone = phone
        self.mode: Mode = mode
        self.state = "ringing"
        self.mix: LiveMix | None = None
        self.leg: OutgoingCall | None = None
        self.rtp: RtpSession | None = None
        self.entry: dict[str, Any] = {"supervisor": supervisor, "phone": phone, "mode": mode,
                                      "modes": [mode], "start": _utc(), "end": None}
        self.task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._reason = "supervisor hung up"

    def view(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "supervisor": self.supervisor, "phone": self.phone,
                "mode": self.mode, "state": self.state, "agent": self.talk.agent,
                "start": self.entry["start"]}

    # -- commands -------------------------------------------------------------------------------------

    def set_mode(self, mode: Mode) -> None:
        if mode == self.mode:
            return
        self.mode = mode
        self.entry["mode"] = mode
        self.entry["modes"].append(mode)
        if self.mix is not None:
            self.mix.set_mode(mode)
        log_event(log, "call_monitor", call_id=self.call_id, action="mode", mode=mode,
                  supervisor=self.supervisor, phone=self.phone, agent=self.talk.agent)
        self.monitors.record(self)

    def stop(self, reason: str) -> None:
        """End it (idempotent): while ringing the ring is cancelled, once up the phone gets a BYE."""
        if self._stop.is_set():
            return
        self._reason = reason
        self._stop.set()
        if self.state == "ringing" and self.task is not None:
            self.task.cancel()

    # -- LiveTalk's watcher ---------------------------------------------------------------------------

    def bridge_changed(self, bridge: Bridge | None) -> None:
        if self.mix is not None:
            self.mix.attach(bridge)

    def talk_ended(self) -> None:
        self.stop("call ended")

    # -- the task -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Ring, mix until stopped or the phone hangs up, then clean up (never raises but cancellation)."""
        acd = self.monitors.acd
        outcome = "ended"
        watch: asyncio.Future[Any] | None = None
        stopped: asyncio.Future[Any] | None = None
        try:
            result = await self._ring(acd)
            if result is None:
                outcome = "no_answer"
                return
            self.leg, self.rtp = result
            self.state = "active"
            self.mix = LiveMix(acd.media.scheduler, self.rtp, self.mode)
            self.mix.attach(self.talk.caller_bridge)
            log_event(log, "call_monitor", call_id=self.call_id, action="started", mode=self.mode,
                      supervisor=self.supervisor, phone=self.phone, agent=self.talk.agent)
            watch = asyncio.ensure_future(acd._agent_gone(self.leg, self.rtp))
            stopped = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({watch, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not self._stop.is_set():
                self._reason = "supervisor hung up"
        except asyncio.CancelledError:
            outcome = "cancelled" if self.state == "ringing" else "ended"
            raise
        except Exception as exc:  # noqa: BLE001 - a failed monitor must not end the caller's call
            outcome = "failed"
            log_event(log, "call_monitor_error", level=logging.ERROR, call_id=self.call_id, error=repr(exc))
        finally:
            for fut in (watch, stopped):
                if fut is not None:
                    fut.cancel()
            await self._cleanup(outcome)

    async def _ring(self, acd: Acd) -> tuple[OutgoingCall, RtpSession] | None:
        targets = [RingTarget.from_binding(b) for b in acd.registration.lookup(self.phone)]
        control = self.talk.control
        info = control.caller_info(self.talk.visit.queue, None)
        what = " ".join(x for x in (self.talk.visit.queue, info.number) if x)
        info = replace(info, display_name=f"{self.mode.title()}: {what}".strip())
        ring = AgentRing(acd.endpoint, acd.media, info, {self.phone: targets},
                         ptime_ms=acd.settings.media.ptime_ms, timeout_s=self.monitors.ring_timeout_s,
                         srtp=acd.settings.media.srtp)
        result = await ring.ring()
        if result.agent is None or result.leg is None or result.rtp is None:
            log_event(log, "call_monitor_unanswered", call_id=self.call_id, phone=self.phone,
                      outcome=result.outcomes.get(self.phone))
            return None
        if self._stop.is_set():  # stopped as it answered
            await close_leg(result.leg, result.rtp, self._reason)
            return None
        return result.leg, result.rtp

    async def _cleanup(self, outcome: str) -> None:
        acd = self.monitors.acd
        stats: dict[str, Any] = {}
        if self.mix is not None:
            # frames each got from the mixer, and ticks where one had no audio (jitter-buffer underrun)
            stats = {"mixed": dict(self.mix.frames_sent), "underruns": dict(self.mix.mixer.underruns)}
            self.mix.close()
            self.mix = None
        self.state = "ended"
        try:
            await close_leg(self.leg, self.rtp, self._reason)
        finally:
            self.monitors.finished(self)
            self.entry["end"] = _utc()
            self.entry["outcome"] = outcome if outcome != "ended" else self._reason
            log_event(log, "call_monitor", call_id=self.call_id, action="ended", mode=self.mode,
                      supervisor=self.supervisor, phone=self.phone, agent=self.talk.agent,
                      reason=self.entry["outcome"], **stats)
            self.monitors.record(self)
            if self.phone in acd.router.agents:
                acd.router.own_call_ended(self.phone, self.id, acd.clock())
                acd.kick()


class Monitors:
    """Every monitored call of the server, by SIP Call-ID; one supervisor per call at a time."""

    def __init__(self, acd: Acd, *, ring_timeout_s: float = RING_TIMEOUT_S) -> None:
        self.acd = acd
        self.ring_timeout_s = ring_timeout_s
        self._active: dict[str, Monitor] = {}
        # each call's monitor entries (for its record), per call control (so per call, not per talk)
        self._history: weakref.WeakKeyDictionary[Any, list[dict[str, Any]]] = weakref.WeakKeyDictionary()

    def start(self, call_id: str, mode: str, supervisor: str, phone: str) -> dict[str, Any]:
        """Ring ``phone`` (an agent name) to monitor ``call_id`` in ``mode``. ValueError: bad mode, no
        such agent (422); KeyError: no agent has the call (404 or 409, the API tells); MonitorError:
        not now (409)."""
        checked = check_mode(mode)
        acd = self.acd
        talk = acd.live_talk(call_id)
        if call_id in self._active:
            raise MonitorError(f"call {call_id!r} is already monitored by {self._active[call_id].supervisor}")
        if talk.caller_bridge is None:
            raise MonitorError("the call is not bridged to its agent now (on hold or being transferred)")
        if phone not in acd.router.agents:
            raise ValueError(f"no agent {phone!r} to ring")
        if phone == talk.agent:
            raise MonitorError(f"{phone} is the agent on this call")
        if not acd.registration.lookup(phone):
            raise MonitorError(f"{phone}'s phone is not registered")
        if acd.router.agents[phone].state in _BUSY:
            raise MonitorError(f"{phone}'s phone is busy ({acd.router.agents[phone].state})")
        monitor = Monitor(self, talk, supervisor, phone, checked)
        try:
            acd.router.own_call_started(phone, monitor.id, acd.clock())
        except InvalidTransition as exc:
            raise MonitorError(str(exc)) from None
        acd.kick()
        task = talk.control.session.spawn(monitor.run())
        if task is None:
            acd.router.own_call_ended(phone, monitor.id, acd.clock())
            acd.kick()
            raise MonitorError("the call is ending")
        monitor.task = task
        self._active[call_id] = monitor
        talk.monitor = monitor
        self._history.setdefault(talk.control, []).append(monitor.entry)
        log_event(log, "call_monitor", call_id=call_id, action="ringing", mode=checked, supervisor=supervisor,
                  phone=phone, agent=talk.agent)
        self.record(monitor)
        return monitor.view()

    def get(self, call_id: str) -> Monitor:
        """The monitor on ``call_id``; KeyError when there is none."""
        return self._active[call_id]

    def view(self, call_id: str) -> dict[str, Any] | None:
        monitor = self._active.get(call_id)
        return None if monitor is None else monitor.view()

    def set_mode(self, call_id: str, mode: str) -> dict[str, Any]:
        checked = check_mode(mode)
        monitor = self.get(call_id)
        monitor.set_mode(checked)
        return monitor.view()

    def stop(self, call_id: str) -> dict[str, Any]:
        monitor = self.get(call_id)
        monitor.stop("stopped")
        return {**monitor.view(), "state": "ending"}

    # -- from Monitor ---------------------------------------------------------------------------------

    def finished(self, monitor: Monitor) -> None:
        if self._active.get(monitor.call_id) is monitor:
            del self._active[monitor.call_id]
        if monitor.talk.monitor is monitor:
            monitor.talk.monitor = None

    def record(self, monitor: Monitor) -> None:
        writer = self.acd.writer
        entries = self._history.get(monitor.talk.control)
        if writer is not None and entries is not None:
            writer.call_extra(monitor.call_id, {"monitors": [dict(e) for e in entries]})
