"""Extractive summary of a conversation: the caller's key sentences plus entities (order numbers,
phone numbers, email addresses). Pure functions; English and Chinese (jieba, loaded only for Chinese).

Sentences are scored by how often their content words recur in what the caller said (the classic
frequency method of Luhn), length-normalised, with a bonus for sentences naming an entity and for the
caller's first sentence (usually why they call). The best ones are kept in their original order.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["Summary", "extract_entities", "split_sentences", "summarize"]

_CJK = re.compile(r"[\u3400-\u9fff]")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？；;])\s*|\n+")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# "order 12345", "order number AB-1234", "order no. 5 5 1 2 3" (recognisers space out digits), "#12345",
# "订单号 12345", "订单号是12345".
_ORDER = re.compile(
    r"(?:\border(?:\s+(?:number|no\.?|id|#))?|\bref(?:erence)?(?:\s+number)?|#|订单(?:号码?|编号)?)"
    r"\s*(?:is|[:：#是为])?\s*([A-Za-z]{0,4}-?\d(?:[\d\s-]{2,24}\d)?)",
    re.IGNORECASE,
)
_PHONE = re.compile(r"(?<![A-Za-z0-9+])\+?\d[\d\s().-]{5,20}\d(?![A-Za-z0-9])")  # CJK may touch it
_WORD = re.compile(r"[A-Za-z][A-Za-z']+|\d+")
_STOP = frozenset(
    """a an the and or but if so to of in on at for with from by about as is are was were be been am i
    me my you your we our it its this that these those there here have has had do does did not no yes
    can could would should will just please hello hi okay ok thanks thank want need like get got
    um uh yeah oh well then than what which who when where how why""".split()
)
_CJK_STOP = frozenset(
    "的 了 是 我 你 他 她 它 们 吗 呢 吧 啊 和 在 有 就 也 都 要 这 那 "
    "一个 请 您 好 你好 您好 谢谢 喂".split()
)


@dataclass(frozen=True)
class Summary:
    text: str
    sentences: tuple[str, ...] = ()
    entities: dict[str, list[str]] = field(default_factory=dict)  # "order", "phone", "email" → values


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _tokens(sentence: str) -> list[str]:
    if _CJK.search(sentence):
        import jieba  # only for Chinese: loading its dictionary takes a moment

        words = [w.strip().lower() for w in jieba.lcut(sentence)]
        return [w for w in words if w and (w.isalnum() or _CJK.search(w)) and w not in _CJK_STOP]
    return [w.lower() for w in _WORD.findall(sentence) if w.lower() not in _STOP and len(w) > 1]


def _digits_only(value: str) -> str:
    return re.sub(r"[\s-]", "", value)


def extract_entities(text: str) -> dict[str, list[str]]:
    """Order numbers, phone numbers and emails in ``text``, each once, in order of appearance."""
    found: dict[str, list[str]] = {"order": [], "phone": [], "email": []}
    spans: list[tuple[int, int]] = []

    def add(kind: str, value: str) -> None:
        if value and value not in found[kind]:
            found[kind].append(value)

    for m in _EMAIL.finditer(text):
        add("email", m.group(0).lower())
        spans.append(m.span())
    for m in _ORDER.finditer(text):
        value = re.sub(r"\s", "", m.group(1)).upper()  # "5 5 1 2 3" as recognisers write digits
        if sum(c.isdigit() for c in value) >= 4:
            add("order", value)
            spans.append(m.span(1))
    for m in _PHONE.finditer(text):
        if any(a < m.end() and m.start() < b for a, b in spans):
            continue  # part of an order number or an email
        raw = m.group(0)
        digits = re.sub(r"\D", "", raw)
        if 7 <= len(digits) <= 15:
            add("phone", ("+" if raw.startswith("+") else "") + digits)
    return {k: v for k, v in found.items() if v}


def summarize(turns: Iterable[tuple[str, str]], *, max_sentences: int = 3) -> Summary:
    """Summary of ``(speaker, text)`` turns. Key sentences come from what the caller (or customer) said;
    entities from everything but the system's and bot's own prompts."""
    turns = list(turns)
    said = [text for speaker, text in turns if speaker in ("caller", "customer")]
    people = [text for speaker, text in turns if speaker not in ("system", "bot", "ivr")]
    entities = extract_entities("\n".join(people))
    sentences: list[str] = []
    for text in said:
        for s in split_sentences(text):
            if s not in sentences:
                sentences.append(s)
    if not sentences:
        return Summary(_render((), entities), (), entities)
    tokenised = [_tokens(s) for s in sentences]
    freq = Counter(t for toks in tokenised for t in toks)
    entity_values = [v for values in entities.values() for v in values]
    scores: list[float] = []
    for i, (sentence, toks) in enumerate(zip(sentences, tokenised, strict=True)):
        score = sum(freq[t] for t in toks) / math.sqrt(len(toks)) if toks else 0.0
        compact = _digits_only(sentence).upper()
        if any(v.upper() in compact or v.lstrip("+") in compact for v in entity_values):
            score += 2.0
        if i == 0 and toks:
            score += 1.0
        scores.append(score)
    ranked = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))[:max_sentences]
    chosen = tuple(sentences[i] for i in sorted(ranked))
    return Summary(_render(chosen, entities), chosen, entities)


def _render(sentences: Sequence[str], entities: dict[str, list[str]]) -> str:
    lines = []
    if sentences:
        joined = "".join if all(_CJK.search(s) for s in sentences) else " ".join
        lines.append(joined(sentences))
    labels = {"order": "Order", "phone": "Phone", "email": "Email"}
    facts = [f"{labels[k]}: {', '.join(v)}" for k, v in entities.items()]
    if facts:
        lines.append("; ".join(facts))
    return "\n".join(lines)
