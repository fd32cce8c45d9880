"""Chats across two real nodes (issue 10) sharing PostgreSQL and Redis (callcenter/testing/cluster.py):
a web chat opened on node 1 reaches an agent whose browser talks to node 2, messages go both ways;
capacity is counted over the cluster (max_chats 1); node 1 SIGKILLed with a chat waiting → node 2
takes it over and serves it, and the visitor coming back through node 2 finds their conversation."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callcenter.testing.cluster import Cluster, cluster_missing
from callcenter.testing.server import ServerProcess
from callcenter.testing.sipp import run_sipp

pytestmark = [pytest.mark.e2e]

TOKEN = "cluster-chat-admin-token-0123456789"
REPO = Path(__file__).resolve().parents[2]
CONFIG = f"""
ivr:
  numbers: {{}}
  flows_dir: {REPO / "ivr_flows"}
  intents_file: {REPO / "ivr_flows" / "intents" / "intents.yaml"}
routing:
  queues:
    general: {{join_when_empty: true}}
chat:
  webchat: {{poll_wait_s: 0.2, secret: one-secret-for-every-node-0123456789}}
"""


def api(node: ServerProcess, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:  # noqa: E501
    request = urllib.request.Request(
        f"http://127.0.0.1:{node.http_port}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=15) as r:
        return json.loads(r.read())


NODES: list[ServerProcess] = []  # the running test's nodes: their logs go into a timeout's message


def until(check: Any, what: str, timeout: float = 30.0) -> Any:
    """Poll ``check()`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            logs = "\n".join(f"--- node {i + 1}\n{n.log_text()[-4000:]}" for i, n in enumerate(NODES))
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.2)


def open_chat(node: ServerProcess, text: str) -> dict[str, str]:
    session = api(node, "POST", "/chat/session", {})
    visitor = {"X-Chat-Visitor": session["token"]}
    api(node, "POST", "/chat/messages", {"text": text}, visitor)
    return visitor


def chats(node: ServerProcess, state: str) -> list[dict[str, Any]]:
    return list(api(node, "GET", f"/api/chats?state={state}"))


def seen_by_visitor(node: ServerProcess, visitor: dict[str, str], text: str) -> bool:
    return any(m["text"] == text for m in api(node, "GET", "/chat/poll?after=0", None, visitor)["messages"])


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    missing = cluster_missing()
    if missing:
        pytest.skip(missing)
    env = {"CALLCENTER_HTTP_ADMIN_TOKEN": TOKEN}
    with Cluster(tmp_path / "cluster", env=env, config=CONFIG) as c:
        NODES[:] = c.nodes
        try:
            yield c
        finally:
            NODES.clear()


def test_chats_cross_nodes_capacity_is_cluster_wide_and_a_dead_nodes_chat_is_served(
    cluster: Cluster, tmp_path: Path
) -> None:
    one, two = cluster.nodes
    one.cli("agents", "add", "alice", "--password", "alice-pw-1", "--max-chats", "1")
    r = run_sipp(f"127.0.0.1:{two.sip_port}", tmp_path / "reg", scenario="register.xml", inject=[["alice"]],
                 extra=["-au", "alice", "-ap", "alice-pw-1"], timeout_s=20)  # fmt: skip
    assert r.successful == 1, r.errors[-2000:]

    def available() -> bool:
        try:
            api(two, "POST", "/api/agents/alice/state", {"state": "available"})
        except urllib.error.HTTPError as exc:  # 404 until the registration has loaded the agent
            if exc.code != 404:
                raise
            return False
        return True

    until(available, "alice to be available through node 2")

    # 1. a chat opened on node 1 lands in the inbox alice reads through node 2
    v1 = open_chat(one, "hello from node one")
    first = until(lambda: chats(two, "open"), "the chat in alice's inbox on node 2")
    assert first[0]["agent"] == "alice"
    chat1 = first[0]["id"]
    view = api(two, "GET", f"/api/chats/{chat1}")
    assert [m["text"] for m in view["messages"] if m["speaker"] == "caller"] == ["hello from node one"]
    # alice answers through node 2; the visitor's widget on node 1 gets it
    api(two, "POST", f"/api/chats/{chat1}/messages", {"text": "Hi, Alice here."})
    until(lambda: seen_by_visitor(one, v1, "Hi, Alice here."), "the reply on node 1's widget")
    # the visitor's next message through node 1 reaches alice's view on node 2
    api(one, "POST", "/chat/messages", {"text": "my order is late"}, v1)
    until(
        lambda: "my order is late" in [m["text"] for m in api(two, "GET", f"/api/chats/{chat1}")["messages"]],
        "the visitor's message in alice's view",
    )

    # 2. a second chat, on node 2, waits: alice's one chat is on node 1 (max_chats counts the cluster)
    open_chat(two, "second visitor on node two")
    waiting = until(lambda: chats(two, "waiting"), "the second chat waiting")
    chat2 = waiting[0]["id"]
    assert [c["id"] for c in chats(two, "open")] == [chat1]
    api(two, "POST", f"/api/chats/{chat1}/close")  # closed through node 2, held by node 1
    until(lambda: [c["id"] for c in chats(two, "open")] == [chat2], "the second chat reaching alice")
    assert chat1 not in [c["id"] for c in chats(one, "open")]

    # 3. a third chat waits on node 1; node 1 dies; node 2 takes it over and serves it
    v3 = open_chat(one, "third visitor, please help")
    chat3 = until(
        lambda: [c["id"] for c in chats(one, "waiting") if c["id"] not in (chat1, chat2)], "the third chat"
    )[0]
    cluster.kill_node(0)
    api(two, "POST", f"/api/chats/{chat2}/close")
    taken = until(
        lambda: [c for c in chats(two, "open") if c["id"] == chat3], "node 2 serving node 1's chat", 60.0
    )
    assert taken[0]["agent"] == "alice"
    # the visitor's widget reconnects through node 2: history, and both directions work
    assert seen_by_visitor(two, v3, "third visitor, please help")
    api(two, "POST", "/chat/messages", {"text": "still there?"}, v3)
    api(two, "POST", f"/api/chats/{chat3}/messages", {"text": "Yes, Alice on it."})
    until(lambda: seen_by_visitor(two, v3, "Yes, Alice on it."), "the reply after the takeover")
    texts = [m["text"] for m in api(two, "GET", f"/api/chats/{chat3}")["messages"]]
    assert texts.index("third visitor, please help") < texts.index("still there?")
