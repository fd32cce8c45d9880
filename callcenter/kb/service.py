"""``KbService``: the knowledge base for the IVR, the chat bot and agent assist, off the event loop.

Every database call runs in a worker thread (``asyncio.to_thread``); jieba is loaded there too.

* :meth:`KbService.answer` implements :class:`callcenter.ivr.services.KnowledgeBase`: the best
  published article in the caller's language when its confidence reaches ``min_confidence``, else
  None — and the question is counted as a gap.
* :meth:`KbService.suggest` gives an agent the top articles for the tail of a running transcript.
* :meth:`KbService.vote` and :meth:`KbService.record_gap` feed the editors' lists (flagged articles,
  gaps grouped by meaning).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.engine import Engine

from callcenter.ivr.services import KbAnswer
from callcenter.kb import text as kbtext
from callcenter.kb.io import load_sample_if_empty
from callcenter.kb.markdown import ArticleData
from callcenter.kb.models import KbArticle, KbArticleVersion, KbGap
from callcenter.kb.repo import KbRepo, SearchHit

__all__ = ["KbService"]

log = logging.getLogger(__name__)


class KbService:
    def __init__(
        self,
        repo: KbRepo,
        *,
        min_confidence: float = 0.55,
        suggest_min_confidence: float = 0.15,
        suggest_words: int = 40,
        suggest_terms: int = 12,
    ) -> None:
        self.repo = repo
        self.min_confidence = min_confidence
        self.suggest_min_confidence = suggest_min_confidence
        self.suggest_words = suggest_words
        self.suggest_terms = suggest_terms

    @classmethod
    async def open(
        cls, engine: Engine, *, load_sample: bool = True, flag_after: int = 3, **kwargs: Any
    ) -> KbService:
        """Tables and index ready, the sample KB loaded into an empty KB, jieba warmed — all in a thread."""
        repo = KbRepo(engine, flag_after=flag_after)

        def prepare() -> None:
            repo.ensure_schema()
            if load_sample:
                loaded = load_sample_if_empty(repo)
                if loaded:
                    log.info("kb sample loaded", extra={"articles": loaded})
            kbtext.warm()

        await asyncio.to_thread(prepare)
        return cls(repo, **kwargs)

    async def search(
        self, query: str, language: str | None = None, limit: int = 5, *, include_drafts: bool = False
    ) -> list[SearchHit]:
        return await asyncio.to_thread(
            self.repo.search, query, language=language, limit=limit, include_drafts=include_drafts
        )

    async def article(self, key: int | str) -> KbArticle | None:
        """By id or slug."""
        return await asyncio.to_thread(self.repo.get_article, key)

    async def articles(
        self,
        *,
        language: str | None = None,
        status: str | None = None,
        flagged: bool | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[KbArticle], int]:
        """A page of articles and the total matching the filters."""
        return await asyncio.to_thread(
            self.repo.page_articles,
            language=language,
            status=status,
            flagged=flagged,
            offset=offset,
            limit=limit,
        )

    async def versions(self, article_id: int) -> list[KbArticleVersion]:
        return await asyncio.to_thread(self.repo.versions, article_id)

    async def save(
        self, data: ArticleData, *, author: str, message: str | None = None
    ) -> tuple[KbArticle, bool]:
        """Create or update (a new version) the article ``data.slug``; (article, changed)."""
        return await asyncio.to_thread(self.repo.save_article, data, author=author, message=message)

    async def answer(self, question: str, *, language: str) -> KbAnswer | None:
        """The KnowledgeBase protocol: an answer only when confident; otherwise a gap is recorded."""
        hits = await self.search(question, language, 1)
        best = hits[0] if hits else None
        if best is None or best.confidence < self.min_confidence or not best.answer:
            await self.record_gap(question, language, reason="no_answer")
            return None
        return KbAnswer(text=best.answer, article_id=str(best.article_id), score=best.confidence)

    async def suggest(self, text: str, language: str | None, limit: int = 3) -> list[SearchHit]:
        """Agent assist: the best articles for the last ``suggest_words`` words of a transcript, searched
        by their ``suggest_terms`` most telling terms (chit-chat words found everywhere only cost time).

        Word cutting (jieba) happens in the worker thread too: a long transcript takes milliseconds."""
        if not text.strip():
            return []

        def run() -> list[SearchHit]:
            tail = " ".join(kbtext.plain_words(text)[-self.suggest_words :])
            if not tail:
                return []
            hits = self.repo.search(tail, language=language, limit=limit, max_terms=self.suggest_terms)
            return [h for h in hits if h.confidence >= self.suggest_min_confidence]

        return await asyncio.to_thread(run)

    async def vote(
        self, article_id: int | str, helpful: bool, *, conversation_id: str | None = None, source: str = ""
    ) -> KbArticle:
        return await asyncio.to_thread(
            self.repo.vote, int(article_id), helpful, conversation_id=conversation_id, source=source
        )

    async def record_gap(self, question: str, language: str, *, reason: str = "handoff") -> KbGap | None:
        """Count a question nobody answered (the bot found nothing, or the caller asked for a person)."""
        return await asyncio.to_thread(self.repo.record_gap, question, language, reason=reason)

    async def gaps(self, language: str | None = None, limit: int = 50) -> list[KbGap]:
        return await asyncio.to_thread(self.repo.gaps, language=language, limit=limit)
