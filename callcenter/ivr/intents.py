"""Intents from YAML: keywords and example phrases per language, fuzzy matching, jieba for Chinese.

``load_intents(path)`` returns a :class:`YamlIntents`, an :class:`~callcenter.ivr.services.IntentClassifier`.
File format (sample: ``ivr_flows/intents/intents.yaml``; ``flows check`` reads ``ivr_flows/*.yaml``)::

    min_confidence: 0.5          # below this the fallback (or no intent) is returned
    fallback: agent              # optional; must name one of the intents
    intents:
      - name: refund
        keywords: {en: [refund, money back], zh: [退款]}
        examples: {en: [I want my money back], zh: [我要退款]}

Scoring, per candidate intent, on normalised text (NFKC: full-width → half-width; case-folded;
punctuation and symbols → spaces):

* keywords: an exact hit counts 1.0; an English keyword word that is a likely typo of a said word
  (rapidfuzz ratio ≥ 80, words of ≥ 4 letters) counts its similarity. Chinese keywords match as
  substrings, since jieba may cut a compound keyword differently from the configured form.
* examples: the best rapidfuzz ``token_set_ratio`` between the text's tokens and an example's tokens
  (stop words removed on both sides), rescaled so that chance similarity (≤ 0.5) counts 0.
* score = 1 − (1 − 0.8·keyword)(1 − 0.9·example): either signal alone can pass 0.5, both agree → ~1.
* confidence = best score − 0.5 · second-best score: "my order" fits refund and order status alike, so
  it is not confidently either (token_set_ratio gives 100 whenever one token set contains the other).

When the best confidence is below ``min_confidence`` the result is the fallback intent (if it is among
the candidates) with confidence 1 − best, i.e. how sure we are that none of the intents was meant; the
IVR's ``intent`` node compares that with its own ``min_confidence``.

jieba builds its prefix dictionary on first use (~0.7 s, blocking, logging to stderr). It is loaded once,
lazily, with its log quietened; ``classify`` loads it in a worker thread so the event loop never blocks,
and ``await classifier.warm()`` (or ``warm_sync()`` at start-up) loads it ahead of the first caller.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from rapidfuzz import fuzz

from callcenter.core.errors import ConfigError
from callcenter.ivr.services import IntentResult
from callcenter.ivr.source import Reporter, parse_yaml

__all__ = ["IntentSpec", "IntentsConfig", "IntentsError", "YamlIntents", "load_intents", "load_intents_text"]

Lang = Literal["en", "zh"]
LANGS: tuple[Lang, ...] = ("en", "zh")

# -- configuration --------------------------------------------------------------------------------------


class IntentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    keywords: dict[Lang, list[str]] = Field(default_factory=dict)
    examples: dict[Lang, list[str]] = Field(default_factory=dict)

    @field_validator("keywords", "examples")
    @classmethod
    def _no_blank(cls, value: dict[Lang, list[str]]) -> dict[Lang, list[str]]:
        for lang, items in value.items():
            for item in items:
                if not normalise(item):
                    raise ValueError(f"{lang}: {item!r} has no words")
        return value

    @model_validator(mode="after")
    def _has_something(self) -> IntentSpec:
        if not any(self.keywords.values()) and not any(self.examples.values()):
            raise ValueError(f"intent {self.name!r} has neither keywords nor examples")
        return self


class IntentsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_confidence: float = Field(0.5, ge=0, le=1)
    fallback: str | None = None
    intents: list[IntentSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _names(self) -> IntentsConfig:
        seen: set[str] = set()
        for spec in self.intents:
            if spec.name in seen:
                raise ValueError(f"intent {spec.name!r} is defined twice")
            seen.add(spec.name)
        if self.fallback is not None and self.fallback not in seen:
            raise ValueError(
                f"fallback {self.fallback!r} is not one of the intents ({', '.join(sorted(seen))})"
            )
        return self


class IntentsError(ConfigError):
    """An intents file is wrong; ``errors`` holds one ``file:line:column: message`` per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def _error_lines(exc: ValidationError, report: Reporter) -> list[str]:
    out = []
    for err in exc.errors():
        loc = list(err["loc"])
        at_key = bool(loc) and loc[-1] == "[key]"
        if at_key:
            loc.pop()
        kind = err["type"]
        missing = kind == "missing"
        field = loc.pop() if missing and loc else None
        where = ".".join(str(c) for c in loc) or "file"
        if kind == "extra_forbidden":
            msg = f"{where}: unknown key"
        elif missing:
            msg = f"{where}: missing key {field!r}"
        else:
            msg = f"{where}: {err['msg']}".replace("Value error, ", "")
        mark = report.at(tuple(loc), msg, kind="schema", key=at_key or kind == "extra_forbidden")
        out.append(str(mark))
    return out


def load_intents_text(text: str, *, source: str = "<intents>") -> IntentsConfig:
    """Parse and validate an intents document; raises :class:`IntentsError` listing every problem."""
    try:
        parsed = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise IntentsError([f"{where}: invalid YAML: {problem}"]) from exc
    report = Reporter(source, parsed.source_map)
    errors = [
        f"{source}:{mark.line}:{mark.column}: {'.'.join(map(str, path))}: "
        f"duplicate key (first at line {first.line})"
        for path, mark, first in parsed.duplicates
    ]
    if not isinstance(parsed.data, dict):
        raise IntentsError([*errors, f"{source}:1:1: expected a mapping with 'intents'"])
    try:
        config = IntentsConfig.model_validate(parsed.data)
    except ValidationError as exc:
        errors += _error_lines(exc, report)
    if errors:
        raise IntentsError(errors)
    return config


# -- text ----------------------------------------------------------------------------------------------

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[a-z]")
_STOP = {
    "en": frozenset(
        "a an the i i'm im me my mine we our you your it its is are am be been was to of for on in at "
        "and or with this that can could would will want wanna like please do does did how hi hello "
        "so just some".split()
    ),
    "zh": frozenset(
        "我 我们 你 您 的 了 吗 呢 吧 啊 请 一下 想 要 我要 我想 帮 帮我 能 可以 是 在 个 这 那 好".split()
    ),
}


def normalise(text: str) -> str:
    """NFKC (full-width → half-width), case-folded, punctuation/symbols → spaces, spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    chars = [" " if unicodedata.category(c)[0] in "PSZC" and c != "'" else c for c in text]
    return " ".join("".join(chars).replace("'", "").split())


class _Segmenter:
    """jieba, loaded once (thread-safe), quietly; custom words keep compound keywords whole."""

    def __init__(self, words: Sequence[str]) -> None:
        self._words = list(words)
        self._lock = threading.Lock()
        self._tokenizer: Any = None

    @property
    def ready(self) -> bool:
        return self._tokenizer is not None

    def load(self) -> None:
        with self._lock:
            if self._tokenizer is not None:
                return
            import jieba  # ~0.2 s import; only when Chinese is needed

            jieba.setLogLevel(logging.WARNING)  # it logs "Building prefix dict…" at DEBUG to stderr
            tokenizer = jieba.Tokenizer()
            tokenizer.initialize()
            for word in self._words:
                tokenizer.add_word(word)
            self._tokenizer = tokenizer

    def cut(self, text: str) -> list[str]:
        self.load()
        return [t for t in self._tokenizer.lcut(text) if t.strip()]


def _tokens(text: str, segmenter: _Segmenter) -> list[str]:
    """Words of normalised text: English by spaces, Chinese runs by jieba."""
    return segmenter.cut(text) if _CJK.search(text) else text.split()


def _content(tokens: Sequence[str]) -> str:
    return " ".join(t for t in tokens if t not in _STOP["en"] and t not in _STOP["zh"])


# -- classifier ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    keywords: dict[Lang, list[tuple[str, ...]]]  # en: words of each keyword; zh: (keyword,)
    examples: dict[Lang, list[str]]  # content tokens joined by spaces


class YamlIntents:
    """The IVR's IntentClassifier over an :class:`IntentsConfig`."""

    def __init__(self, config: IntentsConfig) -> None:
        self.config = config
        zh_words = [normalise(k) for s in config.intents for k in s.keywords.get("zh", []) if _CJK.search(k)]
        self._segmenter = _Segmenter(sorted(set(zh_words)))
        self._prepared: dict[str, _Prepared] | None = None
        self._prep_lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.config.intents]

    def _needs_jieba(self) -> bool:
        return any(s.examples.get("zh") for s in self.config.intents)

    def warm_sync(self) -> None:
        """Load jieba and tokenise the examples now (blocks ~1 s the first time)."""
        self._prepare()

    async def warm(self) -> None:
        """:meth:`warm_sync` in a worker thread."""
        await asyncio.to_thread(self._prepare)

    def _prepare(self) -> dict[str, _Prepared]:
        with self._prep_lock:
            if self._prepared is None:
                if self._needs_jieba():
                    self._segmenter.load()
                self._prepared = {
                    s.name: _Prepared(
                        keywords={
                            lang: [tuple(normalise(k).split()) for k in words]
                            for lang, words in s.keywords.items()
                        },
                        examples={
                            lang: [_content(_tokens(normalise(e), self._segmenter)) for e in items]
                            for lang, items in s.examples.items()
                        },
                    )
                    for s in self.config.intents
                }
            return self._prepared

    async def classify(self, text: str, intents: Sequence[str], *, language: str) -> IntentResult:
        """Best of ``intents`` (all configured ones when empty) for ``text``; see the module doc."""
        cjk = _CJK.search(normalise(text)) is not None
        if self._prepared is None or (cjk and not self._segmenter.ready):
            await asyncio.to_thread(self._ensure, cjk)  # jieba's ~1 s first load off the event loop
        return self.classify_sync(text, intents, language=language)

    def _ensure(self, cjk: bool) -> None:
        self._prepare()
        if cjk:
            self._segmenter.load()

    def classify_sync(self, text: str, intents: Sequence[str], *, language: str) -> IntentResult:
        """:meth:`classify` without the worker thread (may block on jieba's first load)."""
        prepared = self._prepare()
        norm = normalise(text)
        candidates = [n for n in (intents or self.names) if n in prepared]
        best, best_score = None, 0.0
        if norm:
            langs = self._languages(norm, language)
            tokens = _tokens(norm, self._segmenter)
            content = _content(tokens)
            scores = sorted(
                (
                    (_score(norm, tokens, content, prepared[n], langs), -i, n)
                    for i, n in enumerate(candidates)
                ),
                reverse=True,
            )  # ties: the intent listed first wins
            if scores and scores[0][0] > 0:
                second = scores[1][0] if len(scores) > 1 else 0.0
                best, best_score = scores[0][2], max(0.0, scores[0][0] - 0.5 * second)  # ambiguity costs
        if best is not None and best_score >= self.config.min_confidence:
            return IntentResult(best, round(best_score, 4))
        fallback = self.config.fallback
        if fallback is not None and fallback in candidates:
            return IntentResult(fallback, round(1.0 - best_score, 4))
        return IntentResult(None, round(best_score, 4))

    @staticmethod
    def _languages(norm: str, language: str) -> list[Lang]:
        """The call's language plus any whose script appears in the text (a zh caller saying "refund")."""
        base = language.split("-")[0].split("_")[0].lower()
        langs: list[Lang] = [lang for lang in LANGS if lang == base]
        if _CJK.search(norm) and "zh" not in langs:
            langs.append("zh")
        if _LATIN.search(norm) and "en" not in langs:
            langs.append("en")
        return langs or list(LANGS)


def _keyword_score(norm: str, tokens: Sequence[str], spec: _Prepared, langs: Sequence[Lang]) -> float:
    hits: list[float] = []
    compact = norm.replace(" ", "")
    for lang in langs:
        for kw in spec.keywords.get(lang, []):
            if lang == "zh" or any(_CJK.search(w) for w in kw):
                if "".join(kw) in compact:
                    hits.append(1.0)
                continue
            hits.append(_phrase_hit(kw, tokens))
    hits = sorted((h for h in hits if h > 0), reverse=True)
    if not hits:
        return 0.0
    return min(1.0, hits[0] + 0.1 * sum(hits[1:]))  # more keywords, a little more sure


def _phrase_hit(kw: tuple[str, ...], tokens: Sequence[str]) -> float:
    """1.0 when the keyword's words occur in a row; their mean similarity when all are likely typos."""
    n = len(kw)
    best = 0.0
    for i in range(len(tokens) - n + 1):
        sims = [_word_sim(k, t) for k, t in zip(kw, tokens[i : i + n], strict=True)]
        if all(s > 0 for s in sims):
            best = max(best, sum(sims) / n)
    return best


def _word_sim(keyword: str, word: str) -> float:
    if keyword == word:
        return 1.0
    if min(len(keyword), len(word)) < 4:
        return 0.0
    ratio = fuzz.ratio(keyword, word) / 100
    return ratio * 0.9 if ratio >= 0.8 else 0.0  # a typo counts a little less than the word itself


def _example_score(content: str, spec: _Prepared, langs: Sequence[Lang]) -> float:
    if not content:
        return 0.0
    best = max(
        (fuzz.token_set_ratio(content, ex) / 100 for lang in langs for ex in spec.examples.get(lang, [])),
        default=0.0,
    )
    return max(0.0, (best - 0.5) / 0.5)


def _score(norm: str, tokens: Sequence[str], content: str, spec: _Prepared, langs: Sequence[Lang]) -> float:
    kw = _keyword_score(norm, tokens, spec, langs)
    ex = _example_score(content, spec, langs)
    return 1.0 - (1.0 - 0.8 * kw) * (1.0 - 0.9 * ex)


def load_intents(path: str | Path) -> YamlIntents:
    """Load an intents file; raises :class:`IntentsError` (``file:line:column: message`` lines)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise IntentsError([f"{p}: cannot read: {exc.strerror or exc}"]) from exc
    return YamlIntents(load_intents_text(text, source=str(p)))
