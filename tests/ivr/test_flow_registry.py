"""FlowRegistry: start-up load, publish/refuse, rollback, diff, listeners, hot reload from files.

Real files in a temporary folder and a real SQLite database; the watcher is stepped with poll_once().
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
from ivr_fakes import ScriptedCall

from callcenter.calls.control import IvrRuntime
from callcenter.ivr.engine import CallInfo, FlowRunner
from callcenter.ivr.graph import FlowContext
from callcenter.ivr.loader import FlowLoadError
from callcenter.ivr.registry import FlowRegistry
from callcenter.ivr.schema import Flow, SayNode
from callcenter.ivr.services import Services
from callcenter.ivr.versions import (
    FlowNotFoundError,
    InvalidPublishError,
    PublishedFlow,
    VersionNotFoundError,
)
from callcenter.store import Store


def flow_text(flow_id: str = "main", greeting: str = "Hello", extra: str = "") -> str:
    return (
        f"id: {flow_id}\n"
        "start: welcome\n"
        "nodes:\n"
        "  welcome:\n"
        "    type: say\n"
        f"    text: {greeting}\n"
        "    next: bye\n"
        f"{extra}"
        "  bye:\n"
        "    type: hangup\n"
    )


# `menu` mistyped as `nxt`: schema error at line 7, column 5
INVALID = flow_text(greeting="Broken").replace("    next: bye\n", "    nxt: bye\n")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'db' / 'cc.db'}")
    s.create_all()
    return s


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    d = tmp_path / "flows"
    d.mkdir()
    (d / "main.yaml").write_text(flow_text(), encoding="utf-8")
    (d / "other.yaml").write_text(flow_text("other", "Hi there"), encoding="utf-8")
    return d


async def loaded(store: Store, flows_dir: Path, **kwargs: object) -> FlowRegistry:
    registry = FlowRegistry(store, numbers={"100": "main"}, **kwargs)  # type: ignore[arg-type]
    await registry.load(flows_dir)
    return registry


def greeting(registry: FlowRegistry, flow_id: str = "main") -> str | None:
    node = registry.current(flow_id).nodes["welcome"]
    assert isinstance(node, SayNode)
    return node.text


# -- start-up -------------------------------------------------------------------------------------------


async def test_load_records_version_1_of_every_flow_and_nothing_more_on_restart(
    store: Store, flows_dir: Path
) -> None:
    registry = await loaded(store, flows_dir)
    assert sorted(registry.flows) == ["main", "other"]
    [v1] = await registry.history("main")
    assert (v1.version, v1.author, v1.source, v1.yaml) == (1, "file", "file", flow_text())
    assert v1.created_at.tzinfo is not None

    again = await loaded(store, flows_dir)
    assert len(await again.history("main")) == 1
    assert again.live("main") is not None and again.live("main").version == 1  # type: ignore[union-attr]


async def test_a_file_changed_while_the_server_was_down_becomes_the_next_version(
    store: Store, flows_dir: Path
) -> None:
    await loaded(store, flows_dir)
    (flows_dir / "main.yaml").write_text(flow_text(greeting="Welcome back"), encoding="utf-8")
    registry = await loaded(store, flows_dir)
    assert [v.version for v in await registry.history("main")] == [1, 2]
    assert greeting(registry) == "Welcome back"
    assert "-    text: Hello\n+    text: Welcome back\n" in (await registry.history("main"))[1].diff


async def test_strict_load_refuses_an_invalid_file_with_its_position(store: Store, flows_dir: Path) -> None:
    (flows_dir / "main.yaml").write_text(INVALID, encoding="utf-8")
    registry = FlowRegistry(store)
    with pytest.raises(FlowLoadError) as caught:
        await registry.load(flows_dir)
    assert [str(e) for e in caught.value.errors] == [
        f"{flows_dir / 'main.yaml'}:7:5: node welcome: unknown key 'nxt' (did you mean 'next'?)"
    ]
    assert list(registry.flows) == []


async def test_lenient_load_keeps_the_stored_version_of_an_invalid_file_live(
    store: Store, flows_dir: Path
) -> None:
    await loaded(store, flows_dir)
    (flows_dir / "main.yaml").write_text(INVALID, encoding="utf-8")
    registry = FlowRegistry(store)
    errors = await registry.load(flows_dir, strict=False)
    assert [(e.line, e.column) for e in errors] == [(7, 5)]
    assert greeting(registry) == "Hello"
    assert registry.live("main").version == 1  # type: ignore[union-attr]
    assert len(await registry.history("main")) == 1


# -- publish -------------------------------------------------------------------------------------------


async def test_publish_stores_writes_the_file_and_serves_new_lookups(store: Store, flows_dir: Path) -> None:
    registry = await loaded(store, flows_dir)
    text = flow_text(greeting="Good morning")
    result = await registry.publish("main", text, author="alice", source="api", message="new greeting")
    assert (result.ok, result.changed, result.version, result.errors) == (True, True, 2, ())
    assert (flows_dir / "main.yaml").read_text(encoding="utf-8") == text
    assert greeting(registry) == "Good morning"
    v2 = (await registry.history("main"))[-1]
    assert result.live is not None
    assert (v2.author, v2.source, v2.message, v2.sha256) == (
        "alice",
        "api",
        "new greeting",
        result.live.sha256,
    )
    assert v2.diff.startswith("--- main v1\n+++ main v2\n")
    assert sorted(p.name for p in flows_dir.iterdir()) == ["main.yaml", "other.yaml"]  # no temp file left


async def test_a_running_call_keeps_the_flow_it_started_with(store: Store, flows_dir: Path) -> None:
    registry = await loaded(store, flows_dir)
    runtime_view = registry.flows  # what IvrRuntime.flows would hold
    frozen = registry.snapshot()
    in_call = registry.flow_for("100")
    assert in_call is not None
    await registry.publish("main", flow_text(greeting="New version"), author="alice")
    node = in_call.nodes["welcome"]
    assert isinstance(node, SayNode) and node.text == "Hello"  # the call's object is untouched
    assert frozen["main"] is in_call
    new = registry.flow_for("100")
    assert new is not in_call and new is runtime_view["main"]
    assert isinstance(new.nodes["welcome"], SayNode) and new.nodes["welcome"].text == "New version"


async def test_a_call_keeps_the_subflow_versions_it_started_with(store: Store, flows_dir: Path) -> None:
    # main says Hello, runs the subflow "other" (which says "Hi there"), then hangs up.
    main = flow_text(extra="  sub:\n    type: subflow\n    flow: other\n    next: bye\n").replace(
        "    next: bye\n", "    next: sub\n", 1
    )
    (flows_dir / "main.yaml").write_text(main, encoding="utf-8")
    registry = await loaded(store, flows_dir)
    runtime = IvrRuntime(flows=registry.flows, prompts=None, data_dir=flows_dir, registry=registry)  # type: ignore[arg-type]

    started = runtime.start_flow("100")
    assert started is not None
    await registry.publish("other", flow_text("other", "Changed meanwhile"), author="alice")

    async def run(flow: Flow, services: Services) -> list[str]:
        call = ScriptedCall()
        await FlowRunner(flow, call, services, call=CallInfo("c1", "alice", "100")).run()
        return call.said

    assert await run(*started) == ["Hello", "Hi there"]  # the subflow as it was (its hangup ends the call)
    later = runtime.start_flow("100")
    assert later is not None
    assert await run(*later) == ["Hello", "Changed meanwhile"]
    assert runtime.start_flow("999") is None  # no number plan entry, no default flow


async def test_an_invalid_version_is_refused_and_the_old_one_stays_live(
    store: Store, flows_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = await loaded(store, flows_dir)
    with caplog.at_level(logging.WARNING, "callcenter.ivr.flows"):
        result = await registry.publish("main", INVALID, author="bob")
    assert (result.ok, result.changed, result.version) == (False, False, 1)
    assert [str(e) for e in result.errors] == [
        f"{flows_dir / 'main.yaml'}:7:5: node welcome: unknown key 'nxt' (did you mean 'next'?)"
    ]
    assert greeting(registry) == "Hello"
    assert (flows_dir / "main.yaml").read_text(encoding="utf-8") == flow_text()
    assert len(await registry.history("main")) == 1
    assert [r.getMessage() for r in caplog.records] == ["flow_rejected"]


async def test_publish_checks_names_against_the_context_and_the_other_live_flows(
    store: Store, flows_dir: Path
) -> None:
    registry = await loaded(store, flows_dir, context=FlowContext(queues=frozenset({"sales"})))
    queue = "  q:\n    type: queue\n    queue: {}\n    next: bye\n"
    to_queue = flow_text(extra=queue.format("support")).replace("next: bye", "next: q", 1)
    refused = await registry.publish("main", to_queue, author="a")
    assert [e.message for e in refused.errors] == ["unknown queue 'support' (known: sales)"]
    assert (await registry.publish("main", to_queue.replace("support", "sales"), author="a")).ok

    sub = "  s:\n    type: subflow\n    flow: {}\n    next: bye\n"
    assert (
        await registry.publish(
            "main", flow_text(extra=sub.format("other")).replace("next: bye", "next: s", 1), author="a"
        )
    ).ok
    missing = await registry.publish(
        "main", flow_text(extra=sub.format("nowhere")).replace("next: bye", "next: s", 1), author="a"
    )
    assert [e.kind for e in missing.errors] == ["unknown-flow"]


async def test_a_text_whose_id_is_another_flow_is_refused_at_the_id_line(
    store: Store, flows_dir: Path
) -> None:
    registry = await loaded(store, flows_dir)
    result = await registry.publish("main", flow_text("other"), author="a")
    assert [(e.line, e.column, e.message) for e in result.errors] == [
        (1, 5, "flow id 'other' does not match 'main', the flow it is published as")
    ]


async def test_publishing_the_live_text_again_changes_nothing(store: Store, flows_dir: Path) -> None:
    registry = await loaded(store, flows_dir)
    heard: list[PublishedFlow] = []
    registry.on_published(heard.append)
    result = await registry.publish("main", flow_text(), author="a")
    assert (result.ok, result.changed, result.version) == (True, False, 1)
    assert heard == [] and len(await registry.history("main")) == 1


async def test_a_new_flow_gets_its_own_file(store: Store, flows_dir: Path) -> None:
    registry = await loaded(store, flows_dir)
    result = await registry.publish("fresh", flow_text("fresh"), author="a", source="cli")
    assert (result.ok, result.version) == (True, 1)
    assert (flows_dir / "fresh.yaml").read_text(encoding="utf-8") == flow_text("fresh")
    assert registry.current("fresh").id == "fresh"


async def test_a_new_flow_never_overwrites_another_flows_file(store: Store, flows_dir: Path) -> None:
    (flows_dir / "other.yaml").rename(flows_dir / "shared.yaml")
    (flows_dir / "shared.yaml").write_text(flow_text("main"), encoding="utf-8")
    (flows_dir / "main.yaml").unlink()
    registry = await loaded(store, flows_dir)  # flow "main" lives in shared.yaml
    result = await registry.publish("shared", flow_text("shared"), author="a")
    assert [e.message for e in result.errors] == [f"{flows_dir / 'shared.yaml'} holds flow 'main'"]
    assert (flows_dir / "shared.yaml").read_text(encoding="utf-8") == flow_text("main")


async def test_bad_requests_are_refused_before_any_check(store: Store, flows_dir: Path) -> None:
    registry = await loaded(store, flows_dir)
    with pytest.raises(InvalidPublishError, match="author"):
        await registry.publish("main", flow_text(), author=" ")
    with pytest.raises(InvalidPublishError, match="flow id"):
        await registry.publish("../etc/passwd", flow_text(), author="a")


async def test_listeners_hear_each_new_version_and_cannot_break_a_publish(
    store: Store, flows_dir: Path
) -> None:
    registry = await loaded(store, flows_dir)
    heard: list[tuple[str, int, str | None]] = []

    async def on_async(event: PublishedFlow) -> None:
        heard.append((event.flow_id, event.version, event.previous.id if event.previous else None))

    def broken(event: PublishedFlow) -> None:
        raise RuntimeError("listener bug")

    registry.on_published(broken)
    remove = registry.on_published(on_async)
    result = await registry.publish("main", flow_text(greeting="Hey"), author="a")
    assert result.ok and heard == [("main", 2, "main")]
    remove()
    await registry.publish("main", flow_text(greeting="Hey again"), author="a")
    assert heard == [("main", 2, "main")]


# -- rollback, history, diff ------------------------------------------------------------------------------


async def test_rollback_publishes_the_old_text_as_a_new_version(store: Store, flows_dir: Path) -> None:
    registry = await loaded(store, flows_dir)
    await registry.publish("main", flow_text(greeting="Two"), author="a")
    result = await registry.rollback("main", 1, author="carol")
    assert (result.ok, result.changed, result.version) == (True, True, 3)
    v3 = await registry.version("main", 3)
    assert (v3.yaml, v3.source, v3.rolled_back_from, v3.author, v3.message) == (
        flow_text(),
        "rollback",
        1,
        "carol",
        "rollback to v1",
    )
    assert greeting(registry) == "Hello"
    assert (flows_dir / "main.yaml").read_text(encoding="utf-8") == flow_text()
    with pytest.raises(VersionNotFoundError):
        await registry.rollback("main", 9, author="carol")


async def test_diff_between_versions(store: Store, flows_dir: Path) -> None:
    registry = await loaded(store, flows_dir)
    await registry.publish("main", flow_text(greeting="Two"), author="a")
    await registry.publish("main", flow_text(greeting="Three"), author="a")
    latest = await registry.diff("main")
    assert latest.splitlines()[:2] == ["--- main v2", "+++ main v3"]
    assert "-    text: Two" in latest and "+    text: Three" in latest
    assert "-    text: Hello" in await registry.diff("main", 1, 3)
    first = await registry.diff("main", 0, 1)
    assert first.splitlines()[3:] == ["+" + line for line in flow_text().splitlines()]
    with pytest.raises(VersionNotFoundError):
        await registry.diff("main", 1, 7)
    with pytest.raises(FlowNotFoundError):
        await registry.history("nope")


# -- hot reload --------------------------------------------------------------------------------------------


async def test_poll_publishes_a_changed_file_once(store: Store, flows_dir: Path) -> None:
    registry = await loaded(store, flows_dir)
    assert await registry.poll_once() == []
    (flows_dir / "main.yaml").write_text(flow_text(greeting="Edited"), encoding="utf-8")
    [result] = await registry.poll_once()
    assert (result.flow_id, result.ok, result.version) == ("main", True, 2)
    assert greeting(registry) == "Edited"
    v2 = (await registry.history("main"))[-1]
    assert (v2.author, v2.source) == ("file", "file")
    assert await registry.poll_once() == []


async def test_poll_ignores_a_touched_file_and_sees_a_save_by_rename(store: Store, flows_dir: Path) -> None:
    registry = await loaded(store, flows_dir)
    path = flows_dir / "main.yaml"
    before = path.stat()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10_000_000))
    assert await registry.poll_once() == []  # same text: no new version
    # an editor writes a temp file and renames it over; same size, same mtime: the inode tells
    (flows_dir / ".main.swp").write_text(flow_text(greeting="Hallo"), encoding="utf-8")
    os.replace(flows_dir / ".main.swp", path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10_000_000))
    [result] = await registry.poll_once()
    assert result.ok and greeting(registry) == "Hallo"


async def test_poll_refuses_an_invalid_file_logs_it_once_and_takes_the_fix(
    store: Store, flows_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = await loaded(store, flows_dir)
    (flows_dir / "main.yaml").write_text(INVALID, encoding="utf-8")
    with caplog.at_level(logging.WARNING, "callcenter.ivr.flows"):
        assert await registry.poll_once() == []  # first sight: maybe half-written, judged next poll
        [result] = await registry.poll_once()
        assert await registry.poll_once() == []  # judged once, not every second
    assert not result.ok and [(e.line, e.column) for e in result.errors] == [(7, 5)]
    assert greeting(registry) == "Hello"
    [record] = [r for r in caplog.records if r.getMessage() == "flow_rejected"]
    assert "unknown key 'nxt'" in str(record.cc_fields["errors"])  # type: ignore[attr-defined]

    (flows_dir / "main.yaml").write_text(flow_text(greeting="Fixed"), encoding="utf-8")
    [fixed] = await registry.poll_once()
    assert fixed.ok and fixed.version == 2 and greeting(registry) == "Fixed"


async def test_an_editor_saving_in_place_is_not_refused_halfway(
    store: Store, flows_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = await loaded(store, flows_dir)
    path = flows_dir / "main.yaml"
    text = flow_text(greeting="Saved in place")
    with caplog.at_level(logging.WARNING, "callcenter.ivr.flows"):
        path.write_text(text[: len(text) // 2], encoding="utf-8")  # a poll lands mid-write
        assert await registry.poll_once() == []
        path.write_text(text, encoding="utf-8")
        [result] = await registry.poll_once()
    assert result.ok and greeting(registry) == "Saved in place"
    assert [r.getMessage() for r in caplog.records if r.getMessage() == "flow_rejected"] == []
    assert [v.version for v in await registry.history("main")] == [1, 2]


async def test_poll_adds_new_files_and_keeps_flows_whose_file_went(store: Store, flows_dir: Path) -> None:
    registry = await loaded(store, flows_dir)
    (flows_dir / "extra.yml").write_text(flow_text("extra"), encoding="utf-8")
    (flows_dir / "other.yaml").unlink()
    (flows_dir / "notes.txt").write_text("not a flow", encoding="utf-8")
    [result] = await registry.poll_once()
    assert (result.flow_id, result.ok, result.version) == ("extra", True, 1)
    assert sorted(registry.flows) == ["extra", "main", "other"]


async def test_a_second_file_with_a_live_flow_id_is_refused(store: Store, flows_dir: Path) -> None:
    registry = await loaded(store, flows_dir)
    (flows_dir / "copy.yaml").write_text(flow_text(greeting="Copy"), encoding="utf-8")
    assert await registry.poll_once() == []
    [result] = await registry.poll_once()
    assert [e.message for e in result.errors] == [f"flow id 'main' is also used by {flows_dir / 'main.yaml'}"]
    assert greeting(registry) == "Hello"


async def test_the_registrys_own_writes_are_not_published_twice(store: Store, flows_dir: Path) -> None:
    registry = await loaded(store, flows_dir)
    await registry.publish("main", flow_text(greeting="Via API"), author="a")
    await registry.rollback("main", 1, author="a")
    assert await registry.poll_once() == []
    assert [v.version for v in await registry.history("main")] == [1, 2, 3]


async def test_a_version_published_by_another_process_is_picked_up_without_a_new_row(
    store: Store, flows_dir: Path
) -> None:
    server = await loaded(store, flows_dir)
    cli = await loaded(store, flows_dir)
    await cli.publish("main", flow_text(greeting="From the CLI"), author="dave", source="cli")
    [result] = await server.poll_once()
    assert (result.ok, result.changed, result.version) == (True, True, 2)
    assert server.live("main").author == "dave"  # type: ignore[union-attr]
    assert greeting(server) == "From the CLI"
    assert [v.version for v in await server.history("main")] == [1, 2]


async def test_watch_polls_until_cancelled(store: Store, flows_dir: Path) -> None:
    registry = await loaded(store, flows_dir)
    published = asyncio.Event()
    registry.on_published(lambda event: published.set())
    (flows_dir / "main.yaml").write_text(flow_text(greeting="Watched"), encoding="utf-8")
    task = asyncio.create_task(registry.watch(interval_s=3600))
    await asyncio.wait_for(published.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert greeting(registry) == "Watched"
