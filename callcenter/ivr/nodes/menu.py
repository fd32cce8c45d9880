"""``menu``: a prompt, then a key or an option's words; retries with no-input/invalid prompts."""

from __future__ import annotations

from callcenter.ivr.control import DigitSpec, InputResult, PromptItem, SpeechSpec
from callcenter.ivr.nodes.base import RunContext, ask_with_retries, match_phrase, normalize, spoken_digit
from callcenter.ivr.schema import MenuNode


def choose(node: MenuNode, result: InputResult) -> tuple[str | None, str]:
    """(target, how) for one input: the option pressed or said, ``other_speech``, or (None, "invalid")."""
    by_key = {o.dtmf: o.next for o in node.options if o.dtmf is not None}
    if result.kind == "digits":
        target = by_key.get(result.digits[:1])
        return target, "dtmf" if target else "invalid"
    said = normalize(result.transcript)
    key = spoken_digit(said)
    if key is not None and key in by_key:
        return by_key[key], "dtmf"
    best: tuple[int, str] | None = None
    for option in node.options:
        for phrase in option.speech:
            if match_phrase(phrase, said) and (best is None or len(phrase) > best[0]):
                best = (len(phrase), option.next)  # the longest phrase heard wins: "order status" > "order"
    if best is not None:
        return best[1], "speech"
    if node.other_speech is not None and said:
        return node.other_speech, "other_speech"
    return None, "invalid"


async def run(node: MenuNode, ctx: RunContext) -> str | None:
    phrases = tuple(p for o in node.options for p in o.speech)
    wants_speech = bool(phrases) or node.other_speech is not None
    digits = DigitSpec(max_digits=1) if any(o.dtmf is not None for o in node.options) else None
    speech = SpeechSpec(phrases, ctx.language, open=node.other_speech is not None) if wants_speech else None

    async def ask(prompts: list[PromptItem]) -> InputResult:
        return await ctx.ask(
            prompts, digits=digits, speech=speech, timeout_s=node.timeout_s, barge_in=node.barge_in
        )

    def interpret(result: InputResult) -> str | None:
        target, how = choose(node, result)
        if target is not None:
            ctx.vars["last_input"] = result.digits if result.kind == "digits" else result.transcript
            ctx.vars["last_utterance"] = result.transcript if result.kind == "speech" else ""
        return target

    target = await ask_with_retries(
        ctx,
        prompt=node.prompt,
        retries=node.retries,
        no_input=node.no_input,
        invalid=node.invalid,
        ask=ask,
        interpret=interpret,
    )
    return target if target is not None else node.on_failure
