"""Agents' max concurrent chats (and display name): stored, migrated, set from the CLI, on the router."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from callcenter.cli import app
from callcenter.routing.agents import AgentBoard
from callcenter.store import Store, agent_public
from callcenter.store.db import make_engine
from callcenter.store.migrate import current_revision, head_revision, schema_diff, upgrade
from callcenter.store.repo import InvalidAgentError

runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, list(args))


def test_add_set_and_list_max_chats_from_the_cli(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    assert run("agents", "add", "amy", "-p", "pw", "--max-chats", "5", "--data-dir", data).exit_code == 0
    assert run("agents", "add", "ben", "-p", "pw", "--data-dir", data).exit_code == 0
    listed = json.loads(run("agents", "list", "--json", "--data-dir", data).stdout)
    assert {a["username"]: a["max_chats"] for a in listed} == {"amy": 5, "ben": 3}  # ben: config default
    result = run("agents", "set", "ben", "--max-chats", "0", "--display-name", "Ben B", "--data-dir", data)
    assert result.exit_code == 0, result.output
    table = run("agents", "list", "--data-dir", data).stdout
    assert "MAX CHATS" in table
    listed = json.loads(run("agents", "list", "--json", "--data-dir", data).stdout)
    ben = next(a for a in listed if a["username"] == "ben")
    assert (ben["max_chats"], ben["display_name"]) == (0, "Ben B")
    assert "ha1" not in json.dumps(listed)


def test_the_config_default_applies_to_agents_without_their_own(tmp_path: Path) -> None:
    config = tmp_path / "cc.yaml"
    config.write_text("routing:\n  default_max_chats: 7\n")
    data = str(tmp_path / "d")
    run("agents", "add", "amy", "-p", "pw", "--data-dir", data, "--config", str(config))
    listed = json.loads(run("agents", "list", "--json", "--data-dir", data, "--config", str(config)).stdout)
    assert listed[0]["max_chats"] == 7


def test_negative_max_chats_is_a_clear_error(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    result = run("agents", "add", "amy", "-p", "pw", "--max-chats", "-1", "--data-dir", data)
    assert result.exit_code == 2 and "--max-chats" in result.stderr and "0 or more" in result.stderr
    run("agents", "add", "amy", "-p", "pw", "--data-dir", data)
    result = run("agents", "set", "amy", "--max-chats", "-2", "--data-dir", data)
    assert result.exit_code == 2 and "0 or more" in result.stderr
    assert run("agents", "set", "nobody", "--max-chats", "1", "--data-dir", data).exit_code == 1
    store = Store(f"sqlite:///{tmp_path / 'd' / 'callcenter.db'}")
    with pytest.raises(InvalidAgentError, match="max_chats"):
        store.add_agent("ben", "pw", "callcenter", max_chats=-1)
    with pytest.raises(InvalidAgentError, match="max_chats"):
        store.update_agent("amy", max_chats=True)
    store.close()


def test_a_new_password_replaces_the_hashes(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    store.migrate()
    store.add_agent("amy", "old", "callcenter")
    before = store.get_agent_credentials("amy")
    store.update_agent("amy", password="new", skills={"sales": 2}, languages=["en"])
    assert store.get_agent_credentials("amy") != before
    amy = store.get_agent("amy")
    assert amy is not None and amy.skills == {"sales": 2} and amy.languages == ["en"]
    store.close()


def test_revision_0006_adds_the_columns_to_an_older_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    upgrade(engine, "0005")
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO agent (username, realm, ha1_md5, ha1_sha256, skills, languages, created_at) "
            "VALUES ('bob', 'callcenter', :a, :b, '{}', '[]', '2026-01-01 00:00:00')"
        ), {"a": "0" * 32, "b": "1" * 64})
    upgrade(engine)
    assert current_revision(engine) == head_revision() and schema_diff(engine) == []
    store = Store(url)
    bob = store.get_agent("bob")
    assert bob is not None and bob.max_chats is None and agent_public(bob, 4)["max_chats"] == 4
    upgrade(engine)  # again: nothing to do
    store.close()
    engine.dispose()


def test_the_router_agent_carries_max_chats_and_refuses_negatives() -> None:
    board = AgentBoard()
    assert board.define("amy", {"sales": 1}, max_chats=2).max_chats == 2
    assert board.update("amy", max_chats=0).max_chats == 0
    assert board["amy"].as_json(0.0)["max_chats"] == 0
    with pytest.raises(ValueError, match="max_chats"):
        board.update("amy", max_chats=-1)
