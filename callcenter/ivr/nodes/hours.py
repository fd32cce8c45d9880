"""``hours``: open or closed now, by a named schedule (configuration) or one given inline."""

from __future__ import annotations

from callcenter.ivr.nodes.base import RunContext
from callcenter.ivr.schema import HoursNode


async def run(node: HoursNode, ctx: RunContext) -> str | None:
    if node.schedule is not None:
        schedule = ctx.services.schedules.get(node.schedule)
        if schedule is None:
            ctx.warn(f"no schedule named {node.schedule!r}: treated as always open")
            return node.open
    else:
        schedule = node.inline_schedule()
    is_open = schedule.is_open(ctx.services.wall_clock())
    ctx.vars["open"] = is_open
    return node.open if is_open else node.closed
