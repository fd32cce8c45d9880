"""Index statistics cached between searches: the number of articles and each term's document frequency.

Every search needs them (confidence, and the pruning in :mod:`callcenter.kb.index`); asking the
database each time costs more than the ranking itself on a big KB (a count over ``kb_article``, an
``fts5vocab`` lookup, or on PostgreSQL one GIN count per term). Edits through this process's
repository drop the cache at once; edits by another process are seen after ``ttl_s`` at the latest.
Stale figures only nudge confidences (the pruning bound carries a margin for them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from callcenter.core.clock import Clock, MonotonicClock

__all__ = ["Stats", "StatsCache"]


@dataclass(frozen=True)
class Stats:
    """A consistent view: ``n_docs`` and the frequencies of the terms asked for (0: no article)."""

    n_docs: int
    freqs: Mapping[str, int] = field(default_factory=dict)
    total_len: int | None = None  # terms in all articles, for backends that rank with avgdl themselves

    def df(self, term: str) -> int:
        return self.freqs.get(term, 0)


class StatsCache:
    def __init__(self, *, ttl_s: float = 60.0, max_terms: int = 100_000, clock: Clock | None = None) -> None:
        self.ttl_s = ttl_s
        self.max_terms = max_terms
        self._clock = clock or MonotonicClock()
        self._lock = threading.Lock()
        self._n_docs: int | None = None
        self._total_len: int | None = None
        self._freqs: dict[str, int] = {}
        self._loaded_at = 0.0
        self._generation = 0

    def invalidate(self) -> None:
        with self._lock:
            self._n_docs = self._total_len = None
            self._freqs = {}
            self._generation += 1

    def get(
        self,
        terms: Iterable[str],
        count: Callable[[], int],
        doc_freq: Callable[[list[str]], Mapping[str, int]],
        total_len: Callable[[], int | None] | None = None,
    ) -> Stats:
        """Statistics for ``terms``; ``count``, ``doc_freq`` and ``total_len`` fetch what the cache
        lacks (the last is read with ``count``, as part of the same snapshot)."""
        wanted = set(terms)
        now = self._clock.now()
        with self._lock:
            if self._n_docs is not None and now - self._loaded_at >= self.ttl_s:
                self._n_docs, self._total_len, self._freqs = None, None, {}
            n_docs, length, generation = self._n_docs, self._total_len, self._generation
            known = {t: self._freqs[t] for t in wanted if t in self._freqs}
        missing = sorted(wanted - known.keys())
        if n_docs is None:
            n_docs = count()
            length = total_len() if total_len is not None else None
        if missing:
            fetched = doc_freq(missing)
            known.update({t: int(fetched.get(t, 0)) for t in missing})
        with self._lock:
            if generation == self._generation:  # no edit meanwhile: what we read may be kept
                if self._n_docs is None:
                    self._n_docs, self._total_len, self._loaded_at = n_docs, length, now
                if len(self._freqs) + len(missing) > self.max_terms:
                    self._freqs = {}
                self._freqs.update({t: known[t] for t in missing})
        return Stats(n_docs, known, length)
