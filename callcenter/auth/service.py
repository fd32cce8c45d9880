"""Users, logins with lockout, sessions and API tokens, and the audit log — synchronous on an Engine.

The server calls these from worker threads (Argon2 costs ~0.3 s of CPU; SQL is I/O); the CLI calls
them directly. Time comes from ``now`` (aware UTC datetimes) so lockout and expiry are testable.

Secrets: a session or API token is 32 random bytes (URL-safe base64) handed to the client once; the
database keeps its SHA-256 only (a leaked database gives no usable token; a fast hash is enough for a
256-bit random secret, unlike for passwords).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from callcenter.auth.models import ROLES, AuditEntry, AuthSession, User
from callcenter.auth.passwords import (
    MIN_PASSWORD_LENGTH,
    hash_password,
    needs_rehash,
    one_time_password,
    verify_password,
)
from callcenter.core.errors import CallcenterError

__all__ = [
    "AccountLocked",
    "AuthError",
    "InvalidCredentials",
    "Principal",
    "UserExists",
    "UserNotFound",
    "UserService",
]

_USERNAME = re.compile(r"[A-Za-z0-9_.@\-]{1,64}")
_SEEN_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often per session


class AuthError(CallcenterError):
    """A user operation was refused (the message says why, without secrets)."""


class InvalidCredentials(AuthError):
    """Unknown user, wrong password or disabled account (deliberately not told apart)."""


class AccountLocked(AuthError):
    """Locked until ``until``; ``started``: this failed attempt is the one that locked the account."""

    def __init__(self, until: datetime, *, started: bool = False) -> None:
        super().__init__(f"too many failed logins: locked until {until.isoformat(timespec='seconds')}")
        self.until = until
        self.started = started


class UserExists(AuthError):
    pass


class UserNotFound(AuthError):
    pass


@dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    username: str
    role: str
    agent: str | None = None
    via: str = "cookie"  # cookie, api, admin-token, cli
    must_change_password: bool = False
    user_id: int | None = None


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def public_user(user: User) -> dict[str, Any]:
    """JSON-ready view of a user (no hash)."""
    locked = _aware(user.locked_until)
    return {
        "username": user.username,
        "role": user.role,
        "agent": user.agent,
        "display_name": user.display_name,
        "disabled": user.disabled,
        "must_change_password": user.must_change_password,
        "locked_until": locked.isoformat() if locked is not None else None,
        "last_login_at": user.last_login_at.isoformat() if user.last_login_at else None,
        "created_at": user.created_at.isoformat(),
    }


class UserService:
    def __init__(
        self,
        engine: Engine,
        *,
        now: Callable[[], datetime] = _utc_now,
        max_failed_logins: int = 5,
        lockout: timedelta = timedelta(minutes=15),
        session_idle: timedelta = timedelta(hours=8),
        session_max: timedelta = timedelta(hours=24),
    ) -> None:
        self.engine = engine
        self.now = now
        self.max_failed_logins = max_failed_logins
        self.lockout = lockout
        self.session_idle = session_idle
        self.session_max = session_max

    # -- users --------------------------------------------------------------------------------------

    def add_user(
        self,
        username: str,
        role: str,
        password: str | None = None,
        *,
        agent: str | None = None,
        display_name: str | None = None,
    ) -> tuple[User, str | None]:
        """Create a user; without ``password`` a one-time password is generated and returned (the user
        must change it at first login)."""
        if not _USERNAME.fullmatch(username):
            raise AuthError(f"username {username!r}: 1-64 letters, digits, '_', '.', '@' or '-'")
        if role not in ROLES:
            raise AuthError(f"role {role!r}: expected one of {', '.join(ROLES)}")
        generated = None
        if password is None:
            password = generated = one_time_password()
        self._check_password(password)
        user = User(
            username=username,
            role=role,
            password_hash=hash_password(password),
            agent=agent if agent is not None else (username if role == "agent" else None),
            display_name=display_name,
            must_change_password=generated is not None,
        )
        with Session(self.engine, expire_on_commit=False) as s:
            s.add(user)
            try:
                s.commit()
            except IntegrityError:
                raise UserExists(f"user {username!r} already exists") from None
        return user, generated

    def ensure_first_admin(self) -> str | None:
        """On a database without users: create ``admin`` with a one-time password and return it (to be
        printed once); None when users exist."""
        with Session(self.engine) as s:
            if s.exec(select(func.count()).select_from(User)).one() > 0:
                return None
        try:
            _, password = self.add_user("admin", "admin")
        except UserExists:  # another process won the race
            return None
        return password

    def get_user(self, username: str) -> User | None:
        with Session(self.engine, expire_on_commit=False) as s:
            return s.exec(select(User).where(User.username == username)).first()

    def list_users(self) -> list[User]:
        with Session(self.engine, expire_on_commit=False) as s:
            return list(s.exec(select(User).order_by(col(User.username))))

    def remove_user(self, username: str) -> None:
        with Session(self.engine) as s:
            user = self._user(s, username)
            s.exec(delete(AuthSession).where(col(AuthSession.user_id) == user.id))
            s.delete(user)
            s.commit()

    def update_user(
        self,
        username: str,
        *,
        role: str | None = None,
        disabled: bool | None = None,
        agent: str | None = None,
        display_name: str | None = None,
    ) -> User:
        if role is not None and role not in ROLES:
            raise AuthError(f"role {role!r}: expected one of {', '.join(ROLES)}")
        with Session(self.engine, expire_on_commit=False) as s:
            user = self._user(s, username)
            if role is not None:
                user.role = role
            if disabled is not None:
                user.disabled = disabled
            if agent is not None:
                user.agent = agent or None
            if display_name is not None:
                user.display_name = display_name or None
            s.add(user)
            if disabled or role is not None:  # a changed role or a disabled account: log in again
                s.exec(delete(AuthSession).where(col(AuthSession.user_id) == user.id))
            s.commit()
            return user

    def set_password(self, username: str, password: str, *, must_change: bool = False) -> None:
        """Set a new password; every session and API token of the user ends."""
        self._check_password(password)
        digest = hash_password(password)
        with Session(self.engine) as s:
            user = self._user(s, username)
            user.password_hash = digest
            user.must_change_password = must_change
            user.failed_logins = 0
            user.locked_until = None
            s.add(user)
            s.exec(delete(AuthSession).where(col(AuthSession.user_id) == user.id))
            s.commit()

    def unlock(self, username: str) -> None:
        with Session(self.engine) as s:
            user = self._user(s, username)
            user.failed_logins = 0
            user.locked_until = None
            s.add(user)
            s.commit()

    # -- login and tokens ---------------------------------------------------------------------------

    def login(self, username: str, password: str) -> tuple[Principal, str]:
        """Check the password and open a browser session: (principal, session token). Raises
        InvalidCredentials or AccountLocked. A lockout starts after ``max_failed_logins`` failures in a
        row and lasts ``lockout``; during it even the right password is refused."""
        now = self.now()
        user = self.get_user(username)
        ok = verify_password(user.password_hash if user is not None else None, password)
        if user is None or user.disabled:
            raise InvalidCredentials("wrong username or password")
        locked = _aware(user.locked_until)
        if locked is not None and locked > now:
            raise AccountLocked(locked)
        with Session(self.engine, expire_on_commit=False) as s:
            row = self._user(s, username)
            if not ok:
                row.failed_logins += 1
                locks = row.failed_logins >= self.max_failed_logins
                if locks:
                    row.locked_until = now + self.lockout
                    row.failed_logins = 0
                s.add(row)
                s.commit()
                if locks:
                    raise AccountLocked(now + self.lockout, started=True)
                raise InvalidCredentials("wrong username or password")
            row.failed_logins = 0
            row.locked_until = None
            row.last_login_at = now
            if needs_rehash(row.password_hash):
                row.password_hash = hash_password(password)
            s.add(row)
            token = self._open_session(s, row, "cookie", None, now + self.session_max)
            s.commit()
            return self._principal(row, "cookie"), token

    def create_api_token(self, username: str, name: str, *, ttl: timedelta | None = None) -> str:
        """A bearer token for scripts (no idle expiry; ``ttl`` None = until revoked)."""
        now = self.now()
        with Session(self.engine) as s:
            user = self._user(s, username)
            token = self._open_session(s, user, "api", name[:64], now + ttl if ttl else None)
            s.commit()
            return token

    def authenticate(self, token: str, kind: str | None = None) -> Principal | None:
        """The principal for a session cookie or API token, or None (unknown, expired, idle too long,
        disabled user). ``kind`` restricts where it may come from (cookie or api)."""
        if not token or len(token) > 256:
            return None
        now = self.now()
        with Session(self.engine) as s:
            row = s.exec(select(AuthSession).where(AuthSession.token_sha256 == _sha256(token))).first()
            if row is None or (kind is not None and row.kind != kind):
                return None
            expires, seen = _aware(row.expires_at), _aware(row.last_seen_at)
            idle = row.kind == "cookie" and seen is not None and seen + self.session_idle <= now
            if (expires is not None and expires <= now) or idle:
                s.delete(row)
                s.commit()
                return None
            user = s.get(User, row.user_id)
            if user is None or user.disabled:
                return None
            if seen is None or now - seen >= _SEEN_EVERY:
                row.last_seen_at = now
                s.add(row)
                s.commit()
            return self._principal(user, row.kind)

    def revoke(self, token: str) -> bool:
        with Session(self.engine) as s:
            row = s.exec(select(AuthSession).where(AuthSession.token_sha256 == _sha256(token))).first()
            if row is None:
                return False
            s.delete(row)
            s.commit()
            return True

    # -- audit ----------------------------------------------------------------------------------------

    def audit(
        self,
        actor: str,
        action: str,
        target: str | None = None,
        *,
        source: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        with Session(self.engine) as s:
            s.add(
                AuditEntry(
                    at=self.now(),
                    actor=actor[:64],
                    action=action[:64],
                    target=target[:255] if target else None,
                    source=source[:64] if source else None,
                    detail=dict(detail or {}),
                )
            )
            s.commit()

    def audit_log(self, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
        with Session(self.engine, expire_on_commit=False) as s:
            query = select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(max(1, min(limit, 1000)))
            if action is not None:
                query = query.where(AuditEntry.action == action)
            return list(s.exec(query))

    # -- helpers ----------------------------------------------------------------------------------------

    @staticmethod
    def _check_password(password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise AuthError(f"password: at least {MIN_PASSWORD_LENGTH} characters")
        if len(password) > 1024:
            raise AuthError("password: at most 1024 characters")

    @staticmethod
    def _user(s: Session, username: str) -> User:
        user = s.exec(select(User).where(User.username == username)).first()
        if user is None:
            raise UserNotFound(f"no user {username!r}")
        return user

    def _open_session(
        self, s: Session, user: User, kind: str, name: str | None, expires: datetime | None
    ) -> str:
        token = secrets.token_urlsafe(32)
        assert user.id is not None
        now = self.now()
        s.add(
            AuthSession(
                token_sha256=_sha256(token),
                user_id=user.id,
                kind=kind,
                name=name,
                created_at=now,
                last_seen_at=now,
                expires_at=expires,
            )
        )
        return token

    @staticmethod
    def _principal(user: User, via: str) -> Principal:
        return Principal(
            username=user.username,
            role=user.role,
            agent=user.agent,
            via=via,
            must_change_password=user.must_change_password,
            user_id=user.id,
        )
