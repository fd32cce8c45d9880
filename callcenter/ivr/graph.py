"""Checks of a flow as a graph, and of the names it uses, before it goes live.

Unknown targets, unreachable nodes, loops that never wait for the caller, recordings that are missing
without a TTS fallback, and queue/skill/intent/schedule/flow names unknown to the :class:`FlowContext`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from callcenter.ivr.schema import (
    Flow,
    HoursNode,
    IntentNode,
    Loc,
    PlayNode,
    QueueNode,
    SpeechFields,
    SubflowNode,
    _Node,
)
from callcenter.ivr.source import FlowError, Reporter

__all__ = ["FlowContext", "graph_errors", "speech_uses", "suggest"]


@dataclass(frozen=True)
class FlowContext:
    """Names a flow may use. ``None`` = not known here, so not checked."""

    queues: frozenset[str] | None = None
    skills: frozenset[str] | None = None
    intents: frozenset[str] | None = None
    schedules: frozenset[str] | None = None
    flows: frozenset[str] | None = None
    check_files: bool = True  # recordings must exist (relative to the flow file's folder)


def suggest(word: str, choices: Any) -> str:
    """`` (did you mean 'x'?)`` or ""."""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def speech_uses(obj: Any, loc: Loc = ()) -> Iterator[tuple[Loc, SpeechFields]]:
    """Every :class:`Speech` (and speech-like node) inside ``obj``, with its path."""
    if isinstance(obj, SpeechFields):
        yield loc, obj
    if isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            yield from speech_uses(getattr(obj, name), loc + (name,))
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            yield from speech_uses(item, loc + (i,))
    elif isinstance(obj, dict):
        for key, item in obj.items():
            yield from speech_uses(item, loc + (key,))


def graph_errors(
    flow: Flow,
    report: Reporter,
    context: FlowContext,
    *,
    all_ids: set[str],
    complete: bool,
    base_dir: Path | None,
) -> list[FlowError]:
    """Errors of ``flow``. ``all_ids`` includes nodes that failed validation (so they are not "unknown");
    reachability is only judged when ``complete`` (every node valid)."""
    errors: list[FlowError] = []
    nodes = flow.nodes
    start_ok = flow.start in all_ids
    if not start_ok:
        errors.append(
            report.at(
                ("start",),
                f"start node {flow.start!r} is not defined{suggest(flow.start, all_ids)}",
                kind="unknown-target",
            )
        )
    for node_id, node in nodes.items():
        for rel, target in node.edges():
            if target not in all_ids:
                errors.append(
                    report.at(
                        ("nodes", node_id, *rel),
                        f"unknown target {target!r}{suggest(target, all_ids)}",
                        kind="unknown-target",
                    )
                )
    # a mistyped target makes the node it meant "unreachable": report only the typo
    if complete and start_ok and not errors:
        reached = _reachable(nodes, flow.start)
        for node_id in nodes:
            if node_id not in reached:
                errors.append(
                    report.at(
                        ("nodes", node_id),
                        f"unreachable: no path from the start node {flow.start!r} leads here",
                        kind="unreachable",
                        key=True,
                    )
                )
    errors += _loop_errors(nodes, report)
    errors += _recording_errors(flow, report, context, base_dir)
    errors += _name_errors(nodes, report, context)
    return errors


def _reachable(nodes: Mapping[str, _Node], start: str) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        node = nodes.get(todo.pop())
        for _, target in node.edges() if node is not None else []:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _loop_errors(nodes: Mapping[str, _Node], report: Reporter) -> list[FlowError]:
    """A cycle among nodes none of which waits for the caller runs forever without input."""
    graph = {
        node_id: [t for _, t in node.edges() if t in nodes and not nodes[t].waits_for_input()]
        for node_id, node in nodes.items()
        if not node.waits_for_input()
    }
    order = {node_id: i for i, node_id in enumerate(nodes)}
    errors: list[FlowError] = []
    for component in _strongly_connected(graph):
        first = min(component, key=order.__getitem__)
        if len(component) == 1 and first not in graph[first]:
            continue
        cycle = _cycle_from(first, graph, set(component))
        path = " -> ".join([*cycle, first])
        errors.append(
            report.at(
                ("nodes", first),
                f"loop without input: {path} never waits for the caller "
                "(add a menu, collect or hangup to it)",
                kind="loop",
                key=True,
            )
        )
    return errors


def _strongly_connected(graph: Mapping[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (flows can be long chains)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            recurse = False
            for j in range(i, len(graph[v])):
                w = graph[v][j]
                if w not in index:
                    work.append((v, j + 1))
                    work.append((w, 0))
                    recurse = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if recurse:
                continue
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                out.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return out


def _cycle_from(start: str, graph: Mapping[str, list[str]], members: set[str]) -> list[str]:
    """A path start → … that returns to start, inside one strongly connected component."""
    parents: dict[str, str] = {}
    todo = [start]
    seen = {start}
    while todo:
        v = todo.pop(0)
        for w in graph[v]:
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parents[path[-1]])
                return path[::-1]
            if w in members and w not in seen:
                seen.add(w)
                parents[w] = v
                todo.append(w)
    return [start]


def _file_exists(file: str, base_dir: Path | None) -> bool | None:
    """Whether the recording exists; None when it cannot be judged (no folder for a relative path)."""
    path = Path(file)
    if not path.is_absolute():
        if base_dir is None:
            return None
        path = base_dir / path
    return path.is_file()


def _recording_errors(
    flow: Flow, report: Reporter, context: FlowContext, base_dir: Path | None
) -> list[FlowError]:
    errors: list[FlowError] = []
    for node_id, node in flow.nodes.items():
        base: Loc = ("nodes", node_id)
        for rel, speech in speech_uses(node):
            if speech.recording is None:
                continue
            loc = base + rel + ("recording",)
            entry = flow.prompts.get(speech.recording)
            if entry is None:
                errors.append(
                    report.at(
                        loc,
                        f"unknown prompt {speech.recording!r}: add it under prompts"
                        f"{suggest(speech.recording, flow.prompts)}",
                        kind="unknown-prompt",
                    )
                )
                continue
            fallback = speech.text is not None or entry.text is not None
            if context.check_files and not fallback and _file_exists(entry.file, base_dir) is False:
                errors.append(
                    report.at(
                        loc,
                        f"recording {entry.file!r} of prompt {speech.recording!r} not found, "
                        "and no TTS fallback (text) is declared",
                        kind="missing-recording",
                    )
                )
        files: list[tuple[str, str]] = []
        if isinstance(node, PlayNode) and node.file is not None and node.text is None:
            files.append(("file", node.file))
        if isinstance(node, QueueNode) and node.hold_music is not None:
            files.append(("hold_music", node.hold_music))
        for key, file in files:
            if context.check_files and _file_exists(file, base_dir) is False:
                errors.append(
                    report.at(base + (key,), f"recording {file!r} not found", kind="missing-recording")
                )
    return errors


def _unknown(kind: str, name: str, known: frozenset[str]) -> str:
    listed = ", ".join(sorted(known)) or "none"
    return f"unknown {kind} {name!r}{suggest(name, known)} (known: {listed})"


def _name_errors(nodes: Mapping[str, _Node], report: Reporter, context: FlowContext) -> list[FlowError]:
    errors: list[FlowError] = []
    for node_id, node in nodes.items():
        base: Loc = ("nodes", node_id)
        if isinstance(node, QueueNode):
            if context.queues is not None and node.queue not in context.queues:
                errors.append(
                    report.at(
                        base + ("queue",), _unknown("queue", node.queue, context.queues), kind="unknown-queue"
                    )
                )
            if context.skills is not None:
                for skill in node.skills:
                    if skill not in context.skills:
                        errors.append(
                            report.at(
                                base + ("skills", skill),
                                _unknown("skill", skill, context.skills),
                                kind="unknown-skill",
                                key=True,
                            )
                        )
        elif isinstance(node, IntentNode) and context.intents is not None:
            for intent in node.routes:
                if intent not in context.intents:
                    errors.append(
                        report.at(
                            base + ("routes", intent),
                            _unknown("intent", intent, context.intents),
                            kind="unknown-intent",
                            key=True,
                        )
                    )
        elif isinstance(node, HoursNode) and node.schedule is not None and context.schedules is not None:
            if node.schedule not in context.schedules:
                errors.append(
                    report.at(
                        base + ("schedule",),
                        _unknown("schedule", node.schedule, context.schedules),
                        kind="unknown-schedule",
                    )
                )
        elif isinstance(node, SubflowNode) and context.flows is not None and node.flow not in context.flows:
            errors.append(
                report.at(base + ("flow",), _unknown("flow", node.flow, context.flows), kind="unknown-flow")
            )
    return errors
