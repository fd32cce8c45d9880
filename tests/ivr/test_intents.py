"""YAML intents: English and Mandarin tables, typos, fallback, candidate lists, and file errors."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from callcenter.ivr.intents import IntentsError, YamlIntents, load_intents, load_intents_text, normalise
from callcenter.ivr.services import IntentClassifier, IntentResult, Services

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "ivr_flows" / "intents" / "intents.yaml"  # flows check reads ivr_flows/*.yaml


@pytest.fixture(scope="module")
def sample() -> YamlIntents:
    classifier = load_intents(SAMPLE)
    classifier.warm_sync()  # one jieba load for the whole module
    return classifier


EN = [
    ("I want a refund", "refund"),
    ("Give me my money back!", "refund"),
    ("I'd like to return these shoes", "refund"),
    ("where's my parcel?", "order_status"),
    ("when will my order arrive", "order_status"),
    ("I need an invoice for March", "invoice"),
    ("Can you send me a receipt", "invoice"),
    ("I forgot my password", "password_reset"),
    ("I can't log in", "password_reset"),
    ("can I talk to a human please", "agent"),
    ("let me speak to an operator", "agent"),
]

ZH = [
    ("我要退款", "refund"),
    ("我想退货，谢谢。", "refund"),
    ("我的快递到哪了？", "order_status"),
    ("我想查一下订单状态", "order_status"),
    ("订单什么时候发货", "order_status"),
    ("我要开发票", "invoice"),
    ("账单有问题", "invoice"),
    ("忘记密码了", "password_reset"),
    ("我登录不了账号", "password_reset"),
    ("转人工", "agent"),
    ("我想找客服", "agent"),
]

TYPOS = [
    ("refnd my ordr", "refund"),
    ("track my pakage", "order_status"),
    ("reset my pasword", "password_reset"),
    ("I need an invoce", "invoice"),
]


@pytest.mark.parametrize(("text", "intent"), EN)
async def test_english_table(sample: YamlIntents, text: str, intent: str) -> None:
    result = await sample.classify(text, sample.names, language="en-US")
    assert result.name == intent
    assert 0.5 <= result.confidence <= 1.0


@pytest.mark.parametrize(("text", "intent"), ZH)
async def test_mandarin_table(sample: YamlIntents, text: str, intent: str) -> None:
    result = await sample.classify(text, sample.names, language="zh-CN")
    assert result.name == intent
    assert 0.5 <= result.confidence <= 1.0


@pytest.mark.parametrize(("text", "intent"), TYPOS)
async def test_typos_still_match_but_less_surely(sample: YamlIntents, text: str, intent: str) -> None:
    result = await sample.classify(text, sample.names, language="en-US")
    assert result.name == intent
    assert 0.5 <= result.confidence < 0.98  # an exact keyword plus an example scores 0.98


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("what's the weather like tomorrow", "en-US"),
        ("I would like to order a pizza", "en-US"),
        ("the", "en-US"),
        ("my order", "en-US"),  # fits refund and order status alike: not confidently either
        ("今天天气怎么样", "zh-CN"),
        ("我想订一张机票", "zh-CN"),
        ("", "en-US"),
        ("  ?! ", "zh-CN"),
    ],
)
async def test_unrelated_ambiguous_or_empty_text_gives_the_fallback(
    sample: YamlIntents, text: str, language: str
) -> None:
    result = await sample.classify(text, sample.names, language=language)
    assert result.name == "agent"
    assert result.confidence >= 0.5  # sure enough that none of the others was meant to pass a node's check


async def test_full_width_and_mixed_language_text(sample: YamlIntents) -> None:
    assert (await sample.classify("ＲＥＦＵＮＤ！", sample.names, language="zh-CN")).name == "refund"
    assert (await sample.classify("我要 refund", sample.names, language="zh-CN")).name == "refund"
    assert (await sample.classify("INVOICE, please.", sample.names, language="en-US")).name == "invoice"


async def test_only_the_offered_intents_are_chosen(sample: YamlIntents) -> None:
    # The intent node offers its routes; "refund" is not among them here.
    assert await sample.classify("I want a refund", ["invoice", "agent"], language="en") == IntentResult(
        "agent", 1.0
    )
    # Without the fallback among the candidates there is no intent at all.
    result = await sample.classify("I want a refund", ["invoice"], language="en")
    assert result.name is None
    # An empty list means every configured intent (for routing).
    assert (await sample.classify("I want a refund", [], language="en")).name == "refund"


async def test_without_a_fallback_unclear_text_gives_no_intent() -> None:
    classifier = YamlIntents(
        load_intents_text("min_confidence: 0.6\nintents:\n  - name: refund\n    keywords: {en: [refund]}\n")
    )
    assert (await classifier.classify("hello there", ["refund"], language="en")).name is None
    assert (await classifier.classify("refund please", ["refund"], language="en")).name == "refund"


async def test_it_is_an_intent_classifier_for_the_ivr(sample: YamlIntents) -> None:
    classifier: IntentClassifier = sample
    services = Services(intents=classifier)
    assert services.intents is not None
    result = await services.intents.classify("转人工", ["agent", "refund"], language="zh-CN")
    assert result.name == "agent"


async def test_first_chinese_call_loads_jieba_quietly(capfd: pytest.CaptureFixture[str]) -> None:
    classifier = YamlIntents(
        load_intents_text("intents:\n  - name: refund\n    examples: {zh: [我要退款]}\n")
    )
    await classifier.warm()
    assert (await classifier.classify("退款，我要退款", ["refund"], language="zh-CN")).name == "refund"
    assert capfd.readouterr().err == ""  # jieba logs "Building prefix dict…" unless quietened


def test_normalise() -> None:
    assert normalise("  Ｈｅｌｌｏ，ＷＯＲＬＤ！ ") == "hello world"
    assert normalise("我要退款。。。") == "我要退款"
    assert normalise("I'd like") == "id like"


# -- file errors ----------------------------------------------------------------------------------------


def errors(text: str) -> list[str]:
    with pytest.raises(IntentsError) as info:
        load_intents_text(dedent(text), source="i.yaml")
    return info.value.errors


def test_unknown_keys_are_rejected_with_their_line() -> None:
    assert errors(
        """\
        min_confidence: 0.5
        intents:
          - name: refund
            keywords: {en: [refund]}
            exampels: {en: [I want a refund]}
        """
    ) == ["i.yaml:5:5: intents.0.exampels: unknown key"]


def test_unknown_language_and_bad_values() -> None:
    out = errors(
        """\
        min_confidence: 1.5
        intents:
          - name: refund
            keywords: {fr: [remboursement]}
        """
    )
    assert len(out) == 2
    assert out[0].startswith("i.yaml:1:") and "min_confidence" in out[0] and "1" in out[0]
    assert out[1].startswith("i.yaml:4:") and "'en' or 'zh'" in out[1]


def test_fallback_must_be_an_intent_and_names_unique() -> None:
    (line,) = errors(
        """\
        fallback: human
        intents:
          - name: agent
            keywords: {en: [agent]}
        """
    )
    assert line.startswith("i.yaml:1:1:") and "fallback 'human' is not one of the intents (agent)" in line
    (line,) = errors(
        """\
        intents:
          - name: agent
            keywords: {en: [agent]}
          - name: agent
            keywords: {en: [human]}
        """
    )
    assert "intent 'agent' is defined twice" in line


def test_missing_and_empty_parts() -> None:
    assert errors("min_confidence: 0.5\n") == ["i.yaml:1:1: file: missing key 'intents'"]
    (line,) = errors("intents:\n  - name: refund\n")
    assert line.startswith("i.yaml:2:") and "neither keywords nor examples" in line
    (line,) = errors("intents:\n  - name: refund\n    keywords: {en: ['!!']}\n")
    assert line.startswith("i.yaml:3:") and "has no words" in line


def test_yaml_syntax_and_duplicate_keys() -> None:
    (line,) = errors("intents:\n  - name: [refund\n")
    assert line.startswith("i.yaml:") and "invalid YAML" in line
    out = errors("intents:\n  - name: a\n    keywords: {en: [x]}\n    keywords: {en: [y]}\n")
    assert out == ["i.yaml:4:5: intents.0.keywords: duplicate key (first at line 3)"]
    assert errors("- just a list\n") == ["i.yaml:1:1: expected a mapping with 'intents'"]


def test_load_intents_reads_files_and_names_them(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(IntentsError, match="nope.yaml: cannot read"):
        load_intents(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("intents: []\n", encoding="utf-8")
    with pytest.raises(IntentsError, match=r"bad\.yaml:1:\d+: intents: "):
        load_intents(bad)
    assert load_intents(SAMPLE).config.fallback == "agent"
