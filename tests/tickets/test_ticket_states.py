from __future__ import annotations

import itertools

import pytest

from callcenter.tickets.states import STATUSES, TRANSITIONS, InvalidTransition, check_transition

ALLOWED = {
    ("new", "open"), ("new", "pending"), ("new", "solved"),
    ("open", "pending"), ("open", "solved"),
    ("pending", "open"), ("pending", "solved"),
    ("solved", "closed"), ("solved", "open"),
    ("closed", "open"),
}  # fmt: skip


@pytest.mark.parametrize(("current", "new"), sorted(itertools.permutations(STATUSES, 2)))
def test_every_pair_of_statuses_is_allowed_or_refused_per_the_table(current: str, new: str) -> None:
    if (current, new) in ALLOWED:
        check_transition(current, new)
    else:
        with pytest.raises(InvalidTransition, match=f"cannot change status from {current} to {new}"):
            check_transition(current, new)


def test_the_table_is_the_documented_one() -> None:
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == ALLOWED


def test_closed_tickets_reopen_but_go_nowhere_else() -> None:
    with pytest.raises(InvalidTransition, match=r"from closed: open\)"):
        check_transition("closed", "pending")


def test_an_unknown_status_names_the_valid_ones() -> None:
    with pytest.raises(InvalidTransition, match="unknown status 'done': expected one of new, open, pending"):
        check_transition("open", "done")
