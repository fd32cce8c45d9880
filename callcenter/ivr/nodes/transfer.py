"""``transfer``: to a SIP URI, a number or an agent; the flow ends when the transfer is answered."""

from __future__ import annotations

from callcenter.ivr.nodes.base import FlowStop, RunContext
from callcenter.ivr.schema import TransferNode


async def run(node: TransferNode, ctx: RunContext) -> str | None:
    target = ctx.render(node.to)
    await ctx.say(node.announce)
    caller_id = ctx.render(node.caller_id) if node.caller_id is not None else None
    result = await ctx.control.transfer(target, timeout_s=node.timeout_s, caller_id=caller_id)
    ctx.vars["transfer_outcome"] = result.outcome
    if result.outcome == "answered":
        if target.startswith("agent:"):
            ctx.agent = target.removeprefix("agent:")
        raise FlowStop("transferred", f"transferred to {target}", hang_up=False)
    return node.on_failure
