"""``/api/flows`` through FastAPI's TestClient, on a real SQLite file and a real flows folder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from callcenter.api.access import Access
from callcenter.api.flows import flows_router
from callcenter.auth.service import UserService
from callcenter.ivr.registry import FlowRegistry
from callcenter.store import Store

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def flow_text(flow_id: str = "main", greeting: str = "Hello") -> str:
    return (
        f"id: {flow_id}\nlanguage: en-GB\nstart: welcome\nnodes:\n"
        f"  welcome:\n    type: say\n    text: {greeting}\n    next: bye\n"
        "  bye:\n    type: hangup\n"
    )


INVALID = flow_text(greeting="Oops").replace("next: bye", "nxt: bye")  # line 8, column 5


def make_client(
    tmp_path: Path, token: str | None = TOKEN, max_body: int = 256 * 1024, *, auth: bool = True
) -> TestClient:
    """The flows routes on a real store; requests carry the admin token unless ``auth`` is False."""
    flows_dir = tmp_path / "flows"
    flows_dir.mkdir(exist_ok=True)
    if not (flows_dir / "main.yaml").exists():
        (flows_dir / "main.yaml").write_text(flow_text(), encoding="utf-8")
    store = Store(f"sqlite:///{tmp_path / 'data' / 'callcenter.db'}")
    store.create_all()
    registry = FlowRegistry(store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await registry.load(flows_dir)  # in the app's own event loop, as the server does
        yield

    app = FastAPI(lifespan=lifespan)
    access = Access(UserService(store.engine), admin_token=token)
    app.include_router(access.router())
    app.include_router(flows_router(registry, access=access, max_body_bytes=max_body))
    app.state.users = access.users
    return TestClient(app, headers=AUTH if auth else None)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path) as c:
        yield c


def test_list_and_read_the_live_flows(client: TestClient) -> None:
    [entry] = client.get("/api/flows").json()
    assert {k: entry[k] for k in ("id", "language", "version", "author", "source")} == {
        "id": "main",
        "language": "en-GB",
        "version": 1,
        "author": "file",
        "source": "file",
    }
    assert entry["created_at"].endswith("+00:00")
    flow = client.get("/api/flows/main").json()
    assert (flow["version"], flow["yaml"]) == (1, flow_text())
    assert client.get("/api/flows/nope").status_code == 404


def test_publish_then_history_version_and_rollback(client: TestClient, tmp_path: Path) -> None:
    put = client.put(
        "/api/flows/main",
        content=flow_text(greeting="Welcome"),
        params={"author": "alice", "message": "warmer greeting"},
        headers={**AUTH, "Content-Type": "application/yaml"},
    )
    assert put.status_code == 200 and put.json() == {"id": "main", "version": 2, "changed": True}
    assert (tmp_path / "flows" / "main.yaml").read_text(encoding="utf-8") == flow_text(greeting="Welcome")
    versions = client.get("/api/flows/main/versions").json()
    assert [(v["version"], v["author"], v["source"], v["message"]) for v in versions] == [
        (1, "file", "file", "loaded from file"),
        (2, "alice", "api", "warmer greeting"),
    ]
    v2 = client.get("/api/flows/main/versions/2").json()
    assert v2["yaml"] == flow_text(greeting="Welcome") and "+    text: Welcome" in v2["diff"]
    assert client.get("/api/flows/main/versions/9").status_code == 404

    back = client.post("/api/flows/main/rollback", json={"version": 1, "author": "bob"}, headers=AUTH)
    assert back.status_code == 200 and back.json() == {"id": "main", "version": 3, "changed": True}
    live = client.get("/api/flows/main").json()
    assert (live["version"], live["yaml"], live["author"], live["source"]) == (
        3,
        flow_text(),
        "bob",
        "rollback",
    )
    missing = client.post("/api/flows/main/rollback", json={"version": 42}, headers=AUTH)
    assert missing.status_code == 404
    assert client.post("/api/flows/main/rollback", json={"version": 0}, headers=AUTH).status_code == 422


def test_an_invalid_flow_is_refused_with_positions_and_the_old_one_stays(client: TestClient) -> None:
    response = client.put("/api/flows/main", content=INVALID, headers=AUTH)
    assert response.status_code == 422
    body = response.json()
    assert body["live_version"] == 1
    [error] = body["errors"]
    assert (error["line"], error["column"], error["node"]) == (8, 5, "welcome")
    assert error["message"] == "unknown key 'nxt' (did you mean 'next'?)"
    assert client.get("/api/flows/main").json()["yaml"] == flow_text()


def test_check_reports_errors_without_publishing(client: TestClient) -> None:
    bad = client.post("/api/flows/main/check", content=INVALID, headers=AUTH).json()
    assert bad["ok"] is False and [(e["line"], e["column"]) for e in bad["errors"]] == [(8, 5)]
    syntax = client.post("/api/flows/main/check", content="id: [unclosed\n", headers=AUTH).json()
    assert syntax["errors"][0]["kind"] == "yaml" and syntax["errors"][0]["line"] == 2
    good = client.post("/api/flows/main/check", content=flow_text(greeting="Hi"), headers=AUTH).json()
    assert good == {"ok": True, "errors": []}
    assert client.get("/api/flows/main").json()["version"] == 1


def test_a_new_flow_is_created_with_201(client: TestClient, tmp_path: Path) -> None:
    response = client.put("/api/flows/sales", content=flow_text("sales"), headers=AUTH)
    assert response.status_code == 201 and response.json()["version"] == 1
    assert (tmp_path / "flows" / "sales.yaml").is_file()
    again = client.put("/api/flows/sales", content=flow_text("sales"), headers=AUTH)
    assert again.status_code == 200 and again.json() == {"id": "sales", "version": 1, "changed": False}


def test_the_flow_id_in_the_path_must_match_the_text(client: TestClient) -> None:
    response = client.put("/api/flows/main", content=flow_text("other"), headers=AUTH)
    assert response.status_code == 422 and response.json()["errors"][0]["kind"] == "flow-id"
    assert client.put("/api/flows/bad%20id", content=flow_text(), headers=AUTH).status_code == 422
    assert client.post("/api/flows/bad%20id/check", content=flow_text(), headers=AUTH).status_code == 422


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}],
)
def test_every_route_needs_credentials(tmp_path: Path, headers: dict[str, str]) -> None:
    with make_client(tmp_path, auth=False) as client:
        for method, url, kwargs in [
            ("GET", "/api/flows", {}),
            ("GET", "/api/flows/main", {}),
            ("GET", "/api/flows/main/versions", {}),
            ("GET", "/api/flows/main/versions/1", {}),
            ("PUT", "/api/flows/main", {"content": flow_text(greeting="x")}),
            ("POST", "/api/flows/main/rollback", {"json": {"version": 1}}),
            ("POST", "/api/flows/main/check", {"content": flow_text()}),
        ]:
            response = client.request(method, url, headers=headers, **kwargs)  # type: ignore[arg-type]
            assert response.status_code == 401, (method, url)
            assert response.headers["www-authenticate"] == "Bearer"
        assert client.get("/api/flows/main", headers=AUTH).json()["version"] == 1


def test_supervisors_read_admins_publish_under_their_own_name_and_it_is_audited(tmp_path: Path) -> None:
    with make_client(tmp_path, token=None, auth=False) as client:
        users: UserService = client.app.state.users  # type: ignore[attr-defined]
        users.add_user("sue", "supervisor", "sue's password")
        users.add_user("ann", "admin", "ann's password")
        client.post("/api/auth/login", json={"username": "sue", "password": "sue's password"})
        assert client.get("/api/flows/main").json()["version"] == 1
        refused = client.put("/api/flows/main", content=flow_text(greeting="Sue was here"))
        assert refused.status_code == 403
        client.post("/api/auth/logout")
        client.post("/api/auth/login", json={"username": "ann", "password": "ann's password"})
        # a user cannot publish under someone else's name: the author is who is logged in
        published = client.put(
            "/api/flows/main", params={"author": "mallory"}, content=flow_text(greeting="Hi")
        )
        assert published.status_code == 200 and published.json()["version"] == 2
        assert client.get("/api/flows/main").json()["author"] == "ann"
        back = client.post("/api/flows/main/rollback", json={"version": 1})
        assert back.json()["version"] == 3
        audit = client.get("/api/audit").json()
        assert [(e["actor"], e["action"], e["target"], e["detail"]) for e in audit] == [
            ("ann", "flow_rolled_back", "main", {"to_version": 1, "version": 3}),
            ("ann", "flow_published", "main", {"version": 2}),
        ]


def test_bodies_are_bounded(tmp_path: Path) -> None:
    with make_client(tmp_path, max_body=1024) as client:
        big = flow_text() + "#" * 2000 + "\n"
        assert client.put("/api/flows/main", content=big, headers=AUTH).status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
            yield big.encode()

        assert client.put("/api/flows/main", content=chunks(), headers=AUTH).status_code == 413
        assert client.put("/api/flows/main", content=b"\xff\xfe", headers=AUTH).status_code == 400
        assert client.get("/api/flows/main").json()["version"] == 1
