"""``ticket``: create a ticket with the call's transcript, or add to one."""

from __future__ import annotations

from callcenter.ivr.nodes.base import RunContext
from callcenter.ivr.schema import TicketNode
from callcenter.ivr.services import TicketDraft, TicketUpdate


async def run(node: TicketNode, ctx: RunContext) -> str | None:
    tickets = ctx.services.tickets
    transcript = tuple(ctx.transcript) if node.include_transcript else ()
    body = ctx.render(node.body) if node.body is not None else ""
    try:
        if tickets is None:
            raise RuntimeError("no ticket system is configured")
        if node.action == "create":
            assert node.subject is not None
            draft = TicketDraft(
                subject=ctx.render(node.subject),
                body=body,
                priority=node.priority,
                tags=tuple(node.tags),
                caller=ctx.call.caller,
                call_id=ctx.call.call_id,
                transcript=transcript,
                variables=dict(ctx.vars),
            )
            ctx.vars[node.into] = await tickets.create(draft)
        else:
            ticket_id = ctx.render(node.ticket)
            if not ticket_id:
                raise RuntimeError("no ticket id to update")
            update = TicketUpdate(
                body=body, priority=node.priority, tags=tuple(node.tags), transcript=transcript
            )
            await tickets.update(ticket_id, update)
            ctx.vars[node.into] = ticket_id
    except Exception as exc:  # a failing ticket system must not end the call
        ctx.warn(f"ticket {node.action} failed: {exc}")
        if node.on_error is not None:
            return node.on_error
    return node.next
