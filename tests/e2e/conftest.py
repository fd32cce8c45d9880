"""Fixtures for end-to-end tests: real `callcenter serve` processes and real SIP peers, loopback only.

Every server is a child process on free ports with its own data directory, stopped by its PID when
the test ends, pass or fail.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callcenter.testing.baresip import baresip_available
from callcenter.testing.server import ServerProcess, StartServer
from callcenter.testing.sipp import sipp_available


@pytest.fixture
def sipp() -> None:
    """Skips the test when SIPp (Debian sip-tester) is not installed."""
    if not sipp_available():
        pytest.skip("sipp (Debian sip-tester) is not installed")


@pytest.fixture
def baresip() -> None:
    """Skips the test when baresip (Debian baresip-core) is not installed."""
    if not baresip_available():
        pytest.skip("baresip (Debian baresip-core) is not installed")


@pytest.fixture
def ipv6() -> None:
    """Skips the test when this machine has no IPv6 loopback."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback (::1) on this machine")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """start_server(ENV_OVERRIDES..., ipv6=False, config=YAML) → a started ServerProcess, stopped after
    the test."""
    servers: list[ServerProcess] = []

    def start(ipv6: bool = False, config: str | None = None, **env: Any) -> ServerProcess:
        data = tmp_path / f"server{len(servers)}"
        server = ServerProcess(data, env={k: str(v) for k, v in env.items()}, ipv6=ipv6, config=config)
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
    errors = {str(server.data_dir): server.errors() for server in servers if server.log_path.exists()}
    assert not any(errors.values()), f"the server logged errors: {errors}"
