"""``say``: TTS text (templated) or a recorded prompt."""

from __future__ import annotations

from callcenter.ivr.nodes.base import RunContext
from callcenter.ivr.schema import SayNode


async def run(node: SayNode, ctx: RunContext) -> str | None:
    await ctx.say(node)
    return node.next
