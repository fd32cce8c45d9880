"""Who may call what: sessions (HttpOnly cookie for pages), bearer tokens (API), roles per route.

Every route states the roles it admits with ``Depends(access.require(...))``: no or bad credentials
→ 401 (with ``WWW-Authenticate: Bearer``), a valid user with another role → 403. A user who must
change a one-time password may only do that (403 elsewhere). ``http.admin_token``, when set, is a
static bearer token with the admin role for scripts (audited as ``admin-token``).

Cookie-authenticated writes must come from our own origin (an ``Origin`` header, when the browser
sends one, must name this host) on top of ``SameSite=Strict`` — defence in depth against CSRF.

Routes here: ``/api/auth/{login,logout,me,password,tokens}``, ``/api/users[...]`` and ``/api/audit``
(admin). Passwords are checked in worker threads (Argon2 ~0.3 s of CPU); FastAPI runs the sync
dependencies and handlers below in its thread pool.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from pydantic import BaseModel, Field

from callcenter.auth.service import (
    AccountLocked,
    AuthError,
    InvalidCredentials,
    Principal,
    UserExists,
    UserNotFound,
    UserService,
    public_user,
)
from callcenter.core.logging import log_event
from callcenter.core.ratelimit import KeyedBuckets

__all__ = ["ADMIN", "COOKIE", "STAFF", "SUPERVISORS", "Access"]

log = logging.getLogger("callcenter.api.access")

COOKIE = "cc_session"
ADMIN = ("admin",)
SUPERVISORS = ("admin", "supervisor")
STAFF = ("admin", "supervisor", "agent")
_SAFE = {"GET", "HEAD", "OPTIONS"}


class LoginBody(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class PasswordBody(BaseModel):
    current: str = Field(min_length=1, max_length=1024)
    new: str = Field(min_length=1, max_length=1024)


class TokenBody(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    ttl_days: int | None = Field(None, ge=1, le=3650)


class NewUserBody(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    role: Literal["admin", "supervisor", "agent"]
    password: str | None = Field(None, max_length=1024)
    agent: str | None = Field(None, max_length=64)
    display_name: str | None = Field(None, max_length=128)


class UserPatchBody(BaseModel):
    role: Literal["admin", "supervisor", "agent"] | None = None
    disabled: bool | None = None
    agent: str | None = Field(None, max_length=64)
    display_name: str | None = Field(None, max_length=128)


class ResetBody(BaseModel):
    password: str | None = Field(None, max_length=1024)


def _unauthorized(detail: str = "log in or send a bearer token") -> HTTPException:
    return HTTPException(401, detail, {"WWW-Authenticate": "Bearer"})


def _client(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


class Access:
    def __init__(
        self,
        users: UserService | None,
        *,
        admin_token: str | None = None,
        secure_cookies: bool = False,
        login_failures: int = 20,
        login_window_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.users = users
        self._admin_token = admin_token.encode("utf-8") if admin_token else None
        self.secure_cookies = secure_cookies
        # Failed logins per client address: beyond ``login_failures`` within about ``login_window_s``
        # every login from there gets 429 before any password is hashed — against password spraying
        # across many accounts (the per-account lockout stops guessing one account's password).
        self._login_failures = (
            KeyedBuckets(login_failures / login_window_s, login_failures) if login_failures > 0 else None
        )
        self._login_lock = threading.Lock()
        self._clock = clock

    # -- the dependency every route uses ---------------------------------------------------------------

    def require(self, *roles: str, allow_password_change: bool = False) -> Callable[..., Principal]:
        admitted = frozenset(roles)

        def dependency(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
            principal = self.identify(request, authorization)
            if principal is None:
                raise _unauthorized()
            if principal.must_change_password and not allow_password_change:
                raise HTTPException(403, "change your one-time password first (POST /api/auth/password)")
            if principal.role not in admitted:
                raise HTTPException(403, f"this needs the role {' or '.join(sorted(admitted))}")
            return principal

        return dependency

    def identify(self, request: Request, authorization: str | None) -> Principal | None:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            # compare_digest: the time taken does not reveal how much of the token matched
            if self._admin_token is not None and hmac.compare_digest(
                token.encode("utf-8"), self._admin_token
            ):
                return Principal("admin-token", "admin", via="admin-token")
            return self.users.authenticate(token) if self.users is not None else None
        if authorization:
            return None  # another scheme: not ours
        cookie = request.cookies.get(COOKIE)
        if cookie is None or self.users is None:
            return None
        principal = self.users.authenticate(cookie, kind="cookie")
        if principal is not None and request.method not in _SAFE and not _same_origin(request):
            raise HTTPException(403, "cross-site request refused")
        return principal

    def _login_wait(self, source: str) -> int:
        """Seconds this address must wait before its next login attempt (0 = go ahead)."""
        if self._login_failures is None:
            return 0
        with self._login_lock:
            return self._login_failures.retry_after(source, self._clock())

    def _login_failed(self, source: str) -> None:
        if self._login_failures is not None:
            with self._login_lock:
                self._login_failures.take(source, self._clock())

    def audit(
        self, principal: Principal, action: str, target: str | None, request: Request, **detail: Any
    ) -> None:
        if self.users is not None:
            self.users.audit(principal.username, action, target, source=_client(request), detail=detail)

    def _set_cookie(self, response: Response, token: str, service: UserService) -> None:
        response.set_cookie(
            COOKIE,
            token,
            max_age=int(service.session_max.total_seconds()),
            httponly=True,  # never readable by page scripts
            samesite="strict",
            secure=self.secure_cookies,
            path="/",
        )

    # -- routes ---------------------------------------------------------------------------------------------

    def router(self) -> APIRouter:
        router = APIRouter()
        admin = Depends(self.require(*ADMIN))
        anyone = Depends(self.require(*STAFF, allow_password_change=True))
        staff = Depends(self.require(*STAFF))

        def users() -> UserService:
            if self.users is None:
                raise HTTPException(503, "no user database")
            return self.users

        @router.post("/api/auth/login", tags=["access"])
        def login(body: LoginBody, request: Request, response: Response) -> dict[str, Any]:
            """Check the password; sets the HttpOnly session cookie. 401 wrong, 429 locked out or too
            many failed logins from this address."""
            service = users()
            source = _client(request) or "unknown"
            wait = self._login_wait(source)
            if wait:
                log_event(log, "login_throttled", level=logging.WARNING, user=body.username, source=source)
                detail = "too many failed logins from your address"
                raise HTTPException(429, detail, {"Retry-After": str(wait)})
            try:
                principal, token = service.login(body.username, body.password)
            except AccountLocked as exc:
                log_event(
                    log, "login_locked", level=logging.WARNING, user=body.username, source=_client(request)
                )
                if exc.started:  # the lock itself is audited once, not every refused attempt
                    service.audit(body.username, "account_locked", body.username, source=_client(request))
                wait = max(1, int((exc.until - datetime.now(UTC)).total_seconds()))
                raise HTTPException(429, str(exc), {"Retry-After": str(wait)}) from None
            except InvalidCredentials:
                log_event(
                    log, "login_failed", level=logging.WARNING, user=body.username, source=_client(request)
                )
                self._login_failed(source)
                raise _unauthorized("wrong username or password") from None
            self._set_cookie(response, token, service)
            log_event(log, "login", user=principal.username, role=principal.role, source=_client(request))
            return _me(principal)

        @router.post("/api/auth/logout", tags=["access"])
        def logout(request: Request, response: Response) -> dict[str, bool]:
            cookie = request.cookies.get(COOKIE)
            if cookie is not None and self.users is not None:
                self.users.revoke(cookie)
            response.delete_cookie(
                COOKIE, path="/", httponly=True, samesite="strict", secure=self.secure_cookies
            )
            return {"ok": True}

        @router.get("/api/auth/me", tags=["access"])
        def me(principal: Principal = anyone) -> dict[str, Any]:
            return _me(principal)

        @router.post("/api/auth/password", tags=["access"])
        def change_password(
            body: PasswordBody, request: Request, response: Response, principal: Principal = anyone
        ) -> dict[str, Any]:
            """Change your own password (needs the current one); every other session of yours ends."""
            service = users()
            if principal.via == "admin-token":
                raise HTTPException(400, "the admin token has no password")
            try:
                service.login(principal.username, body.current)  # checks it, counts failures
                service.set_password(principal.username, body.new)
                fresh, token = service.login(principal.username, body.new)
            except (InvalidCredentials, AccountLocked):
                raise HTTPException(403, "the current password is wrong") from None
            except AuthError as exc:
                raise HTTPException(422, str(exc)) from None
            self.audit(principal, "password_changed", principal.username, request)
            self._set_cookie(response, token, service)
            return _me(fresh)

        @router.post("/api/auth/tokens", tags=["access"])
        def new_token(body: TokenBody, request: Request, principal: Principal = staff) -> dict[str, str]:
            """A bearer token acting as you, for scripts: shown once."""
            if principal.via == "admin-token":
                raise HTTPException(400, "the admin token cannot mint tokens: log in as a user")
            ttl = timedelta(days=body.ttl_days) if body.ttl_days else None
            token = users().create_api_token(principal.username, body.name, ttl=ttl)
            self.audit(principal, "token_created", principal.username, request, name=body.name)
            return {"token": token, "name": body.name}

        @router.get("/api/users", tags=["users"])
        def list_users(principal: Principal = admin) -> list[dict[str, Any]]:
            return [public_user(u) for u in users().list_users()]

        @router.post("/api/users", status_code=201, tags=["users"])
        def add_user(body: NewUserBody, request: Request, principal: Principal = admin) -> dict[str, Any]:
            """Create a user; without a password a one-time password is returned (shown once)."""
            try:
                user, generated = users().add_user(
                    body.username, body.role, body.password, agent=body.agent, display_name=body.display_name
                )
            except UserExists as exc:
                raise HTTPException(409, str(exc)) from None
            except AuthError as exc:
                raise HTTPException(422, str(exc)) from None
            self.audit(principal, "user_added", user.username, request, role=user.role)
            out = public_user(user)
            if generated is not None:
                out["one_time_password"] = generated
            return out

        @router.patch("/api/users/{username}", tags=["users"])
        def patch_user(
            username: str, body: UserPatchBody, request: Request, principal: Principal = admin
        ) -> dict[str, Any]:
            if username == principal.username and (body.disabled or (body.role not in (None, "admin"))):
                raise HTTPException(409, "you cannot disable or demote yourself")
            try:
                user = users().update_user(
                    username,
                    role=body.role,
                    disabled=body.disabled,
                    agent=body.agent,
                    display_name=body.display_name,
                )
            except UserNotFound as exc:
                raise HTTPException(404, str(exc)) from None
            self.audit(principal, "user_changed", username, request, **body.model_dump(exclude_none=True))
            return public_user(user)

        @router.delete("/api/users/{username}", tags=["users"])
        def remove_user(username: str, request: Request, principal: Principal = admin) -> dict[str, bool]:
            if username == principal.username:
                raise HTTPException(409, "you cannot remove yourself")
            try:
                users().remove_user(username)
            except UserNotFound as exc:
                raise HTTPException(404, str(exc)) from None
            self.audit(principal, "user_removed", username, request)
            return {"ok": True}

        @router.post("/api/users/{username}/password", tags=["users"])
        def reset_password(
            username: str, body: ResetBody, request: Request, principal: Principal = admin
        ) -> dict[str, Any]:
            """Set a user's password (without one: a one-time password, shown once); their sessions end."""
            service = users()
            from callcenter.auth.passwords import one_time_password

            password = body.password or one_time_password()
            try:
                service.set_password(username, password, must_change=body.password is None)
            except UserNotFound as exc:
                raise HTTPException(404, str(exc)) from None
            except AuthError as exc:
                raise HTTPException(422, str(exc)) from None
            self.audit(principal, "password_reset", username, request)
            return {
                "username": username,
                **({"one_time_password": password} if body.password is None else {}),
            }

        @router.post("/api/users/{username}/unlock", tags=["users"])
        def unlock(username: str, request: Request, principal: Principal = admin) -> dict[str, bool]:
            try:
                users().unlock(username)
            except UserNotFound as exc:
                raise HTTPException(404, str(exc)) from None
            self.audit(principal, "user_unlocked", username, request)
            return {"ok": True}

        @router.get("/api/audit", tags=["users"])
        def audit_log(
            principal: Principal = admin, limit: int = 100, action: str | None = None
        ) -> list[dict[str, Any]]:
            return [
                {
                    "at": e.at.isoformat(),
                    "actor": e.actor,
                    "action": e.action,
                    "target": e.target,
                    "source": e.source,
                    "detail": e.detail,
                }
                for e in users().audit_log(limit, action)
            ]

        return router


def _me(principal: Principal) -> dict[str, Any]:
    return {
        "username": principal.username,
        "role": principal.role,
        "agent": principal.agent,
        "must_change_password": principal.must_change_password,
    }


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return True  # browsers send Origin on cross-site writes; without one, SameSite=Strict covers it
    host = request.headers.get("host", "")
    return origin != "null" and urlsplit(origin).netloc.lower() == host.lower()
