"""``callcenter flows …``: check flow files, export their JSON Schema, try a flow in the terminal;
publish, roll back and compare versions (kept in the database, see ``callcenter.ivr.registry``).

``flows_app`` is mounted by ``callcenter/cli.py`` (``app.add_typer(flows_app, name="flows")``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from callcenter.core.yamlsafe import safe_load
from callcenter.ivr.engine import CallInfo, FlowRunner
from callcenter.ivr.graph import FlowContext
from callcenter.ivr.loader import FlowLoadError, check_flows, flow_files, load_flow
from callcenter.ivr.schema import Flow, flow_json_schema
from callcenter.ivr.services import Services, TicketDraft, TicketUpdate
from callcenter.ivr.textcall import TextCallControl

__all__ = ["DEFAULT_FLOWS_DIR", "flows_app"]

DEFAULT_FLOWS_DIR = Path("ivr_flows")

flows_app = typer.Typer(
    help="Check, export, try and publish IVR flows (ivr_flows/*.yaml).", no_args_is_help=True
)


def _names(text: str | None) -> frozenset[str] | None:
    if text is None:
        return None
    return frozenset(n.strip() for n in text.split(",") if n.strip())


def _names_opt(what: str) -> Any:
    return typer.Option(
        help=f"Comma-separated {what} that exist; flows naming others fail (default: not checked).",
        show_default=False,
    )


@flows_app.command("check")
def check(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Flow files or folders of *.yaml (default: ivr_flows/).", show_default=False),
    ] = None,
    queues: Annotated[str | None, _names_opt("queue names")] = None,
    skills: Annotated[str | None, _names_opt("skill names")] = None,
    intents: Annotated[str | None, _names_opt("intent names")] = None,
    schedules: Annotated[str | None, _names_opt("schedule names")] = None,
    files: Annotated[bool, typer.Option(help="Check that recordings exist.")] = True,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Config file whose queues, intents file and flows folder the check uses, as the server"
            " would (default: ./config.yaml if present; the name flags override it).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Validate flows: YAML, schema, targets, reachability, loops, recordings, names. Exit 1 on errors."""
    settings = _settings(config, None, None) if config is not None or Path("config.yaml").is_file() else None
    default_dir = settings.ivr.flows_dir if settings is not None else DEFAULT_FLOWS_DIR
    targets = paths or [default_dir]
    missing = [p for p in targets if not p.exists()]
    if missing:
        typer.echo(f"error: {missing[0]}: no such file or folder", err=True)
        raise typer.Exit(2)
    context = _context(settings, queues, skills, intents, schedules, check_files=files)
    errors = check_flows(targets, context)
    count = len(flow_files(targets))
    for error in errors:
        typer.echo(str(error))
    if errors:
        bad = len({e.file for e in errors})
        typer.echo(f"{len(errors)} error(s) in {bad} of {count} flow file(s)", err=True)
        raise typer.Exit(1)
    typer.echo(f"{count} flow file(s) OK")


@flows_app.command("schema")
def schema(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file instead of stdout.", show_default=False),
    ] = None,
) -> None:
    """Print the JSON Schema of flow files (for editors such as VS Code's YAML extension)."""
    text = json.dumps(flow_json_schema(), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}")


class _PrintedTickets:
    """Tickets for ``flows try``: printed, numbered, not stored."""

    def __init__(self) -> None:
        self.count = itertools.count(1)

    async def create(self, draft: TicketDraft) -> str:
        ticket_id = f"TRY-{next(self.count)}"
        extra = f", recording {draft.recording}" if draft.recording else ""
        typer.echo(f"[ticket {ticket_id} created: {draft.subject!r}{extra}]")
        return ticket_id

    async def update(self, ticket_id: str, update: TicketUpdate) -> None:
        typer.echo(f"[ticket {ticket_id} updated]")


class _FixedCustomer:
    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    async def lookup(self, caller: str) -> dict[str, Any] | None:
        return self.record or None


def _pairs(items: Sequence[str], option: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint=option)
        out[key.strip()] = safe_load(value) if value.strip() else ""  # 3 → int, true → bool
    return out


def _find_flow(flow: str, flows_dir: Path) -> Path:
    path = Path(flow)
    if path.is_file():
        return path
    for candidate in (flows_dir / flow, flows_dir / f"{flow}.yaml", flows_dir / f"{flow}.yml"):
        if candidate.is_file():
            return candidate
    for file in flow_files([flows_dir]) if flows_dir.is_dir() else []:
        try:
            data = safe_load(file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and data.get("id") == flow:
            return file
    typer.echo(f"error: no flow file or flow id {flow!r} (looked in {flows_dir}/)", err=True)
    raise typer.Exit(2)


def _siblings(path: Path) -> dict[str, Flow]:
    """Other valid flows in the same folder, for subflow nodes."""
    flows: dict[str, Flow] = {}
    for file in flow_files([path.parent]):
        try:
            f = load_flow(file)
        except FlowLoadError:
            continue
        flows.setdefault(f.id, f)
    return flows


@flows_app.command("try")
def try_flow(
    flow: Annotated[str, typer.Argument(help="A flow file, or a flow id / file name in --flows-dir.")],
    caller: Annotated[str, typer.Option(help="Caller ID the flow sees.")] = "+15550100",
    called: Annotated[str, typer.Option(help="Number the caller dialled.")] = "100",
    var: Annotated[
        list[str] | None,
        typer.Option("--var", help="Set a variable: NAME=VALUE (repeatable).", show_default=False),
    ] = None,
    customer: Annotated[
        list[str] | None,
        typer.Option(
            "--customer",
            help="Caller's customer record field, e.g. vip=true (repeatable).",
            show_default=False,
        ),
    ] = None,
    flows_dir: Annotated[Path, typer.Option(help="Folder of flow files.")] = DEFAULT_FLOWS_DIR,
) -> None:
    """Run a flow in the terminal: prompts are printed; type keys (1, 1234#) or words as the caller.

    An empty line is silence (a timeout); /hangup or end of input hangs up.
    """
    variables = _pairs(var or [], "'--var'")
    record = _pairs(customer or [], "'--customer'")
    path = _find_flow(flow, flows_dir)
    try:
        loaded = load_flow(path)
    except FlowLoadError as exc:
        for error in exc.errors:
            typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    services = Services(tickets=_PrintedTickets(), customers=_FixedCustomer(record), flows=_siblings(path))

    def read_line() -> str | None:
        line = sys.stdin.readline()
        return line if line else None

    control = TextCallControl(read_line, typer.echo)
    runner = FlowRunner(loaded, control, services, call=CallInfo("try", caller, called), variables=variables)
    typer.echo(f"[call from {caller} to {called}: flow {loaded.id!r}, language {loaded.language}]")
    quiet = logging.getLogger("callcenter.ivr")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # warnings are printed below, once
    try:
        result = asyncio.run(runner.run())
    finally:
        quiet.setLevel(level)
    for warning in result.warnings:
        typer.echo(f"warning: {warning}")
    typer.echo(f"outcome: {result.outcome} ({result.reason})")
    typer.echo(f"ivr_path: {' > '.join(result.ivr_path)}")
    if result.queue:
        typer.echo(f"queue: {result.queue}, agent: {result.agent or '-'}")


# -- versions: publish, history, rollback, diff -----------------------------------------------------------

_ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Config file (default: ./config.yaml if present).", show_default=False
    ),
]
_DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Override data_dir (the database).", show_default=False)
]
_FlowsDirOpt = Annotated[
    Path | None, typer.Option("--flows-dir", help="Override ivr.flows_dir.", show_default=False)
]
_AuthorOpt = Annotated[str, typer.Option("--author", help="Who publishes (kept in the history).")]
_MessageOpt = Annotated[
    str | None, typer.Option("--message", "-m", help="Why (kept in the history).", show_default=False)
]


def _settings(config: Path | None, data_dir: Path | None, flows_dir: Path | None) -> Any:
    from callcenter.core.config import load_settings
    from callcenter.core.errors import ConfigError

    overrides: dict[str, Any] = {"data_dir": data_dir, "ivr.flows_dir": flows_dir}
    try:
        return load_settings(config, {k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _context(
    settings: Any,
    queues: str | None,
    skills: str | None,
    intents: str | None,
    schedules: str | None,
    *,
    check_files: bool = True,
) -> FlowContext:
    """What flows may name: the flags when given, else what the server checks against — the queues in
    ``routing.queues`` and the intents of ``ivr.intents_file`` (no settings or no such file: not checked)."""
    queue_names = _names(queues)
    intent_names = _names(intents)
    schedule_names = _names(schedules)
    if settings is not None:
        managed_queues, managed_schedules = _managed_names(settings)
        if queue_names is None:
            queue_names = frozenset(settings.routing.queues) | managed_queues
        if schedule_names is None:  # as the server checks: config.yaml's business_hours + the console's
            schedule_names = frozenset(settings.business_hours) | managed_schedules
        intents_file = settings.ivr.intents_file
        if intent_names is None and intents_file is not None and intents_file.is_file():
            from callcenter.core.errors import ConfigError
            from callcenter.ivr.intents import load_intents

            try:
                intent_names = frozenset(load_intents(intents_file).names)
            except ConfigError as exc:
                typer.echo(f"error: ivr.intents_file: {exc}", err=True)
                raise typer.Exit(2) from None
    return FlowContext(
        queues=queue_names,
        skills=_names(skills),
        intents=intent_names,
        schedules=schedule_names,
        check_files=check_files,
    )


def _managed_names(settings: Any) -> tuple[frozenset[str], frozenset[str]]:
    """Queue and schedule names made in the admin console (stored in the database), so a flow naming
    them passes here as it does on the server. Read-only: a database that does not exist yet, or has no
    such tables, has none."""
    url = settings.db_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return frozenset(), frozenset()
    from callcenter.store import Store
    from callcenter.store.admin_config import AdminConfigRepo

    store = Store(url)
    try:
        repo = AdminConfigRepo(store.engine)
        return frozenset(repo.queues()), frozenset(repo.schedules())
    except Exception:  # noqa: BLE001 - no console tables (an older schema): nothing managed
        return frozenset(), frozenset()
    finally:
        store.close()


def _registry(settings: Any, context: FlowContext | None = None) -> Any:
    from callcenter.ivr.registry import FlowRegistry
    from callcenter.store import Store  # SQLAlchemy only for the commands that need it

    try:
        store = Store.from_settings(settings)
    except Exception as exc:  # noqa: BLE001 - any driver error: say which database
        typer.echo(f"error: database {settings.db_url}: {exc}", err=True)
        raise typer.Exit(1) from None
    return FlowRegistry(store, context=context)


async def _load_others(registry: Any, flows_dir: Path, exclude: Sequence[Path] = ()) -> None:
    """Load the folder's flows (the context for checks; changed files get recorded) without failing on
    an invalid one: the flow being published may be the fix."""
    if not flows_dir.is_dir():
        typer.echo(f"error: {flows_dir}: no such folder (ivr.flows_dir)", err=True)
        raise typer.Exit(2)
    for error in await registry.load(flows_dir, strict=False, exclude=exclude):
        typer.echo(f"warning: {error}", err=True)


def _run(coro: Any) -> Any:
    """``asyncio.run`` with the registry's own log lines muted: this command prints what matters."""
    quiet = logging.getLogger("callcenter.ivr.flows")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return asyncio.run(coro)
    finally:
        quiet.setLevel(level)


def _report(result: Any, what: str) -> None:
    if not result.ok:
        for error in result.errors:
            typer.echo(str(error))
        live = f"; version {result.version} stays live" if result.version is not None else ""
        typer.echo(f"{what} refused: {len(result.errors)} error(s){live}", err=True)
        raise typer.Exit(1)
    if result.changed:
        path = result.live.path if result.live is not None else None
        typer.echo(f"{result.flow_id}: version {result.version} is live ({path})")
    else:
        typer.echo(f"{result.flow_id}: unchanged, version {result.version} stays live")


@flows_app.command("publish")
def publish(
    file: Annotated[Path, typer.Argument(help="The flow file to publish (its id names the flow).")],
    author: _AuthorOpt,
    message: _MessageOpt = None,
    config: _ConfigOpt = None,
    data_dir: _DataDirOpt = None,
    flows_dir: _FlowsDirOpt = None,
    queues: Annotated[str | None, _names_opt("queue names")] = None,
    skills: Annotated[str | None, _names_opt("skill names")] = None,
    intents: Annotated[str | None, _names_opt("intent names")] = None,
    schedules: Annotated[str | None, _names_opt("schedule names")] = None,
) -> None:
    """Check FILE against the other flows and make it the live version: stored with its author and
    diff, written into the flows folder (a running server picks it up for new calls). Exit 1 if refused."""
    from callcenter.ivr.versions import InvalidPublishError, declared_id, read_flow_file

    settings = _settings(config, data_dir, flows_dir)
    text, _, error = read_flow_file(file)
    if text is None:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2)
    context = _context(settings, queues, skills, intents, schedules)
    registry = _registry(settings, context)
    flow_id = declared_id(text) or file.stem

    async def run() -> Any:
        await _load_others(registry, settings.ivr.flows_dir, exclude=[file])
        # a file inside the flows folder is published in place: it is that flow's file
        folder = settings.ivr.flows_dir
        in_place = folder / file.name if file.resolve().parent == folder.resolve() else None
        return await registry.publish(
            flow_id, text, author=author, source="cli", message=message, path=in_place
        )

    try:
        result = _run(run())
    except InvalidPublishError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _report(result, "publish")


@flows_app.command("history")
def history(
    flow: Annotated[str, typer.Argument(help="Flow id.")],
    json_out: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
    config: _ConfigOpt = None,
    data_dir: _DataDirOpt = None,
) -> None:
    """Every published version of a flow, oldest first: who, when, how, why."""
    from callcenter.ivr.versions import FlowNotFoundError
    from callcenter.store.flow_versions import flow_version_public

    registry = _registry(_settings(config, data_dir, None))
    try:
        rows = _run(registry.history(flow))
    except FlowNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if json_out:
        typer.echo(json.dumps([flow_version_public(r) for r in rows], indent=2, ensure_ascii=False))
        return
    for row in rows:
        when = row.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        how = f"rollback of v{row.rolled_back_from}" if row.rolled_back_from is not None else row.source
        note = f"  {row.message}" if row.message else ""
        typer.echo(f"v{row.version}  {when}  {row.author}  ({how}){note}")


@flows_app.command("rollback")
def rollback(
    flow: Annotated[str, typer.Argument(help="Flow id.")],
    version: Annotated[int, typer.Argument(help="The version to make live again.", min=1)],
    author: _AuthorOpt,
    message: _MessageOpt = None,
    config: _ConfigOpt = None,
    data_dir: _DataDirOpt = None,
    flows_dir: _FlowsDirOpt = None,
) -> None:
    """Publish an earlier version again, as a new version (the history is kept). Exit 1 if refused."""
    from callcenter.ivr.versions import FlowNotFoundError, InvalidPublishError

    settings = _settings(config, data_dir, flows_dir)
    registry = _registry(settings)

    async def run() -> Any:
        await _load_others(registry, settings.ivr.flows_dir)
        return await registry.rollback(flow, version, author=author, message=message)

    try:
        result = _run(run())
    except (FlowNotFoundError, InvalidPublishError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    _report(result, "rollback")


@flows_app.command("diff")
def diff(
    flow: Annotated[str, typer.Argument(help="Flow id.")],
    v1: Annotated[int | None, typer.Argument(help="From this version (default: the one before V2).")] = None,
    v2: Annotated[int | None, typer.Argument(help="To this version (default: the newest).")] = None,
    config: _ConfigOpt = None,
    data_dir: _DataDirOpt = None,
) -> None:
    """Unified diff between two versions of a flow (default: the newest change)."""
    from callcenter.ivr.versions import FlowNotFoundError

    registry = _registry(_settings(config, data_dir, None))
    try:
        text = _run(registry.diff(flow, v1, v2))
    except FlowNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(text, nl=False)
