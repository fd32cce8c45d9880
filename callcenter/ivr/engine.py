"""FlowRunner: drives one call through a flow with a CallControl.

One runner per call, created with the flow version the call started with. ``run()`` returns a
:class:`FlowResult` (outcome, ``ivr_path``, variables, queue, agent, transcript). If the call's task is
cancelled (BYE while a prompt plays), ``CancelledError`` propagates and ``runner.ivr_path`` etc. still
tell where the caller was. Caller hang-ups are :class:`CallerHangup` from the CallControl.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from callcenter.ivr.control import CallControl, CallerHangup
from callcenter.ivr.nodes import HANDLERS, CallInfo, FlowStop, RunContext
from callcenter.ivr.schema import Flow
from callcenter.ivr.services import Services, TranscriptEntry

__all__ = ["CallInfo", "FlowResult", "FlowRunner", "Outcome"]

log = logging.getLogger("callcenter.ivr")

Outcome = Literal["completed", "hangup", "caller_hangup", "transferred", "step_limit", "error"]
MAX_SUBFLOW_DEPTH = 8


@dataclass(frozen=True)
class FlowResult:
    outcome: Outcome
    reason: str
    flow_id: str
    ivr_path: list[str]  # node ids in the order visited; nodes of subflows as "flow/node"
    last_node: str | None
    variables: dict[str, Any]
    queue: str | None
    agent: str | None
    transcript: list[TranscriptEntry]
    warnings: list[str]


class FlowRunner:
    def __init__(
        self,
        flow: Flow,
        control: CallControl,
        services: Services | None = None,
        *,
        call: CallInfo | None = None,
        variables: Mapping[str, Any] | None = None,
        max_steps: int = 1000,
    ) -> None:
        self.flow = flow
        self.control = control
        self.services = services or Services()
        self.call = call or CallInfo()
        self.max_steps = max_steps
        self.ivr_path: list[str] = []
        self.steps = 0
        self._initial = dict(variables or {})
        self._depth = 0
        self.ctx = RunContext(
            control=control,
            services=self.services,
            call=self.call,
            flow=flow,
            vars={},
            language=flow.language,
            voice=flow.voice,
            run_subflow=self._run_subflow,
        )

    @property
    def variables(self) -> dict[str, Any]:
        return self.ctx.vars

    @property
    def last_node(self) -> str | None:
        return self.ivr_path[-1] if self.ivr_path else None

    async def _init_vars(self) -> None:
        customer: Mapping[str, Any] | None = None
        if self.services.customers is not None and self.call.caller:
            try:
                customer = await self.services.customers.lookup(self.call.caller)
            except Exception as exc:  # no customer record is better than no call
                self.ctx.warn(f"customer lookup failed: {exc}")
        self.ctx.vars.update(self.flow.vars)
        self.ctx.vars.update(
            caller=self.call.caller,
            called=self.call.called,
            call_id=self.call.call_id,
            language=self.flow.language,
            customer=dict(customer or {}),
            last_utterance="",
        )
        self.ctx.vars.update(self._initial)

    async def _walk(self, flow: Flow, prefix: str) -> None:
        node_id: str | None = flow.start
        while node_id is not None:
            self.steps += 1
            if self.steps > self.max_steps:
                raise FlowStop("step_limit", f"more than {self.max_steps} steps")
            node = flow.nodes.get(node_id)
            if node is None:
                raise FlowStop("error", f"flow {flow.id!r} has no node {node_id!r}")
            self.ivr_path.append(prefix + node_id)
            self.ctx.flow, self.ctx.node_id = flow, node_id
            node_id = await HANDLERS[node.type](node, self.ctx)

    async def _run_subflow(self, flow: Flow) -> None:
        if self._depth >= MAX_SUBFLOW_DEPTH:
            raise FlowStop("error", f"subflows nested deeper than {MAX_SUBFLOW_DEPTH}")
        caller_flow, caller_node = self.ctx.flow, self.ctx.node_id
        self._depth += 1
        try:
            await self._walk(flow, f"{flow.id}/")
        finally:
            self._depth -= 1
            self.ctx.flow, self.ctx.node_id = caller_flow, caller_node

    async def _hangup(self, reason: str) -> None:
        try:
            await self.control.hangup(reason)
        except CallerHangup:
            pass  # gone already

    async def run(self) -> FlowResult:
        """Run the flow to its end; never raises except ``CancelledError``."""
        outcome: Outcome
        try:
            await self._init_vars()
            await self._walk(self.flow, "")
            outcome, reason = "completed", "flow ended"
            await self._hangup("ivr_completed")
        except FlowStop as stop:
            outcome, reason = _outcome(stop.outcome), stop.reason
            if stop.hang_up:
                await self._hangup(stop.reason if stop.outcome == "hangup" else f"ivr_{stop.outcome}")
        except CallerHangup:
            outcome, reason = "caller_hangup", f"caller hung up at {self.last_node or 'the start'}"
        except Exception as exc:  # a bug or a failing backend: end this call, keep the server
            log.exception("ivr flow %s failed at %s", self.flow.id, self.last_node)
            outcome, reason = "error", f"{type(exc).__name__}: {exc}"
            await self._hangup("ivr_error")
        return FlowResult(
            outcome=outcome,
            reason=reason,
            flow_id=self.flow.id,
            ivr_path=list(self.ivr_path),
            last_node=self.last_node,
            variables=dict(self.ctx.vars),
            queue=self.ctx.queue,
            agent=self.ctx.agent,
            transcript=list(self.ctx.transcript),
            warnings=list(self.ctx.warnings),
        )


def _outcome(name: str) -> Outcome:
    return cast(Outcome, name) if name in get_args(Outcome) else "error"
