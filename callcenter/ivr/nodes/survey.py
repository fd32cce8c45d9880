"""``survey``: a CSAT question answered with a key or a spoken number from 1 to ``scale``."""

from __future__ import annotations

from callcenter.ivr.control import DigitSpec, InputResult, PromptItem, SpeechSpec
from callcenter.ivr.nodes.base import RunContext, ask_with_retries, normalize, spoken_digits
from callcenter.ivr.schema import SurveyNode


def score(node: SurveyNode, result: InputResult) -> int | None:
    text = result.digits if result.kind == "digits" else spoken_digits(normalize(result.transcript))
    if len(text) != 1 or not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if 1 <= value <= node.scale else None


async def run(node: SurveyNode, ctx: RunContext) -> str | None:
    async def ask(prompts: list[PromptItem]) -> InputResult:
        return await ctx.ask(
            prompts,
            digits=DigitSpec(max_digits=1),
            speech=SpeechSpec(tuple(str(i) for i in range(1, node.scale + 1)), ctx.language),
            timeout_s=node.timeout_s,
        )

    value = await ask_with_retries(
        ctx,
        prompt=node.prompt,
        retries=node.retries,
        no_input=node.no_input,
        invalid=node.invalid,
        ask=ask,
        interpret=lambda r: score(node, r),
    )
    ctx.vars[node.into] = value
    if value is not None:
        await ctx.say(node.thanks)
    return node.next
