"""``collect``: digits (min/max/terminator/pattern) or speech (free-form or a phrase list) into a
variable, optionally read back for a yes/no confirmation."""

from __future__ import annotations

import re

from callcenter.ivr.control import DigitSpec, InputResult, PromptItem, SpeechSpec
from callcenter.ivr.nodes.base import RunContext, match_phrase, normalize, yes_no
from callcenter.ivr.schema import CollectNode


def accept(node: CollectNode, result: InputResult) -> str | None:
    """The value to store, or None when the input is not acceptable."""
    if node.input == "digits":
        if result.kind != "digits":
            return None
        value = result.digits
        if len(value) < node.min_digits or len(value) > node.max_digits:
            return None
    else:
        if result.kind != "speech" or not result.transcript.strip():
            return None
        value = result.transcript.strip()
        if node.phrases is not None:
            said = normalize(value)
            hits = [p for p in node.phrases if match_phrase(p, said)]
            if not hits:
                return None
            value = max(hits, key=len)  # the phrase as written in the flow
    if node.pattern is not None and re.fullmatch(node.pattern, value) is None:
        return None
    return value


async def run(node: CollectNode, ctx: RunContext) -> str | None:
    if node.input == "digits":
        digits: DigitSpec | None = DigitSpec(
            max_digits=node.max_digits,
            min_digits=node.min_digits,
            terminator=node.terminator,
            inter_digit_timeout_s=node.inter_digit_timeout_s,
        )
        speech = None
    else:
        digits, speech = None, SpeechSpec(tuple(node.phrases or ()), ctx.language)

    async def ask(prompts: list[PromptItem]) -> InputResult:
        return await ctx.ask(
            prompts, digits=digits, speech=speech, timeout_s=node.timeout_s, barge_in=node.barge_in
        )

    # one budget of attempts for bad input, silence and "no, that's wrong" alike
    apology: list[PromptItem] = []
    for _ in range(node.retries + 1):
        result = await ask(apology + ctx.prompt(node.prompt))
        if result.kind == "timeout":
            apology = ctx.prompt(node.no_input)
            continue
        value = accept(node, result)
        if value is None:
            apology = ctx.prompt(node.invalid)
            continue
        ctx.vars[node.into] = value
        if node.confirm is None or await yes_no(ctx, node.confirm, timeout_s=node.timeout_s):
            return node.next
        apology = []
    await ctx.play_items(apology)
    ctx.vars[node.into] = None
    return node.on_failure
