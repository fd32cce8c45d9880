"""What node handlers share: the per-call RunContext, prompt resolution, input with retries, matching.

A handler is ``async def run(node, ctx) -> str | None``: the id of the next node, or None when the flow
ends here. A handler that ends the call raises :class:`FlowStop`.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from callcenter.ivr.control import CallControl, DigitSpec, InputResult, PromptItem, SpeechSpec
from callcenter.ivr.expr import render
from callcenter.ivr.schema import ConfirmSpec, Flow, SpeechFields
from callcenter.ivr.services import Services, TranscriptEntry

__all__ = [
    "CallInfo",
    "FlowStop",
    "RunContext",
    "ask_with_retries",
    "match_phrase",
    "normalize",
    "spoken_digit",
    "yes_no",
]

log = logging.getLogger("callcenter.ivr")
T = TypeVar("T")


class FlowStop(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Ends the run: ``outcome`` for the result; the runner hangs up when ``hang_up``."""

    def __init__(self, outcome: str, reason: str, *, hang_up: bool = True) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
        self.hang_up = hang_up


@dataclass(frozen=True)
class CallInfo:
    call_id: str = ""
    caller: str = ""  # caller ID (From user part)
    called: str = ""  # the number dialled (To / Request-URI user part)


@dataclass
class RunContext:
    control: CallControl
    services: Services
    call: CallInfo
    flow: Flow
    vars: dict[str, Any]
    language: str
    voice: str | None
    node_id: str = ""
    transcript: list[TranscriptEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    queue: str | None = None
    agent: str | None = None
    run_subflow: Callable[[Flow], Awaitable[None]] | None = None

    # -- helpers --------------------------------------------------------------------------------------

    def render(self, template: str, *, escape: Callable[[str], str] | None = None) -> str:
        return render(template, self.vars, escape=escape)

    def warn(self, message: str) -> None:
        text = f"{self.flow.id}/{self.node_id}: {message}"
        self.warnings.append(text)
        log.warning("ivr %s", text)

    def resolve_file(self, file: str) -> str | None:
        """The path of a recording (relative to the flow file), or None when it does not exist."""
        path = Path(file)
        if not path.is_absolute() and self.flow.source is not None:
            path = Path(self.flow.source).parent / path
        exists = self.services.file_exists or os.path.isfile
        return str(path) if exists(str(path)) else None

    def prompt(self, speech: SpeechFields | None) -> list[PromptItem]:
        """What to play for ``speech``: the recording if its file exists, else the (fallback) text."""
        if speech is None:
            return []
        text = self.render(speech.text) if speech.text is not None else None
        file = None
        if speech.recording is not None:
            entry = self.flow.prompts.get(speech.recording)
            if entry is not None:
                file = self.resolve_file(entry.file)
                if text is None and entry.text is not None:
                    text = self.render(entry.text)
        if file is None and not text:
            if speech.recording is not None:
                self.warn(f"prompt {speech.recording!r} has no recording and no text")
            return []
        return [PromptItem(text, file, speech.language or self.language, speech.voice or self.voice)]

    def _note_ivr(self, items: Iterable[PromptItem]) -> None:
        for item in items:
            self.transcript.append(TranscriptEntry("ivr", item.text or f"[{item.file}]", self.node_id))

    async def say(self, speech: SpeechFields | None) -> None:
        await self.play_items(self.prompt(speech))

    async def play_items(self, items: Sequence[PromptItem]) -> None:
        self._note_ivr(items)
        for item in items:
            if item.file is not None:
                await self.control.play(item.file, fallback_text=item.text, language=item.language)
            elif item.text:
                await self.control.say(item.text, language=item.language, voice=item.voice)

    async def ask(
        self,
        prompts: Sequence[PromptItem],
        *,
        digits: DigitSpec | None,
        speech: SpeechSpec | None,
        timeout_s: float,
        barge_in: bool = True,
    ) -> InputResult:
        """One round of input (prompts first); notes what the caller gave in the transcript."""
        self._note_ivr(prompts)
        if speech is None:
            assert digits is not None
            result = await self.control.collect_digits(
                digits, prompts=prompts, barge_in=barge_in, timeout_s=timeout_s
            )
        else:
            result = await self.control.listen(
                speech, prompts=prompts, barge_in=barge_in, timeout_s=timeout_s, digits=digits
            )
        if result.kind == "digits":
            self.transcript.append(TranscriptEntry("caller", f"(pressed {result.digits})", self.node_id))
        elif result.kind == "speech":
            self.transcript.append(TranscriptEntry("caller", result.transcript, self.node_id))
        return result


async def ask_with_retries(
    ctx: RunContext,
    *,
    prompt: SpeechFields | None,
    retries: int,
    no_input: SpeechFields | None,
    invalid: SpeechFields | None,
    ask: Callable[[list[PromptItem]], Awaitable[InputResult]],
    interpret: Callable[[InputResult], T | None],
) -> T | None:
    """Ask up to ``retries + 1`` times; no input / an answer ``interpret`` rejects → say ``no_input`` /
    ``invalid`` and ask again. Returns the first accepted answer, or None when the retries ran out."""
    apology: list[PromptItem] = []
    for _ in range(retries + 1):
        result = await ask(apology + ctx.prompt(prompt))
        if result.kind == "timeout":
            apology = ctx.prompt(no_input)
            continue
        value = interpret(result)
        if value is not None:
            return value
        apology = ctx.prompt(invalid)
    await ctx.play_items(apology)  # the caller hears why before whatever comes next
    return None


async def ask_free_speech(
    ctx: RunContext,
    *,
    prompt: SpeechFields | None,
    retries: int,
    no_input: SpeechFields | None,
    timeout_s: float,
) -> str | None:
    """Ask an open question (no phrase list, no keys) until something is said: the transcript, or None
    when the caller said nothing through every retry."""

    async def ask(prompts: list[PromptItem]) -> InputResult:
        return await ctx.ask(prompts, digits=None, speech=SpeechSpec((), ctx.language), timeout_s=timeout_s)

    return await ask_with_retries(
        ctx,
        prompt=prompt,
        retries=retries,
        no_input=no_input,
        invalid=None,
        ask=ask,
        interpret=lambda r: r.transcript.strip() or None,
    )


async def yes_no(ctx: RunContext, confirm: ConfirmSpec, *, timeout_s: float, retries: int = 1) -> bool | None:
    """Ask a yes/no question; None when the caller gave no usable answer."""

    def interpret(result: InputResult) -> bool | None:
        said = normalize(result.transcript)
        key = result.digits[:1] if result.kind == "digits" else spoken_digit(said)
        if key is not None:
            return True if key == confirm.yes else False if key == confirm.no else None
        # the longest phrase heard decides: "不是" (no) contains "是" (yes)
        yes = max((len(w) for w in confirm.yes_words if match_phrase(w, said)), default=0)
        no = max((len(w) for w in confirm.no_words if match_phrase(w, said)), default=0)
        return None if yes == no else yes > no

    async def ask(prompts: list[PromptItem]) -> InputResult:
        return await ctx.ask(
            prompts,
            digits=DigitSpec(max_digits=1),
            speech=SpeechSpec(tuple(confirm.yes_words + confirm.no_words), ctx.language),
            timeout_s=timeout_s,
        )

    return await ask_with_retries(
        ctx, prompt=confirm.prompt, retries=retries, no_input=None, invalid=None, ask=ask, interpret=interpret
    )


# -- matching what was said -----------------------------------------------------------------------------

_SPOKEN_DIGITS = {
    "zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "star": "*", "pound": "#", "hash": "#",
    "零": "0", "一": "1", "幺": "1", "二": "2", "两": "2", "三": "3", "四": "4", "五": "5", "六": "6",
    "七": "7", "八": "8", "九": "9",
}  # fmt: skip


def normalize(text: str) -> str:
    """Lower case, punctuation dropped, spaces collapsed (so "Sales!" matches "sales")."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch if ch.isalnum() or ch in "*#" else " " for ch in text)
    return " ".join(text.split())


def _cjk(text: str) -> bool:
    return any(unicodedata.east_asian_width(ch) in ("W", "F") for ch in text)


def match_phrase(phrase: str, said: str) -> bool:
    """Whether ``phrase`` occurs in the normalized utterance ``said`` as whole words (CJK: anywhere)."""
    p = normalize(phrase)
    if not p:
        return False
    if _cjk(p):
        return p.replace(" ", "") in said.replace(" ", "")
    return re.search(rf"(?<!\w){re.escape(p)}(?!\w)", said) is not None


def spoken_digit(said: str) -> str | None:
    """The key an utterance names when it is just one digit ("two", "2", "二")."""
    said = said.strip()
    if len(said) == 1 and said in "0123456789*#":
        return said
    return _SPOKEN_DIGITS.get(said)


def spoken_digits(said: str) -> str:
    """Digits read out ("one two three", "1 2 3", "一二三") → "123"; other words are dropped."""
    out = []
    for token in said.split():
        if token.isascii() and token.isdigit():
            out.append(token)
        elif token in _SPOKEN_DIGITS:
            out.append(_SPOKEN_DIGITS[token])
        else:
            out.extend(_SPOKEN_DIGITS[ch] for ch in token if ch in _SPOKEN_DIGITS and _cjk(ch))
    return "".join(out)
