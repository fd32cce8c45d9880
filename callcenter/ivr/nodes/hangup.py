"""``hangup``: say goodbye (optionally) and end the call."""

from __future__ import annotations

from callcenter.ivr.nodes.base import FlowStop, RunContext
from callcenter.ivr.schema import HangupNode


async def run(node: HangupNode, ctx: RunContext) -> str | None:
    await ctx.say(node.prompt)
    raise FlowStop("hangup", node.reason)
