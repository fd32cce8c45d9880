"""Search relevance on the sample KB and small corpora, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from callcenter.kb.markdown import ArticleData
from callcenter.kb.repo import KbRepo
from callcenter.kb.text import analyse
from callcenter.store import migrate
from callcenter.store.db import make_engine

# Questions a caller or customer asks, and the article that must come first.
EXPECTED_TOP = [
    ("en", "I want to return my shoes", "en-return-item"),
    ("en", "how long does a refund take", "en-refund-status"),
    ("en", "where is my package", "en-delivery-problem"),
    ("en", "track my order", "en-order-status"),
    ("en", "I forgot my password", "en-reset-password"),
    ("en", "can I get an invoice for my company", "en-invoice"),
    ("en", "my parcel arrived broken", "en-delivery-problem"),
    ("en", "how much is shipping", "en-delivery-options"),
    ("en", "cancel my order", "en-cancel-order"),
    ("en", "change my email address", "en-account-details"),
    ("en", "my card was declined", "en-payment-methods"),
    ("zh-CN", "我想退货", "zh-return-item"),
    ("zh-CN", "退款多久到账", "zh-refund-status"),
    ("zh-CN", "我的快递到哪了", "zh-order-status"),
    ("zh-CN", "忘记密码了怎么办", "zh-reset-password"),
    ("zh-CN", "怎么开发票", "zh-invoice"),
    ("zh-CN", "包裹破了", "zh-delivery-problem"),
    ("zh-CN", "运费多少钱", "zh-delivery-options"),
    ("zh-CN", "我要取消订单", "zh-cancel-order"),
    ("zh-CN", "换手机号", "zh-account-details"),
    ("zh-CN", "支付失败", "zh-payment-methods"),
]


def test_sample_questions_find_their_article(sample_repo: KbRepo) -> None:
    wrong = []
    for language, question, slug in EXPECTED_TOP:
        hits = sample_repo.search(question, language=language, limit=3)
        top = hits[0].slug if hits else None
        if top != slug:
            wrong.append(f"{question!r}: {top} (expected {slug})")
    assert wrong == []


def test_language_filter_and_any_language(sample_repo: KbRepo) -> None:
    assert sample_repo.search("我想退货", language="en") == []
    assert [h.language for h in sample_repo.search("invoice", language="en-US")] == ["en"] * len(
        sample_repo.search("invoice", language="en")
    )
    assert sample_repo.search("退款", language=None)[0].slug == "zh-refund-status"


def test_title_match_outranks_body_mentions(empty_repo: KbRepo) -> None:
    filler = [
        ArticleData(f"f{i}", "en", f"Filler {i}", f"Nothing relevant here, topic {i}.\n") for i in range(8)
    ]
    for data in filler:
        empty_repo.save_article(data, author="t")
    empty_repo.save_article(
        ArticleData(
            "body", "en", "Store opening times", "A warranty covers warranty repairs; warranty cards too.\n"
        ),
        author="t",
    )
    empty_repo.save_article(
        ArticleData("title", "en", "Warranty", "We repair faulty products for two years.\n"), author="t"
    )
    assert [h.slug for h in empty_repo.search("warranty", language="en")] == ["title", "body"]


def test_chinese_query_without_spaces_finds_chinese_article(empty_repo: KbRepo) -> None:
    empty_repo.save_article(
        ArticleData("zh-a", "zh", "修改收货地址", "发货前可以在订单详情里修改收货地址。\n"), author="t"
    )
    empty_repo.save_article(ArticleData("zh-b", "zh", "开发票", "订单完成后可以申请电子发票。\n"), author="t")
    empty_repo.save_article(
        ArticleData("en-a", "en", "Change the address", "Edit the address.\n"), author="t"
    )
    hits = empty_repo.search("我想修改地址", language="zh")
    assert [h.slug for h in hits][:1] == ["zh-a"]
    assert hits[0].answer == "发货前可以在订单详情里修改收货地址。"


def test_edits_are_searchable_at_once_and_drafts_are_hidden(empty_repo: KbRepo) -> None:
    article, _ = empty_repo.save_article(
        ArticleData("a", "en", "Gift cards", "Buy gift cards online.\n"), author="t"
    )
    assert [h.slug for h in empty_repo.search("gift card")] == ["a"]
    empty_repo.save_article(ArticleData("a", "en", "Vouchers", "Buy vouchers online.\n"), author="t")
    assert empty_repo.search("gift card") == []
    assert [h.slug for h in empty_repo.search("voucher")] == ["a"]
    empty_repo.save_article(
        ArticleData("a", "en", "Vouchers", "Buy vouchers online.\n", status="draft"), author="t"
    )
    assert empty_repo.search("voucher") == []
    assert [h.slug for h in empty_repo.search("voucher", include_drafts=True)] == ["a"]
    assert [v.version for v in empty_repo.versions(article.id or 0)] == [1, 2, 3]


def test_confidence_separates_answerable_from_unanswerable(sample_repo: KbRepo) -> None:
    def confidence(question: str, language: str) -> float:
        hits = sample_repo.search(question, language=language, limit=1)
        return hits[0].confidence if hits else 0.0

    for question, language in [("I forgot my password", "en"), ("refunds", "en"), ("怎么开发票", "zh")]:
        assert confidence(question, language) >= 0.8, question
    for question, language in [
        ("what are your opening hours", "en"),
        ("do you sell gift cards", "en"),
        ("有没有优惠券", "zh"),
    ]:
        assert confidence(question, language) < 0.55, question


def test_index_rebuilt_when_out_of_step(sample_repo: KbRepo) -> None:
    with sample_repo._session() as session:
        sample_repo.index.clear(session)
        session.commit()
    assert sample_repo.search("password", language="en") == []
    sample_repo.ensure_schema()  # what every start does
    assert sample_repo.search("password", language="en")[0].slug == "en-reset-password"


def test_migrations_create_the_kb_schema(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine)
        repo = KbRepo(engine)
        repo.ensure_schema()
        repo.save_article(ArticleData("a", "en", "Gift cards", "Buy gift cards online.\n"), author="t")
        assert [h.slug for h in repo.search("gift cards", language="en")] == ["a"]
        assert migrate.schema_diff(engine) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("text", ["", "   ", "?!", "the and of"])
def test_empty_questions_find_nothing(sample_repo: KbRepo, text: str) -> None:
    assert analyse(text) == "" and sample_repo.search(text) == []
