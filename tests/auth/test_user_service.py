"""UserService on a real SQLite file with a stepped clock: users, lockout, sessions, tokens, audit."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
from stepped_clock import Clock

from callcenter.auth.service import (
    AccountLocked,
    AuthError,
    InvalidCredentials,
    UserExists,
    UserNotFound,
    UserService,
)

PW = "correct horse battery"


def test_a_user_logs_in_and_the_session_token_identifies_them(users: UserService) -> None:
    users.add_user("carol", "supervisor", PW, display_name="Carol")
    principal, token = users.login("carol", PW)
    assert (principal.username, principal.role, principal.must_change_password) == (
        "carol",
        "supervisor",
        False,
    )
    again = users.authenticate(token, kind="cookie")
    assert again is not None and again.username == "carol"
    assert users.authenticate(token, kind="api") is None  # a cookie session is not an API token
    assert users.authenticate("not-a-token") is None


def test_passwords_are_stored_as_argon2id_never_in_clear(users: UserService) -> None:
    users.add_user("dave", "agent", PW)
    row = users.get_user("dave")
    assert row is not None and row.password_hash.startswith("$argon2id$") and PW not in row.password_hash
    assert row.agent == "dave"  # an agent user works as the SIP agent of the same name by default


def test_the_server_hashes_with_rfc_9106_parameters() -> None:
    from argon2 import extract_parameters

    from callcenter.auth.passwords import _DUMMY  # made with the module's own hasher at import

    params = extract_parameters(_DUMMY)
    assert (params.type.name, params.time_cost, params.memory_cost, params.parallelism) == ("ID", 3, 65536, 4)


def test_a_hash_made_with_weaker_parameters_is_upgraded_at_login(
    users: UserService, monkeypatch: pytest.MonkeyPatch
) -> None:
    from argon2 import PasswordHasher

    users.add_user("dora", "agent", PW)
    old = users.get_user("dora")
    assert old is not None
    stronger = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    monkeypatch.setattr("callcenter.auth.passwords._hasher", stronger)
    users.login("dora", PW)
    new = users.get_user("dora")
    assert new is not None and new.password_hash != old.password_hash and "m=2048,t=2" in new.password_hash


def test_wrong_passwords_lock_the_account_then_it_unlocks_by_itself(users: UserService, clock: Clock) -> None:
    users.add_user("erin", "agent", PW)
    for _ in range(2):
        with pytest.raises(InvalidCredentials):
            users.login("erin", "wrong password!")
    with pytest.raises(AccountLocked) as locked:
        users.login("erin", "wrong password!")  # the third failure in a row locks
    assert locked.value.until == clock() + timedelta(minutes=10)
    with pytest.raises(AccountLocked):
        users.login("erin", PW)  # even the right password, while locked
    clock.advance(minutes=10, seconds=1)
    principal, _ = users.login("erin", PW)
    assert principal.username == "erin"


def test_a_success_resets_the_failure_count(users: UserService) -> None:
    users.add_user("finn", "agent", PW)
    for _ in range(2):
        with pytest.raises(InvalidCredentials):
            users.login("finn", "nope nope nope")
    users.login("finn", PW)
    for _ in range(2):
        with pytest.raises(InvalidCredentials):
            users.login("finn", "nope nope nope")
    users.login("finn", PW)  # never three in a row: not locked


def test_an_admin_unlocks_a_locked_user(users: UserService) -> None:
    users.add_user("gus", "agent", PW)
    for _ in range(2):
        with pytest.raises(InvalidCredentials):
            users.login("gus", "x" * 12)
    with pytest.raises(AccountLocked):
        users.login("gus", "x" * 12)
    users.unlock("gus")
    assert users.login("gus", PW)[0].username == "gus"


def test_unknown_and_disabled_users_get_the_same_answer_as_a_wrong_password(users: UserService) -> None:
    users.add_user("hal", "agent", PW)
    users.update_user("hal", disabled=True)
    for name in ("nobody", "hal"):
        with pytest.raises(InvalidCredentials, match="wrong username or password"):
            users.login(name, PW)


def test_sessions_end_after_idling_and_at_their_maximum_age(users: UserService, clock: Clock) -> None:
    users.add_user("ivy", "agent", PW)
    _, token = users.login("ivy", PW)
    clock.advance(hours=7)
    assert users.authenticate(token) is not None  # used within the idle limit: still valid
    clock.advance(hours=7)
    assert users.authenticate(token) is not None
    clock.advance(hours=8, seconds=1)
    assert users.authenticate(token) is None  # idle for 8 h
    _, token = users.login("ivy", PW)
    for _ in range(5):
        clock.advance(hours=5)
        last = users.authenticate(token)
    assert last is None  # 25 h after login: past the 24 h maximum though never idle


def test_api_tokens_do_not_idle_out_but_can_expire_and_be_revoked(users: UserService, clock: Clock) -> None:
    users.add_user("jo", "supervisor", PW)
    forever = users.create_api_token("jo", "wallboard")
    monthly = users.create_api_token("jo", "report", ttl=timedelta(days=30))
    clock.advance(days=31)
    principal = users.authenticate(forever, kind="api")
    assert principal is not None and principal.via == "api"
    assert users.authenticate(monthly) is None
    assert users.revoke(forever) and users.authenticate(forever) is None


def test_a_new_password_ends_every_session_and_token(users: UserService) -> None:
    users.add_user("kim", "admin", PW)
    _, token = users.login("kim", PW)
    api = users.create_api_token("kim", "ci")
    users.set_password("kim", "another good password")
    assert users.authenticate(token) is None and users.authenticate(api) is None
    with pytest.raises(InvalidCredentials):
        users.login("kim", PW)


def test_a_changed_role_or_disabled_account_ends_sessions(users: UserService) -> None:
    users.add_user("lee", "admin", PW)
    _, token = users.login("lee", PW)
    users.update_user("lee", role="agent")
    assert users.authenticate(token) is None
    principal, token = users.login("lee", PW)
    assert principal.role == "agent"
    users.update_user("lee", disabled=True)
    assert users.authenticate(token) is None


def test_first_start_creates_an_admin_with_a_one_time_password_once(users: UserService) -> None:
    password = users.ensure_first_admin()
    assert password is not None and len(password) >= 12
    principal, _ = users.login("admin", password)
    assert principal.role == "admin" and principal.must_change_password
    assert users.ensure_first_admin() is None  # users exist: nothing printed again
    users.set_password("admin", "a chosen admin password")
    assert not users.login("admin", "a chosen admin password")[0].must_change_password


def test_bad_users_are_refused_with_a_reason(users: UserService) -> None:
    with pytest.raises(AuthError, match="role 'boss'"):
        users.add_user("mo", "boss", PW)
    with pytest.raises(AuthError, match="at least 10 characters"):
        users.add_user("mo", "agent", "short")
    with pytest.raises(AuthError, match="username"):
        users.add_user("no spaces", "agent", PW)
    users.add_user("mo", "agent", PW)
    with pytest.raises(UserExists):
        users.add_user("mo", "admin", PW)
    with pytest.raises(UserNotFound):
        users.remove_user("nobody")


def test_tokens_are_stored_hashed(users: UserService) -> None:
    users.add_user("ned", "agent", PW)
    _, token = users.login("ned", PW)
    db = str(users.engine.url.database)
    with sqlite3.connect(db) as conn:
        stored = [row[0] for row in conn.execute("SELECT token_sha256 FROM auth_session")]
    assert stored and token not in stored and all(len(s) == 64 for s in stored)


def test_the_audit_log_keeps_admin_actions_newest_first(users: UserService, clock: Clock) -> None:
    users.audit("kim", "user_added", "ned", source="127.0.0.1", detail={"role": "agent"})
    clock.advance(seconds=5)
    users.audit("kim", "flow_published", "hotline_en", detail={"version": 3})
    entries = users.audit_log()
    assert [(e.actor, e.action, e.target) for e in entries] == [
        ("kim", "flow_published", "hotline_en"),
        ("kim", "user_added", "ned"),
    ]
    assert entries[1].detail == {"role": "agent"} and entries[1].source == "127.0.0.1"
    assert [e.action for e in users.audit_log(action="user_added")] == ["user_added"]
