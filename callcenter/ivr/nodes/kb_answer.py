"""``kb_answer``: look the caller's question up, read the answer, ask whether it helped."""

from __future__ import annotations

from callcenter.ivr.control import PromptItem
from callcenter.ivr.nodes.base import RunContext, ask_free_speech, yes_no
from callcenter.ivr.schema import KbAnswerNode
from callcenter.ivr.services import KbAnswer


async def run(node: KbAnswerNode, ctx: RunContext) -> str | None:
    question = ctx.render(node.question).strip() if node.question is not None else ""
    if not question:
        heard = await ask_free_speech(
            ctx, prompt=node.ask, retries=node.retries, no_input=node.no_input, timeout_s=node.timeout_s
        )
        if heard is None:
            return node.on_unresolved
        question = heard
    ctx.vars["kb_question"] = question
    answer: KbAnswer | None = None
    if ctx.services.kb is None:
        ctx.warn("no knowledge base is configured")
    else:
        try:
            answer = await ctx.services.kb.answer(question, language=ctx.language)
        except Exception as exc:  # a failing knowledge base must not end the call
            ctx.warn(f"knowledge base failed: {exc}")
    ctx.vars["kb_article"] = answer.article_id if answer else None
    if answer is None:
        ctx.vars["kb_helped"] = False
        await ctx.say(node.not_found)
        return node.on_unresolved
    await ctx.play_items([PromptItem(answer.text, None, ctx.language, ctx.voice)])
    if node.helped is None:
        return node.next
    helped = await yes_no(ctx, node.helped, timeout_s=node.timeout_s)
    ctx.vars["kb_helped"] = bool(helped)
    return node.next if helped else node.on_unresolved
