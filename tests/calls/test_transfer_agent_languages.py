"""Agents' languages (Agent.languages): stored as lower-cased tags, set with `agents add --languages`,
shown by `agents list`, and handed to the router, which offers a caller only to agents who speak the
call's language (agents without languages take anyone)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from callcenter.calls.acd import Acd
from callcenter.cli import app
from callcenter.routing.agents import AgentEvent
from callcenter.routing.queues import QueueConfig
from callcenter.routing.router import Router
from callcenter.store import Store, agent_public
from callcenter.store.repo import InvalidAgentError

runner = CliRunner()


def test_languages_are_stored_lower_cased_once_each(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_all()
    store.add_agent("li", "pw", "callcenter", {"support": 2}, ["zh-CN", "EN", "en"])
    agent = store.get_agent("li")
    assert agent is not None and agent.languages == ["zh-cn", "en"]
    assert agent_public(agent)["languages"] == ["zh-cn", "en"]
    store.add_agent("any", "pw", "callcenter")
    again = store.get_agent("any")
    assert again is not None and again.languages == []


@pytest.mark.parametrize("tag", ["english", "e", "en_US", "", "zh-"])
def test_a_bad_language_tag_is_refused(tmp_path: Path, tag: str) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_all()
    with pytest.raises(InvalidAgentError, match="language"):
        store.add_agent("li", "pw", "callcenter", {}, [tag])
    assert store.get_agent("li") is None


def test_cli_adds_and_lists_languages(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    add = ["agents", "add", "li", "-p", "pw", "--languages", "en,zh-CN", "--data-dir", data]
    added = runner.invoke(app, add)
    assert added.exit_code == 0, added.output
    assert "speaks en,zh-cn" in added.output
    bad = runner.invoke(app, ["agents", "add", "x", "-p", "pw", "--languages", "english", "--data-dir", data])
    assert bad.exit_code != 0 and "language 'english'" in bad.output
    listed = runner.invoke(app, ["agents", "list", "--data-dir", data])
    assert "LANGUAGES" in listed.output and "en,zh-cn" in listed.output
    as_json = json.loads(runner.invoke(app, ["agents", "list", "--json", "--data-dir", data]).output)
    assert as_json[0]["languages"] == ["en", "zh-cn"]


def test_the_acd_routes_by_the_languages_from_the_database() -> None:
    # Acd._define is what start-up and first REGISTER run for each stored agent.
    router = Router({"support": QueueConfig(name="support", skills={"support": 1})})
    acd: Any = SimpleNamespace(router=router, clock=lambda: 0.0)
    for name, languages in (("li", ["zh"]), ("ann", ["en"])):
        Acd._define(acd, SimpleNamespace(username=name, skills={"support": 1}, languages=languages))
        router.agent_event(name, AgentEvent.LOGIN, 0.0)
    router.enqueue("call-zh", "support", 1.0, language="zh-CN")
    (offer,) = router.dispatch(1.0)
    assert offer.agents == ("li",)
