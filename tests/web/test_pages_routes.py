"""callcenter/api/pages.py without a browser: which page each role gets, redirects to the login form,
the static file whitelist, security headers, and the live call list's roles."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import SQLModel

import callcenter.auth.models  # noqa: F401 - registers the tables
from callcenter.api.access import Access
from callcenter.api.pages import create_pages_router
from callcenter.auth.service import UserService
from callcenter.store.db import make_engine

PASSWORD = "correct-horse-battery"
CALLS = [{"sip_call_id": "c1", "caller": "1001", "queue": "sales", "transcript": [{"text": "secret"}]}]


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setattr(
        "callcenter.auth.passwords._hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )
    engine = make_engine(f"sqlite:///{tmp_path / 'cc.db'}")
    SQLModel.metadata.create_all(engine)
    users = UserService(engine)
    for name, role in {"ada": "admin", "sue": "supervisor", "sam": "agent"}.items():
        users.add_user(name, role, PASSWORD)
    users.add_user("tia", "supervisor")  # a one-time password, not changed yet
    access = Access(users)
    app = FastAPI()
    app.state.users = users
    app.include_router(access.router())
    app.include_router(create_pages_router(access, live_calls=lambda: CALLS))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c
    engine.dispose()


def login(client: TestClient, username: str, password: str = PASSWORD) -> None:
    response = client.post("/api/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text


def get(client: TestClient, path: str) -> Any:
    return client.get(path, follow_redirects=False)


def test_the_login_page_is_served_to_anyone_with_security_headers(client: TestClient) -> None:
    response = get(client, "/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'id="login-form"' in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/agent", "/wallboard", "/admin"])
def test_pages_without_a_session_redirect_to_the_login_form_with_the_page_asked_for(
    client: TestClient, path: str
) -> None:
    response = get(client, f"{path}?flow=x")
    assert response.status_code == 303
    assert response.headers["location"] == f"/?next={path}%3Fflow%3Dx&why=login"


@pytest.mark.parametrize(
    ("user", "allowed", "refused"),
    [
        ("ada", ["/admin", "/wallboard", "/agent"], []),
        ("sue", ["/wallboard", "/agent"], ["/admin"]),
        ("sam", ["/agent"], ["/admin", "/wallboard"]),
    ],
)
def test_each_role_opens_its_pages_and_is_sent_back_from_the_others(
    client: TestClient, user: str, allowed: list[str], refused: list[str]
) -> None:
    login(client, user)
    for path in allowed:
        response = get(client, path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
    for path in refused:
        response = get(client, path)
        assert response.status_code == 303, path
        assert response.headers["location"] == f"/?next={path}&why=role"


def test_a_user_with_a_one_time_password_gets_no_page_until_it_is_changed(client: TestClient) -> None:
    # tia's generated one-time password is not kept: set a known one that must still be changed.
    _users(client).set_password("tia", "a-one-time-pass", must_change=True)
    login(client, "tia", "a-one-time-pass")
    response = get(client, "/wallboard")
    assert response.status_code == 303
    assert response.headers["location"] == "/?next=/wallboard&why=login"
    change = {"current": "a-one-time-pass", "new": "a-fresh-secret"}
    assert client.post("/api/auth/password", json=change).is_success
    assert get(client, "/wallboard").status_code == 200


def test_only_known_static_files_are_served_with_their_types(client: TestClient) -> None:
    js = get(client, "/static/common.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert get(client, "/static/style.css").headers["content-type"].startswith("text/css")
    for bad in ["/static/nope.js", "/static/..%2Fapi%2Fpages.py", "/static/%2E%2E/__init__.py"]:
        assert get(client, bad).status_code == 404, bad


def test_the_live_call_list_is_for_supervisors_and_leaves_transcripts_out(client: TestClient) -> None:
    assert get(client, "/api/live-calls").status_code == 401
    login(client, "sam")
    assert get(client, "/api/live-calls").status_code == 403
    login(client, "sue")
    response = get(client, "/api/live-calls")
    assert response.status_code == 200
    assert response.json() == [{"sip_call_id": "c1", "caller": "1001", "queue": "sales"}]


def _users(client: TestClient) -> UserService:
    app = client.app
    assert isinstance(app, FastAPI)
    users: UserService = app.state.users
    return users
