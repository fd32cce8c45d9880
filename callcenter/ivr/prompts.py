"""The fixed things a flow says, so they can be synthesised before the first caller hears them."""

from __future__ import annotations

from dataclasses import dataclass

from callcenter.ivr.graph import speech_uses
from callcenter.ivr.schema import Flow, PlayNode


@dataclass(frozen=True, slots=True)
class FixedPrompt:
    text: str
    language: str
    voice: str | None


def fixed_prompts(flow: Flow) -> list[FixedPrompt]:
    """Every TTS text of `flow` without `${...}` (those depend on the call), once, with its language and
    voice; the declared fallback texts of recorded prompts and `play` nodes too (said when the file is
    missing)."""
    out: dict[FixedPrompt, None] = {}

    def add(text: str | None, language: str | None, voice: str | None) -> None:
        if text and "${" not in text:
            out[FixedPrompt(text, language or flow.language, voice or flow.voice)] = None

    for node in flow.nodes.values():
        for _, speech in speech_uses(node):
            add(speech.text, speech.language, speech.voice)
        if isinstance(node, PlayNode):
            add(node.text, None, None)
    for prompt in flow.prompts.values():
        add(prompt.text, None, None)
    return list(out)
