"""``/api/kb``: knowledge-base search, articles with their versions, votes, and the editors' gap list.

Roles (401 without credentials, 403 with a role not admitted):

* any role (admin, supervisor, agent): ``GET /search``, ``GET /articles``, ``GET /articles/{key}``,
  ``POST /articles/{key}/vote``. Agents see published articles only: drafts (in search, lists and
  by key) need a supervisor or admin.
* supervisor and admin: ``POST /articles`` (create; 409 if the slug exists), ``PATCH /articles/{key}``
  (a new version; fields left out stay), ``POST /articles/{key}/publish``, ``GET /gaps``.

``{key}`` is an article id or slug. Every edit is a version with its author (the user) and message,
and is audited. The knowledge base works in worker threads (KbService); 503 when it is not running.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from callcenter.api.access import STAFF, SUPERVISORS, Access
from callcenter.auth.service import Principal
from callcenter.kb.markdown import ArticleData, ArticleFormatError, spoken_answer
from callcenter.kb.models import KbArticle, KbArticleVersion, KbGap
from callcenter.kb.repo import KbError, SearchHit, article_data
from callcenter.kb.service import KbService

__all__ = ["ArticleCreate", "ArticlePatch", "create_kb_router"]

Status = Literal["draft", "published"]


class ArticleCreate(BaseModel):
    slug: str = Field(min_length=1, max_length=128, description="lower-case letters, digits, - _ .")
    language: str = Field(min_length=2, max_length=16, description="en, zh (a tag such as zh-CN is cut)")
    title: str = Field(min_length=1, max_length=300)
    body: str = Field(max_length=200_000, description="Markdown; the first paragraph is the answer")
    tags: list[str] = Field(default_factory=list, max_length=50)
    status: Status = "draft"
    message: str | None = Field(None, max_length=2000, description="why: kept with the version")


class ArticlePatch(BaseModel):
    language: str | None = Field(None, min_length=2, max_length=16)
    title: str | None = Field(None, min_length=1, max_length=300)
    body: str | None = Field(None, max_length=200_000)
    tags: list[str] | None = Field(None, max_length=50)
    status: Status | None = None
    message: str | None = Field(None, max_length=2000)


class PublishBody(BaseModel):
    message: str | None = Field(None, max_length=2000)


class VoteBody(BaseModel):
    helpful: bool
    conversation_id: str | None = Field(
        None, max_length=255, description="the call or chat: a second vote there replaces the first"
    )


def _time(value: datetime) -> str:
    return value.isoformat()


def article_json(article: KbArticle, *, full: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": article.id,
        "slug": article.slug,
        "language": article.language,
        "title": article.title,
        "tags": list(article.tags or ()),
        "status": article.status,
        "version": article.version,
        "helpful_count": article.helpful_count,
        "not_helpful_count": article.not_helpful_count,
        "flagged": article.flagged,
        "created_at": _time(article.created_at),
        "updated_at": _time(article.updated_at),
    }
    if full:
        out["answer"] = spoken_answer(article.body)
        out["body"] = article.body
    return out


def version_json(version: KbArticleVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "author": version.author,
        "created_at": _time(version.created_at),
        "title": version.title,
        "body": version.body,
        "tags": list(version.tags or ()),
        "status": version.status,
        "message": version.message,
    }


def hit_json(hit: SearchHit) -> dict[str, Any]:
    return {
        "id": hit.article_id,
        "slug": hit.slug,
        "language": hit.language,
        "title": hit.title,
        "status": hit.status,
        "answer": hit.answer,
        "score": round(hit.score, 4),
        "confidence": hit.confidence,
    }


def gap_json(gap: KbGap) -> dict[str, Any]:
    return {
        "id": gap.id,
        "language": gap.language,
        "example": gap.example,
        "key": gap.key,
        "count": gap.count,
        "reasons": dict(gap.reasons or {}),
        "first_seen": _time(gap.first_seen),
        "last_seen": _time(gap.last_seen),
    }


def _editor(principal: Principal) -> bool:
    return principal.role in SUPERVISORS


def create_kb_router(kb: KbService | None, access: Access) -> APIRouter:
    router = APIRouter(prefix="/api/kb", tags=["kb"])
    anyone = Depends(access.require(*STAFF))
    editors = Depends(access.require(*SUPERVISORS))

    def service() -> KbService:
        if kb is None:
            raise HTTPException(503, "the knowledge base is not available")
        return kb

    async def visible(key: str, principal: Principal) -> KbArticle:
        article = await service().article(key)
        if article is None or (article.status != "published" and not _editor(principal)):
            raise HTTPException(404, f"no article {key!r}")
        return article

    async def audit(principal: Principal, action: str, article: KbArticle, request: Request) -> None:
        # the audit row is a database write: off the event loop like the rest
        await asyncio.to_thread(
            access.audit, principal, action, article.slug, request, version=article.version
        )

    async def save(data: ArticleData, principal: Principal, message: str | None) -> tuple[KbArticle, bool]:
        try:
            return await service().save(data, author=principal.username, message=message)
        except ArticleFormatError as exc:
            raise HTTPException(422, str(exc)) from None
        except KbError as exc:
            raise HTTPException(409, str(exc)) from None

    @router.get("/search")
    async def search(
        q: Annotated[str, Query(min_length=1, max_length=2000, description="question or words")],
        principal: Principal = anyone,
        language: Annotated[str | None, Query(max_length=16)] = None,
        limit: Annotated[int, Query(ge=1, le=50)] = 5,
        drafts: bool = False,
    ) -> list[dict[str, Any]]:
        """Best articles for ``q``, with score (backend rank) and confidence (0-1)."""
        if drafts and not _editor(principal):
            raise HTTPException(403, "drafts need the role admin or supervisor")
        hits = await service().search(q, language, limit, include_drafts=drafts)
        return [hit_json(h) for h in hits]

    @router.get("/articles")
    async def list_articles(
        principal: Principal = anyone,
        language: Annotated[str | None, Query(max_length=16)] = None,
        status: Status | None = None,
        flagged: bool | None = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        """A page of articles (without bodies); ``total`` counts every match."""
        if not _editor(principal):
            if status == "draft":
                raise HTTPException(403, "drafts need the role admin or supervisor")
            status = "published"
        items, total = await service().articles(
            language=language, status=status, flagged=flagged, offset=offset, limit=limit
        )
        return {"items": [article_json(a, full=False) for a in items], "total": total, "offset": offset}

    @router.get("/articles/{key}")
    async def get_article(key: str, principal: Principal = anyone) -> dict[str, Any]:
        """The article and every version of it, oldest first."""
        article = await visible(key, principal)
        assert article.id is not None
        versions = await service().versions(article.id)
        return {**article_json(article), "versions": [version_json(v) for v in versions]}

    @router.post("/articles", status_code=201)
    async def create_article(
        body: ArticleCreate, request: Request, principal: Principal = editors
    ) -> dict[str, Any]:
        if await service().article(body.slug) is not None:
            raise HTTPException(409, f"an article {body.slug!r} exists: PATCH it")
        data = ArticleData(
            body.slug,
            body.language.split("-")[0].lower(),
            body.title,
            body.body,
            tuple(body.tags),
            body.status,
        )
        article, _ = await save(data, principal, body.message)
        await audit(principal, "kb_article_created", article, request)
        return article_json(article)

    @router.patch("/articles/{key}")
    async def update_article(
        key: str, body: ArticlePatch, request: Request, principal: Principal = editors
    ) -> dict[str, Any]:
        """A new version with the fields given; an edit that changes nothing adds none."""
        article = await visible(key, principal)
        current = article_data(article)
        data = replace(
            current,
            language=body.language.split("-")[0].lower() if body.language is not None else current.language,
            title=body.title if body.title is not None else current.title,
            body=body.body if body.body is not None else current.body,
            tags=tuple(body.tags) if body.tags is not None else current.tags,
            status=body.status or current.status,
        )
        saved, changed = await save(data, principal, body.message)
        if changed:
            await audit(principal, "kb_article_changed", saved, request)
        return article_json(saved)

    @router.post("/articles/{key}/publish")
    async def publish_article(
        key: str, request: Request, body: PublishBody | None = None, principal: Principal = editors
    ) -> dict[str, Any]:
        article = await visible(key, principal)
        saved, changed = await save(
            replace(article_data(article), status="published"), principal, body.message if body else None
        )
        if changed:
            await audit(principal, "kb_article_published", saved, request)
        return article_json(saved)

    @router.post("/articles/{key}/vote")
    async def vote(key: str, body: VoteBody, principal: Principal = anyone) -> dict[str, Any]:
        """Helpful or not; an article with enough "not helpful" votes is flagged for the editors."""
        article = await visible(key, principal)
        source = "agent" if principal.role == "agent" else "web"
        try:
            voted = await service().vote(
                article.id or 0, body.helpful, conversation_id=body.conversation_id, source=source
            )
        except KbError as exc:
            raise HTTPException(404, str(exc)) from None
        return {
            "id": voted.id,
            "helpful_count": voted.helpful_count,
            "not_helpful_count": voted.not_helpful_count,
            "flagged": voted.flagged,
        }

    @router.get("/gaps")
    async def gaps(
        principal: Principal = editors,
        language: Annotated[str | None, Query(max_length=16)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> list[dict[str, Any]]:
        """Questions nobody answered, grouped: most asked first."""
        return [gap_json(g) for g in await service().gaps(language, limit)]

    return router
