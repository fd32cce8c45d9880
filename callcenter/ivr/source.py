"""YAML with positions: every key and value of a flow file keeps its line and column.

``parse_yaml`` composes the document with a :class:`yaml.SafeLoader` subclass and builds plain Python
data itself, recording the mark of each key and value under its path (``("nodes", "menu", "options", 0,
"next")``), so schema and graph errors can point at ``file:line:column``. Duplicate keys, which PyYAML
silently overwrites, are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from callcenter.core.yamlsafe import SafeLoader

__all__ = ["FlowError", "Mark", "Reporter", "SourceMap", "parse_yaml"]

Loc = tuple[Any, ...]


@dataclass(frozen=True)
class FlowError:
    """One problem in a flow file. ``str()`` gives ``file:line:column: node <id>: message``."""

    file: str
    line: int
    column: int
    message: str
    node: str | None = None
    kind: str = "schema"

    def __str__(self) -> str:
        node = f"node {self.node}: " if self.node is not None else ""
        return f"{self.file}:{self.line}:{self.column}: {node}{self.message}"


@dataclass(frozen=True)
class Mark:
    """1-based position of a YAML node; ``style`` is the scalar style (None = plain, ' " | >)."""

    line: int
    column: int
    style: str | None = None
    single_line: bool = True


def _mark(node: Node) -> Mark:
    style = node.style if isinstance(node, ScalarNode) else None
    return Mark(
        node.start_mark.line + 1,
        node.start_mark.column + 1,
        style,
        node.start_mark.line == node.end_mark.line,
    )


@dataclass
class SourceMap:
    """Positions of the keys and values of a parsed document, by path."""

    keys: dict[Loc, Mark] = field(default_factory=dict)
    values: dict[Loc, Mark] = field(default_factory=dict)

    def at(self, loc: Loc, *, key: bool = False) -> Mark:
        """The mark of ``loc`` (its key's when ``key``), else of the nearest enclosing path."""
        if key and loc in self.keys:
            return self.keys[loc]
        for n in range(len(loc), -1, -1):
            prefix = loc[:n]
            if n < len(loc) and prefix in self.keys:
                return self.keys[prefix]  # the enclosing entry's key line reads best
            if prefix in self.values:
                return self.values[prefix]
        return Mark(1, 1)


class _MarkingLoader(SafeLoader):
    """Builds plain data from the composed node tree, recording marks and duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.source_map = SourceMap()
        self.duplicates: list[tuple[Loc, Mark, Mark]] = []  # (path, repeated key's mark, first key's mark)

    def build(self, node: Node, path: Loc) -> Any:
        self.source_map.values[path] = _mark(node)
        if isinstance(node, MappingNode):
            self.flatten_mapping(node)  # YAML merge keys (<<)
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | float | bool) and key is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, "a key must be plain text", key_node.start_mark
                    )
                if key in result:
                    first = self.source_map.keys[path + (key,)]
                    self.duplicates.append((path + (key,), _mark(key_node), first))
                    continue  # the first definition stays; the repeat is an error
                self.source_map.keys[path + (key,)] = _mark(key_node)
                result[key] = self.build(value_node, path + (key,))
            return result
        if isinstance(node, SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        return self.construct_object(node, deep=True)


@dataclass
class ParsedYaml:
    data: Any
    source_map: SourceMap
    duplicates: list[tuple[Loc, Mark, Mark]]  # (path, repeated key's mark, first key's mark)


def parse_yaml(text: str) -> ParsedYaml:
    """Parse one YAML document; raises :class:`yaml.YAMLError` (marked when PyYAML knows where)."""
    loader = _MarkingLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return ParsedYaml(None, loader.source_map, [])
        data = loader.build(root, ())
    finally:
        loader.dispose()
    return ParsedYaml(data, loader.source_map, loader.duplicates)


class Reporter:
    """Makes :class:`FlowError` objects at paths of one file."""

    def __init__(self, file: str, source_map: SourceMap) -> None:
        self.file = file
        self.source_map = source_map

    def at(
        self, loc: Loc, message: str, *, kind: str, key: bool = False, column_offset: int | None = None
    ) -> FlowError:
        """An error at ``loc``; ``column_offset`` (1-based, within a one-line scalar) refines the column."""
        mark = self.source_map.at(loc, key=key)
        column = mark.column
        if column_offset is not None and mark.single_line and mark.style in (None, "'", '"'):
            column += (1 if mark.style else 0) + column_offset - 1
        node = str(loc[1]) if len(loc) >= 2 and loc[0] == "nodes" else None
        return FlowError(self.file, mark.line, column, message, node, kind)
