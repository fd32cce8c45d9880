"""``queue``: wait for an agent (skills, priority, hold music, announcements)."""

from __future__ import annotations

from callcenter.ivr.control import QueueRequest
from callcenter.ivr.expr import evaluate, is_true, parse_cached
from callcenter.ivr.nodes.base import RunContext
from callcenter.ivr.schema import QueueNode


def priority(node: QueueNode, ctx: RunContext) -> int:
    """The first rule that holds decides (VIP callers…); else the node's priority."""
    for rule in node.priority_rules:
        if is_true(evaluate(parse_cached(rule.when), ctx.vars)):
            return rule.priority
    return node.priority


async def run(node: QueueNode, ctx: RunContext) -> str | None:
    hold = ctx.resolve_file(node.hold_music) if node.hold_music is not None else None
    request = QueueRequest(
        queue=node.queue,
        skills=dict(node.skills),
        priority=priority(node, ctx),
        hold_music=hold,
        announce=tuple(ctx.prompt(node.announce)),
        announce_every_s=node.announce_every_s,
        announce_position=node.announce_position,
        max_wait_s=node.max_wait_s,
        variables=dict(ctx.vars),
        callback_key=node.callback.key if node.callback is not None else None,
        callback_after_s=node.callback.after_s if node.callback is not None else 0.0,
        record=node.record,
    )
    ctx.queue = node.queue
    ctx.vars["queue"] = node.queue
    result = await ctx.control.enqueue(request)
    ctx.vars["queue_outcome"] = result.outcome
    if result.outcome == "answered":
        ctx.agent = result.agent
        ctx.vars["agent"] = result.agent
        return node.next
    return node.on_overflow
