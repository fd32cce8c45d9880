"""One handler per node type (as jambonz has one file per verb): ``HANDLERS[node.type](node, ctx)``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from callcenter.ivr.nodes import (
    branch,
    collect,
    goto,
    hangup,
    hours,
    http,
    intent,
    kb_answer,
    language,
    menu,
    play,
    queue,
    say,
    subflow,
    survey,
    ticket,
    transfer,
    voicemail,
)
from callcenter.ivr.nodes import set as set_
from callcenter.ivr.nodes.base import CallInfo, FlowStop, RunContext

__all__ = ["HANDLERS", "CallInfo", "FlowStop", "Handler", "RunContext"]

Handler = Callable[[Any, RunContext], Awaitable[str | None]]

HANDLERS: dict[str, Handler] = {
    "say": say.run,
    "play": play.run,
    "menu": menu.run,
    "collect": collect.run,
    "intent": intent.run,
    "branch": branch.run,
    "set": set_.run,
    "http": http.run,
    "hours": hours.run,
    "language": language.run,
    "kb_answer": kb_answer.run,
    "ticket": ticket.run,
    "queue": queue.run,
    "transfer": transfer.run,
    "voicemail": voicemail.run,
    "survey": survey.run,
    "goto": goto.run,
    "subflow": subflow.run,
    "hangup": hangup.run,
}
