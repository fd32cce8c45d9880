"""Token buckets per key (a client address, a visitor): sans-I/O, the time passed in.

``KeyedBuckets(rate, burst).take(key, now)`` is True while ``key`` has a token (and spends it);
``retry_after(key, now)`` says how long until the next token. Keys idle long enough to be full again
are forgotten, and at most ``max_keys`` are kept (the least recently used go first), so a flood of new
keys cannot grow memory.
"""

from __future__ import annotations

import math
from collections import OrderedDict

__all__ = ["KeyedBuckets"]


class KeyedBuckets:
    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key → (tokens, at)

    def _tokens(self, key: str, now: float) -> float:
        got = self._buckets.get(key)
        if got is None:
            return float(self.burst)
        tokens, at = got
        return min(float(self.burst), tokens + max(0.0, now - at) * self.rate)

    def take(self, key: str, now: float, cost: float = 1.0) -> bool:
        tokens = self._tokens(key, now)
        if tokens < cost:
            self._store(key, tokens, now)
            return False
        self._store(key, tokens - cost, now)
        return True

    def peek(self, key: str, now: float) -> float:
        """Tokens ``key`` has now (nothing spent)."""
        return self._tokens(key, now)

    def retry_after(self, key: str, now: float, cost: float = 1.0) -> int:
        """Whole seconds until ``key`` has ``cost`` tokens (0 = now)."""
        missing = cost - self._tokens(key, now)
        return 0 if missing <= 0 else max(1, math.ceil(missing / self.rate))

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self.max_keys:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        full = [k for k, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)
