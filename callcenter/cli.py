"""The ``callcenter`` command: serve, agents, calls, config."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml

from callcenter import __version__
from callcenter.cli_models import models_app
from callcenter.core.config import ConfigError, Settings, load_settings
from callcenter.ivr.cli import flows_app

app = typer.Typer(
    help="callcenter: a telephony-first contact center server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold passwords
)
agents_app = typer.Typer(help="Manage agents (their SIP accounts and skills).", no_args_is_help=True)
calls_app = typer.Typer(help="Inspect recorded calls.", no_args_is_help=True)
config_app = typer.Typer(help="Check and show the configuration.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")
app.add_typer(calls_app, name="calls")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(flows_app, name="flows")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML config file (default: ./config.yaml if present).",
        dir_okay=False,
        show_default=False,
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Directory for the database and recordings (default: ./data).",
        file_okay=False,
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def _settings(config: Path | None, **flags: Any) -> Settings:
    """Settings from file + flags + env; a ConfigError's one line goes to stderr, exit status 2."""
    overrides = {key: value for key, value in flags.items() if value is not None}
    try:
        return load_settings(config, overrides)
    except ConfigError as exc:
        _fail(str(exc), 2)


def _open_store(config: Path | None, data_dir: Path | None, settings: Settings | None = None) -> Any:
    from callcenter.store import Store  # SQLAlchemy is only imported by commands that need it

    if settings is None:
        settings = _settings(config, data_dir=data_dir)
    try:
        return Store.from_settings(settings)
    except Exception as exc:
        _fail(f"database {settings.db_url}: {exc}")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"callcenter {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """callcenter: a telephony-first contact center server."""


@app.command()
def serve(
    config: ConfigOpt = None,
    sip_host: Annotated[
        str | None, typer.Option("--sip-host", help="IPv4 address SIP listens on.", show_default=False)
    ] = None,
    sip_port: Annotated[int | None, typer.Option("--sip-port", help="SIP port (UDP and TCP).")] = None,
    http_port: Annotated[int | None, typer.Option("--http-port", help="HTTP API port.")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Run the server (SIP, media, HTTP) until interrupted.

    Settings come from the defaults, then the config file, then these flags, then CALLCENTER_*
    environment variables (highest).
    """
    settings = _settings(
        config,
        **{"sip.host": sip_host, "sip.port": sip_port, "http.port": http_port, "data_dir": data_dir},
    )
    from callcenter.app import serve as run_server  # the composition root, imported only to serve

    run_server(settings)  # sets up logging; exits with status 2 when start-up fails


# -- agents ---------------------------------------------------------------------------------------------


_SKILLS = "'--skills'"


def _parse_skills(text: str | None) -> dict[str, int]:
    """``sales:3,support:1`` → ``{"sales": 3, "support": 1}`` (levels 1-5)."""
    if not text:
        return {}
    skills: dict[str, int] = {}
    for item in text.split(","):
        name, sep, level = item.strip().partition(":")
        if not sep or not name.strip():
            raise typer.BadParameter(
                f"{item.strip()!r}: expected NAME:LEVEL, e.g. sales:3", param_hint=_SKILLS
            )
        name = name.strip()
        try:
            value = int(level)
        except ValueError:
            raise typer.BadParameter(
                f"{name}: expected a level 1-5, got {level.strip()!r}", param_hint=_SKILLS
            ) from None
        if not 1 <= value <= 5:
            raise typer.BadParameter(f"{name}: expected a level 1-5, got {value}", param_hint=_SKILLS)
        if name in skills:
            raise typer.BadParameter(f"{name}: given twice", param_hint=_SKILLS)
        skills[name] = value
    return skills


@agents_app.command("add")
def agents_add(
    name: Annotated[
        str,
        typer.Argument(metavar="NAME", help="The agent's SIP username (what the softphone registers as)."),
    ],
    password: Annotated[
        str,
        typer.Option(
            "--password",
            "-p",
            help="SIP password (prompted for when omitted). Only its digest hashes are stored.",
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
        ),
    ],
    skills: Annotated[
        str | None,
        typer.Option("--skills", help="Skills with levels 1-5, e.g. sales:3,support:1.", show_default=False),
    ] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Add an agent who can register a softphone as NAME with PASSWORD (realm: sip.realm)."""
    from callcenter.store import StoreError

    parsed = _parse_skills(skills)
    settings = _settings(config, data_dir=data_dir)
    store = _open_store(config, data_dir, settings)
    try:
        agent = store.add_agent(name, password, settings.sip.realm, parsed)
    except StoreError as exc:
        _fail(f"error: {exc}")
    finally:
        store.close()
    shown = ", ".join(f"{k}:{v}" for k, v in agent.skills.items()) or "no skills"
    typer.echo(f"added agent {agent.username} (realm {agent.realm}, {shown})")


@agents_app.command("list")
def agents_list(json_out: JsonOpt = False, data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """List agents (never their secrets)."""
    from callcenter.store import agent_public

    store = _open_store(config, data_dir)
    try:
        agents = [agent_public(a) for a in store.list_agents()]
    finally:
        store.close()
    if json_out:
        typer.echo(json.dumps(agents, indent=2))
        return
    if not agents:
        typer.echo("no agents")
        return
    rows = [
        (
            a["username"],
            a["realm"],
            ",".join(f"{k}:{v}" for k, v in a["skills"].items()) or "-",
            a["created_at"][:19],
        )
        for a in agents
    ]
    _table(("USERNAME", "REALM", "SKILLS", "CREATED (UTC)"), rows)


@agents_app.command("remove")
def agents_remove(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The agent's SIP username.")],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Remove an agent; exits 1 when there is none by that name."""
    store = _open_store(config, data_dir)
    try:
        removed = store.remove_agent(name)
    finally:
        store.close()
    if not removed:
        _fail(f"error: no agent named {name!r}")
    typer.echo(f"removed agent {name}")


# -- calls ----------------------------------------------------------------------------------------------


@calls_app.command("list")
def calls_list(
    json_out: JsonOpt = False,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many calls, latest first.")] = 50,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List recorded calls, latest first."""
    from callcenter.store import call_public

    store = _open_store(config, data_dir)
    try:
        calls = [call_public(c) for c in store.list_calls(limit)]
    finally:
        store.close()
    if json_out:
        typer.echo(json.dumps(calls, indent=2))
        return
    if not calls:
        typer.echo("no calls")
        return
    rows = [
        (
            (c["started_at"] or "")[:19],
            c["from"],
            c["to"],
            c["hangup_by"] or "-",
            c["disposition"] or "-",
            c["sip_call_id"],
        )
        for c in calls
    ]
    _table(("STARTED (UTC)", "FROM", "TO", "HANGUP BY", "DISPOSITION", "CALL-ID"), rows)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


# -- config ---------------------------------------------------------------------------------------------


@config_app.command("check")
def config_check(config: ConfigOpt = None) -> None:
    """Validate the configuration (file + CALLCENTER_* environment); exit 1 with one line if wrong."""
    try:
        load_settings(config, {})
    except ConfigError as exc:
        _fail(str(exc), 1)
    typer.echo("config OK")


@config_app.command("show")
def config_show(config: ConfigOpt = None) -> None:
    """Print the settings in force (defaults, file and environment merged) as YAML."""
    settings = _settings(config)
    typer.echo(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False), nl=False)


if __name__ == "__main__":  # pragma: no cover
    app()
