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
