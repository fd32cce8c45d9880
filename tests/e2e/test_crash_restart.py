"""SIGKILL during live calls and a waiting chat, then a restart on the same data (issue 11).

Nothing committed is lost (finished calls, a ticket, the chat's messages); the calls that were live are
recorded as dropped by the server; the agent is offline again; the chat waiting for an agent is back in
its queue and reaches an agent who comes online.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callcenter.testing.server import ServerProcess, free_port
from callcenter.testing.sipp import SCENARIOS, run_sipp

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sipp")]

TOKEN = "crash-test-admin-token-0123456789"
REPO = Path(__file__).resolve().parents[2]
CONFIG = f"""
ivr:
  numbers: {{}}
  flows_dir: {REPO / "ivr_flows"}
  intents_file: {REPO / "ivr_flows" / "intents" / "intents.yaml"}
routing:
  queues:
    general: {{join_when_empty: true}}
"""
ENV = {
    "CALLCENTER_HTTP_ADMIN_TOKEN": TOKEN,
    "CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S": "0",  # answered calls stay up until someone hangs up
}


def api(server: ServerProcess, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:  # noqa: E501
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def until(check: Any, what: str, timeout: float = 20.0) -> Any:
    """Poll ``check()`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    try:
        yield started
    finally:
        for s in started:
            s.stop()


def long_calls(server: ServerProcess, workdir: Path, count: int) -> subprocess.Popen[bytes]:
    """SIPp placing `count` calls that would last a minute (the server is killed long before)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        ["sipp", f"127.0.0.1:{server.sip_port}", "-sf", str(SCENARIOS / "uac.xml"), "-m", str(count),
         "-r", "10", "-d", "60000", "-i", "127.0.0.1", "-p", str(free_port()), "-mp",
         str(free_port(even=True)), "-nostdin", "-timeout", "90s"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def register_alice(server: ServerProcess, workdir: Path) -> None:
    r = run_sipp(f"127.0.0.1:{server.sip_port}", workdir, scenario="register.xml", inject=[["alice"]],
                 extra=["-au", "alice", "-ap", "alice-pw-1"], timeout_s=20)  # fmt: skip
    assert r.successful == 1, r.errors[-2000:]

    def available() -> bool:
        try:
            api(server, "POST", "/api/agents/alice/state", {"state": "available"})
        except urllib.error.HTTPError as exc:  # 404 until the registration has loaded the agent
            if exc.code != 404:
                raise
            return False
        return True

    until(available, "alice to be available")


def test_sigkill_loses_nothing_committed_and_restart_cleans_up(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = ServerProcess(data, env=ENV, config=CONFIG)
    servers.append(first)
    first.start()
    first.cli("agents", "add", "alice", "--password", "alice-pw-1")

    # committed before the crash: three finished calls, a ticket, a chat message
    done = run_sipp(f"127.0.0.1:{first.sip_port}", tmp_path / "done", builtin="uac", calls=3, rate=10,
                    extra=["-d", "200"], timeout_s=30)  # fmt: skip
    assert (done.successful, done.failed) == (3, 0), done.errors[-2000:]
    ticket = api(first, "POST", "/api/tickets", {"subject": "printer on fire", "body": "call back"})
    session = api(first, "POST", "/chat/session", {})
    visitor = {"X-Chat-Visitor": session["token"]}
    api(first, "POST", "/chat/messages", {"text": "hello, anyone there?"}, visitor)
    waiting = until(lambda: api(first, "GET", "/api/chats?state=waiting"), "the chat to wait in a queue")
    chat_id = waiting[0]["id"]
    assert waiting[0]["queue"] == "general"

    # the agent is available, and two calls are up when the server is killed
    register_alice(first, tmp_path / "reg")
    assert api(first, "GET", "/api/agents/live")["alice"]["state"] != "offline"
    live = long_calls(first, tmp_path / "live", 2)
    try:
        until(lambda: first.health()["active_calls"] == 2, "two live calls")
        open_ids = until(
            lambda: [c["sip_call_id"] for c in first.calls() if c["answered_at"] and not c["ended_at"]],
            "the live calls' records",
        )
        assert len(open_ids) == 2
        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    finally:
        live.kill()  # our own SIPp, by its PID
        live.wait(10)

    second = ServerProcess(data, env=ENV, config=CONFIG)
    servers.append(second)
    second.start()

    calls = {c["sip_call_id"]: c for c in second.calls()}
    assert len(calls) == 5
    for call_id in open_ids:  # in flight at the crash: dropped by the server, with an end time
        c = calls[call_id]
        assert (c["disposition"], c["hangup_by"]) == ("dropped", "server"), c
        assert c["ended_at"] and c["ended_at"] >= c["answered_at"]
    finished = [c for cid, c in calls.items() if cid not in open_ids]
    assert [c["hangup_by"] for c in finished] == ["caller"] * 3
    assert all(c["disposition"] != "dropped" for c in finished)

    assert api(second, "GET", f"/api/tickets/{ticket['number']}")["subject"] == "printer on fire"
    assert api(second, "GET", "/api/agents/live")["alice"]["state"] == "offline"

    chat = api(second, "GET", f"/api/chats/{chat_id}")
    assert [m["text"] for m in chat["messages"] if m["speaker"] == "caller"] == ["hello, anyone there?"]
    waiting = api(second, "GET", "/api/chats?state=waiting")
    assert [c["id"] for c in waiting] == [chat_id]  # re-queued, not closed
    # ... and an agent who comes online gets it
    register_alice(second, tmp_path / "reg2")
    assigned = until(lambda: api(second, "GET", "/api/chats?state=open"), "the chat to reach alice")
    assert assigned[0]["id"] == chat_id and assigned[0]["agent"] == "alice"
