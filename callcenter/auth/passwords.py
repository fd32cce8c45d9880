"""Password hashing: Argon2id (RFC 9106) through argon2-cffi, never a fast hash.

argon2-cffi's defaults are RFC 9106's second recommended profile (t=3, m=64 MiB, p=4): ~0.3 s of CPU
on this machine, so hashing and verifying always run in a worker thread. Stored hashes carry their
parameters (PHC string format), so raising them later re-hashes each user at their next login.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["MIN_PASSWORD_LENGTH", "hash_password", "needs_rehash", "one_time_password", "verify_password"]

MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()
# Verified against when a username does not exist, so the answer takes as long as for a real user
# (no user enumeration by timing).
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (None: no such user — still costs one verification)."""
    try:
        return _hasher.verify(stored or _DUMMY, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    try:
        return _hasher.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def one_time_password() -> str:
    """16 characters from a URL-safe alphabet (~96 bits): printed once, changed at first login."""
    return secrets.token_urlsafe(12)
