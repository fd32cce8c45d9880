"""A CallControl on lines of text, for ``callcenter flows try``: prompts are printed, the person at the
keyboard is the caller (keys like ``1`` or ``1234#``, or words; an empty line is silence; ``/hangup`` or
end of input hangs up)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from callcenter.ivr.control import (
    CallerHangup,
    DigitSpec,
    InputResult,
    PromptItem,
    QueueRequest,
    QueueResult,
    RecordResult,
    SpeechSpec,
    TransferResult,
)

__all__ = ["TextCallControl"]

_KEYS_RE = re.compile(r"[0-9*#]+")


class TextCallControl:
    def __init__(
        self,
        read_line: Callable[[], str | None],
        write: Callable[[str], None],
        *,
        agent: str = "demo-agent",
    ) -> None:
        self.read_line = read_line  # None = end of input (the caller hangs up)
        self.write = write
        self.agent = agent
        self.hung_up: str | None = None

    def _prompts(self, prompts: Sequence[PromptItem]) -> None:
        for item in prompts:
            self._speak(item.text, item.file)

    def _speak(self, text: str | None, file: str | None) -> None:
        if file is not None:
            self.write(f"IVR: [plays {Path(file).name}]" + (f" ({text})" if text else ""))
        elif text:
            self.write(f"IVR: {text}")

    def _line(self, hint: str) -> str:
        self.write(f"  caller ({hint}; empty = silence, /hangup)>")
        line = self.read_line()
        if line is None or line.strip().lower() == "/hangup":
            raise CallerHangup("caller hung up")
        return line.strip()

    def _input(self, digits: DigitSpec | None, speech: bool) -> InputResult:
        hint = "keys or words" if digits and speech else "keys" if digits else "words"
        while True:
            text = self._line(hint)
            if not text:
                return InputResult("timeout")
            keys = text.replace(" ", "")
            if digits is not None and _KEYS_RE.fullmatch(keys):
                terminated = False
                if digits.terminator and digits.terminator in keys:
                    keys, terminated = keys[: keys.index(digits.terminator)], True
                return InputResult("digits", digits=keys[: digits.max_digits], terminated=terminated)
            if speech:
                return InputResult("speech", transcript=text, confidence=1.0)
            self.write("  (this prompt takes keys: 0-9 * #)")

    async def say(self, text: str, *, language: str | None = None, voice: str | None = None) -> None:
        self._speak(text, None)

    async def play(self, file: str, *, fallback_text: str | None = None, language: str | None = None) -> None:
        self._speak(fallback_text, file)

    async def collect_digits(
        self,
        spec: DigitSpec,
        *,
        prompts: Sequence[PromptItem] = (),
        barge_in: bool = True,
        timeout_s: float = 5.0,
    ) -> InputResult:
        self._prompts(prompts)
        return self._input(spec, speech=False)

    async def listen(
        self,
        spec: SpeechSpec,
        *,
        prompts: Sequence[PromptItem] = (),
        barge_in: bool = True,
        timeout_s: float = 5.0,
        digits: DigitSpec | None = None,
    ) -> InputResult:
        self._prompts(prompts)
        return self._input(digits, speech=True)

    async def record(
        self, *, max_s: float, beep: bool = True, terminator: str | None = "#", max_silence_s: float = 5.0
    ) -> RecordResult:
        self.write("IVR: [beep] (recording: type the message)")
        line = self.read_line()
        if line is None or line.strip().lower() == "/hangup":
            return RecordResult(None, 0.0, "hangup")
        text = line.strip()
        if not text:
            return RecordResult(None, 0.0, "silence")
        return RecordResult("voicemail.wav", float(max(1, len(text.split()) // 2)), "terminator")

    async def enqueue(self, request: QueueRequest) -> QueueResult:
        skills = "".join(f", skill {k}>={v}" for k, v in request.skills.items())
        self.write(f"[queued in {request.queue!r}, priority {request.priority}{skills}]")
        self.write(f"[agent {self.agent} answers; the conversation ends]")
        return QueueResult("answered", self.agent, 0.0)

    async def transfer(
        self, target: str, *, timeout_s: float = 30.0, caller_id: str | None = None
    ) -> TransferResult:
        self.write(f"[transferred to {target}]")
        return TransferResult("answered")

    async def set_language(self, language: str, voice: str | None = None) -> None:
        self.write(f"[language: {language}" + (f", voice {voice}]" if voice else "]"))

    async def hangup(self, reason: str) -> None:
        self.hung_up = reason
        self.write(f"[IVR hangs up: {reason}]")
