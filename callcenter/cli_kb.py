"""`callcenter kb search | show | import | export | gaps`: the knowledge base from the terminal.

Every command opens the configured database (migrated to the newest schema); an empty knowledge base
gets the sample articles first, so ``kb search`` answers out of the box.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from callcenter.core.config import ConfigError, load_settings

if TYPE_CHECKING:
    from callcenter.kb.repo import KbRepo

kb_app = typer.Typer(help="Knowledge base: search, show, import, export, gaps.", no_args_is_help=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.", dir_okay=False)]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Directory for the database (default: ./data).", file_okay=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
LanguageOpt = Annotated[
    str | None, typer.Option("--language", "-l", help="Only this language (en, zh, zh-CN …).")
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


@contextmanager
def _repo(config: Path | None, data_dir: Path | None, *, sample: bool = True) -> Iterator[KbRepo]:
    from callcenter.kb.io import load_sample_if_empty  # SQLAlchemy and jieba only when a command runs
    from callcenter.kb.repo import KbRepo
    from callcenter.store import Store, StoreError

    try:
        settings = load_settings(config, {"data_dir": data_dir} if data_dir is not None else {})
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    try:
        store = Store.from_settings(settings)
    except StoreError as exc:
        raise _fail(f"database: {exc}", 2) from None
    try:
        repo = KbRepo(store.engine)
        repo.ensure_schema()
        if sample and load_sample_if_empty(repo):
            typer.echo("the knowledge base was empty: sample articles loaded", err=True)
        yield repo
    finally:
        store.close()


def _hit_json(hit: Any) -> dict[str, Any]:
    return {
        "id": hit.article_id,
        "slug": hit.slug,
        "language": hit.language,
        "title": hit.title,
        "status": hit.status,
        "score": round(hit.score, 4),
        "confidence": hit.confidence,
        "answer": hit.answer,
    }


@kb_app.command("search")
def kb_search(
    query: Annotated[str, typer.Argument(help="Question or words to look for.")],
    language: LanguageOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100, help="How many results.")] = 5,
    drafts: Annotated[bool, typer.Option("--drafts", help="Include draft articles.")] = False,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Best articles for QUERY, with their score and confidence (0-1)."""
    with _repo(config, data_dir) as repo:
        hits = repo.search(query, language=language, limit=limit, include_drafts=drafts)
    if json_out:
        typer.echo(json.dumps([_hit_json(h) for h in hits], ensure_ascii=False, indent=2))
        return
    if not hits:
        typer.echo("no matching article")
        raise typer.Exit(1)
    for hit in hits:
        draft = "  [draft]" if hit.status != "published" else ""
        typer.echo(
            f"{hit.article_id:>5}  {hit.confidence:4.2f}  {hit.language}  {hit.title}  ({hit.slug}){draft}"
        )


@kb_app.command("show")
def kb_show(
    article: Annotated[str, typer.Argument(help="Article id or slug.")],
    history: Annotated[bool, typer.Option("--history", help="List every version.")] = False,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """One article: its text, status, votes and versions."""
    with _repo(config, data_dir) as repo:
        found = repo.get_article(article)
        if found is None or found.id is None:
            raise _fail(f"no article {article!r}")
        versions = repo.versions(found.id)
    data = {
        "id": found.id,
        "slug": found.slug,
        "language": found.language,
        "title": found.title,
        "status": found.status,
        "tags": list(found.tags or ()),
        "version": found.version,
        "helpful": found.helpful_count,
        "not_helpful": found.not_helpful_count,
        "flagged": found.flagged,
        "updated_at": found.updated_at.isoformat(),
        "body": found.body,
        "versions": [
            {
                "version": v.version,
                "author": v.author,
                "created_at": v.created_at.isoformat(),
                "message": v.message,
            }
            for v in versions
        ],
    }
    if json_out:
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    flag = "  FLAGGED (voted not helpful)" if found.flagged else ""
    typer.echo(f"# {found.title}\n")
    typer.echo(f"id {found.id} · {found.slug} · {found.language} · {found.status} · version {found.version}")
    typer.echo(f"tags: {', '.join(found.tags or ()) or '-'}")
    typer.echo(f"helpful {found.helpful_count} · not helpful {found.not_helpful_count}{flag}\n")
    typer.echo(found.body.rstrip())
    if history:
        typer.echo("")
        for v in versions:
            typer.echo(f"v{v.version}  {v.created_at:%Y-%m-%d %H:%M}  {v.author}  {v.message or ''}".rstrip())


@contextmanager
def _progress(label: str) -> Iterator[Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), console=Console(stderr=True), transient=False
    ) as progress:
        task = progress.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


@kb_app.command("import")
def kb_import(
    path: Annotated[
        Path, typer.Argument(help="A folder of Markdown files with front matter, or a .csv file.")
    ],
    author: Annotated[str, typer.Option("--author", help="Recorded on each new version.")] = "import",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create or update articles (matched by slug); nothing is imported if any file is wrong."""
    from callcenter.kb.io import import_articles, read_articles
    from callcenter.kb.markdown import ArticleFormatError

    try:
        articles = read_articles(path)
    except ArticleFormatError as exc:
        raise _fail(str(exc)) from None
    with _repo(config, data_dir, sample=False) as repo, _progress("importing") as update:
        result = import_articles(repo, articles, author=author, progress=update)
    typer.echo(
        f"{len(result.created)} created, {len(result.updated)} updated, {len(result.unchanged)} unchanged"
    )


@kb_app.command("export")
def kb_export(
    path: Annotated[Path, typer.Argument(help="A folder (Markdown, one file per article) or a .csv file.")],
    language: LanguageOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Write every article to PATH (re-importable with `kb import`)."""
    from callcenter.kb.io import export_articles

    if path.exists() and path.is_file() and path.suffix.lower() != ".csv":
        raise _fail(f"{path}: expected a folder or a .csv file")
    with _repo(config, data_dir) as repo, _progress("exporting") as update:
        n = export_articles(repo, path, language=language, progress=update)
    typer.echo(f"{n} articles written to {path}")


@kb_app.command("gaps")
def kb_gaps(
    language: LanguageOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many groups.")] = 50,
    json_out: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Questions nobody could answer, grouped and counted, most asked first."""
    with _repo(config, data_dir) as repo:
        gaps = repo.gaps(language=language, limit=limit)
    rows = [
        {
            "id": g.id,
            "language": g.language,
            "count": g.count,
            "example": g.example,
            "key": g.key,
            "reasons": g.reasons,
            "first_seen": g.first_seen.isoformat(),
            "last_seen": g.last_seen.isoformat(),
        }
        for g in gaps
    ]
    if json_out:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        typer.echo("no gaps recorded")
    for g in gaps:
        typer.echo(f"{g.count:>5}  {g.language}  {g.example}  (last {g.last_seen:%Y-%m-%d %H:%M})")
