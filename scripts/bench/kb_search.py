"""KB search latency over 50 000 articles (half English, half Chinese) on SQLite FTS5.

Prints one line: p50/p95 of ``KbRepo.search`` (ranking + confidence) over 400 questions.
``--bm25s`` also times the bm25s library on the same analysed corpus (in memory), for comparison.
Usage: python scripts/bench/kb_search.py [--articles N] [--bm25s] [--database-url URL]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from sqlmodel import Session

from callcenter.kb import text as kbtext
from callcenter.kb.io import SAMPLE_DIR, read_articles
from callcenter.kb.models import KbArticle
from callcenter.kb.repo import KbRepo
from callcenter.store.db import make_engine

QUESTIONS = {
    "en": ["I want to return my shoes", "where is my package", "I forgot my password", "refund status",
           "invoice for my company", "my card was declined", "cancel my order", "how much is shipping"],
    "zh": ["我想退货", "我的快递到哪了", "忘记密码了怎么办", "怎么开发票", "支付失败", "运费多少钱"],
}  # fmt: skip


def corpus(n: int, seed: int = 7) -> list[KbArticle]:
    rng = random.Random(seed)
    samples = read_articles(SAMPLE_DIR)
    words = {
        lang: [w for a in samples if a.language == lang for w in kbtext.plain_words(a.body)]
        for lang in ("en", "zh")
    }
    out = []
    for i in range(n):
        lang = "en" if i % 2 else "zh"
        sep = " " if lang == "en" else ""
        title = sep.join(rng.choices(words[lang], k=5)) + f" {i}"
        body = sep.join(rng.choices(words[lang], k=rng.randint(60, 200)))
        out.append(
            KbArticle(slug=f"a{i}", language=lang, title=title, body=body, tags=[], status="published")
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--articles", type=int, default=50_000)
    parser.add_argument("--bm25s", action="store_true")
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(args.database_url or f"sqlite:///{Path(tmp) / 'kb.db'}")
        repo = KbRepo(engine)
        repo.ensure_schema()
        articles = corpus(args.articles)
        t0 = time.perf_counter()
        with Session(engine, expire_on_commit=False) as session:
            session.add_all(articles)
            session.flush()
            for a in articles:
                repo._index(session, a)
            session.commit()
        build_s = time.perf_counter() - t0
        queries = [(lang, q) for lang, qs in QUESTIONS.items() for q in qs] * 30
        repo.search("warm up", language="en")
        times = []
        for lang, q in queries:
            t = time.perf_counter()
            repo.search(q, language=lang, limit=5)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        p95 = times[int(len(times) * 0.95)]
        print(
            f"kb search ({engine.dialect.name}, {args.articles} articles, indexed in {build_s:.0f} s): "
            f"p50 {statistics.median(times):.1f} ms, p95 {p95:.1f} ms"
        )
        if args.bm25s:
            import bm25s

            analysed = [kbtext.analyse(f"{a.title} {a.title} {a.body}").split() for a in articles]
            retriever = bm25s.BM25()
            t0 = time.perf_counter()
            retriever.index(analysed, show_progress=False)
            index_s = time.perf_counter() - t0
            times = []
            for _, q in queries:
                t = time.perf_counter()
                terms = [kbtext.terms(q)]
                retriever.retrieve(terms, k=5, show_progress=False)
                times.append((time.perf_counter() - t) * 1000)
            times.sort()
            print(
                f"bm25s (in memory, indexed in {index_s:.1f} s): p50 {statistics.median(times):.1f} ms, "
                f"p95 {times[int(len(times) * 0.95)]:.1f} ms"
            )
        engine.dispose()


if __name__ == "__main__":
    main()
