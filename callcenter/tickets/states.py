"""Ticket statuses and the transitions allowed between them, as data.

new → open → pending → solved → closed; a pending ticket goes back to open when the customer answers;
solved and closed tickets can be reopened (→ open). Anything else is refused with a clear message.
"""

from __future__ import annotations

from typing import Literal

from callcenter.core.errors import CallcenterError

__all__ = ["OPEN_STATUSES", "STATUSES", "TRANSITIONS", "InvalidTransition", "Status", "check_transition"]

Status = Literal["new", "open", "pending", "solved", "closed"]
STATUSES: tuple[Status, ...] = ("new", "open", "pending", "solved", "closed")
OPEN_STATUSES: frozenset[str] = frozenset({"new", "open", "pending"})  # still being worked on

TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"open", "pending", "solved"}),
    "open": frozenset({"pending", "solved"}),
    "pending": frozenset({"open", "solved"}),
    "solved": frozenset({"closed", "open"}),  # reopen
    "closed": frozenset({"open"}),  # reopen
}


class InvalidTransition(CallcenterError, ValueError):
    """A status change the table does not allow (or an unknown status)."""


def check_transition(current: str, new: str) -> None:
    """Raise :class:`InvalidTransition` unless ``current`` → ``new`` is allowed."""
    if new not in STATUSES:
        raise InvalidTransition(f"unknown status {new!r}: expected one of {', '.join(STATUSES)}")
    allowed = TRANSITIONS.get(current, frozenset())
    if new not in allowed:
        options = ", ".join(s for s in STATUSES if s in allowed) or "none"
        raise InvalidTransition(f"cannot change status from {current} to {new} (from {current}: {options})")
