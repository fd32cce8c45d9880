"""The admin bearer token (``http.admin_token``) that guards the admin routes until users and roles
arrive (issue 8)."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Header, HTTPException

DISABLED = "admin API disabled: set http.admin_token"


def require_admin_token(admin_token: str | None) -> Callable[[str | None], None]:
    """A FastAPI dependency: ``Authorization: Bearer <admin_token>`` or 401; 403 when no token is set."""
    expected = admin_token.encode("utf-8") if admin_token else None

    def admin(authorization: Annotated[str | None, Header()] = None) -> None:
        if expected is None:
            raise HTTPException(403, DISABLED)
        scheme, _, token = (authorization or "").partition(" ")
        # compare_digest: the time taken does not reveal how much of the token matched
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode("utf-8"), expected):
            raise HTTPException(401, "a valid admin token is required", {"WWW-Authenticate": "Bearer"})

    return admin
