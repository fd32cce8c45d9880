"""``set``: assign variables (text values are templates)."""

from __future__ import annotations

from callcenter.ivr.expr import render_value
from callcenter.ivr.nodes.base import RunContext
from callcenter.ivr.schema import SetNode


async def run(node: SetNode, ctx: RunContext) -> str | None:
    for name, value in node.vars.items():
        ctx.vars[name] = render_value(value, ctx.vars) if isinstance(value, str) else value
    return node.next
