"""``callcenter users`` through typer's CliRunner on a real, migrated SQLite database."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from callcenter.auth.service import UserService
from callcenter.cli_users import users_app
from callcenter.store import Store

runner = CliRunner()


def run(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(users_app, [*args, "--data-dir", str(tmp_path / "data")])
    return result.exit_code, result.stdout, result.stderr


def service(tmp_path: Path) -> UserService:
    return UserService(Store(f"sqlite:///{tmp_path / 'data' / 'callcenter.db'}").engine)


def test_add_with_a_one_time_password_then_list_and_log_in(tmp_path: Path) -> None:
    code, out, _ = run(tmp_path, "add", "sue", "--role", "supervisor")
    assert code == 0 and out.startswith("added sue (supervisor)\n")
    otp = out.rsplit(": ", 1)[1].strip()
    principal, _ = service(tmp_path).login("sue", otp)
    assert principal.must_change_password
    code, out, _ = run(tmp_path, "list", "--json")
    [row] = json.loads(out)
    assert (row["username"], row["role"], row["must_change_password"]) == ("sue", "supervisor", True)
    assert "password" not in " ".join(k for k in row if k != "must_change_password")


def test_passwd_token_unlock_remove_and_their_audit(tmp_path: Path) -> None:
    run(tmp_path, "add", "al", "--role", "agent", "--password", "al's own password")
    assert run(tmp_path, "passwd", "al", "--password", "a brand new password")[0] == 0
    users = service(tmp_path)
    assert users.login("al", "a brand new password")[0].agent == "al"
    code, out, _ = run(tmp_path, "token", "al", "--name", "softphone-helper")
    assert code == 0 and users.authenticate(out.strip(), kind="api") is not None
    assert run(tmp_path, "unlock", "al")[0] == 0
    assert run(tmp_path, "remove", "al")[1] == "removed al\n"
    assert [(e.actor, e.action) for e in users.audit_log()] == [
        ("cli", "user_removed"),
        ("cli", "user_unlocked"),
        ("cli", "token_created"),
        ("cli", "password_reset"),
        ("cli", "user_added"),
    ]


def test_errors_are_one_line_and_exit_1(tmp_path: Path) -> None:
    assert run(tmp_path, "add", "x", "--role", "boss")[1:] == (
        "",
        "error: role 'boss': expected one of admin, supervisor, agent\n",
    )
    assert run(tmp_path, "add", "x", "--role", "agent", "--password", "short")[2] == (
        "error: password: at least 10 characters\n"
    )
    code, _, err = run(tmp_path, "remove", "ghost")
    assert code == 1 and err == "error: no user 'ghost'\n"
    run(tmp_path, "add", "dup", "--role", "agent", "--password", "long enough pw")
    assert run(tmp_path, "add", "dup", "--role", "agent", "--password", "long enough pw")[2] == (
        "error: user 'dup' already exists\n"
    )
