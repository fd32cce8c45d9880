"""Fixtures for the browser tests: a real `callcenter serve` on loopback, users made with the CLI, and
Debian's Chromium driven by Playwright (its executable path: no browser download, see TESTING-PEERS.md).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from callcenter.testing.server import ServerProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless as root needs --no-sandbox; the rest stops Chromium reaching for outside hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct-horse-battery"
USERS = {"ada": "admin", "sue": "supervisor", "sam": "agent"}


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium (Debian package) is not installed")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


StartWeb = Callable[..., ServerProcess]


@pytest.fixture
def start_web(tmp_path: Path) -> Iterator[StartWeb]:
    """start_web(config=YAML, agents={name: skills}, **CALLCENTER_env) → a started server with the users
    in USERS (password PASSWORD; sam works as SIP agent sam) and the given SIP agents."""
    servers: list[ServerProcess] = []

    def start(config: str | None = None, agents: dict[str, str] | None = None, **env: Any) -> ServerProcess:
        server = ServerProcess(
            tmp_path / f"server{len(servers)}", env={k: str(v) for k, v in env.items()}, config=config
        )
        servers.append(server)
        server.data_dir.mkdir(parents=True)
        # Agents and users go in before start-up so the routing board knows them from the beginning.
        for name, skills in {"sam": "sales:1", **(agents or {})}.items():
            server.cli("agents", "add", name, "--password", "sip-secret-1", "--skills", skills)
        for name, role in USERS.items():
            server.cli("users", "add", name, "--role", role, "--password", PASSWORD)
        return server.start(timeout=60)

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
    errors = {str(server.data_dir): server.errors() for server in servers if server.log_path.exists()}
    assert not any(errors.values()), f"the server logged errors: {errors}"


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[[ServerProcess], Any]]:
    """new_page(server) → a Playwright page in a fresh context (its own cookies) on the server."""
    contexts: list[Any] = []

    def make(server: ServerProcess) -> Any:
        context = browser.new_context(base_url=f"http://127.0.0.1:{server.http_port}")
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


def _log_in(page: Any, username: str, password: str = PASSWORD, path: str = "/") -> None:
    page.goto(path)
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login-button")


LogIn = Callable[..., None]


@pytest.fixture
def log_in() -> LogIn:
    """log_in(page, username, password=PASSWORD, path="/"): open `path` (pages redirect to the login
    form), fill the form in and submit it."""
    return _log_in
