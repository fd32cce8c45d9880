"""Phrase lists (menu grammars): text normalisation and fuzzy matching of a transcript to a phrase.

Recognisers treat a phrase list as a language model, not a strict grammar (Vosk can return several
phrases, repeated words or its unknown-word token; Whisper returns free text), so every result is
matched back here: the best-scoring allowed phrase, or nothing below ``threshold``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher


def normalize(text: str) -> str:
    """NFKC, case-folded, punctuation and symbols (except apostrophes inside words, as in "don't",
    which recogniser vocabularies keep) turned into spaces, whitespace collapsed."""
    t = unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'")
    out = [" " if unicodedata.category(ch)[0] in "PSZC" and ch != "'" else ch for ch in t]
    return " ".join(w.strip("'") for w in "".join(out).split() if w.strip("'"))


@dataclass(frozen=True, slots=True)
class PhraseMatch:
    phrase: str  # as given in the list
    score: float  # 0..1


class PhraseMatcher:
    """Match a transcript to one phrase of a list.

    The score of a phrase is the best similarity (difflib ratio, spaces ignored so CJK phrases with or
    without word breaks compare alike) between the phrase and any run of transcript words about as
    long as the phrase: "I want billing please" matches "billing" with 1.0. Ties go to the longer
    phrase, then to the earlier one in the list.
    """

    def __init__(self, phrases: Sequence[str], threshold: float = 0.75) -> None:
        self.phrases = list(phrases)
        self.threshold = threshold
        self._norm = [normalize(p).split() for p in self.phrases]

    def match(self, text: str) -> PhraseMatch | None:
        words = normalize(text).split()
        if not words:
            return None
        best: tuple[float, int, int] | None = None  # (score, length, -index)
        for idx, pw in enumerate(self._norm):
            if not pw:
                continue
            target = "".join(pw)
            score = 0.0
            for size in {max(1, len(pw) - 1), len(pw), len(pw) + 1}:
                for i in range(0, max(1, len(words) - size + 1)):
                    cand = "".join(words[i : i + size])
                    score = max(score, SequenceMatcher(None, cand, target, autojunk=False).ratio())
                    if score == 1.0:
                        break
            key = (score, len(target), -idx)
            if best is None or key > best:
                best = key
        if best is None or best[0] < self.threshold:
            return None
        return PhraseMatch(self.phrases[-best[2]], round(best[0], 4))
