"""The small safe expression language of ``branch`` conditions, and ``${var}`` templates.

A hand-written tokenizer and recursive-descent parser; nothing here calls ``eval``. Grammar::

    expr       := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := operand [compare_op operand]          (no chaining: write ``a < b and b < c``)
    compare_op := "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in"
    operand    := NUMBER | "-" NUMBER | STRING | "true" | "false" | "null" | VARIABLE
                | "(" expr ")" | "[" [expr ("," expr)*] "]"
    VARIABLE   := NAME ("." (NAME | DIGITS))*              e.g. customer.vip, items.0.sku

Evaluation never raises: a missing variable is ``null``; ``==`` compares a number with a string that
spells a number numerically (DTMF input is text: ``digits == 5`` holds for "5"); ordering between values
that cannot be compared is false; ``and``/``or``/``not`` give booleans.

Templates: ``${path}`` or ``${path|filter}`` (filters: digits, upper, lower); ``$${`` is a literal ``${``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from callcenter.core.errors import CallcenterError

__all__ = [
    "BoolOp",
    "Compare",
    "Expr",
    "ExprError",
    "ListExpr",
    "Literal",
    "Not",
    "Template",
    "Var",
    "evaluate",
    "is_true",
    "lookup",
    "parse",
    "parse_cached",
    "parse_template",
    "render",
    "render_value",
    "variables",
]


class ExprError(CallcenterError):
    """A syntax error in an expression or template; ``column`` is 1-based within its text."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"column {column}: {message}")
        self.message = message
        self.column = column


# -- AST ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    value: Any
    column: int


@dataclass(frozen=True)
class Var:
    path: tuple[str, ...]
    column: int


@dataclass(frozen=True)
class ListExpr:
    items: tuple[Expr, ...]
    column: int


@dataclass(frozen=True)
class Not:
    operand: Expr
    column: int


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    left: Expr
    right: Expr
    column: int


@dataclass(frozen=True)
class Compare:
    op: str  # "==" "!=" "<" "<=" ">" ">=" "in" "not in"
    left: Expr
    right: Expr
    column: int


Expr = Literal | Var | ListExpr | Not | BoolOp | Compare

# -- tokenizer ------------------------------------------------------------------------------------------

_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TOKEN_RE = re.compile(
    rf"""
    (?P<ws>\s+)
  | (?P<number>[0-9]+(?:\.[0-9]+)?(?![A-Za-z0-9_]))
  | (?P<name>{_NAME}(?:\.(?:{_NAME}|[0-9]+))*)
  | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,|-)
  | (?P<quote>["'])
    """,
    re.VERBOSE,
)
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}


@dataclass(frozen=True)
class _Tok:
    kind: str  # "number" | "string" | "name" | "keyword" | "op" | "end"
    text: str
    value: Any
    column: int


def _read_string(text: str, start: int) -> tuple[str, int]:
    """The string literal opening at ``text[start]``; returns its value and the index after it."""
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= len(text):
                break
            escaped = text[i + 1]
            if escaped not in _ESCAPES:
                raise ExprError(f"unknown escape '\\{escaped}' in a string", i + 1)
            out.append(_ESCAPES[escaped])
            i += 2
            continue
        out.append(ch)
        i += 1
    raise ExprError("string not closed", start + 1)


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    i = 0
    while i < len(text):
        m = _TOKEN_RE.match(text, i)
        if m is None:
            raise ExprError(f"unexpected character {text[i]!r}", i + 1)
        kind = m.lastgroup
        assert kind is not None
        col = i + 1
        if kind == "quote":
            value, i = _read_string(text, i)
            tokens.append(_Tok("string", text[col - 1 : i], value, col))
            continue
        i = m.end()
        word = m.group()
        if kind == "number":
            tokens.append(_Tok("number", word, float(word) if "." in word else int(word), col))
        elif kind == "name":
            tokens.append(_Tok("keyword" if word in _KEYWORDS else "name", word, word, col))
        elif kind == "op":
            tokens.append(_Tok("op", word, word, col))
    tokens.append(_Tok("end", "", None, len(text) + 1))
    return tokens


# -- parser ---------------------------------------------------------------------------------------------

_COMPARE_OPS = {"==", "!=", "<", "<=", ">", ">="}


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    @property
    def tok(self) -> _Tok:
        return self.tokens[self.pos]

    def _is(self, kind: str, text: str | None = None) -> bool:
        t = self.tok
        return t.kind == kind and (text is None or t.text == text)

    def _take(self) -> _Tok:
        t = self.tok
        self.pos += 1
        return t

    def _expect(self, kind: str, text: str, what: str) -> _Tok:
        if not self._is(kind, text):
            raise ExprError(f"expected {what}, found {_describe(self.tok)}", self.tok.column)
        return self._take()

    def parse(self) -> Expr:
        if self._is("end"):
            raise ExprError("empty expression", 1)
        expr = self._or()
        if not self._is("end"):
            raise ExprError(
                f"unexpected {_describe(self.tok)} after the end of the expression", self.tok.column
            )
        return expr

    def _or(self) -> Expr:
        left = self._and()
        while self._is("keyword", "or"):
            op = self._take()
            left = BoolOp("or", left, self._and(), op.column)
        return left

    def _and(self) -> Expr:
        left = self._not()
        while self._is("keyword", "and"):
            op = self._take()
            left = BoolOp("and", left, self._not(), op.column)
        return left

    def _not(self) -> Expr:
        if self._is("keyword", "not"):
            op = self._take()
            return Not(self._not(), op.column)
        return self._comparison()

    def _compare_op(self) -> tuple[str, int] | None:
        t = self.tok
        if t.kind == "op" and t.text in _COMPARE_OPS:
            self._take()
            return t.text, t.column
        if self._is("keyword", "in"):
            self._take()
            return "in", t.column
        if (
            self._is("keyword", "not")
            and self.tokens[self.pos + 1].kind == "keyword"
            and (self.tokens[self.pos + 1].text == "in")
        ):
            self.pos += 2
            return "not in", t.column
        return None

    def _comparison(self) -> Expr:
        left = self._operand()
        found = self._compare_op()
        if found is None:
            return left
        op, column = found
        expr = Compare(op, left, self._operand(), column)
        if self._compare_op() is not None:
            raise ExprError(
                "comparisons cannot be chained: join them with 'and'", self.tokens[self.pos - 1].column
            )
        return expr

    def _operand(self) -> Expr:
        t = self.tok
        if t.kind == "number":
            self._take()
            return Literal(t.value, t.column)
        if t.kind == "op" and t.text == "-":
            self._take()
            if self.tok.kind != "number":
                raise ExprError(f"expected a number after '-', found {_describe(self.tok)}", self.tok.column)
            return Literal(-self._take().value, t.column)
        if t.kind == "string":
            self._take()
            return Literal(t.value, t.column)
        if t.kind == "keyword" and t.text in ("true", "false", "null"):
            self._take()
            return Literal({"true": True, "false": False, "null": None}[t.text], t.column)
        if t.kind == "name":
            self._take()
            return Var(tuple(t.text.split(".")), t.column)
        if self._is("op", "("):
            self._take()
            inner = self._or()
            self._expect("op", ")", "')'")
            return inner
        if self._is("op", "["):
            self._take()
            items: list[Expr] = []
            if not self._is("op", "]"):
                items.append(self._or())
                while self._is("op", ","):
                    self._take()
                    items.append(self._or())
            self._expect("op", "]", "',' or ']'")
            return ListExpr(tuple(items), t.column)
        raise ExprError(f"expected a value, found {_describe(t)}", t.column)


def _describe(tok: _Tok) -> str:
    return "the end" if tok.kind == "end" else repr(tok.text)


def parse(text: str) -> Expr:
    """Parse ``text`` into an AST; raises :class:`ExprError` (never anything else) when it is wrong."""
    return _Parser(text).parse()


@lru_cache(maxsize=1024)
def parse_cached(text: str) -> Expr:
    return parse(text)


def variables(expr: Expr) -> list[tuple[str, ...]]:
    """The variable paths an expression reads, in order of appearance."""
    if isinstance(expr, Var):
        return [expr.path]
    if isinstance(expr, Not):
        return variables(expr.operand)
    if isinstance(expr, BoolOp | Compare):
        return variables(expr.left) + variables(expr.right)
    if isinstance(expr, ListExpr):
        return [p for item in expr.items for p in variables(item)]
    return []


# -- evaluation -----------------------------------------------------------------------------------------


def lookup(values: Mapping[str, Any], path: tuple[str, ...] | list[str]) -> Any:
    """``values[a][b][0]``… for the path ``a.b.0``; ``None`` where anything is missing."""
    current: Any = values
    for part in path:
        if isinstance(current, Mapping):
            current = current.get(part)
        elif (
            isinstance(current, list | tuple)
            and part.isascii()
            and part.isdigit()
            and int(part) < len(current)
        ):
            current = current[int(part)]
        else:
            return None
    return current


def is_true(value: Any) -> bool:
    return bool(value)


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip()) if value.strip() else None
        except ValueError:
            return None
    return None


def _coerce(left: Any, right: Any) -> tuple[Any, Any]:
    """Numbers compare with numeric strings as numbers (DTMF and HTTP values are often text)."""
    lnum = isinstance(left, int | float) and not isinstance(left, bool)
    rnum = isinstance(right, int | float) and not isinstance(right, bool)
    if lnum != rnum:
        ln, rn = _number(left), _number(right)
        if ln is not None and rn is not None:
            return ln, rn
    return left, right


def _equal(left: Any, right: Any) -> bool:
    left, right = _coerce(left, right)
    if isinstance(left, bool) != isinstance(right, bool):
        return False  # true == 1 is false here: a flag is not a count
    return bool(left == right)


def _order(op: str, left: Any, right: Any) -> bool:
    left, right = _coerce(left, right)
    both_num = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (left, right))
    if not both_num and not (isinstance(left, str) and isinstance(right, str)):
        return False
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, list | tuple):
        return any(_equal(item, x) for x in container)
    if isinstance(container, str):
        return item is not None and _format(item) in container
    if isinstance(container, Mapping):
        return isinstance(item, str) and item in container
    return False


def evaluate(expr: Expr, values: Mapping[str, Any]) -> Any:
    """The value of ``expr`` with variables from ``values``; never raises."""
    if isinstance(expr, Literal):
        return expr.value
    if isinstance(expr, Var):
        return lookup(values, expr.path)
    if isinstance(expr, ListExpr):
        return [evaluate(item, values) for item in expr.items]
    if isinstance(expr, Not):
        return not is_true(evaluate(expr.operand, values))
    if isinstance(expr, BoolOp):
        left = is_true(evaluate(expr.left, values))
        if expr.op == "and":
            return left and is_true(evaluate(expr.right, values))
        return left or is_true(evaluate(expr.right, values))
    left, right = evaluate(expr.left, values), evaluate(expr.right, values)
    if expr.op == "==":
        return _equal(left, right)
    if expr.op == "!=":
        return not _equal(left, right)
    if expr.op == "in":
        return _contains(right, left)
    if expr.op == "not in":
        return not _contains(right, left)
    return _order(expr.op, left, right)


# -- templates ------------------------------------------------------------------------------------------

_PATH_RE = re.compile(rf"{_NAME}(?:\.(?:{_NAME}|[0-9]+))*")
_FILTERS: dict[str, Callable[[str], str]] = {
    "digits": lambda s: " ".join(ch for ch in s if not ch.isspace()),  # read "1234" as "1 2 3 4"
    "upper": str.upper,
    "lower": str.lower,
}


@dataclass(frozen=True)
class _Slot:
    path: tuple[str, ...]
    filters: tuple[str, ...]


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text and variable slots."""

    parts: tuple[str | _Slot, ...]

    @property
    def single_slot(self) -> _Slot | None:
        """The slot when the whole template is exactly one ``${...}`` (its value keeps its type)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], _Slot):
            return self.parts[0]
        return None

    def variables(self) -> list[tuple[str, ...]]:
        return [p.path for p in self.parts if isinstance(p, _Slot)]


@lru_cache(maxsize=2048)
def parse_template(text: str) -> Template:
    """Parse ``text``; raises :class:`ExprError` with the column of the fault."""
    parts: list[str | _Slot] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$${", i):
            literal.append("${")
            i += 3
            continue
        if not text.startswith("${", i):
            literal.append(text[i])
            i += 1
            continue
        end = text.find("}", i + 2)
        if end < 0:
            raise ExprError("'${' is not closed by '}'", i + 1)
        inner = text[i + 2 : end]
        name, *filters = (piece.strip() for piece in inner.split("|"))
        if not _PATH_RE.fullmatch(name):
            shown = name or "nothing"
            raise ExprError(
                f"expected a variable name such as caller or customer.name, found {shown!r}", i + 3
            )
        for f in filters:
            if f not in _FILTERS:
                known = ", ".join(_FILTERS)
                raise ExprError(f"unknown filter {f!r} (known: {known})", i + 3 + inner.find(f))
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(_Slot(tuple(name.split(".")), tuple(filters)))
        i = end + 1
    if literal:
        parts.append("".join(literal))
    return Template(tuple(parts))


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _slot_text(slot: _Slot, values: Mapping[str, Any]) -> str:
    text = _format(lookup(values, slot.path))
    for f in slot.filters:
        text = _FILTERS[f](text)
    return text


def render(text: str, values: Mapping[str, Any], *, escape: Callable[[str], str] | None = None) -> str:
    """Substitute ``${...}`` slots (missing variables give ""); ``escape`` wraps each substituted value
    (e.g. URL quoting)."""
    out: list[str] = []
    for part in parse_template(text).parts:
        if isinstance(part, str):
            out.append(part)
        else:
            value = _slot_text(part, values)
            out.append(escape(value) if escape else value)
    return "".join(out)


def render_value(text: str, values: Mapping[str, Any]) -> Any:
    """Like :func:`render`, but a template that is exactly one unfiltered ``${x}`` gives x's own value
    (a number stays a number in a JSON body or a ``set``)."""
    slot = parse_template(text).single_slot
    if slot is not None and not slot.filters:
        return lookup(values, slot.path)
    return render(text, values)
