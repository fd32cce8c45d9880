"""Live calls: one CallSession task per call, each with its own TaskGroup inside."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from callcenter.calls.admission import Admission, Verdict, dialled_number
from callcenter.calls.session import CallDeps, CallSession
from callcenter.core.logging import log_event
from callcenter.sip.invite import IncomingCall

if TYPE_CHECKING:
    from callcenter.calls.agent_calls import AgentCalls

log = logging.getLogger("callcenter.calls")


class CallManager:
    def __init__(self, deps: CallDeps) -> None:
        self.deps = deps
        self.sessions: dict[str, CallSession] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.accepting = True
        # INVITEs from agents' registered phones (calls they place through us); when unset, the IVR
        # runtime's ACD serves them (the app sets ``ivr.acd``)
        self.agent_calls: AgentCalls | None = None
        # which numbers unknown sources may reach (sip.protection.unknown_sources, calls/admission.py)
        self.admission = Admission(deps.settings)

    def on_invite(self, call: IncomingCall) -> None:
        """Called by the SIP endpoint for every new INVITE; never blocks."""
        if not self.accepting:
            call.reject(503, extra=[("Retry-After", "30")])
            return
        agents = self._agent_calls()
        claimed = agents is not None and agents.claims(call)
        if not claimed and not self._admit(call):
            return
        session = (
            agents.session(call, self.deps)
            if agents is not None and claimed
            else CallSession(call, self.deps)
        )
        key = f"{call.call_id}\x00{call.remote_tag}"
        self.sessions[key] = session
        task = asyncio.get_running_loop().create_task(session.run(), name=f"call {call.call_id}")
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if self.sessions.get(key) is session:
                del self.sessions[key]
            if not t.cancelled() and t.exception() is not None:
                log_event(log, "call_crashed", call_id=call.call_id, error=repr(t.exception()))

        task.add_done_callback(done)

    def _admit(self, call: IncomingCall) -> bool:
        """Whether a call from a source that is not an agent's phone goes on; if not, it is answered
        here: 404 for an unknown source's non-public number (counted by the SIP guard: a scan bans),
        403 for an origin a trusted proxy named that is banned (its packets come from the proxy, so
        the guard cannot drop them). Never a media port, never the IVR."""
        admission = self.admission
        origin = admission.origin(call.invite, call.source)
        number = dialled_number(call.invite.uri)
        decision = admission.decide(origin, number, agent_phone=False)
        if decision.verdict is Verdict.KNOWN:
            return True
        endpoint = self.deps.endpoint
        guard, now = endpoint.guard, endpoint.now
        if origin != call.source and guard.banned(origin.host, now):
            call.reject(403)
            return False
        if decision.admitted:
            return True
        call.reject(404)
        guard.number_refused(origin.host, number, now)
        return False

    def _agent_calls(self) -> AgentCalls | None:
        if self.agent_calls is not None:
            return self.agent_calls
        ivr = self.deps.ivr
        return ivr.acd.agent_calls if ivr is not None and ivr.acd is not None else None

    def find(self, call_id: str) -> CallSession | None:
        """The live call with this SIP Call-ID (the first, should two dialogs share it)."""
        return next((s for s in self.sessions.values() if s.call_id == call_id), None)

    @property
    def active(self) -> int:
        return len(self.sessions)

    async def shutdown(self, grace_s: float) -> None:
        """Stop taking calls; let live ones end up to `grace_s`, then hang them up cleanly (BYE).

        New INVITEs get 503 + Retry-After from the endpoint from now on (and OPTIONS too, so a
        dispatcher in front moves traffic elsewhere); requests within live calls keep flowing."""
        self.accepting = False
        self.deps.endpoint.overload.drain()
        log_event(log, "calls_draining", active=len(self.sessions), grace_s=grace_s)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        left = list(self.sessions.values())
        for session in left:
            session.request_hangup("server shutting down")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        log_event(log, "calls_drained", hung_up=len(left), cancelled=len(self._tasks))
