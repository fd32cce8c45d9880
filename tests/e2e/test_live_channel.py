"""The live channel and metrics of a running server: a supervisor's WebSocket gets the snapshot, then
a SIPp call's events as they happen; /metrics counts the call; an agent's token sees no other calls."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from callcenter.auth.service import UserService
from callcenter.store import Store
from callcenter.testing.server import ServerProcess, StartServer
from callcenter.testing.sipp import run_sipp

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sipp")]

TOKEN = "live-channel-admin-token-0123"


def _messages(ws: Any, until: str, limit: int = 200) -> list[dict[str, Any]]:
    """Messages up to and including the first whose event is ``until`` (bounded by count and time)."""
    got: list[dict[str, Any]] = []
    for _ in range(limit):
        message = json.loads(ws.recv(timeout=20))
        got.append(message)
        if message.get("event") == until:
            return got
    raise AssertionError(f"no {until} in {[m.get('event') for m in got]}")


def _call(server: ServerProcess, tmp_path: Path) -> None:
    result = run_sipp(
        f"127.0.0.1:{server.sip_port}",
        tmp_path / "sipp",
        builtin="uac",
        calls=1,
        extra=["-d", "500"],
        timeout_s=30,
    )
    assert result.successful == 1, result.errors


def test_a_supervisor_sees_a_call_live_and_metrics_count_it(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(CALLCENTER_HTTP_ADMIN_TOKEN=TOKEN, CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S=30)
    url = f"ws://127.0.0.1:{server.http_port}/api/live"
    with connect(f"{url}?token={TOKEN}") as ws:
        snapshot = json.loads(ws.recv(timeout=20))
        assert snapshot["type"] == "snapshot" and "queues" in snapshot and "agents" in snapshot
        caller = threading.Thread(target=_call, args=(server, tmp_path))
        caller.start()
        events = _messages(ws, until="call_ended")
        caller.join(timeout=60)
    names = [m["event"] for m in events]
    assert names.index("call_offered") < names.index("call_answered") < names.index("call_ended")
    ended = events[-1]
    assert ended["type"] == "call" and ended["data"]["disposition"] == "answered"
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/metrics")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=10) as r:
        metrics = r.read().decode()
    assert any(line.startswith("callcenter_calls_total") and 'disposition="answered"' in line
               and not line.rstrip().endswith(" 0.0") for line in metrics.splitlines()), metrics  # fmt: skip


def test_without_credentials_the_channel_is_closed_and_an_agent_sees_no_foreign_call(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(CALLCENTER_HTTP_ADMIN_TOKEN=TOKEN, CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S=30)
    url = f"ws://127.0.0.1:{server.http_port}/api/live"
    with connect(url) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=20)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    users = UserService(Store(f"sqlite:///{server.data_dir / 'callcenter.db'}").engine)
    users.add_user("al", "agent", "al's password!")
    agent_token = users.create_api_token("al", "test")
    with connect(f"{url}?token={agent_token}") as ws:
        assert json.loads(ws.recv(timeout=20))["type"] == "snapshot"
        _call(server, tmp_path)
        server.wait_for_event("call_ended", timeout=20)
        with pytest.raises(TimeoutError):
            while True:  # only keepalives or queue summaries may come: nothing about the stranger's call
                message = json.loads(ws.recv(timeout=2))
                assert message.get("type") != "call", message
