"""``callcenter tickets`` and ``callcenter customers``: the ticket desk and the customer list from a shell.

Registered in callcenter/cli.py with ``app.add_typer(tickets_app, name="tickets")`` and
``app.add_typer(customers_app, name="customers")``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from callcenter.core.config import Settings
    from callcenter.store import Store

__all__ = ["customers_app", "tickets_app"]

tickets_app = typer.Typer(help="Tickets: list, show, change status, assign.", no_args_is_help=True)
customers_app = typer.Typer(help="Customers: add, list, import from CSV.", no_args_is_help=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="YAML config file (default: config.yaml).", dir_okay=False, show_default=False
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Directory for the database (default: ./data).", file_okay=False,
                 show_default=False),
]  # fmt: skip
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ActorOpt = Annotated[str, typer.Option("--by", help="Who makes the change (kept in the ticket's history).")]
Number = Annotated[int, typer.Argument(metavar="NUMBER", help="The ticket's number.")]


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def _open(config: Path | None, data_dir: Path | None) -> tuple[Settings, Store]:
    from callcenter.cli import _open_store, _settings  # the main CLI's config and error handling

    settings = _settings(config, data_dir=data_dir)
    return settings, _open_store(config, data_dir, settings)


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


# -- tickets -----------------------------------------------------------------------------------------------


@tickets_app.command("list")
def tickets_list(
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status", "-s", help="Only these statuses (repeatable): new, open, pending, solved, closed."
        ),
    ] = None,
    assignee: Annotated[str | None, typer.Option("--assignee", help="Only this agent's tickets.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", help="Only this queue's tickets.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10000, help="At most this many.")] = 50,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many (pagination).")] = 0,
    json_out: JsonOpt = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List tickets, most recently changed first."""
    from callcenter.tickets import TicketError, TicketRepo, ticket_public

    _, store = _open(config, data_dir)
    try:
        rows = TicketRepo(store.engine).list_tickets(
            status=status or (), assignee=assignee, queue=queue, limit=limit, offset=offset
        )
    except TicketError as exc:
        _fail(f"error: {exc}", 2)
    finally:
        store.close()
    tickets = [ticket_public(t) for t in rows]
    if json_out:
        typer.echo(json.dumps(tickets, indent=2, ensure_ascii=False))
        return
    if not tickets:
        typer.echo("no tickets")
        return
    _table(
        ("#", "STATUS", "PRIORITY", "QUEUE", "ASSIGNEE", "UPDATED (UTC)", "SUBJECT"),
        [
            (
                t["number"],
                t["status"],
                t["priority"],
                t["queue"] or "-",
                t["assignee"] or "-",
                (t["updated_at"] or "")[:16].replace("T", " "),
                t["subject"],
            )  # fmt: skip
            for t in tickets
        ],
    )


@tickets_app.command("show")
def tickets_show(
    number: Number, json_out: JsonOpt = False, data_dir: DataDirOpt = None, config: ConfigOpt = None
) -> None:
    """Show a ticket: fields, summary, conversations with their messages, history."""
    from callcenter.customers import customer_public
    from callcenter.tickets import TicketNotFound, TicketRepo, ticket_public
    from callcenter.tickets.repo import conversation_public

    _, store = _open(config, data_dir)
    try:
        detail = TicketRepo(store.engine).get(number)
    except TicketNotFound as exc:
        _fail(f"error: {exc}")
    finally:
        store.close()
    out = ticket_public(detail.ticket)
    out["body"] = detail.ticket.body
    out["customer"] = customer_public(detail.customer, []) if detail.customer is not None else None
    out["conversations"] = [conversation_public(c, m) for c, m in detail.conversations]
    out["events"] = [
        {"at": e.at.isoformat(), "actor": e.actor, "field": e.field, "old": e.old, "new": e.new}
        for e in detail.events
    ]
    if json_out:
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    typer.echo(f"#{out['number']}  {out['subject']}")
    typer.echo(f"status {out['status']}, priority {out['priority']}, queue {out['queue'] or '-'}, "
               f"assignee {out['assignee'] or '-'}, category {out['category'] or '-'}")  # fmt: skip
    if out["tags"]:
        typer.echo(f"tags: {', '.join(out['tags'])}")
    customer = out["customer"]
    if customer is not None:
        vip = f", VIP {customer['vip_level']}" if customer["vip"] else ""
        typer.echo(f"customer {customer['id']}: {customer['name'] or '(no name)'}{vip}")
    if out["body"]:
        typer.echo(f"\n{out['body']}")
    if out["summary"]:
        typer.echo(f"\nSummary:\n{out['summary']}")
    for conv in out["conversations"]:
        when = conv["started_at"][:16].replace("T", " ")
        where = f"queue {conv['queue'] or '-'}, agent {conv['agent'] or '-'}"
        typer.echo(f"\n{conv['channel']} {when} ({conv['disposition'] or 'open'}, {where})")
        for m in conv["messages"]:
            typer.echo(f"  {m['speaker']}: {m['text']}")
    typer.echo("\nHistory:")
    for e in out["events"]:
        change = f"{e['old']} → {e['new']}" if e["old"] is not None else (e["new"] or "")
        typer.echo(f"  {e['at'][:19].replace('T', ' ')}  {e['actor']}  {e['field']}  {change}")


@tickets_app.command("set-status")
def tickets_set_status(
    number: Number,
    status: Annotated[str, typer.Argument(metavar="STATUS", help="new, open, pending, solved or closed.")],
    by: ActorOpt = "cli",
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Change a ticket's status (new → open → pending → solved → closed; solved/closed → open reopens)."""
    from callcenter.tickets import InvalidTransition, TicketNotFound, TicketRepo

    _, store = _open(config, data_dir)
    try:
        ticket = TicketRepo(store.engine).set_status(number, status.strip().lower(), actor=by)
    except (InvalidTransition, TicketNotFound) as exc:
        _fail(f"error: ticket {number}: {exc}" if isinstance(exc, InvalidTransition) else f"error: {exc}")
    finally:
        store.close()
    typer.echo(f"ticket {number} is {ticket.status}")


@tickets_app.command("assign")
def tickets_assign(
    number: Number,
    agent: Annotated[
        str | None, typer.Argument(metavar="AGENT", help="Agent username; omit with --none.")
    ] = None,
    unassign: Annotated[bool, typer.Option("--none", help="Remove the assignee.")] = False,
    by: ActorOpt = "cli",
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Assign a ticket to an agent (a new ticket becomes open), or --none to unassign."""
    from callcenter.tickets import TicketNotFound, TicketRepo

    if (agent is None) == (not unassign):
        _fail("error: give an AGENT or --none", 2)
    settings, store = _open(config, data_dir)
    try:
        if agent is not None and store.get_agent(agent) is None:
            _fail(f"error: no agent {agent!r} (see `callcenter agents list`)")
        ticket = TicketRepo(store.engine).assign(number, agent, actor=by)
    except TicketNotFound as exc:
        _fail(f"error: {exc}")
    finally:
        store.close()
    typer.echo(
        f"ticket {number} assigned to {ticket.assignee}" if ticket.assignee else f"ticket {number} unassigned"
    )


# -- customers ---------------------------------------------------------------------------------------------


@customers_app.command("add")
def customers_add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The customer's name.")],
    phone: Annotated[list[str] | None, typer.Option("--phone", help="A phone number (repeatable).")] = None,
    email: Annotated[str | None, typer.Option("--email", help="Email address.")] = None,
    wechat_openid: Annotated[str | None, typer.Option("--wechat-openid", help="WeChat OpenID.")] = None,
    vip: Annotated[int, typer.Option("--vip", min=0, max=9, help="VIP level 0-9 (0: not VIP).")] = 0,
    external_id: Annotated[str | None, typer.Option("--external-id", help="Id in your CRM.")] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Add a customer; calls from its numbers are linked to it (VIPs get priority)."""
    from callcenter.customers import CustomerError, CustomerRepo

    settings, store = _open(config, data_dir)
    repo = CustomerRepo(store.engine, country_code=settings.tickets.phone_country_code)
    try:
        customer = repo.add(name, phone or (), email=email, wechat_openid=wechat_openid, vip_level=vip,
                            external_id=external_id)  # fmt: skip
    except CustomerError as exc:
        _fail(f"error: {exc}")
    finally:
        store.close()
    typer.echo(f"added customer {customer.id} ({customer.name or 'no name'})")


@customers_app.command("list")
def customers_list(
    search: Annotated[str | None, typer.Option("--search", help="Name, email or phone number.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10000, help="At most this many.")] = 50,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many (pagination).")] = 0,
    json_out: JsonOpt = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List customers."""
    from callcenter.customers import CustomerRepo, customer_public

    settings, store = _open(config, data_dir)
    try:
        repo = CustomerRepo(store.engine, country_code=settings.tickets.phone_country_code)
        customers = [
            customer_public(c, p) for c, p in repo.list_customers(limit=limit, offset=offset, search=search)
        ]
    finally:
        store.close()
    if json_out:
        typer.echo(json.dumps(customers, indent=2, ensure_ascii=False))
        return
    if not customers:
        typer.echo("no customers")
        return
    _table(
        ("ID", "NAME", "PHONES", "EMAIL", "VIP", "EXTERNAL ID"),
        [
            (
                c["id"],
                c["name"] or "-",
                ",".join(c["phones"]) or "-",
                c["email"] or "-",
                c["vip_level"] or "-",
                c["external_id"] or "-",
            )  # fmt: skip
            for c in customers
        ],
    )


@customers_app.command("import")
def customers_import(
    path: Annotated[
        Path,
        typer.Argument(
            metavar="CSV",
            help="CSV with a header: name,phones,email,wechat_openid,"
            "vip_level,external_id (phones separated by ';').",
            exists=True,
            dir_okay=False,
        ),
    ],  # fmt: skip
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Import customers from CSV: matching ones (external id, phone, email) are updated, others added.
    Bad rows are listed and skipped; exit status 1 when there were any."""
    from callcenter.customers import CustomerError, CustomerRepo

    settings, store = _open(config, data_dir)
    try:
        repo = CustomerRepo(store.engine, country_code=settings.tickets.phone_country_code)
        with path.open(encoding="utf-8-sig", newline="") as source:
            result = repo.import_csv(source)
    except CustomerError as exc:
        _fail(f"error: {path}: {exc}")
    except UnicodeDecodeError:
        _fail(f"error: {path}: expected UTF-8 text")
    finally:
        store.close()
    for error in result.errors:
        typer.echo(f"{path}: {error}", err=True)
    typer.echo(f"{result.created} added, {result.updated} updated, {len(result.errors)} skipped")
    if result.errors:
        raise typer.Exit(1)
