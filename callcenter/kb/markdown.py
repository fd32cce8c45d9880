"""Articles as Markdown files with YAML front matter, and the plain text a bot reads out.

File format (one article per file; ``slug`` defaults to the file name without ``.md``)::

    ---
    slug: returns-policy
    language: en
    title: How to return an item
    tags: [return, refund]
    status: published          # or draft; default published
    ---
    You can return most items within 30 days …   ← first paragraph: the spoken / chat answer

    ## Details …
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from callcenter.core.errors import CallcenterError
from callcenter.core.yamlsafe import safe_load

__all__ = [
    "ArticleData",
    "ArticleFormatError",
    "check_article",
    "parse_markdown",
    "render_markdown",
    "spoken_answer",
    "to_plain",
]

_FRONT = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)
_SLUG = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")


class ArticleFormatError(CallcenterError, ValueError):
    """An article file or row cannot be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class ArticleData:
    """An article as imported or exported (no counters, no history)."""

    slug: str
    language: str
    title: str
    body: str
    tags: tuple[str, ...] = ()
    status: str = "published"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def check_article(data: ArticleData, where: str) -> ArticleData:
    if not _SLUG.fullmatch(data.slug):
        raise ArticleFormatError(f"{where}: slug {data.slug!r}: expected lower-case letters, digits, - _ .")
    if not re.fullmatch(r"[a-z]{2,3}", data.language):
        raise ArticleFormatError(f"{where}: language {data.language!r}: expected a code such as en or zh")
    if not data.title.strip():
        raise ArticleFormatError(f"{where}: title: expected a non-empty title")
    if data.status not in ("draft", "published"):
        raise ArticleFormatError(f"{where}: status {data.status!r}: expected draft or published")
    return data


def parse_markdown(source: str, *, default_slug: str, where: str) -> ArticleData:
    match = _FRONT.match(source)
    if match is None:
        raise ArticleFormatError(f"{where}: expected front matter between '---' lines at the top")
    try:
        meta = safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise ArticleFormatError(f"{where}: front matter: {exc}".replace("\n", " ")) from None
    if not isinstance(meta, dict):
        raise ArticleFormatError(f"{where}: front matter: expected key: value lines")
    tags = meta.get("tags") or []
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",")]
    if not isinstance(tags, list):
        raise ArticleFormatError(f"{where}: tags: expected a list")
    language = str(meta.get("language", "")).replace("_", "-").split("-")[0].lower()
    known = {"slug", "language", "title", "tags", "status"}
    data = ArticleData(
        slug=str(meta.get("slug", default_slug)),
        language=language,
        title=str(meta.get("title", "")).strip(),
        body=source[match.end() :].strip() + "\n",
        tags=tuple(str(t).strip() for t in tags if str(t).strip()),
        status=str(meta.get("status", "published")),
        extra={k: v for k, v in meta.items() if k not in known},
    )
    return check_article(data, where)


def render_markdown(data: ArticleData) -> str:
    meta = {
        "slug": data.slug,
        "language": data.language,
        "title": data.title,
        "tags": list(data.tags),
        "status": data.status,
        **data.extra,
    }
    front = yaml.safe_dump(meta, allow_unicode=True, sort_keys=False, width=1000)
    return f"---\n{front}---\n{data.body.strip()}\n"


_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MARKS = re.compile(r"(\*\*|__|\*|_|`)(.+?)\1")


def to_plain(markdown: str) -> str:
    """Markdown without its markup, lines joined (for speech and previews)."""
    lines = []
    for line in markdown.splitlines():
        line = re.sub(r"^\s{0,3}(#{1,6}\s+|>\s?|[-*+]\s+|\d+[.)]\s+)", "", line)
        line = _MARKS.sub(r"\2", _LINK.sub(r"\1", line))
        lines.append(line.strip())
    return " ".join(part for part in lines if part)


def spoken_answer(body: str, *, max_chars: int = 400) -> str:
    """The first paragraph that is not a heading, as plain text, cut at a sentence near max_chars."""
    for block in re.split(r"\n\s*\n", body.strip()):
        if block.lstrip().startswith("#"):
            continue
        plain = to_plain(block)
        if not plain:
            continue
        if len(plain) <= max_chars:
            return plain
        cut = plain[:max_chars]
        end = max(cut.rfind(p) for p in (". ", "。", "！", "？", "! ", "? "))
        return cut[: end + 1].strip() if end > max_chars // 3 else cut.rstrip() + "…"
    return ""
