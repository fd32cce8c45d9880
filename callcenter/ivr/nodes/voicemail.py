"""``voicemail``: record a message; by default it becomes a ticket with the recording attached."""

from __future__ import annotations

from callcenter.ivr.control import CallerHangup
from callcenter.ivr.nodes.base import RunContext
from callcenter.ivr.schema import VoicemailNode
from callcenter.ivr.services import TicketDraft


async def run(node: VoicemailNode, ctx: RunContext) -> str | None:
    await ctx.say(node.prompt)
    rec = await ctx.control.record(
        max_s=node.max_s, beep=node.beep, terminator=node.terminator, max_silence_s=node.max_silence_s
    )
    ctx.vars[node.into] = rec.file
    if rec.file is not None and rec.duration_s > 0 and node.ticket:
        if ctx.services.tickets is None:
            ctx.warn("no ticket system is configured: the voicemail is not filed")
        else:
            draft = TicketDraft(
                subject=ctx.render(node.subject),
                body=f"Voicemail, {rec.duration_s:.0f} s.",
                priority=node.priority,
                tags=("voicemail",),
                caller=ctx.call.caller,
                call_id=ctx.call.call_id,
                transcript=tuple(ctx.transcript),
                recording=rec.file,
                variables=dict(ctx.vars),
            )
            try:
                ctx.vars["ticket_id"] = await ctx.services.tickets.create(draft)
            except Exception as exc:  # the recording is kept either way
                ctx.warn(f"voicemail ticket failed: {exc}")
    if rec.ended_by == "hangup":
        raise CallerHangup("caller hung up after the voicemail")  # the message is filed; the call is over
    if rec.file is None or rec.duration_s <= 0:
        return node.on_empty if node.on_empty is not None else node.next
    return node.next
