"""The ``callcenter`` command: serve, agents, calls, queues, config."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import typer
import yaml

from callcenter import __version__
from callcenter.cli_kb import kb_app
from callcenter.cli_models import models_app
from callcenter.cli_tickets import customers_app, tickets_app
from callcenter.cli_users import users_app
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
queues_app = typer.Typer(help="Queue statistics computed from call records.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")
app.add_typer(calls_app, name="calls")
app.add_typer(queues_app, name="queues")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(flows_app, name="flows")
app.add_typer(users_app, name="users")
app.add_typer(tickets_app, name="tickets")
app.add_typer(customers_app, name="customers")
app.add_typer(kb_app, name="kb")
tls_app = typer.Typer(help="TLS certificates for SIP over TLS.", no_args_is_help=True)
app.add_typer(tls_app, name="tls")
cluster_app = typer.Typer(help="Nodes of a scaled-out server (redis_url).", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")

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


@tls_app.command("selfsigned")
def tls_selfsigned(
    out: Annotated[
        Path, typer.Option("--out", help="Directory for cert.pem and key.pem.", file_okay=False)
    ] = Path("data/tls"),
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="Name or IP the certificate is for (repeatable; default localhost, "
                     "127.0.0.1, ::1).", show_default=False),
    ] = None,
    days: Annotated[int, typer.Option("--days", min=1, max=3650, help="Validity in days.")] = 825,
    force: Annotated[bool, typer.Option("--force", help="Replace existing files.")] = False,
) -> None:
    """Make a self-signed certificate for SIP over TLS (local use: phones must be told to trust it).

    Point sip.tls_cert / sip.tls_key at the files and add tls to sip.transports."""
    from callcenter.sip.transport.tls import make_self_signed

    if not force and ((out / "cert.pem").exists() or (out / "key.pem").exists()):
        _fail(f"{out}/cert.pem or key.pem exists; --force replaces them")
    cert, key = make_self_signed(out, host or ["localhost", "127.0.0.1", "::1"], days=days)
    typer.echo(f"wrote {cert} and {key}")


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


def _check_max_chats(value: int | None) -> None:
    if value is not None and value < 0:
        raise typer.BadParameter(f"expected 0 or more, got {value}", param_hint="'--max-chats'")


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
    languages: Annotated[
        str | None,
        typer.Option(
            "--languages",
            help="Language tags the agent speaks, e.g. en,zh-CN (routing matches callers' languages; "
            "none: any caller).",
            show_default=False,
        ),
    ] = None,
    max_chats: Annotated[
        int | None,
        typer.Option(
            "--max-chats",
            help="Concurrent chats the agent takes, 0 or more (default: routing.default_max_chats).",
            show_default=False,
        ),
    ] = None,
    display_name: Annotated[
        str | None,
        typer.Option("--display-name", help="The name colleagues see.", show_default=False),
    ] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Add an agent who can register a softphone as NAME with PASSWORD (realm: sip.realm)."""
    from callcenter.store import StoreError

    parsed = _parse_skills(skills)
    _check_max_chats(max_chats)
    settings = _settings(config, data_dir=data_dir)
    store = _open_store(config, data_dir, settings)
    try:
        tags = [t for t in (languages or "").split(",") if t.strip()]
        agent = store.add_agent(name, password, settings.sip.realm, parsed, tags, max_chats=max_chats,
                                display_name=display_name)
    except StoreError as exc:
        _fail(f"error: {exc}")
    finally:
        store.close()
    shown = ", ".join(f"{k}:{v}" for k, v in agent.skills.items()) or "no skills"
    if agent.languages:
        shown += f"; speaks {','.join(agent.languages)}"
    if agent.max_chats is not None:
        shown += f"; max chats {agent.max_chats}"
    typer.echo(f"added agent {agent.username} (realm {agent.realm}, {shown})")


@agents_app.command("list")
def agents_list(json_out: JsonOpt = False, data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """List agents (never their secrets)."""
    from callcenter.store import agent_public

    settings = _settings(config, data_dir=data_dir)
    store = _open_store(config, data_dir, settings)
    try:
        default = settings.routing.default_max_chats
        agents = [agent_public(a, default) for a in store.list_agents()]
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
            ",".join(a["languages"]) or "any",
            str(a["max_chats"]),
            a["created_at"][:19],
        )
        for a in agents
    ]
    _table(("USERNAME", "REALM", "SKILLS", "LANGUAGES", "MAX CHATS", "CREATED (UTC)"), rows)


@agents_app.command("set")
def agents_set(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The agent's SIP username.")],
    password: Annotated[
        str | None, typer.Option("--password", "-p", help="A new SIP password.", show_default=False)
    ] = None,
    skills: Annotated[
        str | None,
        typer.Option("--skills", help="Replace the skills, e.g. sales:3,support:1.", show_default=False),
    ] = None,
    languages: Annotated[
        str | None,
        typer.Option("--languages", help="Replace the languages, e.g. en,zh-CN ('' for any).",
                     show_default=False),
    ] = None,
    max_chats: Annotated[
        int | None, typer.Option("--max-chats", help="Concurrent chats, 0 or more.", show_default=False)
    ] = None,
    display_name: Annotated[
        str | None, typer.Option("--display-name", help="The name colleagues see ('' for none).",
                                 show_default=False)
    ] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Change an agent's account; exits 1 when there is none by that name. A running server picks the
    change up at its next start (PATCH /api/agents/NAME applies it at once)."""
    from callcenter.store import StoreError, agent_public

    parsed = _parse_skills(skills) if skills is not None else None
    _check_max_chats(max_chats)
    tags = [t for t in languages.split(",") if t.strip()] if languages is not None else None
    settings = _settings(config, data_dir=data_dir)
    store = _open_store(config, data_dir, settings)
    try:
        agent = store.update_agent(name, password=password, skills=parsed, languages=tags,
                                   max_chats=max_chats, display_name=display_name)
    except StoreError as exc:
        _fail(f"error: {exc}")
    finally:
        store.close()
    if agent is None:
        _fail(f"error: no agent named {name!r}")
    shown = agent_public(agent, settings.routing.default_max_chats)
    typer.echo(f"updated agent {name} (skills {shown['skills'] or '-'}, languages "
               f"{','.join(shown['languages']) or 'any'}, max chats {shown['max_chats']})")


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


# -- agents on the running server (HTTP API) ------------------------------------------------------------

_STATES = ("available", "not-ready", "offline")
_API_TIMEOUT_S = 10.0
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The running server's HTTP address (default: http://HOST:PORT from http.host/http.port).",
        show_default=False,
    ),
]


def _api_base(settings: Settings) -> str:
    """Where the server listening on ``http.host`` is reached from this machine."""
    host = settings.http.host
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.http.port}"


def _api_detail(response: Any) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(f"{'.'.join(map(str, d.get('loc', [])[1:]))}: {d.get('msg')}" for d in detail)
    return str(detail)


def _api(
    settings: Settings,
    url: str | None,
    method: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    hint_404: str = "",
) -> Any:
    """JSON from the running server; any failure is one line on stderr and exit status 1."""
    import httpx

    base = (url or _api_base(settings)).rstrip("/")
    # Every API route needs credentials now (users and roles): the CLI on the server's machine uses
    # the configured admin token, or a user's API token from CALLCENTER_API_TOKEN.
    token = os.environ.get("CALLCENTER_API_TOKEN") or settings.http.admin_token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        # The configured address is this machine's own server: never send it through an HTTP proxy.
        with httpx.Client(base_url=base, timeout=_API_TIMEOUT_S, trust_env=url is not None) as client:
            response = client.request(method, path, json=body, headers=headers)
    except httpx.ConnectError as exc:
        _fail(
            f"error: cannot reach the callcenter server at {base} ({exc or 'connection refused'}): "
            "is `callcenter serve` running? (address from http.host/http.port, or --url)"
        )
    except httpx.TimeoutException:
        _fail(f"error: the callcenter server at {base} did not answer within {_API_TIMEOUT_S:g} s")
    except httpx.HTTPError as exc:
        _fail(f"error: {base}{path}: {exc}")
    code = response.status_code
    if code == 401:
        if token is None:
            _fail(
                "error: the server wants credentials: set http.admin_token in the config "
                "(or CALLCENTER_HTTP_ADMIN_TOKEN), or a user's API token in CALLCENTER_API_TOKEN "
                "(`callcenter users token NAME --name cli`)"
            )
        _fail(
            "error: the server refused the token: http.admin_token (or CALLCENTER_HTTP_ADMIN_TOKEN) "
            "here differs from the server's, or the API token in CALLCENTER_API_TOKEN is not valid"
        )
    if code == 403:
        _fail(f"error: not allowed: {_api_detail(response)}")
    if code == 404:
        detail = _api_detail(response)
        if detail == "Not Found":  # no such route: something else listens there
            _fail(f"error: {base}{path}: not found; is that a callcenter server?")
        _fail(f"error: {detail}{hint_404}")
    if code >= 400:
        prefix = "" if code in (409, 422) else f"the server answered {code}: "
        _fail(f"error: {prefix}{_api_detail(response)}")
    return response.json()


def _pending(agent: dict[str, Any]) -> str | None:
    """The state a deferred request will put a ringing / talking agent in."""
    pending = agent.get("pending")
    if not pending:
        return None
    return {"set_not_ready": "not_ready", "set_offline": "offline", "logout": "offline"}.get(pending, pending)


def _state_line(name: str, agent: dict[str, Any]) -> str:
    line = f"{name}: {agent['state']}"
    if agent.get("reason"):
        line += f" ({agent['reason']})"
    then = _pending(agent)
    if then:
        line += f"; {then} when the {'offer' if agent['state'] == 'reserved' else 'call'} ends"
    return line


@agents_app.command("state")
def agents_state(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The agent's SIP username.")],
    state: Annotated[
        str, typer.Argument(metavar="available|not-ready|offline", help="The state to put the agent in.")
    ],
    reason: Annotated[
        str | None,
        typer.Option("--reason", help="Why not ready (break, training, ...).", show_default=False),
    ] = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Change an agent's state on the running server and print the state it is in now.

    Needs the server's admin token (http.admin_token or CALLCENTER_HTTP_ADMIN_TOKEN). An agent who is
    ringing or talking keeps doing so: the change applies when that offer or call ends.
    """
    wanted = state.strip().lower().replace("_", "-")
    if wanted not in _STATES:
        raise typer.BadParameter(f"{state!r}: expected one of {', '.join(_STATES)}", param_hint="STATE")
    settings = _settings(config)
    body = {"state": wanted.replace("-", "_"), "reason": reason}
    path = f"/api/agents/{quote(name, safe='')}/state"
    hint = (
        " on the server (agents come from `callcenter agents add`; one added after the server started "
        "is known once its softphone registers)"
    )
    agent = _api(settings, url, "POST", path, body=body, hint_404=hint)
    typer.echo(_state_line(name, agent))


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s // 60 % 60:02d}m"


@agents_app.command("live")
def agents_live(json_out: JsonOpt = False, url: UrlOpt = None, config: ConfigOpt = None) -> None:
    """Agents' live states on the running server: state, for how long, reason, call."""
    settings = _settings(config)
    agents: dict[str, Any] = _api(settings, url, "GET", "/api/agents/live")
    if json_out:
        typer.echo(json.dumps(agents, indent=2))
        return
    if not agents:
        typer.echo("no agents")
        return
    rows = [
        (
            name,
            a["state"] + (f" (then {then})" if (then := _pending(a)) else ""),
            _duration(a.get("since_s") or 0.0),
            a.get("reason") or "-",
            a.get("call_id") or "-",
            # "@NAME" is routing's personal skill for calls transferred to that agent: not news.
            ",".join(f"{k}:{v}" for k, v in (a.get("skills") or {}).items() if not k.startswith("@")) or "-",
        )
        for name, a in sorted(agents.items())
    ]
    _table(("AGENT", "STATE", "FOR", "REASON", "CALL", "SKILLS"), rows)


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
            c.get("node") or "-",
            c["sip_call_id"],
        )
        for c in calls
    ]
    _table(("STARTED (UTC)", "FROM", "TO", "HANGUP BY", "DISPOSITION", "NODE", "CALL-ID"), rows)


def _time_bound(text: str | None, option: str, *, end: bool = False) -> Any:
    from callcenter.store.reports import parse_when

    if text is None:
        return None
    try:
        return parse_when(text, end=end)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Calls started at or after this ISO 8601 date/time (no zone = UTC).",
        show_default=False,
    ),
]
UntilOpt = Annotated[
    str | None,
    typer.Option(
        "--until",
        help="Calls started before this ISO 8601 date/time (no zone = UTC); a bare date includes that day.",
        show_default=False,
    ),
]


@calls_app.command("export")
def calls_export(
    csv_file: Annotated[
        Path,
        typer.Option(
            "--csv", help="CSV file to write ('-' = standard output).", dir_okay=False, show_default=False
        ),
    ],
    since: SinceOpt = None,
    until: UntilOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Export call records as CSV, one row per call, oldest first (times in UTC, ISO 8601).

    Columns: sip_call_id, from, to, started_at, answered_at, ended_at, hangup_by, disposition, flow,
    queue, agent, wait_s, talk_s, offered_agents (;-separated), end_reason, recording. A file is
    written under FILE.part and renamed when complete.
    """
    from callcenter.store.reports import count_calls, iter_calls

    lo, hi = _time_bound(since, "'--since'"), _time_bound(until, "'--until'", end=True)
    to_stdout = str(csv_file) == "-"
    part = csv_file.with_name(csv_file.name + ".part")
    store = _open_store(config, data_dir)
    try:
        total = count_calls(store, since=lo, until=hi)
        try:
            out = sys.stdout if to_stdout else part.open("w", newline="", encoding="utf-8")
        except OSError as exc:
            _fail(f"error: cannot write {csv_file}: {exc.strerror}")
        try:
            count = _write_csv(out, iter_calls(store, since=lo, until=hi), total, bar=not to_stdout)
        except BrokenPipeError:  # `... --csv - | head`: the reader has had enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(1) from None
        finally:
            if not to_stdout:
                out.close()
    except BaseException:
        if not to_stdout:
            part.unlink(missing_ok=True)  # never leave half a file that looks like an export
        raise
    finally:
        store.close()
    if not to_stdout:
        part.replace(csv_file)
        typer.echo(f"exported {count} call{'s' if count != 1 else ''} to {csv_file}")


def _write_csv(out: Any, calls: Any, total: int, *, bar: bool) -> int:
    """Header + one row per call; a progress bar on stderr when it is a terminal. Returns the count."""
    import csv

    from callcenter.store.reports import CSV_COLUMNS, csv_row

    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    count = 0
    hidden = not (bar and sys.stderr.isatty())
    with typer.progressbar(length=total, label="exporting", file=sys.stderr, hidden=hidden) as progress:
        for call in calls:
            writer.writerow(csv_row(call))
            count += 1
            if count % 1000 == 0:
                progress.update(1000)
        progress.update(count % 1000)
    return count


# -- queues ---------------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return f"{value * 100:.1f}%" if value is not None else "-"


def _secs(value: float | None) -> str:
    return f"{value:.1f}s" if value is not None else "-"


@queues_app.command("stats")
def queues_stats(
    since: SinceOpt = None,
    until: UntilOpt = None,
    json_out: JsonOpt = False,
    sl_seconds: Annotated[
        float | None,
        typer.Option(
            "--sl-seconds",
            min=0,
            help="Service-level threshold in seconds (default: each queue's "
            "routing.queues.NAME.service_level_s, which is 20 unless configured).",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Per queue, from the call records: offered, answered, abandoned, overflowed, voicemail,
    service level, average speed of answer (ASA), average handle time (AHT, talk) and longest wait.

    Service level = callers answered within the threshold / (answered + abandoned): every abandoned
    caller counts against it, however short the wait; overflowed callers and voicemails are left out.
    A caller who overflows from one queue into another is counted in both (overflowed in the first);
    waits are per queue. Calls are picked by when they started.
    """
    from callcenter.store.reports import DEFAULT_SL_SECONDS, queue_report

    lo, hi = _time_bound(since, "'--since'"), _time_bound(until, "'--until'", end=True)
    settings = _settings(config, data_dir=data_dir)
    configured = settings.routing.queues
    sl_by_queue = {} if sl_seconds is not None else {n: q.service_level_s for n, q in configured.items()}
    store = _open_store(config, data_dir, settings)
    try:
        reports = queue_report(
            store,
            since=lo,
            until=hi,
            sl_seconds=DEFAULT_SL_SECONDS if sl_seconds is None else sl_seconds,
            sl_by_queue=sl_by_queue,
            queues=configured.keys(),
        )
    finally:
        store.close()
    if json_out:
        typer.echo(json.dumps({name: rep.as_json() for name, rep in reports.items()}, indent=2))
        return
    if not reports:
        typer.echo("no queues")
        return
    callbacks = any(rep.callback for rep in reports.values())
    header = ["QUEUE", "OFFERED", "ANSWERED", "ABANDONED", "OVERFLOWED", "VOICEMAIL"]
    header += ["CALLBACK"] if callbacks else []
    header += ["SERVICE LEVEL", "ASA", "AHT", "LONGEST WAIT"]
    rows = []
    for rep in reports.values():
        row: list[Any] = [rep.queue, rep.offered, rep.answered, rep.abandoned, rep.overflowed, rep.voicemail]
        row += [rep.callback] if callbacks else []
        row += [
            f"{_pct(rep.service_level)} in {rep.sl_seconds:g}s",
            _secs(rep.asa_s),
            _secs(rep.aht_s),
            _secs(rep.longest_wait_s if rep.offered else None),
        ]
        rows.append(row)
    _table(header, rows)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


# -- cluster --------------------------------------------------------------------------------------------


@cluster_app.command("status")
def cluster_status(json_out: JsonOpt = False, config: ConfigOpt = None) -> None:
    """The nodes Redis has seen: alive, last heartbeat, calls held, the leader and its fencing token.
    Without redis_url: "single node" (exit 0). Exit 1 when Redis cannot be read."""
    import asyncio
    import time

    from callcenter.cluster.status import ClusterStatus, format_status, read_status, single_node

    settings = _settings(config)
    if settings.redis_url is None:
        status = single_node(settings.node_id)
    else:
        from redis.asyncio import Redis

        async def read(url: str) -> ClusterStatus:
            redis = Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
            try:
                return await read_status(redis, settings.node_id)
            finally:
                await redis.aclose()

        try:
            status = asyncio.run(read(settings.redis_url))
        except Exception as exc:  # noqa: BLE001 - Redis down or refusing: one line, exit 1
            _fail(f"redis: cannot read the cluster status ({exc})")  # the URL may hold a password
    if json_out:
        typer.echo(json.dumps(status.as_json(), indent=2))
    else:
        typer.echo(format_status(status, time.time()))


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
