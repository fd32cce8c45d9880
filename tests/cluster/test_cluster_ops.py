"""Issue 10 operations: which node handled a call, ``callcenter cluster status`` / ``GET /api/cluster``,
and the SIP guard's trusted networks from the environment."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis.asyncio import Redis
from typer.testing import CliRunner

import callcenter.auth.models  # noqa: F401 - registers the tables
from callcenter.api.access import Access
from callcenter.api.cluster import create_cluster_router
from callcenter.auth.service import UserService
from callcenter.cli import app as cli
from callcenter.cluster.node import ClusterNode
from callcenter.cluster.status import ClusterStatus, read_status, single_node
from callcenter.core.config import load_settings
from callcenter.core.errors import ConfigError
from callcenter.routing.queues import QueueConfig
from callcenter.store import CallRecordWriter, Store
from callcenter.store.reports import CSV_COLUMNS, csv_row, iter_calls

WAIT = 10.0  # bound on every wait (never asserted on)
QUEUES = {"sales": QueueConfig("sales")}
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
runner = CliRunner()


# -- node_id on every call record ----------------------------------------------------------------------


def test_every_record_names_the_node_that_handled_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = Store(f"sqlite:///{data / 'callcenter.db'}")
    store.create_all()
    for node, call_id in (("node1", "c1"), ("node2", "c2")):  # two nodes, one shared database
        writer = CallRecordWriter(store, node=node)
        writer.start()
        writer.call_started(call_id, "sip:caller@x", "sip:100@cc", T0)
        writer.call_extra(call_id, {"queue": "sales"})
        writer.call_ended(call_id, T0, "caller", "answered")
        writer.stop()

    calls = {c["sip_call_id"]: c for c in iter_calls(store)}
    assert (calls["c1"]["node"], calls["c2"]["node"]) == ("node1", "node2")
    assert calls["c1"]["queue"] == "sales"  # later extras merge with it, not over it
    row = dict(zip(CSV_COLUMNS, csv_row(calls["c2"]), strict=True))
    assert row["node"] == "node2"  # the CSV report's column

    listed = runner.invoke(cli, ["calls", "list", "--json", "--data-dir", str(data)])
    assert listed.exit_code == 0, listed.output
    assert {c["sip_call_id"]: c["node"] for c in json.loads(listed.stdout)} == {"c1": "node1", "c2": "node2"}
    table = runner.invoke(cli, ["calls", "list", "--data-dir", str(data)]).stdout.splitlines()
    assert "NODE" in table[0].split()
    assert sorted(line.split()[-2:] for line in table[1:]) == [["node1", "c1"], ["node2", "c2"]]
    store.close()


def test_a_single_node_names_itself_too(tmp_path: Path) -> None:
    settings = load_settings(env={})
    assert settings.redis_url is None and settings.node_id  # the host name by default
    store = Store(f"sqlite:///{tmp_path / 'cc.db'}")
    store.create_all()
    writer = CallRecordWriter(store, node=settings.node_id)
    writer.start()
    writer.call_started("c1", "sip:caller@x", "sip:100@cc", T0)
    writer.stop()
    assert [c["node"] for c in iter_calls(store)] == [settings.node_id]
    store.close()


# -- cluster status -------------------------------------------------------------------------------------


async def _two_nodes(redis_url: str) -> tuple[ClusterNode, ClusterNode, list[Redis]]:
    clients = [Redis.from_url(redis_url), Redis.from_url(redis_url)]
    a = ClusterNode(clients[0], "node-a", QUEUES, ttl_s=1.0, retry_s=0.1)
    b = ClusterNode(clients[1], "node-b", QUEUES, ttl_s=1.0, retry_s=0.1)
    a.calls_held = lambda: 3
    b.calls_held = lambda: 1
    await a.start()
    await asyncio.wait_for(a.became_leader.wait(), WAIT)
    await b.start()
    return a, b, clients


async def test_status_lists_nodes_leader_token_and_calls(redis_url: str, redis: Redis) -> None:
    a, b, clients = await _two_nodes(redis_url)
    try:
        status = await read_status(redis, "node-b")
        assert status.mode == "cluster" and status.node == "node-b"
        assert status.leader == "node-a" and status.token == a.election.token and status.token
        assert status.epoch == status.token
        rows = {n.node: n for n in status.nodes}
        assert set(rows) == {"node-a", "node-b"}
        assert (rows["node-a"].leader, rows["node-a"].token, rows["node-a"].calls) == (True, status.token, 3)
        assert (rows["node-b"].leader, rows["node-b"].token, rows["node-b"].calls) == (False, None, 1)
        assert all(n.alive and n.last_heartbeat and n.started for n in status.nodes)
        # node-b stops: still listed with its last heartbeat, as not alive, after the live one
        await b.stop()
        later = await read_status(redis, "node-a")
        assert [(n.node, n.alive) for n in later.nodes] == [("node-a", True), ("node-b", False)]
        assert (later.nodes[1].last_heartbeat or 0) >= (rows["node-b"].last_heartbeat or 0) > 0
        shown = later.as_json()
        assert shown["nodes"][1]["node"] == "node-b" and shown["nodes"][1]["alive"] is False
        assert datetime.fromisoformat(shown["nodes"][1]["last_heartbeat"]).tzinfo is not None
    finally:
        await a.stop()
        await b.stop()
        for c in clients:
            await c.aclose()


def test_cli_single_node(tmp_path: Path) -> None:
    env = {"CALLCENTER_NODE_ID": "solo"}
    result = runner.invoke(cli, ["cluster", "status"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("single node (solo)")
    as_json = runner.invoke(cli, ["cluster", "status", "--json"], env=env)
    assert as_json.exit_code == 0 and json.loads(as_json.stdout) == {
        "mode": "single",
        "node": "solo",
        "nodes": [],
        "leader": None,
        "token": None,
        "epoch": None,
    }


async def test_cli_cluster_table_and_json(redis_url: str, redis: Redis) -> None:
    a, b, clients = await _two_nodes(redis_url)
    env = {"CALLCENTER_REDIS_URL": redis_url, "CALLCENTER_NODE_ID": "node-b"}
    try:
        # the CLI runs its own event loop: in a thread, as it would in its own process
        table = await asyncio.to_thread(runner.invoke, cli, ["cluster", "status"], env=env)
        shown = await asyncio.to_thread(runner.invoke, cli, ["cluster", "status", "--json"], env=env)
    finally:
        await a.stop()
        await b.stop()
        for c in clients:
            await c.aclose()
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0] == f"leader: node-a (fencing token {a.election.token})"
    assert lines[1].split() == ["NODE", "ALIVE", "LAST", "HEARTBEAT", "CALLS", "LEADER", "TOKEN"]
    assert lines[2].split()[:2] == ["node-a", "yes"] and lines[2].split()[-3:] == [
        "3",
        "yes",
        str(a.election.token),
    ]
    assert lines[3].split()[:2] == ["node-b", "yes"] and lines[3].split()[-1] == "1"
    data = json.loads(shown.stdout)
    assert data["mode"] == "cluster" and [n["node"] for n in data["nodes"]] == ["node-a", "node-b"]


def test_cli_redis_unreachable_exits_1_without_the_url() -> None:
    env = {"CALLCENTER_REDIS_URL": "redis://:secret@127.0.0.1:1/0"}
    result = runner.invoke(cli, ["cluster", "status"], env=env)
    assert result.exit_code == 1
    assert "cannot read the cluster status" in result.output and "secret" not in result.output


# -- GET /api/cluster -------------------------------------------------------------------------------------

PW = "correct horse battery"


@pytest.fixture
def users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[UserService]:
    monkeypatch.setattr(
        "callcenter.auth.passwords._hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )
    store = Store(f"sqlite:///{tmp_path / 'users.db'}")
    store.create_all()
    service = UserService(store.engine)
    service.add_user("sue", "supervisor", PW)
    service.add_user("ann", "admin", PW)
    service.add_user("al", "agent", PW, agent="al")
    yield service
    store.close()


def _client(users: UserService, read: Any) -> TestClient:
    app = FastAPI()
    app.include_router(create_cluster_router(read, Access(users)))
    return TestClient(app)


def _auth(users: UserService, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {users.create_api_token(name, 'tests')}"}


def test_api_for_supervisors_and_admins_only(users: UserService) -> None:
    async def read() -> ClusterStatus:
        return single_node("solo")

    with _client(users, read) as client:
        assert client.get("/api/cluster").status_code == 401
        assert client.get("/api/cluster", headers=_auth(users, "al")).status_code == 403
        for who in ("sue", "ann"):
            got = client.get("/api/cluster", headers=_auth(users, who))
            assert got.status_code == 200 and got.json()["mode"] == "single" and got.json()["node"] == "solo"


def test_api_reads_redis_and_says_503_when_it_cannot(users: UserService, redis_url: str) -> None:
    async def read() -> ClusterStatus:
        client = Redis.from_url(redis_url)
        try:
            await client.flushdb()
            await client.hset("cc:nodes", "node-a", json.dumps({"at": 1_700_000_000.0, "calls": 2}))
            await client.set("cc:leader", "node-a:9")
            return await read_status(client, "node-a")
        finally:
            await client.aclose()

    async def broken() -> ClusterStatus:
        raise ConnectionError("refused")

    with _client(users, read) as client:
        got = client.get("/api/cluster", headers=_auth(users, "sue")).json()
    assert (got["leader"], got["token"]) == ("node-a", 9)
    assert [(n["node"], n["calls"], n["leader"], n["token"], n["alive"]) for n in got["nodes"]] == [
        ("node-a", 2, True, 9, False)  # no fresh heartbeat key: not alive
    ]
    with _client(users, broken) as client:
        assert client.get("/api/cluster", headers=_auth(users, "sue")).status_code == 503


# -- sip.protection.trusted from the environment -------------------------------------------------------------


def test_trusted_networks_from_the_environment() -> None:
    env = {
        "CALLCENTER_SIP_PROTECTION_TRUSTED": "10.0.0.5, 10.0.0.0/24",
        "CALLCENTER_SIP_PROTECTION_BAN_S": "30",
    }
    settings = load_settings(env=env)
    assert settings.sip.protection.trusted == ["10.0.0.5", "10.0.0.0/24"]
    assert settings.sip.protection.ban_s == 30.0
    assert load_settings(env={}).sip.protection.trusted == ["127.0.0.0/8", "::1/128"]  # unchanged default
    assert load_settings(env={"CALLCENTER_SIP_PROTECTION_TRUSTED": ""}).sip.protection.trusted == []
    with pytest.raises(
        ConfigError, match=r"sip\.protection\.trusted: 'ten' is not a network.*CALLCENTER_SIP"
    ):
        load_settings(env={"CALLCENTER_SIP_PROTECTION_TRUSTED": "ten"})
    with pytest.raises(ConfigError, match="unknown key"):
        load_settings(env={"CALLCENTER_SIP_PROTECTION_TRUSTD": "10.0.0.5"})
