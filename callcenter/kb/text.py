"""Text analysis shared by indexing and querying, so both backends see the same terms.

Both SQLite FTS5 (``unicode61`` tokenizer) and PostgreSQL (``simple`` configuration) only split the
analysed string on spaces and lower-case it; the language work happens here, once, in Python:

* NFKC (full-width → half-width) and case folding; spaces between two CJK characters are dropped
  (ASR output is often "我 要 退 货"), other punctuation becomes a space.
* Latin words: stop words dropped, Snowball English stemmer ("refunds" and "refunded" → "refund").
* Han runs: jieba's search mode, which emits a long word and its dictionary sub-words
  ("退款流程" → 退款 流程 退款流程), so a query cut coarser or finer than the article still meets it.
  Stop words (的, 了, 我, 吗 …) are dropped.

jieba builds its dictionary on first use (~1 s, blocking): :func:`warm` loads it, and the service does
so in a worker thread.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from typing import Any

__all__ = ["analyse", "gap_key", "has_cjk", "normalise", "plain_words", "primary_language", "terms", "warm"]

_CJK_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK = re.compile(f"[{_CJK_CLASS}]")
_CJK_SPACE = re.compile(f"(?<=[{_CJK_CLASS}])\\s+(?=[{_CJK_CLASS}])")
_RUNS = re.compile(f"[{_CJK_CLASS}]+|[^\\W_{_CJK_CLASS}]+")

# Words that carry no topic. Kept short: BM25's IDF already discounts common words; these are the
# ones that would otherwise make "how do I …" questions look alike (and pad gap keys).
_STOP_EN = frozenset(
    """a an the and or but if of to in on at by for with from about into as is are was were be been
    being am do does did doing have has had i me my mine we our you your he she it its they them
    their this that these those there here what which who whom how why when where can could would
    should will shall may might must please want wanted need like just get got im ive id dont cant
    hi hello thanks thank yes no not so than then too very also some any all
    much many wheres whats hows whos ok okay long take takes""".split()
)
_STOP_ZH = frozenset(
    """的 了 吗 呢 吧 啊 呀 嘛 我 我们 你 你们 您 他 她 它 是 在 有 和 与 及 就 都 也 还 要 想 请 请问 怎么
    怎么样 怎样 如何 什么 哪 哪里 哪儿 一下 一个 个 这 那 这个 那个 可以 能 能不能 会 吗 么 好 谢谢 你好
    多少 多少钱 麻烦 帮 帮我 我要 我想 想要 需要 我的 给 把 被 让 跟 对 为 为什么 到 了解 知道""".split()
)

_lock = threading.Lock()
_jieba: Any = None
_stemmer: Any = None


def warm() -> None:
    """Load jieba and the stemmer now (jieba blocks ~1 s the first time)."""
    _segmenter()
    _stem_words(["warm"])


def _segmenter() -> Any:
    global _jieba
    if _jieba is None:
        with _lock:
            if _jieba is None:
                import jieba

                jieba.setLogLevel(logging.WARNING)  # "Building prefix dict…" on stderr otherwise
                tokenizer = jieba.Tokenizer()
                tokenizer.initialize()
                _jieba = tokenizer
    return _jieba


def _stem_words(words: list[str]) -> list[str]:
    global _stemmer
    if _stemmer is None:
        import Stemmer  # PyStemmer: the Snowball stemmers in C

        _stemmer = Stemmer.Stemmer("english")
    result: list[str] = _stemmer.stemWords(words)
    return result


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def primary_language(tag: str | None) -> str | None:
    """'zh-CN' → 'zh', 'en-US' → 'en'; None stays None (any language)."""
    if not tag:
        return None
    return tag.replace("_", "-").split("-", 1)[0].lower()


def normalise(text: str) -> str:
    """NFKC, case-folded, CJK runs re-joined, punctuation and symbols as single spaces."""
    text = _CJK_SPACE.sub("", unicodedata.normalize("NFKC", text).casefold())
    chars = [" " if unicodedata.category(c)[0] in "PSZC" and c != "'" else c for c in text]
    return " ".join("".join(chars).replace("'", "").split())


def plain_words(text: str) -> list[str]:
    """Words before stemming and stop-word removal (jieba's precise cut for Han runs)."""
    out: list[str] = []
    for run in _RUNS.findall(normalise(text)):
        if _CJK.match(run):
            out.extend(w for w in _segmenter().lcut(run) if w.strip())
        else:
            out.append(run)
    return out


def terms(text: str, *, search_mode: bool = True) -> list[str]:
    """Index terms of ``text`` in order, duplicates kept (term frequency matters to BM25)."""
    out: list[str] = []
    latin: list[str] = []
    for run in _RUNS.findall(normalise(text)):
        if _CJK.match(run):
            cut = _segmenter().lcut_for_search(run) if search_mode else _segmenter().lcut(run)
            out.extend(w for w in cut if w.strip() and w not in _STOP_ZH)
        elif run not in _STOP_EN:
            latin.append(run)
            out.append(run)
    if latin:  # stem in one call, then put the stems back in place
        stems = iter(_stem_words(latin))
        out = [t if _CJK.match(t) else next(stems) for t in out]
    return out


def analyse(text: str) -> str:
    """The string handed to the full-text index: terms separated by spaces."""
    return " ".join(terms(text))


def gap_key(question: str) -> str:
    """A question's grouping key: its distinct stemmed terms, sorted (word order and filler ignored)."""
    words = terms(question, search_mode=False)
    return " ".join(sorted(set(words))) if words else normalise(question)
