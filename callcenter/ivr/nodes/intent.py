"""``intent``: classify what the caller says (or a given text) and branch on the intent."""

from __future__ import annotations

from callcenter.ivr.nodes.base import RunContext, ask_free_speech
from callcenter.ivr.schema import IntentNode


async def run(node: IntentNode, ctx: RunContext) -> str | None:
    text = ctx.render(node.text).strip() if node.text is not None else ""
    if not text:
        heard = await ask_free_speech(
            ctx, prompt=node.prompt, retries=node.retries, no_input=node.no_input, timeout_s=node.timeout_s
        )
        if heard is None:
            ctx.vars[node.into] = None
            return node.on_unknown
        text = heard
    ctx.vars["last_utterance"] = text
    name = None
    if ctx.services.intents is None:
        ctx.warn("no intent classifier is configured")
    else:
        try:
            result = await ctx.services.intents.classify(text, list(node.routes), language=ctx.language)
        except Exception as exc:  # a failing classifier must not end the call
            ctx.warn(f"intent classifier failed: {exc}")
        else:
            if result.name in node.routes and result.confidence >= node.min_confidence:
                name = result.name
    ctx.vars[node.into] = name
    return node.routes[name] if name is not None else node.on_unknown
