"""/api/auth, /api/users and /api/audit through FastAPI's TestClient on a real SQLite file; every
route tried without credentials (401) and with a role it does not admit (403)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from callcenter.api.access import ADMIN, COOKIE, SUPERVISORS, Access
from callcenter.auth.service import Principal, UserService

PW = "correct horse battery"
ADMIN_TOKEN = "static-admin-token-for-scripts"


@pytest.fixture
def app(users: UserService) -> FastAPI:
    access = Access(users, admin_token=ADMIN_TOKEN)
    app = FastAPI()
    app.include_router(access.router())

    supervisors, admins = Depends(access.require(*SUPERVISORS)), Depends(access.require(*ADMIN))

    @app.get("/wallboard-data")
    def wallboard(p: Principal = supervisors) -> dict[str, str]:
        return {"seen_by": p.username}

    @app.post("/admin-thing")
    def admin_thing(p: Principal = admins) -> dict[str, str]:
        return {"done_by": p.username}

    for name, role in (("ann", "admin"), ("sue", "supervisor"), ("al", "agent")):
        users.add_user(name, role, PW)
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def login(client: TestClient, name: str, password: str = PW) -> TestClient:
    r = client.post("/api/auth/login", json={"username": name, "password": password})
    assert r.status_code == 200, r.text
    return client


def test_login_sets_an_httponly_strict_session_cookie(client: TestClient) -> None:
    r = client.post("/api/auth/login", json={"username": "sue", "password": PW})
    assert r.json() == {"username": "sue", "role": "supervisor", "agent": None, "must_change_password": False}
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert client.get("/api/auth/me").json()["username"] == "sue"
    assert client.get("/wallboard-data").json() == {"seen_by": "sue"}
    client.post("/api/auth/logout")
    assert client.get("/api/auth/me").status_code == 401


def test_wrong_password_is_401_and_repeated_failures_lock_with_retry_after(client: TestClient) -> None:
    for _ in range(2):
        r = client.post("/api/auth/login", json={"username": "al", "password": "not the password"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = client.post("/api/auth/login", json={"username": "al", "password": "not the password"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert client.post("/api/auth/login", json={"username": "al", "password": PW}).status_code == 429
    login(client, "ann")
    audit = client.get("/api/audit", params={"action": "account_locked"}).json()
    assert [(e["actor"], e["target"]) for e in audit] == [("al", "al")]
    assert client.post("/api/users/al/unlock").status_code == 200
    client.post("/api/auth/logout")
    login(client, "al")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/users"),
        ("post", "/api/users"),
        ("patch", "/api/users/al"),
        ("delete", "/api/users/al"),
        ("post", "/api/users/al/password"),
        ("post", "/api/users/al/unlock"),
        ("get", "/api/audit"),
        ("post", "/admin-thing"),
    ],
)
def test_admin_routes_need_credentials_and_the_admin_role(client: TestClient, method: str, path: str) -> None:
    body = {"username": "x1", "role": "agent"} if path == "/api/users" and method == "post" else {}
    call = getattr(client, method)
    kwargs = {"json": body} if method in ("post", "patch") else {}
    assert call(path, **kwargs).status_code == 401
    for name in ("al", "sue"):
        login(client, name)
        assert call(path, **kwargs).status_code == 403, name
        client.post("/api/auth/logout")
    assert call(path, headers={"Authorization": "Bearer wrong-token"}, **kwargs).status_code == 401


def test_supervisor_routes_admit_supervisors_and_admins_only(client: TestClient) -> None:
    assert client.get("/wallboard-data").status_code == 401
    login(client, "al")
    assert client.get("/wallboard-data").status_code == 403
    client.post("/api/auth/logout")
    login(client, "ann")
    assert client.get("/wallboard-data").status_code == 200


def test_api_tokens_work_as_bearer_without_a_cookie(app: FastAPI, client: TestClient) -> None:
    login(client, "sue")
    token = client.post("/api/auth/tokens", json={"name": "wallboard tv"}).json()["token"]
    with TestClient(app) as script:
        r = script.get("/wallboard-data", headers={"Authorization": f"Bearer {token}"})
        assert r.json() == {"seen_by": "sue"}
        assert script.get("/wallboard-data", headers={"Authorization": "Basic abc"}).status_code == 401


def test_the_configured_admin_token_acts_as_admin(client: TestClient) -> None:
    r = client.post("/admin-thing", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.json() == {"done_by": "admin-token"}


def test_a_one_time_password_must_be_changed_before_anything_else(client: TestClient) -> None:
    login(client, "ann")
    created = client.post("/api/users", json={"username": "newbie", "role": "supervisor"})
    assert created.status_code == 201
    otp = created.json()["one_time_password"]
    client.post("/api/auth/logout")
    login(client, "newbie", otp)
    assert client.get("/api/auth/me").json()["must_change_password"] is True
    assert client.get("/wallboard-data").status_code == 403
    wrong = client.post("/api/auth/password", json={"current": "guess guess!", "new": "my own good password"})
    assert wrong.status_code == 403
    short = client.post("/api/auth/password", json={"current": otp, "new": "short"})
    assert short.status_code == 422
    ok = client.post("/api/auth/password", json={"current": otp, "new": "my own good password"})
    assert ok.status_code == 200 and ok.json()["must_change_password"] is False
    assert client.get("/wallboard-data").json() == {"seen_by": "newbie"}


def test_admin_actions_are_audited_with_actor_and_target(client: TestClient) -> None:
    login(client, "ann")
    client.post("/api/users", json={"username": "pat", "role": "agent", "password": "pat's password"})
    client.patch("/api/users/pat", json={"role": "supervisor"})
    client.post("/api/users/pat/password", json={})
    client.delete("/api/users/pat")
    entries = client.get("/api/audit").json()
    assert [(e["actor"], e["action"], e["target"]) for e in entries] == [
        ("ann", "user_removed", "pat"),
        ("ann", "password_reset", "pat"),
        ("ann", "user_changed", "pat"),
        ("ann", "user_added", "pat"),
    ]
    assert entries[2]["detail"] == {"role": "supervisor"}
    assert all("password" not in str(e["detail"]) for e in entries)  # never secrets


def test_admins_cannot_lock_themselves_out(client: TestClient) -> None:
    login(client, "ann")
    assert client.delete("/api/users/ann").status_code == 409
    assert client.patch("/api/users/ann", json={"role": "agent"}).status_code == 409
    assert client.patch("/api/users/ann", json={"disabled": True}).status_code == 409


def test_user_errors_are_clear(client: TestClient) -> None:
    login(client, "ann")
    assert client.post("/api/users", json={"username": "al", "role": "agent"}).status_code == 409
    bad = client.post("/api/users", json={"username": "x y", "role": "agent"})
    assert bad.status_code == 422 and "username" in bad.text
    assert client.post("/api/users", json={"username": "q", "role": "boss"}).status_code == 422
    assert client.delete("/api/users/ghost").status_code == 404


def test_a_cross_site_write_with_the_cookie_is_refused(client: TestClient) -> None:
    login(client, "ann")
    r = client.post("/admin-thing", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.text
    same = client.post("/admin-thing", headers={"Origin": "http://testserver"})
    assert same.json() == {"done_by": "ann"}


def test_an_address_failing_logins_across_many_accounts_must_wait_429(users: UserService) -> None:
    """Password spraying: one wrong guess per account never locks an account, so the failures from one
    address are limited too; the wait ends as the window refills."""
    now = [1000.0]
    access = Access(users, login_failures=3, login_window_s=300.0, clock=lambda: now[0])
    app = FastAPI()
    app.include_router(access.router())
    for name in ("u1", "u2", "u3", "u4"):
        users.add_user(name, "agent", PW)
    with TestClient(app) as client:
        for name in ("u1", "u2", "u3"):
            r = client.post("/api/auth/login", json={"username": name, "password": "guess"})
            assert r.status_code == 401
        refused = client.post("/api/auth/login", json={"username": "u4", "password": PW})
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) == 100
        now[0] += 100.0  # one failure's worth refilled: the right password works again
        assert client.post("/api/auth/login", json={"username": "u4", "password": PW}).status_code == 200
        # successful logins cost nothing: a shift of agents behind one NAT address all log in
        for name in ("u1", "u2", "u3", "u4"):
            assert client.post("/api/auth/login", json={"username": name, "password": PW}).status_code == 200
