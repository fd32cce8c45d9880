"""What travels between nodes through Redis Streams, as plain dataclasses and their JSON encoding.

- ``cmd`` stream (every node → the leader): :class:`Command` — a caller enqueued or gone, an agent
  defined or changing presence, an offer answered or failed, a bridged call ended.
- ``node:<id>`` stream (the leader → the node holding the caller): :class:`Notice` — an offer to ring
  these agents, an overflow, a new caller's place in line, or the end of an agent's wrap-up after a
  call that node held (its record gets ``wrap_up_s``). Each carries the leader's fencing token; a
  node ignores a notice from a token lower than one it has already seen (a deposed leader's last
  words).

Times in messages are wall-clock seconds (``time.time()``): monotonic clocks of different machines
have nothing in common. Each side converts at its edge (see :func:`to_wall` / :func:`to_mono`).

Sans-I/O: no Redis here, only ``encode`` / ``decode`` of one entry's fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from callcenter.routing.queues import Escalation, QueueConfig

__all__ = [
    "Command",
    "MessageError",
    "Notice",
    "decode_command",
    "decode_notice",
    "encode",
    "queue_from_json",
    "queue_to_json",
    "to_mono",
    "to_wall",
]

CommandOp = Literal[
    "enqueue",  # a caller joins (queue, priority, skills, language, max_wait_s, callback)
    "leave",  # the caller left (reason)
    "define",  # agent definition (skills, languages, max_chats)
    "remove",  # agent deleted
    "presence",  # agent event: login, logout, set_available, set_not_ready, set_offline, wrap_up_done
    "answered",  # agent answered the offer of call_id
    "failed",  # agent's leg failed (missed)
    "ended",  # the agent's bridged call ended
    "own_started",  # the agent placed a call of their own (call_id)
    "own_ended",
    "hold",  # caller out of offers meanwhile (asked for a callback number); a live offer ends
    "resume",  # back to being offered, same place
    "to_callback",  # the caller left a number: keeps its place
    "queue",  # a queue made or changed in the admin console (args: queue_to_json)
    "queue_removed",  # args: name
    "hello",  # a node (re)started: whatever its previous run held is gone
    "callback_connecting",  # the agent answered a callback offer; the customer is dialled
    "callback_answered",
    "callback_failed",  # args: retry_in_s (None: given up)
    # chats (cluster/chats.py; call_id = the conversation id), from the node holding the conversation:
    "chat_enqueue",  # args: queue, priority, skills, language, front, since_wall
    "chat_leave",
    "chat_assign",  # args: agent, queue (a transfer to an agent; a node taking over a held chat)
    "chat_release",
    "chat_hand_back",
    "chat_take_back",  # agent: every chat of theirs back to the head of its queue (inbox closed)
]
# wrap_up: agents[0]'s ended, after seconds. place: a caller just joined, its place in line (position,
# wait_s: estimated wait or None), so its first announcement can say it.
# chat_assign: conversation call_id to agents[0] (queue, seconds waited); chat_requeued: taken back
# from agents[0] (reason offline / away); chat_full: the chat_enqueue into queue was refused, the queue's
# max_length being reached over every node (the flow goes on_overflow) — cluster/chats.py.
NoticeOp = Literal[
    "offer", "overflow", "gone", "wrap_up", "place", "chat_assign", "chat_requeued", "chat_full"
]


class MessageError(ValueError):
    """An entry that is not a message of ours (skipped and logged by the reader)."""


@dataclass(frozen=True)
class Command:
    op: CommandOp
    node: str  # the sender
    call_id: str | None = None
    agent: str | None = None
    at: float = 0.0  # wall-clock time of the change at the sender
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Notice:
    op: NoticeOp
    call_id: str
    token: int  # the leader's fencing token
    queue: str = ""
    agents: tuple[str, ...] = ()
    timeout_s: float = 0.0
    callback: bool = False
    target: str | None = None  # overflow target
    reason: str | None = None  # overflow reason (max_wait, full, no_agents) / why gone
    seconds: float = 0.0  # wrap_up: how long the agent's wrap-up after the call lasted
    position: int = 0  # place: 1-based place in line
    wait_s: float | None = None  # place: estimated wait (None: not known yet)


_COMMAND_OPS = frozenset(CommandOp.__args__)  # type: ignore[attr-defined]
_NOTICE_OPS = frozenset(NoticeOp.__args__)  # type: ignore[attr-defined]


def encode(message: Command | Notice) -> dict[str, str]:
    """The fields of one stream entry."""
    return {"m": json.dumps(asdict(message), separators=(",", ":"), ensure_ascii=False)}


def _load(fields: dict[Any, Any]) -> dict[str, Any]:
    raw = fields.get("m", fields.get(b"m"))
    if isinstance(raw, bytes):
        raw = raw.decode()
    if not isinstance(raw, str):
        raise MessageError("no 'm' field")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise MessageError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MessageError("not an object")
    return data


def decode_command(fields: dict[Any, Any]) -> Command:
    data = _load(fields)
    if data.get("op") not in _COMMAND_OPS or not isinstance(data.get("node"), str):
        raise MessageError(f"not a command: {data.get('op')!r}")
    args = data.get("args") or {}
    if not isinstance(args, dict):
        raise MessageError("args is not an object")
    return Command(
        data["op"],
        data["node"],
        _opt_str(data.get("call_id")),
        _opt_str(data.get("agent")),
        float(data.get("at") or 0.0),
        args,
    )


def decode_notice(fields: dict[Any, Any]) -> Notice:
    data = _load(fields)
    if data.get("op") not in _NOTICE_OPS or not isinstance(data.get("call_id"), str):
        raise MessageError(f"not a notice: {data.get('op')!r}")
    return Notice(
        data["op"],
        data["call_id"],
        int(data.get("token") or 0),
        str(data.get("queue") or ""),
        tuple(str(a) for a in data.get("agents") or ()),
        float(data.get("timeout_s") or 0.0),
        bool(data.get("callback")),
        _opt_str(data.get("target")),
        _opt_str(data.get("reason")),
        float(data.get("seconds") or 0.0),
        int(data.get("position") or 0),
        None if data.get("wait_s") is None else float(data["wait_s"]),
    )


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def queue_to_json(q: QueueConfig) -> dict[str, Any]:
    data = asdict(q)
    data["skills"] = dict(q.skills)
    data["escalations"] = [{"after_s": e.after_s, "skills": dict(e.skills)} for e in q.escalations]
    return data


def queue_from_json(data: Mapping[str, Any]) -> QueueConfig:
    fields = dict(data)
    fields["escalations"] = tuple(
        Escalation(float(e["after_s"]), dict(e["skills"])) for e in data.get("escalations") or ()
    )
    fields["skills"] = dict(data.get("skills") or {})
    return QueueConfig(**fields)


def to_wall(mono: float, now_mono: float, now_wall: float) -> float:
    """A monotonic instant of this process as wall-clock seconds."""
    return now_wall - (now_mono - mono)


def to_mono(wall: float, now_mono: float, now_wall: float) -> float:
    """A wall-clock instant (from another node) on this process's monotonic clock."""
    return now_mono - (now_wall - wall)
