"""``subflow``: run another flow from its start, then continue at ``next``."""

from __future__ import annotations

from callcenter.ivr.nodes.base import RunContext
from callcenter.ivr.schema import SubflowNode


async def run(node: SubflowNode, ctx: RunContext) -> str | None:
    flow = ctx.services.flows.get(node.flow)
    if flow is None or ctx.run_subflow is None:
        ctx.warn(f"subflow {node.flow!r} is not loaded: skipped")
        return node.next
    ctx.vars.update(node.vars)
    await ctx.run_subflow(flow)
    return node.next
