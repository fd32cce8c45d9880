"""The analyser both indexes and queries go through."""

from __future__ import annotations

from callcenter.kb.text import gap_key, primary_language, terms


def test_english_plurals_and_tenses_share_a_stem() -> None:
    assert terms("refunds") == terms("refund") == terms("refunded")
    assert terms("How do I return my shoes?") == ["return", "shoe"]  # filler words dropped


def test_chinese_is_segmented_without_spaces_and_asr_spaces_are_rejoined() -> None:
    assert "退货" in terms("我想退货") and "我" not in terms("我想退货")
    assert terms("我 想 退 货") == terms("我想退货")
    assert terms("ＡＢＣ１２３") == ["abc123"]  # full-width forms folded


def test_mixed_text_keeps_both_scripts() -> None:
    assert terms("iPhone发票") == ["iphon", "发票"]


def test_gap_key_ignores_word_order_and_filler() -> None:
    assert gap_key("Where can I buy a gift card?") == gap_key("gift cards, where can I buy them")


def test_primary_language() -> None:
    assert primary_language("zh-CN") == "zh" and primary_language("en_US") == "en"
    assert primary_language(None) is None
