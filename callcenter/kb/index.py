"""The full-text index behind KB search, one implementation per database backend.

Both index the output of :func:`callcenter.kb.text.analyse` (stemmed English, jieba-cut Chinese, terms
separated by spaces) in three fields — title, tags, body — so that a title hit outweighs a body hit:

* SQLite: an FTS5 table (rowid = article id, ``unicode61`` tokenizer) ranked by ``bm25()`` with column
  weights, plus an ``fts5vocab`` table for document frequencies.
* PostgreSQL: an inverted index in two plain tables (the analysed fields and length per article; one
  posting per term and article with its count per field) and the same BM25 as FTS5's ``bm25()``
  (idf, k1 = 1.2, b = 0.75, the field weights) summed over the postings in SQL, so both backends rank
  and score alike. (Revision 0003's tsvector ranked by ``ts_rank`` had no IDF and re-read every
  matching document: 111 ms p95 over 50 000 articles.)

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
PostgreSQL takes the same split: one query scores, over all the question's terms, only the articles
that have a rare term.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Protocol

from sqlalchemy import TextClause, bindparam, text
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
_FTS5_B = 0.75
_SMALLINT_MAX = 32767
# A term in at most this share of the articles (or _RARE_MIN of them) is "rare": its articles are
# scored exactly. Small KBs therefore always take the plain full query.
_RARE_SHARE = 0.02
_RARE_MIN = 500
_BOUND_MARGIN = 1.05  # cached frequencies may lag another process's edits by a little


class TermStats(Protocol):
    """Index-wide statistics the pruned search needs: rows in the index, and articles per term."""

    @property
    def n_docs(self) -> int: ...

    @property
    def total_len(self) -> int | None:
        """Terms in all articles (for the average length), when the backend needs it."""
        ...

    def df(self, term: str) -> int: ...


class FtsIndex(Protocol):
    def create(self, conn: Connection) -> None: ...
    def upsert(self, session: Session, article_id: int, title: str, tags: str, body: str) -> None: ...
    def delete(self, session: Session, article_id: int) -> None: ...
    def clear(self, session: Session) -> None: ...
    def count(self, session: Session) -> int: ...
    def total_length(self, session: Session) -> int | None: ...
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

    def total_length(self, session: Session) -> int | None:
        return None  # FTS5 keeps its own (bm25() reads it)

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
    """An inverted index in plain tables, ranked by FTS5's BM25 computed in SQL.

    ``kb_article_fts`` keeps each article's analysed fields and its length in terms;
    ``kb_article_term`` holds one posting per (term, article): the term's count in title, tags and
    body, and the article's length, all in the primary key's index (``INCLUDE``) so a term's postings
    come from an index-only scan. ``ts_rank`` over a tsvector was dropped: it re-reads (and
    decompresses) every matching document, 111 ms p95 over 50 000 articles, and has no IDF. A term's
    postings are read whole and summed per article (one B-tree range, a few ms for 10 000 rows); with
    cached statistics the same rare/common split as the SQLite search (MaxScore) keeps the common
    terms' postings out of the aggregation when the rare terms decide.
    """

    table = "kb_article_fts"
    postings = "kb_article_term"

    def create(self, conn: Connection) -> None:
        if _has_column(conn, self.table, "document"):  # the tsvector table of revision 0003
            conn.execute(text(f"DROP TABLE {self.table}"))  # emptied: ensure_schema rebuilds it
        conn.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                "article_id integer PRIMARY KEY REFERENCES kb_article(id) ON DELETE CASCADE, "
                "title text NOT NULL, tags text NOT NULL, body text NOT NULL, length integer NOT NULL)"
            )
        )
        conn.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {self.postings} ("
                "term text NOT NULL, article_id integer NOT NULL, title_tf smallint NOT NULL, "
                "tags_tf smallint NOT NULL, body_tf smallint NOT NULL, length integer NOT NULL, "
                f"CONSTRAINT pk_{self.postings} PRIMARY KEY (term, article_id) "
                "INCLUDE (title_tf, tags_tf, body_tf, length))"
            )
        )

    def upsert(self, session: Session, article_id: int, title: str, tags: str, body: str) -> None:
        self.delete(session, article_id)
        counts: dict[str, list[int]] = {}
        for i, field in enumerate((title, tags, body)):
            for term in field.split():
                counts.setdefault(term, [0, 0, 0])[i] += 1
        length = sum(len(f.split()) for f in (title, tags, body))
        session.execute(
            text(
                f"INSERT INTO {self.table}(article_id, title, tags, body, length) "
                "VALUES (:id, :title, :tags, :body, :length)"
            ),
            {"id": article_id, "title": title, "tags": tags, "body": body, "length": length},
        )
        if not counts:
            return
        tfs = [[min(c[i], _SMALLINT_MAX) for c in counts.values()] for i in range(3)]
        session.execute(
            text(
                f"INSERT INTO {self.postings}(term, article_id, title_tf, tags_tf, body_tf, length) "
                "SELECT t.term, :id, t.a, t.b, t.c, :length FROM unnest(CAST(:terms AS text[]), "
                "CAST(:a AS smallint[]), CAST(:b AS smallint[]), CAST(:c AS smallint[])) AS t(term, a, b, c)"
            ),
            {
                "id": article_id,
                "length": length,
                "terms": list(counts),
                "a": tfs[0],
                "b": tfs[1],
                "c": tfs[2],
            },
        )

    def delete(self, session: Session, article_id: int) -> None:
        # The postings are keyed by term first: the old terms (from the stored fields) find them.
        old = session.execute(
            text(f"SELECT title, tags, body FROM {self.table} WHERE article_id = :id"), {"id": article_id}
        ).first()
        if old is None:
            return
        terms = sorted({t for field in old for t in str(field).split()})
        if terms:
            session.execute(
                text(
                    f"DELETE FROM {self.postings} "
                    "WHERE term = ANY(CAST(:terms AS text[])) AND article_id = :id"
                ),
                {"terms": terms, "id": article_id},
            )
        session.execute(text(f"DELETE FROM {self.table} WHERE article_id = :id"), {"id": article_id})

    def clear(self, session: Session) -> None:
        # DELETE, not TRUNCATE: a rebuild (minutes for a big KB) must not block other nodes' searches.
        session.execute(text(f"DELETE FROM {self.postings}"))
        session.execute(text(f"DELETE FROM {self.table}"))

    def count(self, session: Session) -> int:
        return int(session.execute(text(f"SELECT count(*) FROM {self.table}")).scalar_one())

    def total_length(self, session: Session) -> int:
        return int(session.execute(text(f"SELECT coalesce(sum(length), 0) FROM {self.table}")).scalar_one())

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
        if stats is None or not stats.total_len:  # none given, or cached while the KB was empty
            freqs = self.doc_freq(session, unique)
            stats = _Snapshot(self.count(session), freqs, self.total_length(session))
        n_docs, total = stats.n_docs, stats.total_len or 0
        if n_docs <= 0 or total <= 0:
            return []
        idfs = {t: (_FTS5_K1 + 1) * _fts5_idf(n_docs, stats.df(t)) for t in unique}
        # f / (f + k1·(1 − b + b·|D|/avgdl)) = f / (f + ka + kb·|D|)
        ranker = _PgRanker(
            session,
            self,
            idfs,
            language,
            statuses,
            ka=_FTS5_K1 * (1 - _FTS5_B),
            kb=_FTS5_K1 * _FTS5_B * n_docs / total,
        )
        if len(unique) < 2:
            return ranker.rank(unique, limit)
        cap = max(_RARE_MIN, int(n_docs * _RARE_SHARE))
        # Rarest first. A term with df 0 is still asked for: cached figures may predate its article.
        by_df = sorted(unique, key=lambda t: (stats.df(t), t))
        parts = [_BOUND_MARGIN * idfs[t] for t in by_df]  # the most a term adds: idf·(k1 + 1)
        bounds = [sum(parts[i:]) for i in range(len(parts))]
        split = max(1, sum(1 for t in by_df if stats.df(t) <= cap))
        while split < len(by_df):
            ranked = ranker.rank(by_df, limit, candidates_from=by_df[:split])
            theta = ranked[limit - 1][1] if len(ranked) >= limit else 0.0
            if theta > bounds[split]:
                return ranked
            split += 1
            while split < len(by_df) and bounds[split] >= theta > 0:
                split += 1
        return ranker.rank(by_df, limit)

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
        term_list = sorted(set(terms))
        if not term_list:
            return {}
        rows = session.execute(
            text(
                f"SELECT term, count(*) FROM {self.postings} WHERE term = ANY(CAST(:terms AS text[])) "
                "GROUP BY term"
            ),
            {"terms": term_list},
        )
        found = {str(r[0]): int(r[1]) for r in rows}
        return {t: found.get(t, 0) for t in term_list}


class _Snapshot:
    """Statistics read on the spot (a search without the repository's cache)."""

    def __init__(self, n_docs: int, freqs: dict[str, int], total_len: int) -> None:
        self.n_docs, self.freqs, self.total_len = n_docs, freqs, total_len

    def df(self, term: str) -> int:
        return self.freqs.get(term, 0)


class _PgRanker:
    """BM25 of FTS5 (fts5_aux.c: Σ idf·f·(k1 + 1) / (f + k1·(1 − b + b·|D|/avgdl)), f the field-weighted
    count, |D| the article's terms in all fields) summed over postings in SQL, best ``limit`` first."""

    def __init__(
        self,
        session: Session,
        index: PostgresIndex,
        idfs: dict[str, float],
        language: str | None,
        statuses: Sequence[str],
        *,
        ka: float,
        kb: float,
    ) -> None:
        self.session, self.index, self.idfs = session, index, idfs
        self.where, self.params = _filters(language, statuses)
        wt, wg, wb = FIELD_WEIGHTS
        self.params.update({"ka": ka, "kb": kb, "wt": wt, "wg": wg, "wb": wb})

    def _sql(self, *, single: bool, candidates: bool, joined: bool) -> TextClause:
        """The ranking query: one term's postings scored as they are (an article has one posting per
        term: nothing to sum), several terms' postings summed per article."""
        p = self.index.postings
        f = "(:wt * p.title_tf + :wg * p.tags_tf + :wb * p.body_tf)"
        join = f" JOIN kb_article a ON a.id = p.article_id{self.where}" if joined else ""
        if single:
            sql = (
                f"SELECT article_id, :idf0 * f / (f + :ka + :kb * length) AS score FROM ("
                f"SELECT p.article_id, p.length, {f} AS f FROM {p} p{join} WHERE p.term = :term0) s "
            )
        else:
            cand = (
                f" AND p.article_id IN (SELECT article_id FROM {p} WHERE term = ANY(CAST(:rare AS text[])))"
                if candidates
                else ""
            )
            sql = (
                "SELECT article_id, sum(idf * f / (f + :ka + :kb * length)) AS score FROM ("
                f"SELECT p.article_id, q.idf, p.length, {f} AS f "
                "FROM unnest(CAST(:terms AS text[]), CAST(:idfs AS float8[])) AS q(term, idf) "
                f"JOIN {p} p ON p.term = q.term{cand}{join}) s GROUP BY article_id "
            )
        sql += "ORDER BY score DESC, article_id LIMIT :limit"
        if not joined:  # the top rows only: say which of them pass the filter
            sql = (
                f"SELECT r.article_id, r.score, a.id IS NOT NULL FROM ({sql}) r "
                f"LEFT JOIN kb_article a ON a.id = r.article_id{self.where} "
                "ORDER BY r.score DESC, r.article_id"
            )
        return text(sql).bindparams(bindparam("statuses", expanding=True))

    def rank(
        self, terms: Sequence[str], limit: int, candidates_from: Sequence[str] | None = None
    ) -> list[tuple[int, float]]:
        """Articles with a term of ``candidates_from`` (None: any of ``terms``) scored over all ``terms``,
        best ``limit`` that pass the filter. As on SQLite, the filter looks at a few spare top rows
        first and joins kb_article for every posting only when too many of those were dropped."""
        params: dict[str, object] = {
            **self.params,
            "terms": list(terms),
            "idfs": [self.idfs[t] for t in terms],
            "rare": list(candidates_from or ()),
            "term0": terms[0],
            "idf0": self.idfs[terms[0]],
        }
        shape = {"single": len(terms) == 1, "candidates": candidates_from is not None}
        fetch = max(4 * limit, 20)
        rows = self.session.execute(self._sql(**shape, joined=False), {**params, "limit": fetch}).all()
        hits = [(int(r[0]), float(r[1])) for r in rows if r[2]]
        if len(hits) >= limit or len(rows) < fetch:  # enough, or every match was seen
            return hits[:limit]
        rows = self.session.execute(self._sql(**shape, joined=True), {**params, "limit": limit}).all()
        return [(int(r[0]), float(r[1])) for r in rows]


def _has_column(conn: Connection, table: str, column: str) -> bool:
    return bool(
        conn.execute(
            text(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = :table AND column_name = :column"
            ),
            {"table": table, "column": column},
        ).first()
    )


def index_for(engine: Engine | Connection) -> FtsIndex:
    name = engine.dialect.name
    if name == "sqlite":
        return SqliteIndex()
    if name == "postgresql":
        return PostgresIndex()
    raise ValueError(f"knowledge-base search supports SQLite and PostgreSQL, not {name}")
