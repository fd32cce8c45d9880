"""IVR flows as data: one pydantic model per node type (``extra="forbid"``), discriminated by ``type``.

A flow file is a :class:`Flow`: header fields and a map of node id → node. Every node names the node(s)
that follow (``next``, ``on_failure``…); a node without a following node ends the flow (a subflow returns
to its caller; the main flow hangs up). Models are strict: YAML ``yes`` is not text, "5" is not a number.
Graph checks (unknown targets, unreachable nodes, loops without input…) live in :mod:`.graph`.
Top-level keys starting with ``x-`` are ignored by the loader (room for YAML anchors).
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import date, datetime, time
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PrivateAttr,
    model_validator,
)
from pydantic_core import PydanticCustomError

from callcenter.core.clock import iana_zone
from callcenter.ivr.expr import ExprError, parse, parse_template

__all__ = [
    "NODE_TYPES",
    "BranchCase",
    "BranchNode",
    "CollectNode",
    "ConfirmSpec",
    "Flow",
    "GotoNode",
    "HangupNode",
    "HoursNode",
    "HttpNode",
    "IntentNode",
    "KbAnswerNode",
    "LanguageNode",
    "Loc",
    "MenuNode",
    "MenuOption",
    "Node",
    "PlayNode",
    "PriorityRule",
    "PromptFile",
    "QueueNode",
    "Schedule",
    "SayNode",
    "SetNode",
    "Speech",
    "SubflowNode",
    "SurveyNode",
    "TicketNode",
    "TransferNode",
    "VoicemailNode",
    "flow_json_schema",
]

Loc = tuple[str | int, ...]
DTMF_KEYS = "0123456789*#"
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ID_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _err(message: str, at: str = "") -> PydanticCustomError:
    """A validation error with our own wording; ``at`` (dotted, relative to the model) moves it to a key."""
    return PydanticCustomError("flow", "{message}", {"message": message, "at": at})


# -- constrained strings --------------------------------------------------------------------------------


def _template(value: str) -> str:
    try:
        parse_template(value)
    except ExprError as exc:
        raise PydanticCustomError(
            "template", "{message}", {"message": exc.message, "column": exc.column}
        ) from None
    return value


def _condition(value: str) -> str:
    try:
        parse(value)
    except ExprError as exc:
        raise PydanticCustomError(
            "expression", "{message}", {"message": exc.message, "column": exc.column}
        ) from None
    return value


def _var_name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise _err(f"{value!r} is not a variable name (letters, digits and _, not starting with a digit)")
    return value


def _ident(what: str) -> Any:
    def check(value: str) -> str:
        if not _ID_RE.fullmatch(value):
            raise _err(
                f"{what} {value!r} must start with a letter or _ and hold only letters, digits, _ and -"
            )
        return value

    return check


def _dtmf_key(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # YAML reads `dtmf: 1` as a number
    return value


def _check_dtmf(value: str) -> str:
    if len(value) != 1 or value not in DTMF_KEYS:
        raise _err(f"expected one key of 0-9, * or #, got {value!r}")
    return value


def _speech(value: Any) -> Any:
    if isinstance(value, str):
        return {"text": value}
    if value is None or isinstance(value, dict | Speech):
        return value
    raise _err("expected text, or a mapping with text and/or recording")


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _nonblank(value: str) -> str:
    if not value.strip():
        raise _err("expected non-empty text")
    return value


TemplateStr = Annotated[str, AfterValidator(_template)]
Condition = Annotated[str, AfterValidator(_condition)]
VarName = Annotated[str, AfterValidator(_var_name)]
NodeId = Annotated[str, AfterValidator(_ident("node id"))]
FlowId = Annotated[str, AfterValidator(_ident("flow id"))]
PromptId = Annotated[str, AfterValidator(_ident("prompt id"))]
Target = Annotated[str, Field(min_length=1, description="id of the node to go to")]
DtmfKey = Annotated[
    str, BeforeValidator(_dtmf_key, json_schema_input_type=str | int), AfterValidator(_check_dtmf)
]
Phrase = Annotated[str, AfterValidator(_nonblank)]
Scalar = str | int | float | bool | None
Seconds = Annotated[float, Field(gt=0, le=3600)]
Retries = Annotated[int, Field(ge=0, le=10, description="re-prompts after the first attempt")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# -- speech ---------------------------------------------------------------------------------------------


class SpeechFields(_Model):
    text: TemplateStr | None = Field(None, description="TTS text; ${var} is replaced by the variable's value")
    recording: PromptId | None = Field(
        None, description="id in the flow's prompts: its recorded file is played instead of the TTS text"
    )
    language: str | None = Field(None, description="TTS language for this text (default: the call's)")
    voice: str | None = Field(None, description="TTS voice for this text (default: the call's)")

    @model_validator(mode="after")
    def _something_to_say(self) -> Any:
        if self.text is None and self.recording is None:
            raise _err("give text, recording or both")
        return self


class Speech(SpeechFields):
    """Something the IVR says: TTS text, a recorded prompt, or a recording with a TTS fallback."""


SpeechField = Annotated[Speech, BeforeValidator(_speech, json_schema_input_type=str | Speech)]


class PromptFile(_Model):
    """A recorded prompt; ``text`` is said by TTS when the file is absent (a declared fallback)."""

    file: str = Field(description="audio file, relative to the flow file's folder")
    text: TemplateStr | None = Field(None, description="TTS fallback when the file is missing")


def _prompt_file(value: Any) -> Any:
    return {"file": value} if isinstance(value, str) else value


PromptFileField = Annotated[
    PromptFile, BeforeValidator(_prompt_file, json_schema_input_type=str | PromptFile)
]


# -- nodes ----------------------------------------------------------------------------------------------


class _Node(_Model):
    """Fields every node has. ``_targets`` names the fields that hold node ids."""

    description: str | None = Field(None, description="a note for people reading the flow")
    _targets: ClassVar[tuple[str, ...]] = ("next",)

    def edges(self) -> list[tuple[Loc, str]]:
        """(where in the node, target node id) for every node this one can go to."""
        out: list[tuple[Loc, str]] = []
        for name in self._targets:
            value = getattr(self, name)
            if isinstance(value, str):
                out.append(((name,), value))
        return out

    def waits_for_input(self) -> bool:
        """True when every pass through this node waits for the caller (breaks a loop)."""
        return False


class SayNode(_Node, SpeechFields):
    """Say text (TTS, ``${var}`` templating) or play a recorded prompt by id."""

    type: Literal["say"] = "say"
    next: Target | None = None


class PlayNode(_Node):
    """Play an audio file (or a recorded prompt by id); ``text`` is the TTS fallback."""

    type: Literal["play"] = "play"
    file: str | None = Field(None, description="audio file, relative to the flow file's folder")
    recording: PromptId | None = Field(None, description="id in the flow's prompts")
    text: TemplateStr | None = Field(None, description="TTS fallback when the file is missing")
    next: Target | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PlayNode:
        if (self.file is None) == (self.recording is None):
            raise _err("give exactly one of file and recording")
        return self


class MenuOption(_Model):
    dtmf: DtmfKey | None = Field(None, description="the key that picks this option")
    speech: list[Phrase] = Field(default_factory=list, description="words or phrases that pick it")
    next: Target

    @model_validator(mode="after")
    def _some_input(self) -> MenuOption:
        if self.dtmf is None and not self.speech:
            raise _err("give dtmf, speech or both")
        return self


class MenuNode(_Node):
    """Play a prompt; the caller presses a key or says an option's words."""

    type: Literal["menu"] = "menu"
    prompt: SpeechField
    options: list[MenuOption] = Field(min_length=1)
    other_speech: Target | None = Field(
        None, description="where speech that matches no option goes (its text is in ${last_utterance})"
    )
    timeout_s: Seconds = 5.0
    retries: Retries = 2
    no_input: SpeechField | None = Field(None, description="said when the caller did nothing")
    invalid: SpeechField | None = Field(None, description="said when the input matched no option")
    barge_in: bool = Field(True, description="input interrupts the prompt")
    on_failure: Target | None = Field(None, description="after the last retry (default: the flow ends)")
    _targets: ClassVar[tuple[str, ...]] = ("other_speech", "on_failure")

    @model_validator(mode="after")
    def _distinct(self) -> MenuNode:
        keys: dict[str, int] = {}
        words: dict[str, int] = {}
        for i, option in enumerate(self.options):
            if option.dtmf is not None:
                if option.dtmf in keys:
                    raise _err(
                        f"key {option.dtmf!r} is already option {keys[option.dtmf] + 1}", f"options.{i}.dtmf"
                    )
                keys[option.dtmf] = i
            for j, word in enumerate(option.speech):
                norm = " ".join(word.lower().split())
                if words.get(norm, i) != i:
                    raise _err(
                        f"{word!r} is already said for option {words[norm] + 1}", f"options.{i}.speech.{j}"
                    )
                words[norm] = i
        return self

    def edges(self) -> list[tuple[Loc, str]]:
        opts: list[tuple[Loc, str]] = [(("options", i, "next"), o.next) for i, o in enumerate(self.options)]
        return opts + super().edges()

    def waits_for_input(self) -> bool:
        return True


class ConfirmSpec(_Model):
    """A yes/no question: the caller presses ``yes``/``no`` or says one of the words."""

    prompt: SpeechField
    yes: DtmfKey = "1"
    no: DtmfKey = "2"
    yes_words: list[Phrase] = Field(default_factory=lambda: ["yes", "correct", "right", "yeah"])
    no_words: list[Phrase] = Field(default_factory=lambda: ["no", "wrong", "nope"])

    @model_validator(mode="after")
    def _distinct_keys(self) -> ConfirmSpec:
        if self.yes == self.no:
            raise _err("yes and no must be different keys", "no")
        return self


_DIGIT_FIELDS = ("min_digits", "max_digits", "terminator", "inter_digit_timeout_s", "pattern")


class CollectNode(_Node):
    """Collect digits or speech into a variable, optionally reading it back for confirmation."""

    type: Literal["collect"] = "collect"
    input: Literal["digits", "speech"] = "digits"
    prompt: SpeechField
    into: VarName = Field(description="variable that receives the input")
    min_digits: int = Field(1, ge=1, le=64)
    max_digits: int = Field(20, ge=1, le=64)
    terminator: DtmfKey | None = Field("#", description="key that ends the input early")
    inter_digit_timeout_s: Seconds = 3.0
    pattern: str | None = Field(None, description="regular expression the whole input must match")
    phrases: list[Phrase] | None = Field(None, description="speech: the answers accepted (else free-form)")
    timeout_s: Seconds = 5.0
    retries: Retries = 2
    no_input: SpeechField | None = None
    invalid: SpeechField | None = None
    barge_in: bool = True
    confirm: ConfirmSpec | None = Field(None, description="read the input back and ask yes/no")
    next: Target
    on_failure: Target | None = None
    _targets: ClassVar[tuple[str, ...]] = ("next", "on_failure")

    @model_validator(mode="after")
    def _consistent(self) -> CollectNode:
        if self.min_digits > self.max_digits:
            raise _err(f"{self.min_digits} is more than max_digits ({self.max_digits})", "min_digits")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise _err(f"not a regular expression: {exc}", "pattern") from None
        if self.input == "speech":
            for name in _DIGIT_FIELDS:
                if name in self.model_fields_set and name != "pattern":
                    raise _err("only for input: digits", name)
        elif self.phrases is not None:
            raise _err("only for input: speech", "phrases")
        return self

    def waits_for_input(self) -> bool:
        return True


class IntentNode(_Node):
    """Classify what the caller says (or ``text``) into an intent and branch on it."""

    type: Literal["intent"] = "intent"
    prompt: SpeechField | None = Field(None, description="asked before listening")
    text: TemplateStr | None = Field(None, description="classify this instead of listening")
    routes: dict[str, Target] = Field(min_length=1, description="intent name → node id")
    min_confidence: float = Field(0.5, ge=0, le=1)
    into: VarName = "intent"
    timeout_s: Seconds = 5.0
    retries: Retries = 1
    no_input: SpeechField | None = None
    on_unknown: Target
    _targets: ClassVar[tuple[str, ...]] = ("on_unknown",)

    def edges(self) -> list[tuple[Loc, str]]:
        return [(("routes", name), t) for name, t in self.routes.items()] + super().edges()

    def waits_for_input(self) -> bool:
        return self.text is None


class BranchCase(_Model):
    when: Condition = Field(description="an expression, e.g. customer.vip and order_count > 3")
    next: Target


class BranchNode(_Node):
    """Go to the first case whose condition holds, else ``default``."""

    type: Literal["branch"] = "branch"
    cases: list[BranchCase] = Field(min_length=1)
    default: Target
    _targets: ClassVar[tuple[str, ...]] = ("default",)

    def edges(self) -> list[tuple[Loc, str]]:
        return [(("cases", i, "next"), c.next) for i, c in enumerate(self.cases)] + super().edges()


class SetNode(_Node):
    """Set variables; text values are templates (``"${x}"`` alone keeps x's type)."""

    type: Literal["set"] = "set"
    vars: dict[VarName, Scalar] = Field(min_length=1)
    next: Target | None = None

    @model_validator(mode="after")
    def _templates(self) -> SetNode:
        for name, value in self.vars.items():
            if isinstance(value, str):
                _check_nested_template(value, f"vars.{name}")
        return self


def _check_nested_template(value: str, at: str) -> None:
    try:
        parse_template(value)
    except ExprError as exc:
        raise PydanticCustomError(
            "template", "{message}", {"message": exc.message, "column": exc.column, "at": at}
        ) from None


def _walk_templates(value: Any, at: str) -> None:
    if isinstance(value, str):
        _check_nested_template(value, at)
    elif isinstance(value, dict):
        for k, v in value.items():
            _walk_templates(v, f"{at}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk_templates(v, f"{at}.{i}")


class HttpNode(_Node):
    """Call a CRM or webhook; store fields of its JSON response in variables."""

    type: Literal["http"] = "http"
    method: Annotated[
        Literal["GET", "POST", "PUT", "PATCH", "DELETE"], BeforeValidator(_upper, json_schema_input_type=str)
    ] = "GET"
    url: TemplateStr = Field(description="http(s) URL; substituted values are URL-encoded")
    headers: dict[str, TemplateStr] = Field(default_factory=dict)
    body: JsonValue = Field(None, description="JSON body; text leaves are templates")
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    store: dict[VarName, str] = Field(
        default_factory=dict, description="variable → dotted path in the JSON response, e.g. order.status"
    )
    status_into: VarName | None = Field(None, description="variable that receives the HTTP status")
    next: Target | None = None
    on_error: Target | None = Field(None, description="on a timeout, network error or non-2xx status")
    _targets: ClassVar[tuple[str, ...]] = ("next", "on_error")

    @model_validator(mode="after")
    def _valid(self) -> HttpNode:
        if not re.match(r"https?://", self.url) and not self.url.startswith("${"):
            raise _err("expected an http:// or https:// URL", "url")
        if self.body is not None:
            _walk_templates(self.body, "body")
        return self


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE_RE = re.compile(r"([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})")


def parse_days(key: str) -> list[int]:
    """``mon``, ``mon-fri``, ``sat,sun`` → weekday numbers (Monday = 0)."""
    days: list[int] = []
    for part in key.lower().replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if first not in _DAYS or (last and last not in _DAYS):
            raise ValueError(f"expected days like mon, mon-fri or sat,sun, got {key!r}")
        a, b = _DAYS.index(first), _DAYS.index(last or first)
        days.extend(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return days


def parse_time_range(text: str) -> tuple[time, time]:
    """``09:00-17:30`` → (start, end); ``24:00`` is the end of the day."""
    m = _RANGE_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"expected a time range like 09:00-17:30, got {text!r}")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"{text!r} is not a time of day")
    start = time(h1, m1)
    end = time.max if h2 == 24 else time(h2, m2)
    if end <= start:
        raise ValueError(f"{text!r} ends before it starts")
    return start, end


def _check_schedule(timezone: str, weekly: dict[str, list[str]] | None) -> None:
    try:
        iana_zone(timezone)
    except ValueError as exc:
        raise _err(str(exc), "timezone") from None
    for key, ranges in (weekly or {}).items():
        try:
            parse_days(key)
        except ValueError as exc:
            raise _err(str(exc), f"weekly.{key}") from None
        for i, text in enumerate(ranges):
            try:
                parse_time_range(text)
            except ValueError as exc:
                raise _err(str(exc), f"weekly.{key}.{i}") from None


class Schedule(_Model):
    """Opening hours in a timezone. No ``weekly`` = always open (except on holidays)."""

    timezone: str = Field("UTC", description="IANA timezone, e.g. Europe/Berlin")
    weekly: dict[str, list[str]] | None = Field(
        None, description='days → time ranges, e.g. {"mon-fri": ["09:00-17:00"], "sat": ["10:00-14:00"]}'
    )
    holidays: list[Annotated[date, Field(strict=False)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _valid(self) -> Schedule:
        _check_schedule(self.timezone, self.weekly)
        return self

    def is_open(self, when: datetime) -> bool:
        """Whether ``when`` (timezone-aware) falls in the opening hours."""
        local = when.astimezone(zoneinfo.ZoneInfo(self.timezone))
        if local.date() in self.holidays:
            return False
        if self.weekly is None:
            return True
        now = local.time()
        for key, ranges in self.weekly.items():
            if local.weekday() in parse_days(key):
                for text in ranges:
                    start, end = parse_time_range(text)
                    if start <= now <= end:
                        return True
        return False


class HoursNode(_Node):
    """Branch on business hours: a named schedule (from config) or one given inline."""

    type: Literal["hours"] = "hours"
    schedule: str | None = Field(None, description="name of a schedule in the configuration")
    timezone: str | None = None
    weekly: dict[str, list[str]] | None = None
    holidays: list[Annotated[date, Field(strict=False)]] | None = None
    open: Target
    closed: Target
    _targets: ClassVar[tuple[str, ...]] = ("open", "closed")

    @model_validator(mode="after")
    def _valid(self) -> HoursNode:
        inline = [n for n in ("timezone", "weekly", "holidays") if getattr(self, n) is not None]
        if self.schedule is not None and inline:
            raise _err(f"give schedule or {inline[0]}, not both", inline[0])
        if self.schedule is None:
            _check_schedule(self.timezone or "UTC", self.weekly)
        return self

    def inline_schedule(self) -> Schedule:
        fields: dict[str, Any] = {"timezone": self.timezone or "UTC", "weekly": self.weekly}
        if self.holidays is not None:
            fields["holidays"] = self.holidays
        return Schedule.model_validate(fields)


class LanguageNode(_Node):
    """Switch the call's language (TTS and speech recognition) and optionally its voice."""

    type: Literal["language"] = "language"
    language: str = Field(min_length=2, description="e.g. en-US, zh-CN")
    voice: str | None = None
    next: Target | None = None


class KbAnswerNode(_Node):
    """Look the question up in the knowledge base, read the answer, ask whether it helped."""

    type: Literal["kb_answer"] = "kb_answer"
    question: TemplateStr | None = Field(
        None, description="the question (e.g. ${last_utterance}); asked if empty"
    )
    ask: SpeechField = Field(description="asks the caller for the question")
    not_found: SpeechField | None = None
    helped: ConfirmSpec | None = Field(None, description="asks whether the answer helped")
    timeout_s: Seconds = 8.0
    retries: Retries = 1
    no_input: SpeechField | None = None
    next: Target | None = Field(None, description="after a helpful answer")
    on_unresolved: Target | None = Field(None, description="no answer, or it did not help")
    _targets: ClassVar[tuple[str, ...]] = ("next", "on_unresolved")

    def waits_for_input(self) -> bool:
        return self.question is None


TicketPriority = Literal["low", "normal", "high", "urgent"]


class TicketNode(_Node):
    """Create a ticket (with the call's transcript), or update one."""

    type: Literal["ticket"] = "ticket"
    action: Literal["create", "update"] = "create"
    ticket: TemplateStr = Field("${ticket_id}", description="update: the ticket id")
    subject: TemplateStr | None = None
    body: TemplateStr | None = None
    priority: TicketPriority = "normal"
    tags: list[str] = Field(default_factory=list)
    include_transcript: bool = True
    into: VarName = "ticket_id"
    next: Target | None = None
    on_error: Target | None = None
    _targets: ClassVar[tuple[str, ...]] = ("next", "on_error")

    @model_validator(mode="after")
    def _subject(self) -> TicketNode:
        if self.action == "create" and self.subject is None:
            raise _err("missing required key 'subject' (needed to create a ticket)")
        return self


class PriorityRule(_Model):
    when: Condition
    priority: int = Field(ge=0, le=100)


class QueueCallback(_Model):
    """The caller may leave a number and hang up, keeping their place: ``key`` (announced with the
    position prompts) once they have waited ``after_s``."""

    key: DtmfKey = "5"
    after_s: Annotated[float, Field(ge=0, le=3600)] = 0.0


def _skills(value: Any) -> Any:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return {v: 1 for v in value}
    return value


class QueueNode(_Node):
    """Wait for an agent with the queue's (and these) skills; hold music and announcements meanwhile."""

    type: Literal["queue"] = "queue"
    queue: str = Field(min_length=1)
    skills: Annotated[
        dict[str, Annotated[int, Field(ge=1, le=5)]],
        BeforeValidator(_skills, json_schema_input_type=list[str] | dict[str, int]),
    ] = Field(default_factory=dict, description="skill → minimum level 1-5")
    priority: int = Field(0, ge=0, le=100)
    priority_rules: list[PriorityRule] = Field(
        default_factory=list, description="the first rule that holds sets the priority"
    )
    hold_music: str | None = Field(None, description="audio file, relative to the flow file's folder")
    announce: SpeechField | None = None
    announce_every_s: Seconds = 30.0
    announce_position: bool = False
    max_wait_s: Seconds | None = None
    callback: QueueCallback | None = Field(
        None, description="offer a callback that keeps the caller's place (key, after_s)"
    )
    record: bool = Field(
        False,
        description="record the call (both voices) from the moment an agent answers; calls.record "
        "records every call from the start anyway",
    )
    next: Target | None = Field(None, description="after the agent hangs up, if the caller is still there")
    on_overflow: Target | None = Field(None, description="no agent within max_wait_s, or the queue is closed")
    _targets: ClassVar[tuple[str, ...]] = ("next", "on_overflow")


# The forms the API's transfers take too: number:+49 30 1234 (spaces and dashes for readability).
_TRANSFER_RE = re.compile(r"(sips?:\S+|tel:\+?[0-9*#-]+|number:\+?[0-9*# -]+|agent:\S+|\+?[0-9*#]+)")


class TransferNode(_Node):
    """Transfer the call to a SIP URI, a number or an agent (``agent:NAME``); the flow ends if answered."""

    type: Literal["transfer"] = "transfer"
    to: TemplateStr = Field(description="sip:user@host, +15551234567, 100, or agent:alice")
    announce: SpeechField | None = None
    timeout_s: Seconds = 30.0
    caller_id: TemplateStr | None = None
    on_failure: Target | None = None
    _targets: ClassVar[tuple[str, ...]] = ("on_failure",)

    @model_validator(mode="after")
    def _target(self) -> TransferNode:
        if "${" not in self.to and not _TRANSFER_RE.fullmatch(self.to):
            expected = "sip:URI, a number (+4930..., number:..., tel:...) or agent:NAME"
            raise _err(f"expected {expected}, got {self.to!r}", "to")
        return self


class VoicemailNode(_Node):
    """Record a message; by default it becomes a ticket with the recording attached."""

    type: Literal["voicemail"] = "voicemail"
    prompt: SpeechField | None = None
    beep: bool = True
    max_s: Annotated[float, Field(gt=0, le=600)] = 120.0
    max_silence_s: Seconds = 5.0
    terminator: DtmfKey | None = "#"
    ticket: bool = Field(True, description="create a ticket with the recording")
    subject: TemplateStr = "Voicemail from ${caller}"
    priority: TicketPriority = "normal"
    into: VarName = Field("voicemail_file", description="variable that receives the recording's file")
    next: Target | None = None
    on_empty: Target | None = Field(None, description="when nothing was recorded")
    _targets: ClassVar[tuple[str, ...]] = ("next", "on_empty")

    def waits_for_input(self) -> bool:
        return True


class SurveyNode(_Node):
    """A CSAT question: the caller presses or says 1 to ``scale``."""

    type: Literal["survey"] = "survey"
    prompt: SpeechField
    scale: int = Field(5, ge=2, le=9)
    into: VarName = "csat"
    timeout_s: Seconds = 6.0
    retries: Retries = 1
    no_input: SpeechField | None = None
    invalid: SpeechField | None = None
    thanks: SpeechField | None = None
    next: Target | None = None

    def waits_for_input(self) -> bool:
        return True


class GotoNode(_Node):
    type: Literal["goto"] = "goto"
    next: Target


class SubflowNode(_Node):
    """Run another flow (by id) from its start; come back to ``next`` when it ends."""

    type: Literal["subflow"] = "subflow"
    flow: FlowId
    vars: dict[VarName, Scalar] = Field(default_factory=dict, description="set before entering")
    next: Target | None = None

    def waits_for_input(self) -> bool:
        return True  # not known here; the step limit guards against runaway subflows at run time


class HangupNode(_Node):
    type: Literal["hangup"] = "hangup"
    prompt: SpeechField | None = Field(None, description="said before hanging up")
    reason: str = "ivr_hangup"
    _targets: ClassVar[tuple[str, ...]] = ()


Node = Annotated[
    Union[  # noqa: UP007 - a discriminated union needs the Union form for the Annotated discriminator
        SayNode,
        PlayNode,
        MenuNode,
        CollectNode,
        IntentNode,
        BranchNode,
        SetNode,
        HttpNode,
        HoursNode,
        LanguageNode,
        KbAnswerNode,
        TicketNode,
        QueueNode,
        TransferNode,
        VoicemailNode,
        SurveyNode,
        GotoNode,
        SubflowNode,
        HangupNode,
    ],
    Field(discriminator="type"),
]

NODE_TYPES: dict[str, type[_Node]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        SayNode, PlayNode, MenuNode, CollectNode, IntentNode, BranchNode, SetNode, HttpNode, HoursNode,
        LanguageNode, KbAnswerNode, TicketNode, QueueNode, TransferNode, VoicemailNode, SurveyNode,
        GotoNode, SubflowNode, HangupNode,
    )
}  # fmt: skip


class Flow(_Model):
    """One IVR flow: a language, a start node and the nodes."""

    id: FlowId
    language: str = Field("en-US", min_length=2, description="the call's language while in this flow")
    voice: str | None = Field(None, description="TTS voice (default: the speech engine's for the language)")
    description: str | None = None
    start: Target
    vars: dict[VarName, Scalar] = Field(default_factory=dict, description="variables' initial values")
    prompts: dict[PromptId, PromptFileField] = Field(
        default_factory=dict, description="prompt id → recorded file (played instead of TTS)"
    )
    nodes: dict[NodeId, Node] = Field(min_length=1)
    _source: str | None = PrivateAttr(None)

    @property
    def source(self) -> str | None:
        """The file this flow was loaded from (recording paths are relative to its folder)."""
        return self._source

    def with_source(self, source: str | None) -> Flow:
        self._source = source
        return self

    def to_data(self) -> dict[str, Any]:
        """Plain data for YAML/JSON without default values (each node keeps its ``type``, first)."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        data["nodes"] = {
            node_id: {"type": node.type, **data["nodes"][node_id]} for node_id, node in self.nodes.items()
        }
        return data


def flow_json_schema() -> dict[str, Any]:
    """JSON Schema of a flow file (for editors: yaml-language-server, VS Code)."""
    schema = Flow.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "callcenter IVR flow"
    schema["patternProperties"] = {"^x-": {}}  # free top-level keys for YAML anchors
    return schema
