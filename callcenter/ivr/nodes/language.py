"""``language``: switch the call's language (TTS and recognition) and voice."""

from __future__ import annotations

from callcenter.ivr.nodes.base import RunContext
from callcenter.ivr.schema import LanguageNode


async def run(node: LanguageNode, ctx: RunContext) -> str | None:
    ctx.language = node.language
    ctx.voice = node.voice  # a voice belongs to a language: None = the engine's default for it
    ctx.vars["language"] = node.language
    await ctx.control.set_language(node.language, node.voice)
    return node.next
