"""KB search latency over 50 000 articles (half English, half Chinese): SQLite FTS5 or PostgreSQL.

Prints one line per corpus: p50/p95 wall time of ``KbRepo.search`` (ranking + confidence) over 420
questions, the CPU time beside it (these machines are shared: wall time moves with the neighbours'
load, CPU time much less), and how many questions got exactly the top 5 of the unpruned full query.

Corpora:

* ``realistic`` (the figure the target is about): a KB with topics. Each language has a Zipfian
  background vocabulary (English: pronounceable pseudo-words; Chinese: jieba's dictionary words by
  their frequency) into which the sample KB's words are mixed at ranks from 30 to 30 000 — so
  "order" is common and "invoice" is not. 1 article in 12 is about one of the sample topics (title
  words and a quarter of the body from that sample article), the rest about one of 2 000 synthetic
  topics per language.
* ``uniform`` (the old figure, a worst case): every word of every article drawn uniformly from the
  sample KB's ~10 articles per language, so each query word is in 15-95 % of all articles.

``--assist`` adds agent-assist queries (the last 40 words of a made-up transcript).
``--backend postgresql`` starts a throwaway PostgreSQL (Debian's ``postgresql`` package, as the tests
do) unless ``--database-url`` names one; ``both`` runs SQLite and then PostgreSQL. On PostgreSQL the
freshly built index is vacuumed and analysed before timing, as autovacuum does within a minute of a
bulk import: the postings are read by index-only scans, which need the visibility map.
Usage: python scripts/bench/kb_search.py [--articles N] [--corpus realistic|uniform|both]
       [--backend sqlite|postgresql|both] [--database-url URL [--existing]] [--assist]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jieba
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from callcenter.kb import text as kbtext
from callcenter.kb.io import SAMPLE_DIR, read_articles
from callcenter.kb.markdown import ArticleData
from callcenter.kb.models import KbArticle
from callcenter.kb.repo import KbRepo
from callcenter.store.db import make_engine
from callcenter.testing.postgres import PostgresCluster

QUESTIONS = {
    "en": ["I want to return my shoes", "where is my package", "I forgot my password", "refund status",
           "invoice for my company", "my card was declined", "cancel my order", "how much is shipping"],
    "zh": ["我想退货", "我的快递到哪了", "忘记密码了怎么办", "怎么开发票", "支付失败", "运费多少钱"],
}  # fmt: skip
TRANSCRIPTS = {
    "en": "hello thanks for calling how can I help yes I ordered a pair of shoes last week and they "
    "arrived today but they are the wrong size so I would like to send them back and get my money "
    "refunded to the card I paid with okay let me check your order number please",
    "zh": "您好请问有什么可以帮您我上周买了一双鞋今天到了但是尺码不对我想退货然后把钱退回到我付款的那张卡上"
    "好的我帮您查一下订单号",
}
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in ("a", "e", "i", "o", "u", "ar", "en", "is", "ol")]


def _zipf_weights(n: int, s: float = 1.05) -> list[float]:
    return [1.0 / (rank**s) for rank in range(1, n + 1)]


def _pseudo_words(n: int, rng: random.Random) -> list[str]:
    words: dict[str, None] = {}
    while len(words) < n:
        words["".join(rng.choices(_SYLLABLES, k=rng.randint(2, 4)))] = None
    return list(words)


def _chinese_words(n: int) -> list[str]:
    """jieba's dictionary words with two or more Han characters, most frequent first."""
    path = Path(jieba.__file__).with_name("dict.txt")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        word, freq, *_ = line.split(" ")
        if len(word) >= 2 and kbtext.has_cjk(word) and all(kbtext.has_cjk(c) for c in word):
            rows.append((int(freq), word))
    rows.sort(reverse=True)
    return [w for _, w in rows[:n]]


def realistic_corpus(n: int, seed: int = 7, topics: int = 2000, vocab: int = 30_000) -> list[ArticleData]:
    rng = random.Random(seed)
    samples = read_articles(SAMPLE_DIR)
    out: list[ArticleData] = []
    for lang in ("en", "zh"):
        mine = [a for a in samples if a.language == lang]
        sample_words = list(dict.fromkeys(w for a in mine for w in kbtext.plain_words(f"{a.title} {a.body}")))
        background = _pseudo_words(vocab, rng) if lang == "en" else _chinese_words(vocab)
        for word in sample_words:  # sample words at ranks from 30 to 30 000 (log-uniform)
            background.insert(int(10 ** rng.uniform(1.5, 4.5)), word)
        cum = list(itertools.accumulate(_zipf_weights(len(background))))
        sep = " " if lang == "en" else ""

        def draw(k: int, bg: list[str] = background, c: list[float] = cum) -> list[str]:
            return rng.choices(bg, cum_weights=c, k=k)

        synthetic = [draw(12) for _ in range(topics)]
        for i in range(n // 2):
            length = rng.randint(60, 250)
            if i % 12 == 0:
                topic = rng.choice(mine)
                topic_words = kbtext.plain_words(f"{topic.title} {topic.body}")
                title_words = kbtext.plain_words(topic.title)[:4] + draw(1)
            else:
                topic_words = rng.choice(synthetic)
                title_words = rng.sample(topic_words, 4)
            body = [rng.choice(topic_words) if rng.random() < 0.25 else w for w in draw(length)]
            out.append(
                ArticleData(f"{lang}-{i}", lang, sep.join(title_words) + f" {i}", sep.join(body) + "\n")
            )
    return out


def uniform_corpus(n: int, seed: int = 7) -> list[ArticleData]:
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
        out.append(ArticleData(f"a{i}", lang, title, body + "\n"))
    return out


CORPORA: dict[str, Callable[[int], list[ArticleData]]] = {
    "realistic": realistic_corpus,
    "uniform": uniform_corpus,
}


def build(repo: KbRepo, articles: list[ArticleData]) -> float:
    rows = [
        KbArticle(slug=a.slug, language=a.language, title=a.title, body=a.body, tags=[], status="published")
        for a in articles
    ]
    t0 = time.perf_counter()
    with Session(repo.engine, expire_on_commit=False) as session:
        session.add_all(rows)
        session.flush()
        for row in rows:
            repo._index(session, row)
        session.commit()
    repo.stats.invalidate()
    built = time.perf_counter() - t0
    settle(repo.engine)
    return built


def settle(engine: Engine) -> None:
    """PostgreSQL: VACUUM ANALYZE (visibility map for index-only scans, planner statistics)."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))


def _percentiles(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values), values[int(len(values) * 0.95)]


def measure(
    repo: KbRepo, queries: list[tuple[str, str]], limit: int = 5, max_terms: int | None = None
) -> str:
    repo.search("warm up", language="en")
    wall, cpu, same = [], [], 0
    for lang, q in queries:
        t, c = time.perf_counter(), time.thread_time()
        repo.search(q, language=lang, limit=limit, max_terms=max_terms)
        cpu.append((time.thread_time() - c) * 1000)
        wall.append((time.perf_counter() - t) * 1000)
    (w50, w95), (c50, c95) = _percentiles(wall), _percentiles(cpu)
    out = f"p50 {w50:.1f} ms, p95 {w95:.1f} ms (CPU p50 {c50:.1f}, p95 {c95:.1f} ms)"
    if max_terms is None:  # the pruned search must rank exactly as the plain full query
        for lang, q in dict.fromkeys(queries):
            with repo._session() as session:
                full = repo.index.search(
                    session, kbtext.terms(q), language=lang[:2], statuses=("published",), limit=limit
                )
            hits = repo.search(q, language=lang, limit=limit)
            same += [h.article_id for h in hits] == [i for i, _ in full]
        out += f"; top {limit} as the full query: {same}/{len(dict.fromkeys(queries))}"
    return out


def run(args: argparse.Namespace, name: str, url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(url or f"sqlite:///{Path(tmp) / 'kb.db'}")
        repo = KbRepo(engine)
        repo.ensure_schema()
        articles = args.articles
        if args.existing:
            build_s, articles = 0.0, repo.count_articles()
            settle(engine)
        elif repo.count_articles():
            raise SystemExit("the database must start without articles (or pass --existing)")
        else:
            build_s = build(repo, CORPORA[name](articles))
        queries = [(lang, q) for lang, qs in QUESTIONS.items() for q in qs] * 30
        head = f"kb search ({engine.dialect.name}, {name}, {articles} articles, indexed in {build_s:.0f} s)"
        print(f"{head}: {measure(repo, queries)}", flush=True)
        if args.assist:
            tails = [
                (lang, " ".join(kbtext.plain_words(transcript)[-40 + shift :]))
                for lang, transcript in TRANSCRIPTS.items()
                for shift in range(10)
            ] * 10
            print(f"  agent-assist tails: {measure(repo, tails, limit=3, max_terms=12)}", flush=True)
        if not args.existing:  # PostgreSQL: leave the database empty for the next run
            with Session(engine) as session:
                repo.index.clear(session)
                session.execute(KbArticle.__table__.delete())  # type: ignore[attr-defined]
                session.commit()
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--articles", type=int, default=50_000)
    parser.add_argument("--corpus", choices=[*CORPORA, "both"], default="both")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"])
    parser.add_argument("--database-url", help="an existing database (default: SQLite in a temporary folder)")
    parser.add_argument("--assist", action="store_true", help="also time 40-word transcript tails")
    parser.add_argument(
        "--existing", action="store_true", help="the database already holds the corpus: time only (kept)"
    )
    args = parser.parse_args()
    backend = args.backend or ("postgresql" if (args.database_url or "").startswith("postgres") else "sqlite")
    kbtext.warm()
    names = list(CORPORA) if args.corpus == "both" else [args.corpus]
    for name in names:
        if backend in ("sqlite", "both"):
            run(args, name, args.database_url if backend == "sqlite" else None)
        if backend in ("postgresql", "both"):
            with contextlib.ExitStack() as stack:
                url = args.database_url
                if url is None:
                    url = stack.enter_context(PostgresCluster()).create_database("kb_bench")
                run(args, name, url)


if __name__ == "__main__":
    main()
