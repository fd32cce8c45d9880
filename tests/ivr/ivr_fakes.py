"""A scripted fake CallControl and fake backends for IVR tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
from callcenter.ivr.services import HttpError, HttpResponse, KbAnswer, TicketDraft, TicketUpdate


@dataclass(frozen=True)
class Press:
    """The caller presses keys (a terminator in them ends the input, as on a phone)."""

    keys: str


@dataclass(frozen=True)
class Speak:
    """The caller says something (the recognizer's transcript)."""

    text: str


SILENCE = "silence"  # the caller does nothing until the timeout
HANGUP = "hangup"  # the caller hangs up while the IVR waits for input

Step = Press | Speak | str


class ScriptedCall:
    """Plays the caller from a script. Records what the IVR did in ``events`` and what it said in
    ``said`` (TTS text, or "file:<name>" for recordings). Giving speech where only keys are accepted
    (or keys where only speech is) fails the test: the script must match what the flow asks."""

    def __init__(
        self,
        *script: Step,
        queues: Mapping[str, QueueResult] | None = None,
        transfer: TransferResult | None = None,
        record: RecordResult | None = None,
    ) -> None:
        self.script = list(script)
        self.queues = dict(queues or {})
        self.transfer_result = transfer or TransferResult("answered")
        self.record_result = record or RecordResult("/tmp/vm-1.wav", 7.0, "terminator")
        self.events: list[tuple[Any, ...]] = []
        self.said: list[str] = []
        self.hung_up: str | None = None
        self.inputs: list[dict[str, Any]] = []  # what each input request asked for

    def _speak(self, items: Sequence[PromptItem]) -> None:
        for item in items:
            self.said.append(f"file:{item.file}" if item.file else item.text or "")

    def _next(self, digits: DigitSpec | None, speech: SpeechSpec | None) -> InputResult:
        if not self.script:
            raise AssertionError(f"the script ended but the IVR waits for input (said so far: {self.said})")
        step = self.script.pop(0)
        if step == HANGUP:
            raise CallerHangup("scripted hangup")
        if step == SILENCE:
            return InputResult("timeout")
        if isinstance(step, Press):
            if digits is None:
                raise AssertionError(f"caller pressed {step.keys!r} but the IVR only listens for speech")
            keys, terminated = step.keys, False
            if digits.terminator and digits.terminator in keys:
                keys, terminated = keys[: keys.index(digits.terminator)], True
            return InputResult("digits", digits=keys[: digits.max_digits], terminated=terminated)
        assert isinstance(step, Speak)
        if speech is None:
            raise AssertionError(f"caller said {step.text!r} but the IVR only accepts keys")
        return InputResult("speech", transcript=step.text, confidence=0.9)

    async def say(self, text: str, *, language: str | None = None, voice: str | None = None) -> None:
        self.events.append(("say", text, language, voice))
        self.said.append(text)

    async def play(self, file: str, *, fallback_text: str | None = None, language: str | None = None) -> None:
        self.events.append(("play", file, fallback_text))
        self.said.append(f"file:{file}")

    async def collect_digits(
        self,
        spec: DigitSpec,
        *,
        prompts: Sequence[PromptItem] = (),
        barge_in: bool = True,
        timeout_s: float = 5.0,
    ) -> InputResult:
        self._speak(prompts)
        self.inputs.append({"digits": spec, "speech": None, "barge_in": barge_in, "timeout_s": timeout_s})
        return self._next(spec, None)

    async def listen(
        self,
        spec: SpeechSpec,
        *,
        prompts: Sequence[PromptItem] = (),
        barge_in: bool = True,
        timeout_s: float = 5.0,
        digits: DigitSpec | None = None,
    ) -> InputResult:
        self._speak(prompts)
        self.inputs.append({"digits": digits, "speech": spec, "barge_in": barge_in, "timeout_s": timeout_s})
        return self._next(digits, spec)

    async def record(
        self, *, max_s: float, beep: bool = True, terminator: str | None = "#", max_silence_s: float = 5.0
    ) -> RecordResult:
        self.events.append(("record", max_s, beep, terminator))
        return self.record_result

    async def enqueue(self, request: QueueRequest) -> QueueResult:
        self.events.append(("enqueue", request))
        return self.queues.get(request.queue, QueueResult("answered", "alice", 12.0))

    async def transfer(
        self, target: str, *, timeout_s: float = 30.0, caller_id: str | None = None
    ) -> TransferResult:
        self.events.append(("transfer", target, caller_id))
        return self.transfer_result

    async def set_language(self, language: str, voice: str | None = None) -> None:
        self.events.append(("set_language", language, voice))

    async def hangup(self, reason: str) -> None:
        self.events.append(("hangup", reason))
        self.hung_up = reason

    def enqueued(self) -> list[QueueRequest]:
        return [e[1] for e in self.events if e[0] == "enqueue"]


class FakeTickets:
    def __init__(self, fail: bool = False) -> None:
        self.created: list[TicketDraft] = []
        self.updated: list[tuple[str, TicketUpdate]] = []
        self.fail = fail

    async def create(self, draft: TicketDraft) -> str:
        if self.fail:
            raise RuntimeError("ticket store down")
        self.created.append(draft)
        return f"T-{len(self.created)}"

    async def update(self, ticket_id: str, update: TicketUpdate) -> None:
        if self.fail:
            raise RuntimeError("ticket store down")
        self.updated.append((ticket_id, update))


class FakeKb:
    def __init__(self, answers: Mapping[str, str]) -> None:
        self.answers = dict(answers)  # keyword in the question → answer
        self.questions: list[str] = []

    async def answer(self, question: str, *, language: str) -> KbAnswer | None:
        self.questions.append(question)
        for keyword, text in self.answers.items():
            if keyword in question.lower():
                return KbAnswer(text, article_id=f"kb-{keyword}")
        return None


class FakeHttp:
    def __init__(self, responses: Mapping[str, HttpResponse | Exception]) -> None:
        self.responses = dict(responses)  # URL → response (or an error to raise)
        self.requests: list[tuple[str, str, Any]] = []

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float,
    ) -> HttpResponse:
        self.requests.append((method, url, json))
        response = self.responses.get(url, HttpResponse(404, {"error": "not found"}))
        if isinstance(response, Exception):
            raise HttpError(str(response))
        return response


class FakeCustomers:
    def __init__(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        self.records = dict(records)

    async def lookup(self, caller: str) -> Mapping[str, Any] | None:
        return self.records.get(caller)
