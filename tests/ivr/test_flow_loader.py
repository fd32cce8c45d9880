"""Loading and checking flows: positions, several errors at once, files, several flows together."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from callcenter.ivr.loader import (
    FlowContext,
    FlowLoadError,
    check_flow_text,
    check_flows,
    flow_files,
    load_flow,
    load_flow_text,
    load_flows,
)

ROOT = Path(__file__).parents[2]


def lines(text: str, **kwargs: object) -> list[str]:
    return [str(e) for e in check_flow_text(dedent(text), source="f.yaml", **kwargs)]  # type: ignore[arg-type]


def test_several_errors_in_one_file_are_all_reported_in_order() -> None:
    assert lines(
        """\
        id: many
        start: welcome
        nodes:
          welcome:
            type: say
            text: Hi
            nxt: menu
          menu:
            type: menu
            prompt: Press 1
            retries: -1
            options:
              - {dtmf: "1", next: nowhere}
          bye:
            type: hangup
        """
    ) == [
        "f.yaml:7:5: node welcome: unknown key 'nxt' (did you mean 'next'?)",
        "f.yaml:11:14: node menu: retries: expected greater than or equal to 0, got -1",
    ]


def test_a_valid_node_is_still_graph_checked_when_another_node_is_invalid() -> None:
    # welcome is broken; menu's unknown target is still found, but nothing is called unreachable
    # (with a broken node the reachability picture is not trustworthy), and pointing at the broken
    # node is not an "unknown target".
    assert lines(
        """\
        id: partial
        start: welcome
        nodes:
          welcome:
            type: say
          menu:
            type: menu
            prompt: Press 1
            options:
              - {dtmf: "1", next: nowhere}
              - {dtmf: "2", next: welcome}
        """
    ) == [
        "f.yaml:4:3: node welcome: give text, recording or both",
        "f.yaml:10:27: node menu: unknown target 'nowhere'",
    ]


def test_merge_keys_and_anchors_keep_positions() -> None:
    text = """\
    id: anchors
    start: a
    x-menu: &menu_defaults     # x- keys are free for anchors
      timeout_s: 3
      retries: 11
    nodes:
      a:
        type: menu
        <<: *menu_defaults
        prompt: Press 1
        options: [{dtmf: "1", next: a}]
    """
    # the merged value's error points where it is written: in the anchor
    assert lines(text) == ["f.yaml:5:12: node a: retries: expected less than or equal to 10, got 11"]


def test_loops_are_fine_when_they_wait_for_the_caller() -> None:
    assert (
        lines(
            """\
        id: ok_loop
        start: menu
        nodes:
          menu:
            type: menu
            prompt: Press 1 to hear it again.
            options: [{dtmf: "1", next: again}]
          again:
            type: say
            text: Again.
            next: menu
        """
        )
        == []
    )


def test_a_node_that_goes_to_itself_is_a_loop() -> None:
    assert lines(
        """\
        id: self
        start: spin
        nodes:
          spin:
            type: goto
            next: spin
        """
    ) == ["f.yaml:4:3: node spin: loop without input: spin -> spin never waits for the caller "
          "(add a menu, collect or hangup to it)"]  # fmt: skip


def test_a_loop_through_a_subflow_is_left_to_the_step_limit() -> None:
    text = """\
    id: sub_loop
    start: a
    nodes:
      a: {type: subflow, flow: other, next: a}
    """
    assert lines(text) == []
    assert lines(text, context=FlowContext(flows=frozenset({"other"}))) == []
    assert lines(text, context=FlowContext(flows=frozenset())) == [
        "f.yaml:4:28: node a: unknown flow 'other' (known: sub_loop)"
    ]


RECORDED = """\
id: recorded
start: hi
prompts:
  hello: {file: hello.wav, text: Hello}
  bare: bare.wav
nodes:
  hi: {type: say, recording: hello, next: bare}
  bare: {type: say, recording: bare, text: "Hi there", next: bare_without}
  bare_without: {type: say, recording: bare}
"""


def test_recordings_are_looked_up_next_to_the_flow_file(tmp_path: Path) -> None:
    flow_file = tmp_path / "recorded.yaml"
    flow_file.write_text(RECORDED)
    # hello and the bare usage with text have a TTS fallback; the last use of "bare" has none
    assert [str(e) for e in check_flows([flow_file])] == [
        f"{flow_file}:9:40: node bare_without: recording 'bare.wav' of prompt 'bare' not found, "
        "and no TTS fallback (text) is declared"
    ]
    (tmp_path / "bare.wav").write_bytes(b"RIFF")
    assert check_flows([flow_file]) == []
    assert load_flow(flow_file).source == str(flow_file)


def test_recordings_are_not_judged_without_a_folder_or_when_told_not_to(tmp_path: Path) -> None:
    assert check_flow_text(RECORDED) == []  # text from the API: no folder to look in
    (tmp_path / "recorded.yaml").write_text(RECORDED)
    assert check_flows([tmp_path], FlowContext(check_files=False)) == []


def test_flows_checked_together_know_each_other(tmp_path: Path) -> None:
    (tmp_path / "main.yaml").write_text("id: main\nstart: s\nnodes:\n  s: {type: subflow, flow: survey}\n")
    (tmp_path / "survey.yaml").write_text("id: survey\nstart: q\nnodes:\n  q: {type: hangup}\n")
    (tmp_path / "copy.yml").write_text("id: survey\nstart: q\nnodes:\n  q: {type: hangup}\n")
    (tmp_path / "notes.txt").write_text("not a flow")
    assert [p.name for p in flow_files([tmp_path])] == ["copy.yml", "main.yaml", "survey.yaml"]
    assert [str(e) for e in check_flows([tmp_path])] == [
        f"{tmp_path / 'survey.yaml'}:1:5: flow id 'survey' is also used by {tmp_path / 'copy.yml'}"
    ]
    (tmp_path / "copy.yml").unlink()
    flows = load_flows([tmp_path])
    assert sorted(flows) == ["main", "survey"]


def test_load_flows_raises_with_every_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("id: a\nstart: x\nnodes:\n  x: {type: goto, next: y}\n")
    (tmp_path / "b.yaml").write_text("id: b\nstart: x\nnodes: []\n")
    with pytest.raises(FlowLoadError) as info:
        load_flows([tmp_path])
    assert [str(e) for e in info.value.errors] == [
        f"{tmp_path / 'a.yaml'}:4:25: node x: unknown target 'y'",
        f"{tmp_path / 'b.yaml'}:3:8: nodes: expected a mapping, got a list",
    ]


def test_unreadable_file(tmp_path: Path) -> None:
    errors = check_flows([tmp_path / "missing.yaml"])
    assert [(e.line, e.column, e.kind) for e in errors] == [(1, 1, "io")]
    assert str(errors[0]).startswith(f"{tmp_path / 'missing.yaml'}:1:1: cannot read")


def test_load_flow_text_checks_names_against_the_context() -> None:
    text = "id: q\nstart: q\nnodes:\n  q: {type: queue, queue: vip}\n"
    assert load_flow_text(text).nodes["q"].type == "queue"
    with pytest.raises(FlowLoadError, match=r"<flow>:4:27: node q: unknown queue 'vip' \(known: sales\)"):
        load_flow_text(text, context=FlowContext(queues=frozenset({"sales"})))


def test_shipped_flows_load_as_a_registry() -> None:
    flows = load_flows([ROOT / "ivr_flows"])
    assert {"hotline_en", "hotline_zh"} <= set(flows)
    assert flows["hotline_zh"].language == "zh-CN"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id: a\nstart: a\nnodes:\n  a: hello\n", "f.yaml:4:6: node a: expected a mapping, got 'hello'"),
        ("id: a\nstart: a\nnodes: {}\n", "f.yaml:3:1: nodes: expected at least 1 item(s), got 0"),
        (
            "id: 5\nstart: a\nnodes:\n  a: {type: hangup}\n",
            "f.yaml:1:5: id: expected text, got 5 (quote it if you meant text)",
        ),
        (
            "id: x\nstart: a\nnodes:\n  a: {type: set, vars: {x: [1, 2]}}\n",
            "f.yaml:4:28: node a: vars.x: "
            "expected text, a whole number, a number or true or false, got a list",
        ),
        (
            "id: x\nstart: a\nnodes:\n  a: {type: http, method: FETCH, url: 'http://x'}\n",
            "f.yaml:4:27: node a: method: expected 'GET', 'POST', 'PUT', 'PATCH' or 'DELETE', got 'FETCH'",
        ),
        (
            "id: x\nstart: a\nnodes:\n  a: {type: say, text: !!python/name:os.system }\n",
            "f.yaml:4:24: YAML syntax: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/name:os.system'",
        ),
        (
            "id: x\n---\nid: y\n",
            "f.yaml:2:1: YAML syntax: but found another document "
            "(expected a single document in the stream at line 1, column 1)",
        ),
        (
            "id: x\nstart: a\nnodes:\n  a: {type: http, url: 'http://x', body: {a: [1, '${oops']}}\n",
            "f.yaml:4:51: node a: body.a[1]: '${' is not closed by '}'",
        ),
        (
            "id: x\nstart: a\nnodes:\n  a: {type: hours, holidays: ['2025-13-01'], open: a, closed: a}\n",
            "f.yaml:4:31: node a: holidays[0]: expected a date (YYYY-MM-DD), got '2025-13-01'",
        ),
        (
            "id: x\nstart: a\nnodes:\n"
            "  a: {type: hours, schedule: main, timezone: UTC, open: a, closed: a}\n",
            "f.yaml:4:46: node a: timezone: give schedule or timezone, not both",
        ),
    ],
)
def test_odd_input(text: str, expected: str) -> None:
    assert [str(e) for e in check_flow_text(text, source="f.yaml")] == [expected]
