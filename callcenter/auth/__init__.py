"""Users, roles, sessions, lockout and the audit log of admin actions (issue 8, "Access")."""

from callcenter.auth.models import ROLES, AuditEntry, AuthSession, Role, User
from callcenter.auth.service import (
    AccountLocked,
    AuthError,
    InvalidCredentials,
    Principal,
    UserExists,
    UserNotFound,
    UserService,
)

__all__ = [
    "ROLES",
    "AccountLocked",
    "AuditEntry",
    "AuthError",
    "AuthSession",
    "InvalidCredentials",
    "Principal",
    "Role",
    "User",
    "UserExists",
    "UserNotFound",
    "UserService",
]
