"""Synchronous repository used by the CLI and, from a worker thread, by the server."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, select

from callcenter.core.errors import CallcenterError
from callcenter.sip.auth import compute_ha1  # a pure function: no I/O, no sockets
from callcenter.store.db import make_engine
from callcenter.store.models import Agent, CallRecord

if TYPE_CHECKING:
    from callcenter.core.config import Settings

__all__ = [
    "AgentExistsError",
    "InvalidAgentError",
    "SKILL_LEVELS",
    "Store",
    "StoreError",
    "compute_ha1",
    "validate_display_name",
    "validate_languages",
    "validate_max_chats",
    "validate_skills",
]

SKILL_LEVELS = range(1, 6)

# RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved ); escapes are not accepted here.
_USERNAME = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/]{1,64}")
_SKILL = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# BCP 47 language[-subtags], compared lower-cased (the same shape speech.engines accepts).
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{2,8})*")


class StoreError(CallcenterError):
    """A storage operation failed or was refused."""


class AgentExistsError(StoreError):
    """An agent with that username already exists."""


class InvalidAgentError(StoreError, ValueError):
    """The agent's username, password, realm or skills are not acceptable."""



def validate_skills(skills: Mapping[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, level in skills.items():
        if not isinstance(name, str) or not _SKILL.fullmatch(name):
            raise InvalidAgentError(f"skill name {name!r}: expected letters, digits, '_', '.' or '-'")
        if isinstance(level, bool) or not isinstance(level, int) or level not in SKILL_LEVELS:
            raise InvalidAgentError(f"skill {name}: expected a level 1-5, got {level!r}")
        out[name] = level
    return out


def validate_languages(languages: Iterable[str]) -> list[str]:
    """Language tags as stored: lower-cased, each once, in the order given (``en``, ``zh-cn``)."""
    out: list[str] = []
    for tag in languages:
        norm = tag.strip().lower() if isinstance(tag, str) else ""
        if not _LANGUAGE.fullmatch(norm):
            raise InvalidAgentError(f"language {tag!r}: expected a language tag such as en, zh-CN or ko")
        if norm not in out:
            out.append(norm)
    return out


def validate_max_chats(value: int | None) -> int | None:
    """Concurrent chats: a whole number >= 0 (0: no chats), or None for the config's default."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidAgentError(f"max_chats: expected a whole number >= 0, got {value!r}")
    return value


def validate_display_name(value: str | None) -> str | None:
    """Trimmed, at most 128 characters, no control characters; empty means none."""
    if value is None:
        return None
    text = value.strip() if isinstance(value, str) else None
    if text is None or len(text) > 128 or any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise InvalidAgentError("display_name: expected up to 128 printable characters")
    return text or None


class Store:
    """Agents and call records in one SQL database (SQLite by default)."""

    def __init__(self, database_url: str, *, echo: bool = False) -> None:
        self.database_url = database_url
        self.engine = make_engine(database_url, echo=echo)

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        """The store for ``settings`` (creates ``data_dir``), migrated to the newest schema."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = cls(settings.db_url)
        store.migrate()
        return store

    def migrate(self) -> None:
        """Bring the database to the newest schema (Alembic ``upgrade head``); blocking, so the server
        calls it from a worker thread. A database made by ``create_all`` keeps its rows."""
        from callcenter.store.migrate import upgrade  # Alembic only where the schema is touched

        upgrade(self.engine)

    def create_all(self) -> None:
        """Create the tables straight from the models, without migrations (quick test set-ups only;
        the server and the CLI use :meth:`migrate`)."""
        SQLModel.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # -- agents --------------------------------------------------------------------------------------

    def add_agent(
        self,
        username: str,
        password: str,
        realm: str,
        skills: Mapping[str, int] | None = None,
        languages: Iterable[str] = (),
        *,
        max_chats: int | None = None,
        display_name: str | None = None,
    ) -> Agent:
        """Create an agent; keeps HA1 hashes (MD5 and SHA-256) of the password, never the password.
        ``max_chats`` None follows the config's ``routing.default_max_chats``."""
        if not _USERNAME.fullmatch(username):
            raise InvalidAgentError(
                f"username {username!r}: expected 1-64 characters of letters, digits and -_.!~*'()&=+$,;?/"
            )
        if not password:
            raise InvalidAgentError("password: expected a non-empty password")
        if not realm:
            raise InvalidAgentError("realm: expected a non-empty realm")
        agent = Agent(
            username=username,
            realm=realm,
            ha1_md5=compute_ha1(username, realm, password, "MD5"),
            ha1_sha256=compute_ha1(username, realm, password, "SHA-256"),
            skills=validate_skills(skills or {}),
            languages=validate_languages(languages),
            max_chats=validate_max_chats(max_chats),
            display_name=validate_display_name(display_name),
        )
        with self._session() as session:
            if session.exec(select(Agent.id).where(Agent.username == username)).first() is not None:
                raise AgentExistsError(f"agent {username!r} already exists")
            session.add(agent)
            try:
                session.commit()
            except IntegrityError:  # lost a race with another writer
                raise AgentExistsError(f"agent {username!r} already exists") from None
            return agent

    def get_agent(self, username: str) -> Agent | None:
        with self._session() as session:
            return session.exec(select(Agent).where(Agent.username == username)).first()

    def list_agents(self) -> list[Agent]:
        with self._session() as session:
            return list(session.exec(select(Agent).order_by(col(Agent.username))))

    def update_agent(
        self,
        username: str,
        *,
        password: str | None = None,
        skills: Mapping[str, int] | None = None,
        languages: Iterable[str] | None = None,
        max_chats: int | None = None,
        display_name: str | None = None,
    ) -> Agent | None:
        """Change the given fields (None: unchanged; display_name "" clears it); a new password is
        hashed with the agent's own realm. None when there is no such agent."""
        changes: dict[str, object] = {}
        if password is not None and not password:
            raise InvalidAgentError("password: expected a non-empty password")
        if skills is not None:
            changes["skills"] = validate_skills(skills)
        if languages is not None:
            changes["languages"] = validate_languages(languages)
        if max_chats is not None:
            changes["max_chats"] = validate_max_chats(max_chats)
        if display_name is not None:
            changes["display_name"] = validate_display_name(display_name)
        with self._session() as session:
            agent = session.exec(select(Agent).where(Agent.username == username)).first()
            if agent is None:
                return None
            if password:
                changes["ha1_md5"] = compute_ha1(username, agent.realm, password, "MD5")
                changes["ha1_sha256"] = compute_ha1(username, agent.realm, password, "SHA-256")
            for key, value in changes.items():
                setattr(agent, key, value)
            session.add(agent)
            session.commit()
            session.refresh(agent)
            return agent

    def remove_agent(self, username: str) -> bool:
        """Delete the agent; False when there was none."""
        with self._session() as session:
            agent = session.exec(select(Agent).where(Agent.username == username)).first()
            if agent is None:
                return False
            session.delete(agent)
            session.commit()
            return True

    def get_agent_credentials(self, username: str) -> tuple[str, str] | None:
        """``(ha1_md5, ha1_sha256)`` for the registrar, or None for an unknown user.

        The hashes were computed with the agent's ``realm`` (the ``sip.realm`` in force when it was added).
        """
        with self._session() as session:
            row = session.exec(
                select(Agent.ha1_md5, Agent.ha1_sha256).where(Agent.username == username)
            ).first()
            return (row[0], row[1]) if row is not None else None

    # -- calls ---------------------------------------------------------------------------------------

    def list_calls(self, limit: int = 50) -> list[CallRecord]:
        """Latest first."""
        with self._session() as session:
            query = (
                select(CallRecord)
                .order_by(col(CallRecord.started_at).desc(), col(CallRecord.id).desc())
                .limit(limit)
            )
            return list(session.exec(query))

    def get_call(self, sip_call_id: str) -> CallRecord | None:
        """The latest record with that Call-ID."""
        with self._session() as session:
            query = (
                select(CallRecord)
                .where(CallRecord.sip_call_id == sip_call_id)
                .order_by(col(CallRecord.id).desc())
            )
            return session.exec(query).first()

    # -- health --------------------------------------------------------------------------------------

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # any failure means "down" to a health check
            return False
