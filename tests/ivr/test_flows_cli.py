"""``callcenter flows check | schema | try`` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callcenter.ivr.cli import flows_app

ROOT = Path(__file__).parents[2]
FLOWS = str(ROOT / "ivr_flows")
BAD = Path(__file__).parent / "bad"
runner = CliRunner()


def test_check_the_shipped_flows() -> None:
    result = runner.invoke(flows_app, ["check", FLOWS, "--queues", "sales,support,billing,general"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "2 flow file(s) OK\n"


def test_check_defaults_to_ivr_flows_in_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = runner.invoke(flows_app, ["check"])
    assert result.exit_code == 0 and result.stdout == "2 flow file(s) OK\n"


def test_check_reports_errors_and_exits_1() -> None:
    result = runner.invoke(
        flows_app, ["check", str(BAD / "unknown_key.yaml"), str(BAD / "unreachable.yaml"), FLOWS]
    )
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{BAD / 'unknown_key.yaml'}:6:5: node welcome: unknown key 'txt' (did you mean 'text'?)",
        f"{BAD / 'unreachable.yaml'}:8:3: node forgotten: unreachable: "
        "no path from the start node 'welcome' leads here",
    ]
    assert result.stderr == "2 error(s) in 2 of 4 flow file(s)\n"


def test_check_names_against_the_given_queues() -> None:
    result = runner.invoke(
        flows_app, ["check", str(ROOT / "ivr_flows" / "hotline_en.yaml"), "--queues", "sales"]
    )
    assert result.exit_code == 1
    assert [line.split(": ", 2)[2] for line in result.stdout.splitlines()] == [
        "unknown queue 'support' (known: sales)",
        "unknown queue 'billing' (known: sales)",
        "unknown queue 'general' (known: sales)",
    ]


def test_check_uses_the_configs_queues_and_flows_folder(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    flow = (ROOT / "ivr_flows" / "hotline_en.yaml").read_text(encoding="utf-8")
    (flows / "hotline_en.yaml").write_text(flow, encoding="utf-8")
    intents = ROOT / "ivr_flows" / "intents" / "intents.yaml"
    config = tmp_path / "config.yaml"
    config.write_text(
        f"ivr:\n  flows_dir: {flows}\n  intents_file: {intents}\n"
        "routing:\n  queues:\n    sales: {skills: {sales: 1}}\n    support: {skills: {support: 1}}\n",
        encoding="utf-8",
    )
    result = runner.invoke(flows_app, ["check", "--config", str(config), "--no-files"])
    assert result.exit_code == 1  # the server would refuse it: billing and general are not configured
    assert [line.split(": ", 2)[2] for line in result.stdout.splitlines()] == [
        "unknown queue 'billing' (known: sales, support)",
        "unknown queue 'general' (known: sales, support)",
    ]
    flag = runner.invoke(
        flows_app, ["check", "-c", str(config), "--no-files", "--queues", "sales,support,billing,general"]
    )
    assert flag.exit_code == 0 and flag.stdout == "1 flow file(s) OK\n"  # a flag overrides the config


def test_check_knows_the_queues_made_in_the_admin_console(tmp_path: Path) -> None:
    from callcenter.core.config import load_settings
    from callcenter.store import Store
    from callcenter.store.admin_config import AdminConfigRepo

    flows = tmp_path / "flows"
    flows.mkdir()
    flow = (ROOT / "ivr_flows" / "hotline_en.yaml").read_text(encoding="utf-8")
    (flows / "hotline_en.yaml").write_text(flow, encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\nivr:\n  flows_dir: {flows}\n  intents_file: null\n"
        "routing:\n  queues:\n    sales: {}\n    support: {}\n",
        encoding="utf-8",
    )
    before = runner.invoke(flows_app, ["check", "-c", str(config), "--no-files"])
    assert before.exit_code == 1  # billing and general exist nowhere yet
    store = Store.from_settings(load_settings(config))
    try:
        repo = AdminConfigRepo(store.engine)
        repo.put_queue("billing", {}, "ann")
        repo.put_queue("general", {}, "ann")
    finally:
        store.close()
    after = runner.invoke(flows_app, ["check", "-c", str(config), "--no-files"])
    assert after.exit_code == 0, after.output


def test_check_with_a_broken_config_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("routing:\n  queues:\n    sales: {strategy: fastest}\n", encoding="utf-8")
    result = runner.invoke(flows_app, ["check", "-c", str(config), FLOWS])
    assert result.exit_code == 2 and "routing.queues.sales.strategy" in result.stderr


def test_check_a_missing_path_exits_2() -> None:
    result = runner.invoke(flows_app, ["check", "/nonexistent/flows"])
    assert result.exit_code == 2 and "no such file or folder" in result.stderr


def test_schema_to_stdout_and_file(tmp_path: Path) -> None:
    result = runner.invoke(flows_app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "callcenter IVR flow" and "nodes" in schema["required"]
    out = tmp_path / "flow.schema.json"
    result = runner.invoke(flows_app, ["schema", "-o", str(out)])
    assert result.exit_code == 0 and json.loads(out.read_text()) == schema


def try_flow(*args: str, keys: str) -> tuple[int, list[str]]:
    result = runner.invoke(flows_app, ["try", *args, "--flows-dir", FLOWS], input=keys)
    return result.exit_code, result.stdout.splitlines()


def test_try_the_english_hotline_by_flow_id() -> None:
    code, out = try_flow("hotline_en", keys="1\n5\n")
    assert code == 0
    assert out[0] == "[call from +15550100 to 100: flow 'hotline_en', language en-US]"
    assert out[1] == "IVR: Thank you for calling Example Company."
    assert out[2].startswith("IVR: For sales, press 1")
    assert "[queued in 'sales', priority 0]" in out
    assert out[-3:] == [
        "outcome: completed (flow ended)",
        "ivr_path: welcome > business_hours > main_menu > queue_sales > survey",
        "queue: sales, agent: demo-agent",
    ]


def test_try_words_vip_and_voicemail() -> None:
    code, out = try_flow("hotline_en.yaml", "--customer", "vip=true", keys="billing\n\n\n")
    assert code == 0 and "[queued in 'billing', priority 10]" in out
    code, out = try_flow(FLOWS + "/hotline_en.yaml", "--caller", "+4912345", keys="9\nplease call me back\n")
    assert code == 0
    assert "[ticket TRY-1 created: 'Voicemail from +4912345', recording voicemail.wav]" in out
    assert out[-2] == "outcome: hangup (voicemail)"


def test_try_keys_only_prompts_refuse_words_and_hangup_ends_the_call() -> None:
    code, out = try_flow("hotline_en", keys="4\nmy order\n/hangup\n")
    assert code == 0
    assert "  (this prompt takes keys: 0-9 * #)" in out
    assert out[-2:] == [
        "outcome: caller_hangup (caller hung up at order_number)",
        "ivr_path: welcome > business_hours > main_menu > order_number",
    ]


def test_try_end_of_input_is_a_hangup() -> None:
    code, out = try_flow("hotline_zh", keys="")
    assert code == 0
    assert out[1] == "IVR: 感谢致电示例公司。"
    assert out[-2] == "outcome: caller_hangup (caller hung up at main_menu)"


def test_try_passes_variables() -> None:
    code, out = try_flow(str(BAD.parent / "flows" / "routing.yaml"), "--var", "vip=true", keys="")
    assert code == 0
    assert "[transferred to agent:operator]" in out
    assert out[-2] == "outcome: transferred (transferred to agent:operator)"


def test_try_unknown_or_broken_flows() -> None:
    result = runner.invoke(flows_app, ["try", "nope", "--flows-dir", FLOWS])
    assert result.exit_code == 2 and "no flow file or flow id 'nope'" in result.stderr
    result = runner.invoke(flows_app, ["try", str(BAD / "unknown_target.yaml")])
    assert result.exit_code == 1
    assert "node welcome: unknown target 'mian_menu'" in result.stderr
    result = runner.invoke(flows_app, ["try", "hotline_en", "--flows-dir", FLOWS, "--var", "novalue"])
    assert result.exit_code == 2 and "expected NAME=VALUE" in result.stderr


# -- publish, history, rollback, diff (versions in the database) -------------------------------------------


def _flow(greeting: str, flow_id: str = "main") -> str:
    return (
        f"id: {flow_id}\nstart: welcome\nnodes:\n  welcome:\n    type: say\n    text: {greeting}\n"
        "    next: bye\n  bye:\n    type: hangup\n"
    )


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with ivr_flows/main.yaml, no config file and no CALLCENTER_* variables."""
    import os

    for name in list(os.environ):
        if name.startswith("CALLCENTER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ivr_flows").mkdir()
    (tmp_path / "ivr_flows" / "main.yaml").write_text(_flow("Hello"), encoding="utf-8")
    return tmp_path


def test_publish_a_file_then_history_diff_and_rollback(site: Path) -> None:
    draft = site / "draft.yaml"
    draft.write_text(_flow("Good morning"), encoding="utf-8")
    result = runner.invoke(flows_app, ["publish", str(draft), "--author", "alice", "-m", "morning"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"main: version 2 is live ({Path('ivr_flows') / 'main.yaml'})\n"
    assert (site / "ivr_flows" / "main.yaml").read_text(encoding="utf-8") == _flow("Good morning")
    assert (site / "data" / "callcenter.db").is_file()

    history = runner.invoke(flows_app, ["history", "main"])
    lines = history.stdout.splitlines()
    assert history.exit_code == 0 and len(lines) == 2
    assert lines[0].startswith("v1  ") and lines[0].endswith("  file  (file)  loaded from file")
    assert lines[1].startswith("v2  ") and lines[1].endswith("  alice  (cli)  morning")

    diff = runner.invoke(flows_app, ["diff", "main"])
    assert diff.exit_code == 0
    assert diff.stdout.splitlines() == [
        "--- main v1",
        "+++ main v2",
        "@@ -3,7 +3,7 @@",
        " nodes:",
        "   welcome:",
        "     type: say",
        "-    text: Hello",
        "+    text: Good morning",
        "     next: bye",
        "   bye:",
        "     type: hangup",
    ]

    back = runner.invoke(flows_app, ["rollback", "main", "1", "--author", "bob"])
    assert back.exit_code == 0, back.output
    assert (site / "ivr_flows" / "main.yaml").read_text(encoding="utf-8") == _flow("Hello")
    rows = json.loads(runner.invoke(flows_app, ["history", "main", "--json"]).stdout)
    assert [(r["version"], r["author"], r["source"], r["rolled_back_from"]) for r in rows] == [
        (1, "file", "file", None),
        (2, "alice", "cli", None),
        (3, "bob", "rollback", 1),
    ]
    assert runner.invoke(flows_app, ["diff", "main", "1", "3"]).stdout == ""  # same text


def test_publish_refuses_an_invalid_file_and_keeps_the_live_one(site: Path) -> None:
    draft = site / "draft.yaml"
    draft.write_text(_flow("Broken").replace("next: bye", "nxt: bye"), encoding="utf-8")
    result = runner.invoke(flows_app, ["publish", str(draft), "--author", "alice"])
    assert result.exit_code == 1
    assert result.stdout == (
        f"{Path('ivr_flows') / 'main.yaml'}:7:5: node welcome: unknown key 'nxt' (did you mean 'next'?)\n"
    )
    assert result.stderr == "publish refused: 1 error(s); version 1 stays live\n"
    assert (site / "ivr_flows" / "main.yaml").read_text(encoding="utf-8") == _flow("Hello")


def test_publish_in_place_fixes_a_broken_file_in_the_flows_folder(site: Path) -> None:
    live = site / "ivr_flows" / "main.yaml"
    assert runner.invoke(flows_app, ["publish", str(live), "--author", "alice"]).exit_code == 0
    live.write_text(_flow("Edited in place"), encoding="utf-8")
    result = runner.invoke(flows_app, ["publish", str(live), "--author", "carol"])
    assert result.exit_code == 0, result.output
    rows = json.loads(runner.invoke(flows_app, ["history", "main", "--json"]).stdout)
    assert [(r["version"], r["author"]) for r in rows] == [(1, "alice"), (2, "carol")]


def test_publish_a_new_flow_and_checks_queue_names(site: Path) -> None:
    draft = site / "sales.yaml"
    draft.write_text(
        _flow("Sales", "sales").replace("next: bye", "next: q")
        + "  q:\n    type: queue\n    queue: sales\n    next: bye\n",
        encoding="utf-8",
    )
    refused = runner.invoke(flows_app, ["publish", str(draft), "--author", "a", "--queues", "support"])
    assert refused.exit_code == 1 and "unknown queue 'sales' (known: support)" in refused.stdout
    ok = runner.invoke(flows_app, ["publish", str(draft), "--author", "a", "--queues", "sales"])
    assert ok.exit_code == 0, ok.output
    assert (site / "ivr_flows" / "sales.yaml").read_text(encoding="utf-8") == draft.read_text(
        encoding="utf-8"
    )


def test_version_commands_report_unknown_flows_and_versions(site: Path) -> None:
    assert runner.invoke(flows_app, ["history", "nope"]).stderr == "error: no flow 'nope'\n"
    draft = site / "d.yaml"
    draft.write_text(_flow("Two"), encoding="utf-8")
    runner.invoke(flows_app, ["publish", str(draft), "--author", "a"])
    missing = runner.invoke(flows_app, ["rollback", "main", "7", "--author", "a"])
    assert missing.exit_code == 1 and missing.stderr == "error: flow 'main' has no version 7\n"
    assert runner.invoke(flows_app, ["diff", "main", "5"]).stderr == "error: flow 'main' has no version 5\n"
    no_author = runner.invoke(flows_app, ["publish", str(draft)])
    assert no_author.exit_code == 2 and "--author" in no_author.stderr
