"""Load and check flow files: YAML, schema and graph errors as ``file:line:column: node <id>: message``.

``check_flows(paths, context)`` is what ``callcenter flows check`` runs; ``load_flow``/``load_flows``
return validated :class:`Flow` objects or raise :class:`FlowLoadError` carrying every error.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from callcenter.core.errors import CallcenterError
from callcenter.ivr.graph import FlowContext, graph_errors, suggest
from callcenter.ivr.schema import NODE_TYPES, Flow, Loc, Node
from callcenter.ivr.source import FlowError, Reporter, parse_yaml

__all__ = [
    "FlowContext",
    "FlowError",
    "FlowLoadError",
    "check_flow_text",
    "check_flows",
    "flow_files",
    "load_flow",
    "load_flow_text",
    "load_flows",
]

_NODE_ADAPTER: TypeAdapter[Any] = TypeAdapter(Node)


class FlowLoadError(CallcenterError):
    """A flow (or several) did not validate; ``errors`` lists every problem, in file order."""

    def __init__(self, errors: list[FlowError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


@dataclass
class _Checked:
    source: str
    flow: Flow | None
    errors: list[FlowError] = field(default_factory=list)
    report: Reporter | None = None
    all_ids: set[str] = field(default_factory=set)
    complete: bool = False
    base_dir: Path | None = None


# -- schema errors → positions --------------------------------------------------------------------------


def _strip(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _step(tp: Any, comp: Any) -> Any:
    """The type found at ``comp`` inside ``tp`` (following pydantic's loc), or None."""
    tp = _strip(tp)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        members = [_strip(a) for a in get_args(tp) if a is not type(None)]
        if isinstance(comp, str) and comp in NODE_TYPES and all(m in NODE_TYPES.values() for m in members):
            return NODE_TYPES[comp]
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if len(models) == 1:
            return _step(models[0], comp)
        return None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        info = tp.model_fields.get(comp) if isinstance(comp, str) else None
        return info.annotation if info is not None else None
    if origin is list:
        return get_args(tp)[0]
    if origin is dict:
        return get_args(tp)[1]
    return None


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model that holds the last component of ``loc``."""
    tp: Any = Flow
    for comp in loc[:-1]:
        tp = _step(tp, comp)
        if tp is None:
            return []
    tp = _strip(tp)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        models = [a for a in get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
        tp = models[0] if len(models) == 1 else None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [name for name in tp.model_fields if name != "type"]
    return []


def _resolve(data: Any, loc: Iterable[Any]) -> Loc:
    """The part of ``loc`` that exists in ``data`` (pydantic adds union member labels; skip them)."""
    out: list[Any] = []
    current = data
    for comp in loc:
        if isinstance(current, dict) and comp in current:
            out.append(comp)
            current = current[comp]
        elif isinstance(current, list):
            index = int(comp) if isinstance(comp, str) and comp.isascii() and comp.isdigit() else comp
            if isinstance(index, int) and 0 <= index < len(current):
                out.append(index)
                current = current[index]
    return tuple(out)


def _value_at(data: Any, path: Loc) -> Any:
    for comp in path:
        data = data[comp]
    return data


def _pretty(path: Loc) -> str:
    text = ""
    for comp in path:
        text += f"[{comp}]" if isinstance(comp, int) else (f".{comp}" if text else str(comp))
    return text


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the YAML boolean {str(value).lower()} (quote it if you meant text)"
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


_EXPECTED = {
    "string_type": "expected text",
    "int_type": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "list_type": "expected a list",
    "date_type": "expected a date (YYYY-MM-DD)",
    "date_from_datetime_parsing": "expected a date (YYYY-MM-DD)",
    "date_parsing": "expected a date (YYYY-MM-DD)",
}


def _message(err: Mapping[str, Any]) -> str:
    etype = err["type"]
    ctx = err.get("ctx") or {}
    if "message" in ctx:
        return str(ctx["message"])
    value = err.get("input")
    if etype == "string_type" and isinstance(value, int | float) and not isinstance(value, bool):
        return f"expected text, got {value!r} (quote it if you meant text)"
    if etype in _EXPECTED:
        return f"{_EXPECTED[etype]}, got {_describe(value)}"
    if etype == "too_short":
        return f"expected at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length')}"
    if etype == "literal_error":
        return (
            f"expected {ctx.get('expected', 'one of the allowed values')}, got {_describe(err.get('input'))}"
        )
    msg = str(err["msg"])
    if msg.startswith("Input should be "):
        msg = "expected " + msg[len("Input should be ") :]
    elif msg.startswith(("List should have", "Dictionary should have", "String should have")):
        msg = "expected " + msg.split(" should have ", 1)[1]
    return f"{msg[0].lower()}{msg[1:]}, got {_describe(err.get('input'))}"


def _schema_error(err: Mapping[str, Any], data: Any, report: Reporter) -> FlowError:
    loc = list(err["loc"])
    etype = err["type"]
    ctx = err.get("ctx") or {}
    raw_loc = tuple(loc)
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if len(loc) >= 3 and loc[0] == "nodes" and isinstance(nodes, dict):
        raw = nodes.get(loc[1])
        if isinstance(raw, dict) and loc[2] == raw.get("type"):
            del loc[2]  # the discriminator tag pydantic puts in the loc
    at_key = bool(loc) and loc[-1] == "[key]"
    if at_key:
        loc.pop()
    missing = loc.pop() if etype == "missing" and loc else None
    path = _resolve(data, loc)
    if ctx.get("at"):
        path = _resolve(data, (*path, *str(ctx["at"]).split(".")))
    node_prefix = 2 if len(path) >= 2 and path[0] == "nodes" else 0
    where = _pretty(path[node_prefix:])
    kind = "schema"
    column: int | None = None
    if etype == "missing":
        message = f"missing required key {missing!r}"
        if where:
            message = f"{where}: {message}"
        return report.at(path, message, kind=kind, key=True)
    if etype == "extra_forbidden":
        key = path[-1] if path else "?"
        allowed = _allowed_keys(raw_loc)
        parent = _pretty(path[node_prefix:-1])
        message = f"unknown key {key!r}{suggest(str(key), allowed)}"
        return report.at(path, f"{parent}: {message}" if parent else message, kind=kind, key=True)
    if etype == "union_tag_invalid":
        tag = ctx.get("tag")
        message = f"unknown node type {tag!r}{suggest(str(tag), NODE_TYPES)} (types: {', '.join(NODE_TYPES)})"
        return report.at((*path, "type"), message, kind=kind)
    if etype == "union_tag_not_found":
        return report.at(path, "missing required key 'type'", kind=kind, key=True)
    message = _message(err)
    if etype in ("template", "expression"):
        column = int(ctx["column"])
    if where and not (node_prefix and len(path) == 2):
        message = f"{where}: {message}"
    if at_key or isinstance(_value_at(data, path), dict):  # a whole mapping: point at its key
        return report.at(path, message, kind=kind, key=True)
    return report.at(path, message, kind=kind, column_offset=column)


# -- one file -------------------------------------------------------------------------------------------


def _check_text(text: str, source: str, base_dir: Path | None) -> _Checked:
    """Parse and validate; graph checks come later (they need every file's flow ids)."""
    checked = _Checked(source, None, base_dir=base_dir)
    try:
        parsed = parse_yaml(text)
    except yaml.MarkedYAMLError as exc:
        where = exc.problem_mark or exc.context_mark
        line, column = (where.line + 1, where.column + 1) if where is not None else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context_mark is not None and exc.context_mark != where:
            ctx_at = f"line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}"
            problem = f"{problem} ({exc.context} at {ctx_at})"
        checked.errors.append(FlowError(source, line, column, f"YAML syntax: {problem}", kind="yaml"))
        return checked
    except yaml.YAMLError as exc:
        checked.errors.append(FlowError(source, 1, 1, f"YAML syntax: {exc}", kind="yaml"))
        return checked
    report = Reporter(source, parsed.source_map)
    checked.report = report
    data = parsed.data
    for path, mark, first in parsed.duplicates:
        is_node = len(path) == 2 and path[0] == "nodes"
        what = "node id" if is_node else "key"
        checked.errors.append(
            FlowError(
                source,
                mark.line,
                mark.column,
                f"duplicate {what} {path[-1]!r} (first defined at line {first.line})",
                str(path[1]) if len(path) >= 2 and path[0] == "nodes" else None,
                "duplicate-node" if is_node else "duplicate-key",
            )
        )
    if not isinstance(data, dict):
        checked.errors.append(
            FlowError(source, 1, 1, "expected a flow: a mapping with id, start and nodes", kind="schema")
        )
        return checked
    # top-level keys starting with "x-" are free for YAML anchors (as in docker compose files)
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    try:
        checked.flow = Flow.model_validate(data).with_source(source)
        checked.complete = True
        checked.all_ids = set(checked.flow.nodes)
    except ValidationError as exc:
        bad_nodes: set[Any] = set()
        header_ok = True
        for err in exc.errors():
            error = _schema_error(err, data, report)
            loc = err["loc"]
            if len(loc) >= 2 and loc[0] == "nodes":
                bad_nodes.add(loc[1])
            else:
                header_ok = False
            checked.errors.append(error)
        checked.errors = _merge_union_errors(checked.errors)
        if header_ok and isinstance(data.get("nodes"), dict):
            checked.flow = _partial_flow(data, bad_nodes)
            if checked.flow is not None:
                checked.flow.with_source(source)
            checked.all_ids = {str(k) for k in data["nodes"]}
    return checked


_EXPECTED_RE = re.compile(r"(?P<where>.*?: )?expected (?P<what>.*), got (?P<got>.*)", re.DOTALL)


def _merge_union_errors(errors: list[FlowError]) -> list[FlowError]:
    """pydantic reports a value that fits no member of a union once per member: say it once."""
    out: list[FlowError] = []
    whats: list[str] = []  # the alternatives merged into out[-1]
    for error in errors:
        prev = out[-1] if out else None
        if prev is not None and (prev.line, prev.column, prev.node) == (error.line, error.column, error.node):
            if prev.message == error.message:
                continue
            a, b = _EXPECTED_RE.fullmatch(prev.message), _EXPECTED_RE.fullmatch(error.message)
            if a and b and a["where"] == b["where"] and a["got"] == b["got"]:
                whats = (whats or [a["what"]]) + [b["what"]]
                what = ", ".join(whats[:-1]) + " or " + whats[-1]
                out[-1] = replace(prev, message=f"{a['where'] or ''}expected {what}, got {a['got']}")
                continue
        whats = []
        out.append(error)
    return out


def _partial_flow(data: dict[str, Any], bad_nodes: set[Any]) -> Flow | None:
    """The flow without its invalid nodes, so the graph of the rest can still be checked."""
    good = {k: v for k, v in data["nodes"].items() if k not in bad_nodes}
    if not good:
        return None
    try:
        return Flow.model_validate(
            {**data, "nodes": {k: _NODE_ADAPTER.validate_python(v) for k, v in good.items()}}
        )
    except ValidationError:
        return None


def _finish(checked: _Checked, context: FlowContext) -> list[FlowError]:
    errors = list(checked.errors)
    if checked.flow is not None and checked.report is not None:
        if context.flows is not None:
            context = replace(context, flows=context.flows | {checked.flow.id})
        errors += graph_errors(
            checked.flow,
            checked.report,
            context,
            all_ids=checked.all_ids,
            complete=checked.complete,
            base_dir=checked.base_dir,
        )
    return sorted(errors, key=lambda e: (e.file, e.line, e.column))


def check_flow_text(
    text: str, *, source: str = "<flow>", base_dir: Path | None = None, context: FlowContext | None = None
) -> list[FlowError]:
    """Every error of one flow given as text (e.g. published through the API); [] when it is fine.
    Relative recording paths are checked only when ``base_dir`` is given."""
    return _finish(_check_text(text, source, base_dir), context or FlowContext())


def load_flow_text(
    text: str, *, source: str = "<flow>", base_dir: Path | None = None, context: FlowContext | None = None
) -> Flow:
    """The validated flow in ``text``; raises :class:`FlowLoadError` with every error."""
    checked = _check_text(text, source, base_dir)
    errors = _finish(checked, context or FlowContext())
    if errors or checked.flow is None:
        raise FlowLoadError(errors)
    return checked.flow


def _read(path: Path) -> tuple[str | None, FlowError | None]:
    try:
        return path.read_text(encoding="utf-8"), None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return None, FlowError(str(path), 1, 1, f"cannot read: {reason}", kind="io")


def load_flow(path: str | Path, context: FlowContext | None = None) -> Flow:
    """Load one flow file; raises :class:`FlowLoadError`."""
    path = Path(path)
    text, error = _read(path)
    if text is None:
        raise FlowLoadError([error] if error else [])
    return load_flow_text(text, source=str(path), base_dir=path.parent, context=context)


def flow_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files to check: each file given, and the ``*.yaml``/``*.yml`` files of each folder given."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
        else:
            out.append(p)
    return out


def _check_many(paths: Iterable[str | Path], context: FlowContext) -> tuple[list[_Checked], list[FlowError]]:
    checked: list[_Checked] = []
    errors: list[FlowError] = []
    for path in flow_files(paths):
        text, error = _read(path)
        if text is None:
            errors += [error] if error else []
            continue
        checked.append(_check_text(text, str(path), path.parent))
    # flow ids: unique across files; subflows may name any of them (and those the context knows)
    first_file: dict[str, _Checked] = {}
    for c in checked:
        if c.flow is None or c.report is None:
            continue
        other = first_file.setdefault(c.flow.id, c)
        if other is not c:
            errors.append(
                c.report.at(
                    ("id",), f"flow id {c.flow.id!r} is also used by {other.source}", kind="duplicate-flow"
                )
            )
    known = frozenset(first_file) | (context.flows or frozenset())
    ctx = replace(context, flows=known)
    for c in checked:
        errors += _finish(c, ctx)
    return checked, sorted(errors, key=lambda e: (e.file, e.line, e.column))


def check_flows(paths: Iterable[str | Path], context: FlowContext | None = None) -> list[FlowError]:
    """Every error in the flow files (folders: their *.yaml); [] when all are fine."""
    return _check_many(paths, context or FlowContext())[1]


def load_flows(paths: Iterable[str | Path], context: FlowContext | None = None) -> dict[str, Flow]:
    """Flow id → flow for every file (folders: their *.yaml); raises :class:`FlowLoadError` if any fails."""
    checked, errors = _check_many(paths, context or FlowContext())
    if errors:
        raise FlowLoadError(errors)
    return {c.flow.id: c.flow for c in checked if c.flow is not None}
