"""Tables. Agents keep digest HA1 hashes only (RFC 7616 §3.4.2), never the password."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import JSON
from sqlmodel import Field, SQLModel

from callcenter.store.db import UTCDateTime, utcnow

__all__ = [
    "DEFAULT_MAX_CHATS", "Agent", "AgentPublic", "CallRecord", "HangupBy", "agent_public", "call_public",
]

HangupBy = Literal["caller", "server", "agent"]


class AgentPublic(SQLModel):
    """What may be shown of an agent (no hashes)."""

    username: str
    realm: str
    skills: dict[str, int] = Field(default_factory=dict)
    languages: list[str] = Field(default_factory=list)
    display_name: str | None = None
    max_chats: int = 3  # resolved: the agent's own, else routing.default_max_chats
    created_at: datetime


class Agent(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(unique=True, index=True, max_length=64, description="the agent's SIP username")
    realm: str = Field(max_length=128)
    ha1_md5: str = Field(max_length=32)
    ha1_sha256: str = Field(max_length=64)
    skills: dict[str, int] = Field(default_factory=dict, sa_type=JSON, description="skill name -> level 1-5")
    # Lower-cased BCP 47 tags the agent speaks ("en", "zh-cn"); empty: takes callers of any language.
    languages: list[str] = Field(default_factory=list, sa_type=JSON, description="language tags spoken")
    display_name: str | None = Field(default=None, max_length=128, description="shown to colleagues")
    # Concurrent chats (issue 9's chat routing); None: the config's routing.default_max_chats.
    max_chats: int | None = Field(default=None, description="concurrent chats, >= 0; null = config default")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CallRecord(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    sip_call_id: str = Field(index=True, max_length=255)
    from_uri: str
    to_uri: str
    started_at: datetime = Field(sa_type=UTCDateTime, index=True)
    answered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    hangup_by: str | None = Field(default=None, max_length=16, description="caller, server or agent")
    disposition: str | None = Field(default=None, max_length=64)
    # What the agent picked after the call (routing.wrap_up_codes) and their note: POST .../wrap-up
    wrap_up_code: str | None = Field(default=None, max_length=32, index=True)
    wrap_up_note: str | None = Field(default=None, max_length=2000)
    extra: dict[str, Any] = Field(default_factory=dict, sa_type=JSON, description="fields added later")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


DEFAULT_MAX_CHATS = 3  # routing.default_max_chats when no settings are at hand


def agent_public(agent: Agent, default_max_chats: int = DEFAULT_MAX_CHATS) -> dict[str, Any]:
    """JSON-ready view of an agent, without hashes; ``max_chats`` resolved against the config's default."""
    return {
        "username": agent.username,
        "realm": agent.realm,
        "display_name": agent.display_name,
        "skills": dict(agent.skills),
        "languages": list(agent.languages or []),
        "max_chats": agent.max_chats if agent.max_chats is not None else default_max_chats,
        "created_at": _iso(agent.created_at),
    }


def call_public(record: CallRecord) -> dict[str, Any]:
    """JSON-ready view of a call as ``calls list --json`` prints it (ISO 8601 times, UTC)."""
    out: dict[str, Any] = {
        "sip_call_id": record.sip_call_id,
        "from": record.from_uri,
        "to": record.to_uri,
        "started_at": _iso(record.started_at),
        "answered_at": _iso(record.answered_at),
        "ended_at": _iso(record.ended_at),
        "hangup_by": record.hangup_by,
        "disposition": record.disposition,
    }
    if record.wrap_up_code is not None:  # the agent's wrap-up code (and note), once chosen
        out["wrap_up_code"] = record.wrap_up_code
        out["wrap_up_note"] = record.wrap_up_note
    for key, value in (record.extra or {}).items():
        out.setdefault(key, value)
    return out
