"""The full-text index behind KB search, one implementation per database backend.

Both index the output of :func:`callcenter.kb.text.analyse` (stemmed English, jieba-cut Chinese, terms
separated by spaces) in three fields — title, tags, body — so that a title hit outweighs a body hit:

* SQLite: an FTS5 table (rowid = article id, ``unicode61`` tokenizer) ranked by ``bm25()`` with column
  weights, plus an ``fts5vocab`` table for document frequencies.
* PostgreSQL: a table of the analysed fields and their ``tsvector`` (``simple`` configuration: no
  second stemming) with the title as weight A, tags B and body D, a GIN index, ranked by ``ts_rank``
  with those weights and length normalisation (PostgreSQL has no BM25; ``ts_rank`` lacks IDF, which
  the confidence adds back).

Rows are written by the repository inside the transaction that edits the article, so search never
sees an edit half done. Queries are an OR of the question's terms: an article matching more (and
rarer) terms ranks higher.

Speed on SQLite (MaxScore pruning, Turtle & Flood 1995): ``bm25()`` costs about a microsecond per
matching row, and an OR with one common word ("order") matches a large share of a big KB. FTS5's
BM25 is a sum over the query's phrases, each term's part bounded by idf·(k1 + 1) whatever its
frequency, and idf depends on the term alone. Given document frequencies (the repository caches
them), the terms split into rare ones R and common ones C; two small queries score exactly every
article that has a rare term (``R AND C`` and ``R NOT C``: the same phrases as the full query, hence
the same scores). An article with only common terms scores below Σ_C idf·(k1 + 1); when the
``limit``-th best score found beats that bound the result is exactly the full query's. Otherwise the
rarest common terms move to R and the step repeats (ending, at worst, as the full query).
PostgreSQL's ``ts_rank`` has no idf, so no such bound: it ranks every match.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Protocol

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

__all__ = [
    "FIELD_WEIGHTS",
    "FtsIndex",
    "Fields",
    "PostgresIndex",
    "SqliteIndex",
    "TermStats",
    "index_for",
]

# Title : tags : body. Measured on the sample KB: 5:3:1 puts the article named after the question
# first even when another article mentions its words more often in its body.
FIELD_WEIGHTS = (5.0, 3.0, 1.0)
Fields = tuple[set[str], set[str], set[str]]  # analysed terms of title, tags, body
# FTS5's built-in bm25() uses k1 = 1.2, b = 0.75 (fts5_aux.c); one term adds less than idf·(k1 + 1).
_FTS5_K1 = 1.2
# A term in at most this share of the articles (or _RARE_MIN of them) is "rare": its articles are
# scored exactly. Small KBs therefore always take the plain full query.
_RARE_SHARE = 0.02
_RARE_MIN = 500
_BOUND_MARGIN = 1.05  # cached frequencies may lag another process's edits by a little


class TermStats(Protocol):
    """Index-wide statistics the pruned search needs: rows in the index, and articles per term."""

    @property
    def n_docs(self) -> int: ...

    def df(self, term: str) -> int: ...


class FtsIndex(Protocol):
    def create(self, conn: Connection) -> None: ...
    def upsert(self, session: Session, article_id: int, title: str, tags: str, body: str) -> None: ...
    def delete(self, session: Session, article_id: int) -> None: ...
    def clear(self, session: Session) -> None: ...
    def count(self, session: Session) -> int: ...
    def search(
        self,
        session: Session,
        terms: Sequence[str],
        *,
        language: str | None,
        statuses: Sequence[str],
        limit: int,
        stats: TermStats | None = None,
    ) -> list[tuple[int, float]]:
        """(article id, score) best first; higher scores are better. ``stats`` lets a backend skip
        articles that cannot make the list (the result stays the same)."""
        ...

    def doc_terms(self, session: Session, ids: Iterable[int]) -> dict[int, Fields]:
        """Per article: the analysed terms of its title, tags and body."""
        ...

    def doc_freq(self, session: Session, terms: Iterable[str]) -> dict[str, int]: ...


def _any(terms: Iterable[str]) -> str:
    """An FTS5 OR of quoted terms (a quoted string is a phrase: no query syntax inside)."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def _fts5_idf(n_docs: int, df: int) -> float:
    """The idf FTS5's bm25() gives a term (never below 1e-6)."""
    idf = math.log((n_docs - df + 0.5) / (df + 0.5)) if n_docs > 0 else 0.0
    return idf if idf > 0 else 1e-6


def _filters(language: str | None, statuses: Sequence[str]) -> tuple[str, dict[str, object]]:
    sql = " AND a.status IN :statuses"
    params: dict[str, object] = {"statuses": list(statuses)}
    if language is not None:
        sql += " AND a.language = :language"
        params["language"] = language
    return sql, params


class SqliteIndex:
    table = "kb_article_fts"

    def create(self, conn: Connection) -> None:
        conn.execute(
            text(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {self.table} USING fts5("
                "title, tags, body, tokenize = 'unicode61 remove_diacritics 2')"
            )
        )
        conn.execute(
            text(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {self.table}_vocab USING fts5vocab({self.table}, 'row')"
            )
        )

    def upsert(self, session: Session, article_id: int, title: str, tags: str, body: str) -> None:
        self.delete(session, article_id)
        session.execute(
            text(f"INSERT INTO {self.table}(rowid, title, tags, body) VALUES (:id, :title, :tags, :body)"),
            {"id": article_id, "title": title, "tags": tags, "body": body},
        )

    def delete(self, session: Session, article_id: int) -> None:
        session.execute(text(f"DELETE FROM {self.table} WHERE rowid = :id"), {"id": article_id})

    def clear(self, session: Session) -> None:
        session.execute(text(f"DELETE FROM {self.table}"))

    def count(self, session: Session) -> int:
        return int(session.execute(text(f"SELECT count(*) FROM {self.table}")).scalar_one())

    def search(
        self,
        session: Session,
        terms: Sequence[str],
        *,
        language: str | None,
        statuses: Sequence[str],
        limit: int,
        stats: TermStats | None = None,
    ) -> list[tuple[int, float]]:
        unique = list(dict.fromkeys(terms))
        if not unique or limit <= 0:
            return []
        where, params = _filters(language, statuses)
        if stats is None or len(unique) < 2:
            return self._rank(session, _any(unique), where, params, limit)
        cap = max(_RARE_MIN, int(stats.n_docs * _RARE_SHARE))
        by_df = sorted(unique, key=stats.df)  # rarest first
        # bounds[i]: the most the terms by_df[i:] can add to any article's score
        parts = [_BOUND_MARGIN * (_FTS5_K1 + 1) * _fts5_idf(stats.n_docs, stats.df(t)) for t in by_df]
        bounds = [sum(parts[i:]) for i in range(len(parts))]
        split = max(1, sum(1 for t in by_df if stats.df(t) <= cap))
        while split < len(by_df):
            r, c = _any(by_df[:split]), _any(by_df[split:])
            ranked = self._rank(session, f"({r}) AND ({c})", where, params, limit)
            ranked += self._rank(session, f"({r}) NOT ({c})", where, params, limit)
            ranked.sort(key=lambda hit: (-hit[1], hit[0]))
            theta = ranked[limit - 1][1] if len(ranked) >= limit else 0.0
            if theta > bounds[split]:
                return ranked[:limit]
            # More rare terms only raise the scores found: skip the splits whose bound still beats theta.
            split += 1
            while split < len(by_df) and bounds[split] >= theta > 0:
                split += 1
        return self._rank(session, _any(unique), where, params, limit)

    def _rank(
        self, session: Session, match: str, where: str, params: dict[str, object], limit: int
    ) -> list[tuple[int, float]]:
        """Best ``limit`` articles for ``match`` that pass the language/status filter ``where``.

        Joining kb_article costs as much again as bm25() on every matching row, while the filter
        rarely drops any (query terms belong to one language; drafts are few). So the ranking runs
        alone with some spare rows and the filter looks at those only; a second, joined query runs
        only when too many of them were filtered out. Same order either way: (score, rowid)."""
        wt, wg, wb = FIELD_WEIGHTS
        bm25 = f"bm25({self.table}, {wt}, {wg}, {wb})"
        fetch = max(4 * limit, 20)
        rows = session.execute(
            text(
                f"SELECT rowid, {bm25} AS rank FROM {self.table} WHERE {self.table} MATCH :match "
                "ORDER BY rank, rowid LIMIT :limit"
            ),
            {"match": match, "limit": fetch},
        ).all()
        if not rows:
            return []
        passed = {
            int(r[0])
            for r in session.execute(
                text(f"SELECT a.id FROM kb_article a WHERE a.id IN :ids{where}").bindparams(
                    bindparam("ids", expanding=True), bindparam("statuses", expanding=True)
                ),
                {"ids": [int(r[0]) for r in rows], **params},
            )
        }
        hits = [(int(r[0]), -float(r[1])) for r in rows if int(r[0]) in passed]  # bm25(): lower is better
        if len(hits) >= limit or len(rows) < fetch:  # enough, or every match was seen
            return hits[:limit]
        stmt = text(
            f"SELECT f.rowid, {bm25} AS rank FROM {self.table} f "
            f"JOIN kb_article a ON a.id = f.rowid WHERE {self.table} MATCH :match{where} "
            "ORDER BY rank, f.rowid LIMIT :limit"
        ).bindparams(bindparam("statuses", expanding=True))
        rows = session.execute(stmt, {"match": match, "limit": limit, **params}).all()
        return [(int(r[0]), -float(r[1])) for r in rows]

    def doc_terms(self, session: Session, ids: Iterable[int]) -> dict[int, Fields]:
        stmt = text(f"SELECT rowid, title, tags, body FROM {self.table} WHERE rowid IN :ids").bindparams(
            bindparam("ids", expanding=True)
        )
        id_list = list(ids)
        if not id_list:
            return {}
        rows = session.execute(stmt, {"ids": id_list})
        return {int(r[0]): (set(r[1].split()), set(r[2].split()), set(r[3].split())) for r in rows}

    def doc_freq(self, session: Session, terms: Iterable[str]) -> dict[str, int]:
        term_list = list(set(terms))
        if not term_list:
            return {}
        stmt = text(f"SELECT term, doc FROM {self.table}_vocab WHERE term IN :terms").bindparams(
            bindparam("terms", expanding=True)
        )
        return {str(r[0]): int(r[1]) for r in session.execute(stmt, {"terms": term_list})}


class PostgresIndex:
    table = "kb_article_fts"

    def create(self, conn: Connection) -> None:
        conn.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                "article_id integer PRIMARY KEY REFERENCES kb_article(id) ON DELETE CASCADE, "
                "title text NOT NULL, tags text NOT NULL, body text NOT NULL, document tsvector NOT NULL)"
            )
        )
        conn.execute(
            text(f"CREATE INDEX IF NOT EXISTS ix_{self.table}_document ON {self.table} USING gin(document)")
        )

    def upsert(self, session: Session, article_id: int, title: str, tags: str, body: str) -> None:
        session.execute(
            text(
                f"INSERT INTO {self.table}(article_id, title, tags, body, document) "
                "VALUES (:id, :title, :tags, :body, setweight(to_tsvector('simple', :title), 'A')"
                " || setweight(to_tsvector('simple', :tags), 'B')"
                " || setweight(to_tsvector('simple', :body), 'D')) "
                "ON CONFLICT (article_id) DO UPDATE SET title = EXCLUDED.title, tags = EXCLUDED.tags, "
                "body = EXCLUDED.body, document = EXCLUDED.document"
            ),
            {"id": article_id, "title": title, "tags": tags, "body": body},
        )

    def delete(self, session: Session, article_id: int) -> None:
        session.execute(text(f"DELETE FROM {self.table} WHERE article_id = :id"), {"id": article_id})

    def clear(self, session: Session) -> None:
        session.execute(text(f"DELETE FROM {self.table}"))

    def count(self, session: Session) -> int:
        return int(session.execute(text(f"SELECT count(*) FROM {self.table}")).scalar_one())

    @staticmethod
    def _query(terms: Iterable[str]) -> tuple[str, dict[str, str]]:
        """An OR of terms, each through plainto_tsquery (parameters: no tsquery syntax to escape)."""
        params = {f"t{i}": t for i, t in enumerate(dict.fromkeys(terms))}
        return " || ".join(f"plainto_tsquery('simple', :{name})" for name in params), params

    def search(
        self,
        session: Session,
        terms: Sequence[str],
        *,
        language: str | None,
        statuses: Sequence[str],
        limit: int,
        stats: TermStats | None = None,
    ) -> list[tuple[int, float]]:
        if not terms:
            return []
        query, qparams = self._query(terms)
        where, params = _filters(language, statuses)
        wt, wg, wb = (w / FIELD_WEIGHTS[0] for w in FIELD_WEIGHTS)
        # Weights array order is {D, C, B, A}; normalisation 1 divides by 1 + log(document length).
        stmt = text(
            f"SELECT f.article_id, ts_rank('{{{wb}, 0, {wg}, {wt}}}', f.document, qq.q, 1) AS rank "
            f"FROM {self.table} f JOIN kb_article a ON a.id = f.article_id "
            f"CROSS JOIN (SELECT {query} AS q) qq "
            f"WHERE f.document @@ qq.q{where} ORDER BY rank DESC, f.article_id LIMIT :limit"
        ).bindparams(bindparam("statuses", expanding=True))
        rows = session.execute(stmt, {"limit": limit, **qparams, **params}).all()
        return [(int(r[0]), float(r[1])) for r in rows]

    def doc_terms(self, session: Session, ids: Iterable[int]) -> dict[int, Fields]:
        id_list = list(ids)
        if not id_list:
            return {}
        stmt = text(
            f"SELECT article_id, title, tags, body FROM {self.table} WHERE article_id IN :ids"
        ).bindparams(bindparam("ids", expanding=True))
        rows = session.execute(stmt, {"ids": id_list})
        return {int(r[0]): (set(r[1].split()), set(r[2].split()), set(r[3].split())) for r in rows}

    def doc_freq(self, session: Session, terms: Iterable[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for term in set(terms):  # a few terms per question, each one GIN lookup
            out[term] = int(
                session.execute(
                    text(
                        f"SELECT count(*) FROM {self.table} WHERE document @@ plainto_tsquery('simple', :t)"
                    ),
                    {"t": term},
                ).scalar_one()
            )
        return out


def index_for(engine: Engine | Connection) -> FtsIndex:
    name = engine.dialect.name
    if name == "sqlite":
        return SqliteIndex()
    if name == "postgresql":
        return PostgresIndex()
    raise ValueError(f"knowledge-base search supports SQLite and PostgreSQL, not {name}")
