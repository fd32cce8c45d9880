"""SIPp registers agents with digest auth: right password, wrong password, unknown user, Expires: 0.

SIPp's scenario fails unless it gets exactly the expected responses (401 then 200 or 403); the server's
log must show the matching event.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from callcenter.testing.server import ServerProcess, StartServer
from callcenter.testing.sipp import SippResult, run_sipp

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sipp")]


def assert_scenario_passed(result: SippResult) -> None:
    detail = f"sipp rc={result.returncode}\n{result.errors[-3000:]}\n{result.stderr[-2000:]}"
    assert (result.successful, result.failed, result.returncode) == (1, 0, 0), detail
    assert "unexpected" not in result.errors.lower(), detail


def register(
    server: ServerProcess,
    workdir: Path,
    scenario: str,
    user: str,
    auth_user: str,
    password: str,
    transport: str = "u1",
) -> SippResult:
    return run_sipp(
        f"127.0.0.1:{server.sip_port}",
        workdir,
        scenario=scenario,
        inject=[[user]],
        transport=transport,
        extra=["-au", auth_user, "-ap", password],
        timeout_s=20,
    )


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_right_password_registers(start_server: StartServer, tmp_path: Path, transport: str) -> None:
    server = start_server()
    server.cli("agents", "add", "alice", "--password", "s3cret-A")
    # REGISTER → 401 → REGISTER with Authorization → 200
    assert_scenario_passed(
        register(server, tmp_path / "sipp", "register.xml", "alice", "alice", "s3cret-A", transport)
    )
    event = server.wait_for_event("agent_registered", username="alice")
    assert str(event["source"]).startswith("udp:" if transport == "u1" else "tcp:"), event
    assert not server.events("register_auth_failed")


def test_wrong_password_is_refused(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server()
    server.cli("agents", "add", "alice", "--password", "s3cret-A")
    # REGISTER → 401 → REGISTER with a wrong digest → 403
    assert_scenario_passed(
        register(server, tmp_path / "sipp", "register_rejected.xml", "alice", "alice", "nope")
    )
    server.wait_for_event("register_auth_failed", username="alice")
    assert not server.events("agent_registered")


def test_unknown_user_is_refused(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server()
    server.cli("agents", "add", "alice", "--password", "s3cret-A")
    assert_scenario_passed(
        register(server, tmp_path / "sipp", "register_rejected.xml", "mallory", "mallory", "s3cret-A")
    )
    server.wait_for_event("register_auth_failed", username="mallory")
    assert not server.events("agent_registered")


def test_another_agents_credentials_do_not_register_a_user(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server()
    server.cli("agents", "add", "alice", "--password", "s3cret-A")
    server.cli("agents", "add", "bob", "--password", "s3cret-B")
    # To: bob, but authenticated as alice (with alice's right password): still 403.
    assert_scenario_passed(
        register(server, tmp_path / "sipp", "register_rejected.xml", "bob", "alice", "s3cret-A")
    )
    assert not server.events("agent_registered")


def test_expires_zero_unregisters(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server()
    server.cli("agents", "add", "alice", "--password", "s3cret-A")
    # register (401, 200), then REGISTER with Expires: 0 (401, 200)
    assert_scenario_passed(
        register(server, tmp_path / "sipp", "register_unregister.xml", "alice", "alice", "s3cret-A")
    )
    registered = server.wait_for_event("agent_registered", username="alice")
    unregistered = server.wait_for_event("agent_unregistered", username="alice")
    assert unregistered["contact"] == registered["contact"]
