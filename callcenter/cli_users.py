"""``callcenter users``: web and API users (admin, supervisor, agent) from a shell.

Registered in callcenter/cli.py with ``app.add_typer(users_app, name="users")``. Works on the database
directly (no server needed); every change is written to the audit log with actor ``cli``.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from callcenter.auth.service import UserService

__all__ = ["users_app"]

users_app = typer.Typer(help="Web and API users: add, list, password, unlock, tokens.", no_args_is_help=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (default: config.yaml).", show_default=False),
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Directory for the database.", show_default=False)
]
Name = Annotated[str, typer.Argument(metavar="USERNAME")]


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _users(config: Path | None, data_dir: Path | None) -> UserService:
    from callcenter.auth.service import UserService
    from callcenter.cli import _open_store, _settings

    settings = _settings(config, data_dir=data_dir)
    store = _open_store(config, data_dir, settings)
    return UserService(store.engine)


@users_app.command("add")
def add(
    username: Name,
    role: Annotated[str, typer.Option("--role", "-r", help="admin, supervisor or agent.")],
    password: Annotated[
        str | None,
        typer.Option(
            help="The password (10+ characters); omitted: a one-time password is printed once.",
            show_default=False,
        ),
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(
            help="The SIP agent this user works as (default for role agent: the same name).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Add a user."""
    from callcenter.auth.service import AuthError

    users = _users(config, data_dir)
    try:
        user, generated = users.add_user(username, role, password, agent=agent)
    except AuthError as exc:
        _fail(str(exc))
    users.audit("cli", "user_added", username, detail={"role": role})
    typer.echo(f"added {user.username} ({user.role})")
    if generated is not None:
        typer.echo(f"one-time password (shown once, to be changed at first login): {generated}")


@users_app.command("list")
def list_users(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List users (never passwords)."""
    from callcenter.auth.service import public_user

    rows = [public_user(u) for u in _users(config, data_dir).list_users()]
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        flags = [f for f, on in (("disabled", r["disabled"]), ("locked", r["locked_until"])) if on]
        typer.echo(f"{r['username']:<24} {r['role']:<11} {r['agent'] or '-':<16} {' '.join(flags)}".rstrip())


@users_app.command("remove")
def remove(username: Name, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Remove a user and end their sessions."""
    from callcenter.auth.service import UserNotFound

    users = _users(config, data_dir)
    try:
        users.remove_user(username)
    except UserNotFound as exc:
        _fail(str(exc))
    users.audit("cli", "user_removed", username)
    typer.echo(f"removed {username}")


@users_app.command("passwd")
def passwd(
    username: Name,
    password: Annotated[
        str | None,
        typer.Option(
            help="The new password; omitted: a one-time password is printed once.", show_default=False
        ),
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Set a user's password; their sessions and API tokens end."""
    from callcenter.auth.passwords import one_time_password
    from callcenter.auth.service import AuthError

    users = _users(config, data_dir)
    new = password or one_time_password()
    try:
        users.set_password(username, new, must_change=password is None)
    except AuthError as exc:
        _fail(str(exc))
    users.audit("cli", "password_reset", username)
    if password is None:
        typer.echo(f"one-time password for {username} (shown once): {new}")
    else:
        typer.echo(f"password of {username} changed")


@users_app.command("unlock")
def unlock(username: Name, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Lift a lockout after repeated failed logins."""
    from callcenter.auth.service import UserNotFound

    users = _users(config, data_dir)
    try:
        users.unlock(username)
    except UserNotFound as exc:
        _fail(str(exc))
    users.audit("cli", "user_unlocked", username)
    typer.echo(f"unlocked {username}")


@users_app.command("token")
def token(
    username: Name,
    name: Annotated[str, typer.Option("--name", help="A label for the token (e.g. wallboard-tv).")],
    days: Annotated[int | None, typer.Option(min=1, max=3650, help="Expires after this many days.")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create an API bearer token acting as USERNAME (printed once)."""
    from callcenter.auth.service import UserNotFound

    users = _users(config, data_dir)
    try:
        secret = users.create_api_token(username, name, ttl=timedelta(days=days) if days else None)
    except UserNotFound as exc:
        _fail(str(exc))
    users.audit("cli", "token_created", username, detail={"name": name})
    typer.echo(secret)
