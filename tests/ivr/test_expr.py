"""The branch-condition language and ${var} templates: results, errors with columns, fuzzing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callcenter.ivr.expr import (
    Compare,
    ExprError,
    Var,
    evaluate,
    parse,
    parse_template,
    render,
    render_value,
    variables,
)

VARS: dict[str, Any] = {
    "digits": "5",
    "count": 3,
    "ratio": 0.5,
    "name": "Ada",
    "customer": {"vip": True, "tier": "gold", "tags": ["press", "beta"], "orders": [{"sku": "A1"}]},
    "empty": "",
    "zero": 0,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("count == 3", True),
        ("count != 3", False),
        ("digits == 5", True),  # DTMF input is text; a number compares numerically
        ("digits == '5'", True),
        ("digits > 4 and digits < 6", True),
        ("count >= 3 and count <= 3", True),
        ("ratio < 1", True),
        ("-1 < zero", True),
        ("customer.vip", True),
        ("customer.vip == true", True),
        ("customer.vip == 1", False),  # a flag is not a count
        ("customer.tier in ['gold', 'platinum']", True),
        ("'beta' in customer.tags", True),
        ("'alpha' not in customer.tags", True),
        ("'d' in name", True),
        ("customer.orders.0.sku == 'A1'", True),
        ("customer.orders.5.sku == null", True),
        ("missing == null", True),
        ("missing.deeper.still", None),
        ("missing > 3", False),  # ordering with nothing is false, never an error
        ("name > 3", False),
        ("not empty", True),
        ("not not count", True),
        ("zero or empty", False),
        ("true or false and false", True),  # and binds tighter than or
        ("(true or false) and false", False),
        ("not count == 3", False),  # not applies to the comparison
        ("'it\\'s' == \"it's\"", True),
        ("[1, 2, count] == [1, 2, 3]", True),
        ("[] == []", True),
        ("2.50 == 2.5", True),
    ],
)
def test_evaluate(text: str, expected: Any) -> None:
    assert evaluate(parse(text), VARS) == expected


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("", 1, "empty expression"),
        ("count ==", 9, "expected a value, found the end"),
        ("count == 3 and", 15, "expected a value, found the end"),
        ("(count == 3", 12, "expected ')', found the end"),
        ("count = 3", 7, "unexpected character '='"),
        ("count == 3)", 11, "unexpected ')' after the end of the expression"),
        ("'open", 1, "string not closed"),
        ("'bad \\q'", 6, "unknown escape '\\q' in a string"),
        ("1 < count < 5", 11, "comparisons cannot be chained"),
        ("a.", 2, "unexpected character '.'"),
        ("- x", 3, "expected a number after '-', found 'x'"),
        ("count @ 3", 7, "unexpected character '@'"),
        ("[1, 2", 6, "expected ',' or ']', found the end"),
        ("and", 1, "expected a value, found 'and'"),
    ],
)
def test_errors_have_columns(text: str, column: int, message: str) -> None:
    with pytest.raises(ExprError) as info:
        parse(text)
    assert info.value.column == column
    assert message in info.value.message


def test_ast_and_variables() -> None:
    expr = parse("customer.vip and count > 3")
    assert variables(expr) == [("customer", "vip"), ("count",)]
    compare = parse("count > 3")
    assert isinstance(compare, Compare) and isinstance(compare.left, Var) and compare.column == 7


@settings(max_examples=400)
@given(st.text(max_size=40))
def test_any_text_parses_or_raises_expr_error(text: str) -> None:
    try:
        expr = parse(text)
    except ExprError as exc:
        assert 1 <= exc.column <= len(text) + 1
    else:
        evaluate(expr, VARS)  # never raises


_ALPHABET = st.sampled_from(
    [
        "count",
        "customer.vip",
        "'x'",
        "3",
        "-2",
        "==",
        "!=",
        "<",
        ">=",
        "and",
        "or",
        "not",
        "in",
        "(",
        ")",
        "[",
        "]",
        ",",
    ]
)


@settings(max_examples=400)
@given(st.lists(_ALPHABET, max_size=12))
def test_token_soup_parses_or_raises_expr_error(tokens: list[str]) -> None:
    text = " ".join(tokens)
    try:
        expr = parse(text)
    except ExprError:
        return
    assert isinstance(evaluate(expr, VARS), bool | int | float | str | list | type(None))


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hello ${name}!", "Hello Ada!"),
        ("${customer.tier}/${count}", "gold/3"),
        ("no vars", "no vars"),
        ("${missing}", ""),
        ("order ${digits|digits}", "order 5"),
        ("${name|upper}${name|lower}", "ADAada"),
        ("price $5 and $${literal}", "price $5 and ${literal}"),
        ("${ name }", "Ada"),
        ("${customer.vip}", "true"),
        ("${ratio}", "0.5"),
    ],
)
def test_render(template: str, expected: str) -> None:
    assert render(template, VARS) == expected


def test_digits_filter_spaces_out_each_digit() -> None:
    assert render("${n|digits}", {"n": "12 34"}) == "1 2 3 4"


def test_render_value_keeps_the_type_of_a_lone_variable() -> None:
    assert render_value("${count}", VARS) == 3
    assert render_value("${customer.vip}", VARS) is True
    assert render_value("${customer.tags}", VARS) == ["press", "beta"]
    assert render_value("n=${count}", VARS) == "n=3"
    assert render_value("${count|digits}", VARS) == "3"


def test_render_escapes_substituted_values_only() -> None:
    assert (
        render("/orders/${x}?a=b", {"x": "1/2 3"}, escape=lambda s: s.replace("/", "%2F"))
        == "/orders/1%2F2 3?a=b"
    )


@pytest.mark.parametrize(
    ("template", "column", "message"),
    [
        ("Hello ${name", 7, "'${' is not closed"),
        ("Hi ${}", 6, "expected a variable name"),
        ("Hi ${1abc}", 6, "expected a variable name"),
        ("Hi ${name|shout}", 11, "unknown filter 'shout'"),
    ],
)
def test_template_errors(template: str, column: int, message: str) -> None:
    with pytest.raises(ExprError) as info:
        parse_template(template)
    assert info.value.column == column
    assert message in info.value.message


@settings(max_examples=300)
@given(st.text(alphabet=st.sampled_from(list("${}|.ab1 _")), max_size=30))
def test_any_template_parses_or_raises_expr_error(text: str) -> None:
    try:
        parse_template(text)
    except ExprError as exc:
        assert 1 <= exc.column <= len(text) + 1
    else:
        render(text, VARS)
