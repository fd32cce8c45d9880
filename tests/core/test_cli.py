from __future__ import annotations

import json
import sys
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from callcenter import __version__
from callcenter.cli import app
from callcenter.core.config import Settings
from callcenter.store import CallRecordWriter, Store, compute_ha1

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env=env)


@pytest.fixture
def data(tmp_path: Path) -> str:
    return str(tmp_path / "data")


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"callcenter {__version__}"


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["agents"],
        ["agents", "add"],
        ["agents", "list"],
        ["agents", "remove"],
        ["calls"],
        ["calls", "list"],
        ["config"],
        ["config", "check"],
        ["config", "show"],
    ],
)
def test_help_everywhere(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


def test_agents_add_list_remove(data: str) -> None:
    result = run(
        "agents", "add", "alice", "--password", "pw1", "--skills", "sales:3,support:1", "--data-dir", data
    )
    assert result.exit_code == 0, result.output
    assert "added agent alice" in result.stdout
    assert run("agents", "add", "bob", "--password", "pw2", "--data-dir", data).exit_code == 0

    listed = json.loads(run("agents", "list", "--json", "--data-dir", data).stdout)
    assert [a["username"] for a in listed] == ["alice", "bob"]
    assert listed[0]["skills"] == {"sales": 3, "support": 1}
    assert listed[0]["realm"] == "callcenter"
    assert "pw1" not in json.dumps(listed) and not any("ha1" in k for k in listed[0])

    table = run("agents", "list", "--data-dir", data).stdout
    assert "alice" in table and "sales:3,support:1" in table

    removed = run("agents", "remove", "alice", "--data-dir", data)
    assert removed.exit_code == 0 and "removed agent alice" in removed.stdout
    again = run("agents", "remove", "alice", "--data-dir", data)
    assert again.exit_code == 1 and "no agent named 'alice'" in again.stderr
    assert [
        a["username"] for a in json.loads(run("agents", "list", "--json", "--data-dir", data).stdout)
    ] == ["bob"]


def test_agents_add_existing_is_a_clear_error(data: str) -> None:
    run("agents", "add", "alice", "--password", "pw", "--data-dir", data)
    result = run("agents", "add", "alice", "--password", "pw", "--data-dir", data)
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: agent 'alice' already exists"


@pytest.mark.parametrize(
    ("skills", "message"),
    [
        ("sales:9", "sales: expected a level 1-5, got 9"),
        ("sales", "expected NAME:LEVEL"),
        ("sales:x", "sales: expected a level 1-5, got 'x'"),
        ("a:1,a:2", "a: given twice"),
    ],
)
def test_agents_add_bad_skills(data: str, skills: str, message: str) -> None:
    result = run("agents", "add", "alice", "--password", "pw", "--skills", skills, "--data-dir", data)
    assert result.exit_code == 2
    assert message in result.stderr and "--skills" in result.stderr


def test_agents_add_bad_username(data: str) -> None:
    result = run("agents", "add", "al ice", "--password", "pw", "--data-dir", data)
    assert result.exit_code == 1 and "username 'al ice'" in result.stderr


def test_agents_add_uses_the_configured_realm_and_env_data_dir(tmp_path: Path) -> None:
    config = tmp_path / "cc.yaml"
    config.write_text("sip:\n  realm: acme.example\n")
    env = {"CALLCENTER_DATA_DIR": str(tmp_path / "envdata")}
    result = run("agents", "add", "alice", "--password", "pw", "--config", str(config), env=env)
    assert result.exit_code == 0, result.output
    store = Store(f"sqlite:///{tmp_path / 'envdata' / 'callcenter.db'}")
    assert store.get_agent_credentials("alice") == (
        compute_ha1("alice", "acme.example", "pw", "MD5"),
        compute_ha1("alice", "acme.example", "pw", "SHA-256"),
    )


def test_agents_add_prompts_for_the_password_when_omitted(data: str) -> None:
    result = runner.invoke(app, ["agents", "add", "carol", "--data-dir", data], input="pw\npw\n")
    assert result.exit_code == 0, result.output
    assert "pw" not in result.stdout.replace("Password", "")


def test_calls_list_json_after_the_writer_recorded_calls(data: str) -> None:
    store = Store(f"sqlite:///{Path(data) / 'callcenter.db'}")
    store.create_all()
    writer = CallRecordWriter(store)
    writer.start()
    t0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    for i in range(3):
        writer.call_started(f"call-{i}", f"sip:caller{i}@x", "sip:100@cc", t0 + timedelta(minutes=i))
    writer.call_answered("call-2", t0 + timedelta(minutes=2, seconds=1))
    writer.call_ended("call-2", t0 + timedelta(minutes=2, seconds=11), "server", "answered")
    writer.stop()

    result = run("calls", "list", "--json", "--data-dir", data)
    assert result.exit_code == 0, result.output
    calls = json.loads(result.stdout)
    assert [c["sip_call_id"] for c in calls] == ["call-2", "call-1", "call-0"]
    assert set(calls[0]) == {
        "sip_call_id",
        "from",
        "to",
        "started_at",
        "answered_at",
        "ended_at",
        "hangup_by",
        "disposition",
    }
    assert calls[0]["from"] == "sip:caller2@x" and calls[0]["to"] == "sip:100@cc"
    assert datetime.fromisoformat(calls[0]["ended_at"]) == t0 + timedelta(minutes=2, seconds=11)
    assert (calls[0]["hangup_by"], calls[0]["disposition"]) == ("server", "answered")
    assert calls[1]["answered_at"] is None and calls[1]["hangup_by"] is None

    limited = json.loads(run("calls", "list", "--json", "--limit", "1", "--data-dir", data).stdout)
    assert [c["sip_call_id"] for c in limited] == ["call-2"]
    assert "call-2" in run("calls", "list", "--data-dir", data).stdout  # the table form


def test_calls_list_empty(data: str) -> None:
    result = run("calls", "list", "--json", "--data-dir", data)
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_config_check_good_and_bad(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("sip:\n  port: 5070\n")
    result = run("config", "check", "--config", str(good))
    assert result.exit_code == 0 and result.stdout.strip() == "config OK"

    bad = tmp_path / "bad.yaml"
    bad.write_text("sip:\n  port: abc\n")
    result = run("config", "check", "--config", str(bad))
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("sip.port: expected an integer 1-65535, got 'abc'")

    result = run("config", "check", "--config", str(good), env={"CALLCENTER_HTTP_PORT": "99999"})
    assert result.exit_code == 1 and result.stderr.startswith("http.port: expected an integer 1-65535")


def test_config_show_prints_the_merged_settings(tmp_path: Path) -> None:
    result = run("config", "show", env={"CALLCENTER_SIP_PORT": "5071"})
    assert result.exit_code == 0 and "port: 5071" in result.stdout


@pytest.fixture
def fake_app(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Stands in for callcenter.app (the composition root) and records what serve() was given."""
    served: list[Settings] = []
    module = types.ModuleType("callcenter.app")
    module.serve = served.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "callcenter.app", module)
    return served


def test_serve_passes_flags_and_env_precedence(fake_app: list[Settings], tmp_path: Path) -> None:
    config = tmp_path / "cc.yaml"
    config.write_text("sip:\n  port: 5070\nhttp:\n  port: 8081\n")
    result = run(
        "serve",
        "--config",
        str(config),
        "--sip-host",
        "127.0.0.1",
        "--sip-port",
        "5080",
        "--http-port",
        "8082",
        "--data-dir",
        str(tmp_path / "d"),
        env={"CALLCENTER_HTTP_PORT": "8083"},
    )
    assert result.exit_code == 0, result.output
    (settings,) = fake_app
    assert settings.sip.host == "127.0.0.1"
    assert settings.sip.port == 5080  # flag over file
    assert settings.http.port == 8083  # env over flag
    assert settings.data_dir == tmp_path / "d"


def test_serve_with_a_wrong_value_exits_2_with_one_line(fake_app: list[Settings]) -> None:
    result = run("serve", "--sip-port", "70000")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "sip.port: expected an integer 1-65535, got 70000 (from command line)"
    ]
    assert fake_app == []  # nothing started
