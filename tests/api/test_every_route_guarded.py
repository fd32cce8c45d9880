"""Every route of the real application answers 401 without credentials and 403 for a role it does not
admit — walked over ``app.routes`` of the app the composition root (callcenter/app.py) builds.

``ROUTES`` lists every ``/api`` route (plus ``/metrics`` and any route outside ``/api`` that checks
roles) with the roles it admits, or ``PUBLIC``. A new route without an entry fails the test, and so
does an entry that disagrees with the roles the route's own dependency admits: adding a route means
deciding here who may call it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import socket
from collections.abc import AsyncIterator, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute

import callcenter.app as composition
from callcenter.api.access import ADMIN, STAFF, SUPERVISORS
from callcenter.core.config import load_settings
from callcenter.testing.server import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

PUBLIC: tuple[str, ...] = ()
PW = "correct horse battery"
ROOT = Path(__file__).resolve().parents[2]

# Who may call what. PUBLIC entries say why they need no credentials.
ROUTES: dict[str, tuple[str, ...]] = {
    "POST /api/auth/login": PUBLIC,  # how credentials are obtained
    "POST /api/auth/logout": PUBLIC,  # only revokes the cookie it is sent with
    "GET /api/demo/orders/{number}": PUBLIC,  # the demo CRM the sample hotline's http node calls
    "GET /api/auth/me": STAFF,
    "POST /api/auth/password": STAFF,
    "POST /api/auth/tokens": STAFF,
    "GET /api/users": ADMIN,
    "POST /api/users": ADMIN,
    "PATCH /api/users/{username}": ADMIN,
    "DELETE /api/users/{username}": ADMIN,
    "POST /api/users/{username}/password": ADMIN,
    "POST /api/users/{username}/unlock": ADMIN,
    "GET /api/audit": ADMIN,
    "WS /api/live": STAFF,  # checked in the handler: closes with 4401 (browsers see no HTTP status)
    "GET /api/kb/search": STAFF,
    "GET /api/kb/articles": STAFF,
    "GET /api/kb/articles/{key}": STAFF,
    "POST /api/kb/articles": SUPERVISORS,
    "PATCH /api/kb/articles/{key}": SUPERVISORS,
    "POST /api/kb/articles/{key}/publish": SUPERVISORS,
    "POST /api/kb/articles/{key}/vote": STAFF,
    "GET /api/kb/gaps": SUPERVISORS,
    "GET /metrics": SUPERVISORS,  # or http.metrics_token
    "GET /api/recordings/{call_id}": STAFF,
    "GET /api/reports/queues": SUPERVISORS,
    "GET /api/reports/intervals": SUPERVISORS,
    "GET /api/calls": STAFF,
    "GET /api/queues": STAFF,
    "GET /api/agents/live": STAFF,
    "GET /api/cluster": SUPERVISORS,
    "POST /api/agents/{username}/state": STAFF,
    "GET /api/queues/config": SUPERVISORS,
    "POST /api/queues/config": ADMIN,
    "PATCH /api/queues/config/{name}": ADMIN,
    "DELETE /api/queues/config/{name}": ADMIN,
    "GET /api/business-hours": SUPERVISORS,
    "POST /api/business-hours": ADMIN,
    "PATCH /api/business-hours/{name}": ADMIN,
    "DELETE /api/business-hours/{name}": ADMIN,
    "GET /api/skills": SUPERVISORS,
    "GET /api/agents": SUPERVISORS,
    "POST /api/agents": ADMIN,
    "PATCH /api/agents/{name}": ADMIN,
    "DELETE /api/agents/{name}": ADMIN,
    "POST /api/calls/{call_id}/hold": STAFF,
    "POST /api/calls/{call_id}/resume": STAFF,
    "POST /api/calls/{call_id}/transfer": STAFF,
    "POST /api/calls/{call_id}/transfer/complete": STAFF,
    "POST /api/calls/{call_id}/transfer/cancel": STAFF,
    "GET /api/calls/{call_id}": STAFF,
    "POST /api/calls/{call_id}/monitor": SUPERVISORS,
    "POST /api/calls/{call_id}/monitor/mode": SUPERVISORS,
    "DELETE /api/calls/{call_id}/monitor": SUPERVISORS,
    "GET /api/calls/{call_id}/monitor": SUPERVISORS,
    "GET /api/prompts": SUPERVISORS,
    "POST /api/prompts": ADMIN,
    "GET /api/prompts/{name}": SUPERVISORS,
    "DELETE /api/prompts/{name}": ADMIN,
    "POST /api/tts/preview": SUPERVISORS,
    "GET /api/wrap-up-codes": STAFF,
    "POST /api/calls/{call_id}/wrap-up": STAFF,
    "GET /api/calls/{call_id}/ticket-draft": STAFF,
    "GET /api/calls/{call_id}/customer": STAFF,
    "GET /api/chats/{conversation_id}/customer": STAFF,
    "GET /api/flows": SUPERVISORS,
    "GET /api/flows/{flow_id}": SUPERVISORS,
    "GET /api/flows/{flow_id}/versions": SUPERVISORS,
    "GET /api/flows/{flow_id}/versions/{version}": SUPERVISORS,
    "POST /api/flows/{flow_id}/check": ADMIN,
    "PUT /api/flows/{flow_id}": ADMIN,
    "POST /api/flows/{flow_id}/rollback": ADMIN,
    "GET /api/conversations": STAFF,  # agents: the ones they handled
    "GET /api/conversations/{conversation_id}": STAFF,
    "GET /api/chats": STAFF,
    "GET /api/chats/{conversation_id}": STAFF,
    "POST /api/chats/{conversation_id}/messages": STAFF,
    "POST /api/chats/{conversation_id}/close": STAFF,
    "POST /api/chats/{conversation_id}/handback": STAFF,
    "POST /api/chats/{conversation_id}/transfer": STAFF,
    "POST /api/chats/away": STAFF,
    "POST /chat/agent/typing/{conversation_id}": STAFF,
    "GET /api/live-calls": SUPERVISORS,
    "GET /api/tickets": STAFF,
    "GET /api/tickets/{number}": STAFF,
    "POST /api/tickets": STAFF,
    "PATCH /api/tickets/{number}": STAFF,
    "POST /api/tickets/{number}/notes": STAFF,
    "GET /api/customers": STAFF,
    "GET /api/customers/{customer_id}": STAFF,
    "POST /api/customers": STAFF,
    "PATCH /api/customers/{customer_id}": STAFF,
    "GET /api/csat": SUPERVISORS,
}


@dataclass
class Route:
    key: str  # "METHOD /path" ("WS /path" for a WebSocket)
    method: str
    path: str
    admitted: frozenset[str] | None  # what the route's role dependency admits (None: it has none)


@dataclass
class Served:
    app: FastAPI
    routes: list[Route]
    tokens: dict[str, str]  # role → a bearer token of a user with that role


def _admitted(call: Any, depth: int = 0) -> frozenset[str] | None:
    """The roles an ``Access.require`` dependency admits: its closure's ``admitted``, also when it is
    wrapped in another dependency (``/metrics`` takes a scrape token or ``require``'s check)."""
    if depth > 3 or not inspect.isfunction(call):
        return None
    found = inspect.getclosurevars(call).nonlocals
    roles = found.get("admitted")
    if isinstance(roles, frozenset):
        return roles
    for value in found.values():
        inner = _admitted(value, depth + 1)
        if inner is not None:
            return inner
    return None


def _route_contexts(app: FastAPI) -> Iterator[Any]:
    try:  # FastAPI >= 0.16x keeps included routers lazily: the flattened view
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - older FastAPI lists them flat
        yield from app.routes
        return
    yield from iter_route_contexts(app.routes)


def _walk(app: FastAPI) -> list[Route]:
    out: list[Route] = []
    for ctx in _route_contexts(app):
        original = getattr(ctx, "original_route", ctx)
        if not isinstance(original, APIRoute | APIWebSocketRoute):
            continue  # /docs, /openapi.json: Starlette routes FastAPI adds
        roles: frozenset[str] | None = None
        stack = list(ctx.dependant.dependencies)
        while stack and roles is None:
            dep = stack.pop(0)
            roles = _admitted(dep.call)
            stack.extend(dep.dependencies)
        if isinstance(original, APIWebSocketRoute):
            out.append(Route(f"WS {ctx.path}", "WS", ctx.path, roles))
            continue
        for method in sorted(ctx.methods - {"HEAD"}):
            out.append(Route(f"{method} {ctx.path}", method, ctx.path, roles))
    return out


def _checked(route: Route) -> bool:
    return route.path.startswith("/api/") or route.path == "/metrics" or route.admitted is not None


class _NoServer:
    """Stands in for uvicorn: hands the built app out instead of serving it on the socket."""

    def __init__(self, config: Any, built: asyncio.Future[Any]) -> None:
        built.set_result(config.app)
        self._exit = asyncio.Event()

    @property
    def should_exit(self) -> bool:
        return self._exit.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value:
            self._exit.set()

    async def serve(self, sockets: Any = None) -> None:
        await self._exit.wait()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    data = tmp_path_factory.mktemp("guarded")
    rtp = 32000 + (free_port() % 100) * 20
    settings = load_settings(
        Path("/dev/null"),
        {
            "data_dir": str(data),
            "sip.host": "127.0.0.1",
            "sip.host_v6": None,
            "sip.port": free_port(),
            "http.host": "127.0.0.1",
            "http.port": free_port(socket.SOCK_STREAM),
            "http.metrics_token": "scrape-token-for-prometheus",
            "media.rtp_port_min": rtp,
            "media.rtp_port_max": rtp + 18,
            "ivr.flows_dir": str(ROOT / "ivr_flows"),
            "ivr.intents_file": str(ROOT / "ivr_flows" / "intents" / "intents.yaml"),
            "wechat.token": "wechatToken1",  # so the WeChat callbacks are mounted too
        },
        env={},
    )
    built: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            "callcenter.auth.passwords._hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        )
        mp.setattr(composition, "_HttpServer", lambda config: _NoServer(config, built))

        async def no_prerender(self: composition.Application) -> None:
            return None  # synthesising every prompt has nothing to do with the routes

        mp.setattr(composition.Application, "_prerender_prompts", no_prerender)
        application = composition.Application(settings)
        await application.start()
        stop = asyncio.Event()
        running = asyncio.create_task(application.run_until_stopped(stop))
        try:
            app = await asyncio.wait_for(built, 60)
            users = application.users
            tokens = {}
            for name, role in (("al", "agent"), ("sue", "supervisor"), ("ada", "admin")):
                users.add_user(name, role, PW, agent="al" if role == "agent" else None)
                tokens[role] = users.create_api_token(name, "tests")
            yield Served(app, _walk(app), tokens)
        finally:
            stop.set()
            await asyncio.wait_for(running, 60)
            if application.http_socket is not None:
                application.http_socket.close()


def _url(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)  # every path parameter: a dummy that is a number and a name


async def _ask(app: FastAPI, route: Route, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if route.method == "WS":
        return await _websocket_close_code(app, _url(route.path), headers)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        body: dict[str, Any] | None = {} if route.method in ("POST", "PUT", "PATCH") else None
        response = await client.request(route.method, _url(route.path), json=body, headers=headers)
        return response.status_code


async def _websocket_close_code(app: FastAPI, path: str, headers: dict[str, str]) -> int:
    """The close code of a WebSocket handshake, driven over raw ASGI (httpx has no WebSockets)."""
    inbox: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "websocket.connect"})
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "websocket.close":
            await inbox.put({"type": "websocket.disconnect", "code": message.get("code", 1000)})

    scope = {
        "type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "http_version": "1.1",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *((k.lower().encode(), v.encode()) for k, v in headers.items())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80), "subprotocols": [],
    }  # fmt: skip
    await asyncio.wait_for(app(scope, inbox.get, send), 30)
    closes = [m for m in sent if m["type"] == "websocket.close"]
    return int(closes[0].get("code", 1000)) if closes else 0


def _report(wrong: dict[str, int], expected: int) -> str:
    return f"expected {expected} from: " + json.dumps(wrong, indent=1)


async def test_every_route_has_an_entry_that_matches_its_role_dependency(served: Served) -> None:
    routes = {r.key: r for r in served.routes if _checked(r)}
    assert sorted(set(routes) - set(ROUTES)) == [], (
        "routes without an entry in ROUTES (decide who may call them)"
    )
    assert sorted(set(ROUTES) - set(routes)) == [], "entries in ROUTES for routes the app no longer has"
    disagree = {
        key: (sorted(routes[key].admitted or ()), sorted(roles))
        for key, roles in ROUTES.items()
        if key in routes and routes[key].admitted is not None and routes[key].admitted != frozenset(roles)
    }
    assert disagree == {}, "the route's dependency admits other roles than ROUTES says: (route, table)"
    no_dependency = [k for k, r in routes.items() if ROUTES[k] and r.admitted is None and r.method != "WS"]
    assert no_dependency == [], "routes with roles in ROUTES but no role dependency"


async def test_every_guarded_route_answers_401_without_credentials(served: Served) -> None:
    wrong: dict[str, int] = {}
    for route in served.routes:
        if not _checked(route) or not ROUTES.get(route.key):
            continue
        status = await _ask(served.app, route, None)
        if status != (4401 if route.method == "WS" else 401):
            wrong[route.key] = status
    assert wrong == {}, _report(wrong, 401)


@pytest.mark.parametrize("role", ["agent", "supervisor"])
async def test_a_role_a_route_does_not_admit_gets_403(served: Served, role: str) -> None:
    wrong: dict[str, int] = {}
    asked = 0
    for route in served.routes:
        roles = ROUTES.get(route.key)
        if not _checked(route) or not roles or role in roles:
            continue
        asked += 1
        status = await _ask(served.app, route, served.tokens[role])
        if status != 403:
            wrong[route.key] = status
    assert asked > 0
    assert wrong == {}, _report(wrong, 403)


async def test_the_public_routes_answer_without_credentials(served: Served) -> None:
    public = {r.key: r for r in served.routes if _checked(r) and ROUTES.get(r.key) == PUBLIC}
    assert set(public) == {k for k, v in ROUTES.items() if v == PUBLIC}
    answered = {key: await _ask(served.app, route, None) for key, route in public.items()}
    assert 401 not in answered.values() and 403 not in answered.values(), answered
