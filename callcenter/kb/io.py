"""Import and export of articles: a folder of Markdown files (front matter) or one CSV file.

Import reads and checks every file first and imports nothing when one is wrong (all errors are
reported, each naming its file or CSV line). Articles are matched by slug: a new slug creates an
article, a changed one adds a version, an identical one is left alone, so importing twice is harmless.

CSV columns: ``slug, language, title, tags, status, body``; tags separated by ``|``. A cell that a
spreadsheet would run as a formula (starting with = + - @) is written with a leading ``'`` and read
back without it.

The sample knowledge base (``callcenter/kb/sample``) is imported by :func:`load_sample_if_empty`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from callcenter.kb.markdown import (
    ArticleData,
    ArticleFormatError,
    check_article,
    parse_markdown,
    render_markdown,
)
from callcenter.kb.repo import KbRepo, article_data

__all__ = [
    "CSV_COLUMNS",
    "SAMPLE_DIR",
    "ImportResult",
    "export_articles",
    "import_articles",
    "load_sample_if_empty",
    "read_articles",
]

SAMPLE_DIR = Path(__file__).with_name("sample")
CSV_COLUMNS = ("slug", "language", "title", "tags", "status", "body")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
Progress = Callable[[int, int], None]  # (done, total)


class KbImportError(ArticleFormatError):
    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)


@dataclass
class ImportResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def _safe_cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA) else value


def _unsafe_cell(value: str) -> str:
    return value[1:] if value.startswith("'") and value[1:].startswith(_FORMULA) else value


def _read_csv(path: Path, errors: list[str]) -> list[ArticleData]:
    out: list[ArticleData] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("slug", "language", "title", "body") if c not in (reader.fieldnames or [])]
        if missing:
            expected = ", ".join(CSV_COLUMNS)
            errors.append(f"{path}: missing column(s) {', '.join(missing)} (expected {expected})")
            return out
        for row in reader:
            where = f"{path}:{reader.line_num}"
            cell = {k: _unsafe_cell(v or "") for k, v in row.items() if k is not None}
            try:
                data = ArticleData(
                    slug=cell["slug"].strip(),
                    language=cell["language"].strip().split("-")[0].lower(),
                    title=cell["title"].strip(),
                    body=cell["body"].strip() + "\n",
                    tags=tuple(t.strip() for t in cell.get("tags", "").split("|") if t.strip()),
                    status=cell.get("status", "").strip() or "published",
                )
                out.append(check_article(data, where))
            except ArticleFormatError as exc:
                errors.append(str(exc))
    return out


def read_articles(path: Path) -> list[ArticleData]:
    """Every article under ``path`` (a folder of ``*.md``, searched recursively, or a ``.csv``).

    Raises :class:`KbImportError` listing every problem, including a slug used twice.
    """
    errors: list[str] = []
    articles: list[ArticleData] = []
    if path.is_dir():
        for file in sorted(path.rglob("*.md")):
            try:
                source = file.read_text(encoding="utf-8")
                articles.append(parse_markdown(source, default_slug=file.stem.lower(), where=str(file)))
            except (ArticleFormatError, UnicodeDecodeError) as exc:
                errors.append(str(exc) if isinstance(exc, ArticleFormatError) else f"{file}: not UTF-8")
        if not articles and not errors:
            errors.append(f"{path}: no *.md files")
    elif path.suffix.lower() == ".csv" and path.is_file():
        articles = _read_csv(path, errors)
    else:
        errors.append(f"{path}: expected a folder of Markdown files or a .csv file")
    seen: dict[str, int] = {}
    for data in articles:
        seen[data.slug] = seen.get(data.slug, 0) + 1
    errors.extend(f"slug {slug!r} is used by {n} articles" for slug, n in seen.items() if n > 1)
    if errors:
        raise KbImportError(errors)
    return articles


def import_articles(
    repo: KbRepo, articles: Iterable[ArticleData], *, author: str, progress: Progress | None = None
) -> ImportResult:
    todo = list(articles)
    result = ImportResult()
    for done, data in enumerate(todo, 1):
        existed = repo.get_article(data.slug) is not None
        _, changed = repo.save_article(data, author=author, message="import")
        bucket = result.unchanged if not changed else result.updated if existed else result.created
        bucket.append(data.slug)
        if progress is not None:
            progress(done, len(todo))
    return result


def export_articles(
    repo: KbRepo, path: Path, *, language: str | None = None, progress: Progress | None = None
) -> int:
    """Write every article (of ``language``) to ``path``: a ``.csv`` file, else a folder of
    ``<language>/<slug>.md``; returns how many."""
    articles = repo.list_articles(language=language)
    if path.suffix.lower() == ".csv":
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        for done, article in enumerate(articles, 1):
            data = article_data(article)
            row = (data.slug, data.language, data.title, "|".join(data.tags), data.status, data.body.strip())
            writer.writerow([_safe_cell(v) for v in row])
            if progress is not None:
                progress(done, len(articles))
        path.write_text(buffer.getvalue(), encoding="utf-8")
        return len(articles)
    for done, article in enumerate(articles, 1):
        target = path / article.language / f"{article.slug}.md"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render_markdown(article_data(article)), encoding="utf-8")
        if progress is not None:
            progress(done, len(articles))
    return len(articles)


def load_sample_if_empty(repo: KbRepo, *, sample_dir: Path = SAMPLE_DIR) -> int:
    """Import the sample KB when there is no article at all; returns how many were imported."""
    if repo.count_articles() > 0:
        return 0
    result = import_articles(repo, read_articles(sample_dir), author="sample")
    return len(result.created)
