"""Tables: users with a role, their sessions and API tokens (hashes only), and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import JSON
from sqlmodel import Field, SQLModel

from callcenter.store.db import UTCDateTime, utcnow

__all__ = ["ROLES", "AuditEntry", "AuthSession", "Role", "User"]

Role = Literal["admin", "supervisor", "agent"]
ROLES: tuple[Role, ...] = ("admin", "supervisor", "agent")


class User(SQLModel, table=True):
    __tablename__ = "app_user"  # "user" is reserved in PostgreSQL

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(unique=True, index=True, max_length=64)
    role: str = Field(max_length=16, description="admin, supervisor or agent")
    password_hash: str = Field(max_length=255, description="Argon2id, PHC string format")
    agent: str | None = Field(default=None, max_length=64, description="the SIP agent this user works as")
    display_name: str | None = Field(default=None, max_length=128)
    must_change_password: bool = Field(default=False)
    disabled: bool = Field(default=False)
    failed_logins: int = Field(default=0, description="consecutive failures since the last success")
    locked_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_login_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AuthSession(SQLModel, table=True):
    """A browser session (cookie) or an API token (bearer); only the SHA-256 of the secret is kept."""

    __tablename__ = "auth_session"

    id: int | None = Field(default=None, primary_key=True)
    token_sha256: str = Field(unique=True, index=True, max_length=64)
    user_id: int = Field(foreign_key="app_user.id", index=True, ondelete="CASCADE")
    kind: str = Field(max_length=8, description="cookie or api")
    name: str | None = Field(default=None, max_length=64, description="an API token's label")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_seen_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AuditEntry(SQLModel, table=True):
    """One admin action: who, what, on what, when, from where, with details (never secrets)."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    actor: str = Field(max_length=64, description="username, or 'cli' / 'admin-token'")
    action: str = Field(max_length=64, index=True)
    target: str | None = Field(default=None, max_length=255)
    source: str | None = Field(default=None, max_length=64, description="client address")
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
