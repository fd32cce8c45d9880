"""``play``: an audio file or a recorded prompt; ``text`` is said when the file is missing."""

from __future__ import annotations

from callcenter.ivr.control import PromptItem
from callcenter.ivr.nodes.base import RunContext
from callcenter.ivr.schema import PlayNode, Speech


async def run(node: PlayNode, ctx: RunContext) -> str | None:
    if node.recording is not None:
        await ctx.say(Speech(recording=node.recording, text=node.text))
        return node.next
    assert node.file is not None
    file = ctx.resolve_file(node.file)
    text = ctx.render(node.text) if node.text is not None else None
    if file is None and not text:
        ctx.warn(f"recording {node.file!r} not found")
        return node.next
    await ctx.play_items([PromptItem(text, file, ctx.language, ctx.voice)])
    return node.next
