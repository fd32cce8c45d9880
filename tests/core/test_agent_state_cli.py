"""`callcenter agents state` / `agents live` against a real `callcenter serve` (HTTP API, admin token)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from callcenter.auth.service import UserService
from callcenter.cli import app
from callcenter.store import Store
from callcenter.testing.server import ServerProcess, free_port

TOKEN = "agent-state-test-token-0123456789"
runner = CliRunner()


def _config(data: Path) -> str:
    """No IVR numbers (nothing to render at start-up), flows in an empty folder of the test's own."""
    flows = data / "flows"
    flows.mkdir(parents=True, exist_ok=True)
    return f"ivr:\n  flows_dir: {flows}\n  numbers: {{}}\n  intents_file: null\n"


def _start(data: Path, env: dict[str, str]) -> ServerProcess:
    data.mkdir(parents=True, exist_ok=True)
    store = Store(f"sqlite:///{data / 'callcenter.db'}")
    store.migrate()
    # Defined before the server starts: it loads them, offline until a softphone registers.
    store.add_agent("alice", "pw-alice", "callcenter", {"sales": 2})
    store.add_agent("bob", "pw-bob", "callcenter", {"support": 1})
    store.close()
    server = ServerProcess(data, env=env, config=_config(data))
    server.env["CALLCENTER_HTTP_PORT"] = str(server.http_port)  # same as its --http-port flag
    return server.start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = _start(tmp_path_factory.mktemp("state") / "data", {"CALLCENTER_HTTP_ADMIN_TOKEN": TOKEN})
    try:
        yield srv
    finally:
        srv.stop()


def cli(server: ServerProcess | None, *args: str, token: str | None = TOKEN, port: int | None = None) -> Any:
    """The CLI as an admin on the server's machine runs it: address from http.host/http.port."""
    env = {
        # The server listens on 127.0.0.1; an admin's config often says 0.0.0.0 (all addresses).
        "CALLCENTER_HTTP_HOST": "0.0.0.0",
        "CALLCENTER_HTTP_PORT": str(port if port is not None else server.http_port if server else 1),
    }
    if token is not None:
        env["CALLCENTER_HTTP_ADMIN_TOKEN"] = token
    return runner.invoke(app, list(args), env=env)


def live(server: ServerProcess) -> dict[str, Any]:
    result = cli(server, "agents", "live", "--json")
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def test_an_offline_agent_goes_not_ready_with_a_reason_then_available_then_offline(
    server: ServerProcess,
) -> None:
    assert live(server)["alice"]["state"] == "offline"

    result = cli(server, "agents", "state", "alice", "not-ready", "--reason", "training")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "alice: not_ready (training)"
    now = live(server)["alice"]
    assert (now["state"], now["reason"]) == ("not_ready", "training")

    table = cli(server, "agents", "live")
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if line.startswith("alice"))
    assert "not_ready" in row and "training" in row and "sales:2" in row and "@alice" not in row

    result = cli(server, "agents", "state", "alice", "available")
    assert result.exit_code == 0 and result.stdout.strip() == "alice: available"
    assert live(server)["alice"]["state"] == "available"

    result = cli(server, "agents", "state", "alice", "offline")
    assert result.exit_code == 0 and result.stdout.strip() == "alice: offline"
    assert live(server)["alice"]["state"] == "offline"


def test_the_api_spelling_not_ready_is_accepted_too(server: ServerProcess) -> None:
    result = cli(server, "agents", "state", "bob", "not_ready")
    assert result.exit_code == 0, result.output
    assert live(server)["bob"]["state"] == "not_ready"
    assert cli(server, "agents", "state", "bob", "offline").exit_code == 0


def test_an_unknown_agent_is_one_line_and_changes_nothing(server: ServerProcess) -> None:
    before = live(server)
    result = cli(server, "agents", "state", "nobody", "available")
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: no agent 'nobody' on the server") and "agents add" in line
    assert set(live(server)) == set(before) and "nobody" not in before


def test_a_missing_token_names_the_setting(server: ServerProcess) -> None:
    result = cli(server, "agents", "state", "alice", "not-ready", token=None)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert "http.admin_token" in line and "CALLCENTER_API_TOKEN" in line and "wants" in line
    assert live(server)["alice"]["state"] == "offline"


def test_a_wrong_token_is_refused(server: ServerProcess) -> None:
    result = cli(server, "agents", "state", "alice", "not-ready", token="not-the-servers-token-000")
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert "refused the token" in line and "http.admin_token" in line
    assert live(server)["alice"]["state"] == "offline"


def test_an_unknown_state_is_a_usage_error_before_any_request(server: ServerProcess) -> None:
    result = cli(server, "agents", "state", "alice", "lunch")
    assert result.exit_code == 2
    words = " ".join(result.output.replace("│", " ").split())  # the error box wraps lines
    assert "'lunch': expected one of available, not-ready, offline" in words
    assert live(server)["alice"]["state"] == "offline"


def test_a_too_long_reason_is_refused_with_the_servers_words(server: ServerProcess) -> None:
    result = cli(server, "agents", "state", "alice", "not-ready", "--reason", "x" * 101)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: reason:") and "100 characters" in line


def test_no_server_running_says_so() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for args in (("agents", "state", "alice", "available"), ("agents", "live")):
        result = cli(None, *args, port=port)
        assert result.exit_code == 1
        (line,) = result.stderr.splitlines()
        assert f"cannot reach the callcenter server at http://127.0.0.1:{port}" in line
        assert "callcenter serve" in line


def test_an_agent_with_an_api_token_sets_their_own_state_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = _start(data, {})  # no admin token at all: users and their tokens only
    try:
        users = UserService(Store(f"sqlite:///{data / 'callcenter.db'}").engine)
        users.add_user("alice", "agent", "alice's password")
        token = users.create_api_token("alice", "cli")
        env = {"CALLCENTER_API_TOKEN": token}
        mine = runner.invoke(app, ["agents", "state", "alice", "not-ready", "--reason", "lunch", "--url",
                                   f"http://127.0.0.1:{server.http_port}"], env=env)  # fmt: skip
        assert mine.exit_code == 0, mine.output
        other = runner.invoke(app, ["agents", "state", "bob", "not-ready", "--url",
                                    f"http://127.0.0.1:{server.http_port}"], env=env)  # fmt: skip
        assert other.exit_code == 1
        (line,) = other.stderr.splitlines()
        assert line == "error: not allowed: agents change their own state only"
        states = runner.invoke(app, ["agents", "live", "--json", "--url", f"http://127.0.0.1:{server.http_port}"],
                               env=env)  # fmt: skip
        got = json.loads(states.stdout)
        assert (got["alice"]["state"], got["bob"]["state"]) == ("not_ready", "offline")
    finally:
        server.stop()


def test_url_option_reaches_the_server_whatever_the_config_says(server: ServerProcess) -> None:
    result = cli(
        server,
        "agents",
        "live",
        "--json",
        "--url",
        f"http://127.0.0.1:{server.http_port}",
        port=free_port(socket.SOCK_STREAM),
    )
    assert result.exit_code == 0, result.output
    assert {"alice", "bob"} <= set(json.loads(result.stdout))
