from __future__ import annotations

from callcenter.tickets.summary import extract_entities, summarize


def test_entities_order_numbers_phones_and_emails() -> None:
    text = (
        "My order number is 5 5 1 2 3, the other one was order AB-7781. "
        "Call me on +49 30 1234567 or write to Bob.Smith@Example.com."
    )
    assert extract_entities(text) == {
        "order": ["55123", "AB-7781"],
        "phone": ["+49301234567"],
        "email": ["bob.smith@example.com"],
    }


def test_chinese_order_number_and_phone() -> None:
    found = extract_entities("你好，我的订单号是2024051234，电话13812345678")
    assert found["order"] == ["2024051234"]
    assert found["phone"] == ["13812345678"]


def test_short_numbers_are_not_orders_or_phones() -> None:
    assert extract_entities("press 1 for sales, I waited 20 minutes for order 12") == {}


def test_summary_keeps_the_callers_key_sentences_in_order_not_the_prompts() -> None:
    turns = [
        ("system", "Welcome to Acme. Please tell us why you are calling, order numbers help."),
        ("caller", "Hello. I want to return my blender, order 88123."),
        ("caller", "The blender arrived broken and the blender does not start. The weather is nice today."),
        ("caller", "Please call me back at 030 555 1234. Thanks."),
    ]
    summary = summarize(turns, max_sentences=3)
    assert summary.sentences == (
        "I want to return my blender, order 88123.",
        "The blender arrived broken and the blender does not start.",
        "Please call me back at 030 555 1234.",
    )
    assert "Welcome" not in summary.text and "weather" not in summary.text
    assert summary.entities == {"order": ["88123"], "phone": ["0305551234"]}
    assert summary.text.endswith("Order: 88123; Phone: 0305551234")


def test_chinese_summary_without_spaces() -> None:
    turns = [("caller", "你好。我的订单号是123456，快递一直没有到。我想查询快递什么时候到。今天天气不错。")]
    summary = summarize(turns, max_sentences=2)
    assert summary.sentences == ("我的订单号是123456，快递一直没有到。", "我想查询快递什么时候到。")
    assert summary.text.startswith("我的订单号是123456，快递一直没有到。我想查询")


def test_nothing_said_gives_an_empty_summary() -> None:
    assert summarize([("system", "Goodbye.")]).text == ""
