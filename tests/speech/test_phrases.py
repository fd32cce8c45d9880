"""Phrase-list matching: results mapped back to the allowed phrases, in English, Korean, Chinese."""

from __future__ import annotations

import pytest

from callcenter.speech.phrases import PhraseMatcher, normalize

MENU = ["Billing", "Technical support", "Sales", "Speak to an agent"]


def best(matcher: PhraseMatcher, text: str) -> str | None:
    m = matcher.match(text)
    return m.phrase if m else None


def test_normalize() -> None:
    assert normalize("  Don’t,  STOP!! ") == "don't stop"
    assert normalize("'quoted' words") == "quoted words"
    assert normalize("ＡＢＣ　１２３") == "abc 123"  # NFKC: full-width forms
    assert normalize("人工服务。") == "人工服务"
    assert normalize("...") == ""


@pytest.mark.parametrize("heard,expected", [
    ("billing", "Billing"),
    ("I want billing please", "Billing"),
    ("technical sport", "Technical support"),  # one word misheard
    ("sails", "Sales"),
    ("speak to agent", "Speak to an agent"),
    ("can i speak to an agent", "Speak to an agent"),
])
def test_english_menu(heard, expected) -> None:
    m = PhraseMatcher(MENU).match(heard)
    assert m is not None and m.phrase == expected


@pytest.mark.parametrize("heard", ["", "the weather is nice", "bill", "technology"])
def test_no_match_below_threshold(heard) -> None:
    assert PhraseMatcher(MENU).match(heard) is None


def test_exact_match_scores_one_and_fuzzy_less() -> None:
    pm = PhraseMatcher(MENU)
    exact, fuzzy = pm.match("sales"), pm.match("sails")
    assert exact is not None and fuzzy is not None
    assert exact.score == 1.0 and 0.75 <= fuzzy.score < 1.0


def test_ties_prefer_the_longer_phrase_then_the_earlier() -> None:
    m = PhraseMatcher(["support", "technical support"]).match("technical support")
    assert m is not None and m.phrase == "technical support"
    assert best(PhraseMatcher(["yes", "yep"]), "yep yes") == "yes"


def test_korean_and_chinese_with_or_without_spaces() -> None:
    ko = PhraseMatcher(["네", "아니요", "상담원 연결"])
    assert best(ko, "상담원연결") == "상담원 연결"
    assert best(ko, "아니요") == "아니요"
    assert ko.match("날씨") is None
    zh = PhraseMatcher(["人工服务", "查询余额", "挂失"])
    assert best(zh, "人工 服务") == "人工服务"
    assert best(zh, "我要查询余额") == "查询余额"
    assert zh.match("天气") is None


def test_threshold_is_configurable() -> None:
    assert PhraseMatcher(["Billing"], threshold=0.6).match("bill") is not None
    assert PhraseMatcher(["Billing"], threshold=0.99).match("biling") is None
