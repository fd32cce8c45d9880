"""``goto``: continue at another node."""

from __future__ import annotations

from callcenter.ivr.nodes.base import RunContext
from callcenter.ivr.schema import GotoNode


async def run(node: GotoNode, ctx: RunContext) -> str | None:
    return node.next
