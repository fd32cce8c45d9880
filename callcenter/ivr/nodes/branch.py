"""``branch``: the first case whose condition holds, else ``default``."""

from __future__ import annotations

from callcenter.ivr.expr import evaluate, is_true, parse_cached
from callcenter.ivr.nodes.base import RunContext
from callcenter.ivr.schema import BranchNode


async def run(node: BranchNode, ctx: RunContext) -> str | None:
    for case in node.cases:
        if is_true(evaluate(parse_cached(case.when), ctx.vars)):
            return case.next
    return node.default
