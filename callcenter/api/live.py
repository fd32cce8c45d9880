"""``GET /api/live``: a WebSocket pushing call, queue, agent, ticket, flow and KB events as they happen.

Authentication: the session cookie (pages), or a bearer token as ``?token=`` (browsers cannot set
headers on a WebSocket) or an ``Authorization`` header (scripts). The handshake is accepted first and
then closed with **4401** (no or bad credentials) or **4403** (one-time password to change, or a
cookie sent from another site's page: cross-site WebSocket hijacking is refused by checking
``Origin`` against ``Host``), so browsers can tell the two apart.

Messages (JSON text): first ``{"type": "snapshot", "at", "queues", "agents"}``, then one
``{"type": "call"|"queue"|"agent"|"ticket"|"flow"|"kb", "event", "at", "data"}`` per change.
``queue_changed`` summarises a queue (waiting, ringing, longest wait, agents by state) whenever one of
those changes. Supervisors and admins get everything; an agent gets their own agent's events, the
calls offered to them, ``queue_changed`` summaries and KB changes (their snapshot lists only
themselves).

Keepalive: the server sends ``{"type": "ping"}`` every ``ping_interval_s``; a client that has sent
nothing (e.g. ``{"type": "pong"}``) for ``idle_timeout_s`` is closed with 4408. A client may send
``{"type": "ping"}`` any time and gets ``{"type": "pong"}``. A client too slow to keep up (its queue
of unsent events overflowed) is closed with 1013 and should reconnect (a fresh snapshot follows).

The credentials are checked again at every ping: a session that ended meanwhile (logout, expiry, a
revoked token, a disabled user) closes the socket with 4401; a changed role or linked agent with 4403
(the client reconnects and gets what its new role may see).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from callcenter.api.access import COOKIE, SUPERVISORS, Access
from callcenter.auth.service import Principal
from callcenter.events import LIVE_KINDS, Event, EventBus, SubscriptionClosed

__all__ = ["LiveHub", "agent_filter", "create_live_router"]

log = logging.getLogger("callcenter.api.live")

Snapshot = Callable[[], dict[str, Any]]

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_IDLE = 4408
CLOSE_TRY_AGAIN = 1013  # RFC 6455 §7.4.1 registry: "Try Again Later"

# Events after which a queue's summary may have changed.
_QUEUE_TOUCHING = ("call", "queue", "agent")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _summary(queue: dict[str, Any]) -> dict[str, Any]:
    return {
        "waiting": queue.get("waiting", 0),
        "ringing": queue.get("ringing", 0),
        "agents": queue.get("agents", {}),
    }


class LiveHub:
    """The bus plus what a new client is shown first; turns queue changes into ``queue_changed``.

    ``start()`` (on the event loop) makes it listen; done lazily by the first client too.
    """

    def __init__(self, bus: EventBus, snapshot: Snapshot | None = None, *, client_queue: int = 1000) -> None:
        self.bus = bus
        self.snapshot = snapshot
        self.client_queue = client_queue
        self._last: dict[str, dict[str, Any]] = {}
        self._pending = False
        self._stop: Callable[[], None] | None = None
        self.clients = 0

    def start(self) -> None:
        if self._stop is not None:
            return
        self._last = self._queue_summaries()
        self._stop = self.bus.listen(self._on_event, remote=True)  # other nodes' changes too

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None

    def initial(self) -> dict[str, Any]:
        snap = self.snapshot() if self.snapshot is not None else {}
        return {
            "type": "snapshot",
            "at": _now_iso(),
            "queues": snap.get("queues", {}),
            "agents": snap.get("agents", {}),
        }

    def _queue_summaries(self) -> dict[str, dict[str, Any]]:
        if self.snapshot is None:
            return {}
        return {name: _summary(q) for name, q in self.snapshot().get("queues", {}).items()}

    def _on_event(self, event: Event) -> None:
        if event.kind not in _QUEUE_TOUCHING or event.name == "queue_changed" or self.snapshot is None:
            return
        if not self._pending:  # a burst of events (an answer changes queue and agents) → one check
            self._pending = True
            asyncio.get_running_loop().call_soon(self._check_queues)

    def _check_queues(self) -> None:
        self._pending = False
        assert self.snapshot is not None
        try:
            queues = self.snapshot().get("queues", {})
        except Exception:  # noqa: BLE001 - a failing snapshot must not break event delivery
            log.exception("queue snapshot failed")
            return
        for name, queue in queues.items():
            summary = _summary(queue)
            if self._last.get(name) == summary:
                continue
            self._last[name] = summary
            data = {"queue": name, **summary, "longest_wait_s": queue.get("longest_wait_s", 0.0)}
            self.bus.publish(Event("queue", "queue_changed", datetime.now(UTC), data))


def agent_filter(agent: str | None) -> Callable[[Event], bool]:
    """What an agent's live channel passes: stateful (it learns the agent's calls from offers), so
    one instance per connection, called with every event in order."""
    calls: set[str] = set()

    def accept(event: Event) -> bool:
        if event.kind not in LIVE_KINDS:
            return False
        data, call_id = event.data, event.call_id
        if event.kind == "kb":
            return True
        if event.kind == "queue" and event.name == "queue_changed":
            return True
        if agent is None:
            return False
        if event.kind == "chat":  # chats name their agent (callcenter.chat.engine): only one's own
            return data.get("agent") == agent or data.get("previous_agent") == agent
        if event.kind == "agent":
            mine = data.get("agent") == agent or agent in (data.get("agents") or ())
            if mine and call_id is not None and event.name in ("agent_offered", "agent_answered"):
                calls.add(call_id)
            return bool(mine)
        if call_id is None or call_id not in calls:
            return False
        if event.kind == "call" and event.name == "call_ended":
            calls.discard(call_id)
        return event.kind in ("call", "queue", "ticket")

    return accept


def _everything(event: Event) -> bool:
    return event.kind in LIVE_KINDS


def _own_snapshot(message: dict[str, Any], principal: Principal) -> dict[str, Any]:
    if principal.role in SUPERVISORS:
        return message
    agents = message.get("agents", {})
    mine = {principal.agent: agents[principal.agent]} if principal.agent in agents else {}
    return {**message, "agents": mine}


def _same_origin(ws: WebSocket) -> bool:
    origin = ws.headers.get("origin")
    if origin is None:
        return True  # not a browser: a cookie without Origin was not sent by a web page
    host = ws.headers.get("host", "")
    return origin != "null" and origin.split("://", 1)[-1].lower() == host.lower()


def _identify(access: Access, ws: WebSocket, token: str | None) -> tuple[Principal | None, int]:
    """(principal, 0) or (None, close code). Blocking (database): run in a thread."""
    authorization = f"Bearer {token}" if token else ws.headers.get("authorization")
    if authorization:
        # The bearer path of Access.identify reads only the header, never the request.
        principal = access.identify(cast(Request, ws), authorization)
    else:
        cookie = ws.cookies.get(COOKIE)
        if cookie is None or access.users is None:
            return None, CLOSE_UNAUTHORIZED
        if not _same_origin(ws):
            return None, CLOSE_FORBIDDEN
        principal = access.users.authenticate(cookie, kind="cookie")
    if principal is None:
        return None, CLOSE_UNAUTHORIZED
    if principal.must_change_password:
        return None, CLOSE_FORBIDDEN
    return principal, 0


def _recheck(access: Access, ws: WebSocket, token: str | None, first: Principal) -> tuple[int, str] | None:
    """None while the connection's credentials still stand for the same user, role and agent; else the
    close code and reason. Blocking (database): run in a thread."""
    principal, code = _identify(access, ws, token)
    if principal is None:
        return code, "session ended" if code == CLOSE_UNAUTHORIZED else "not allowed"
    if (principal.username, principal.role, principal.agent) != (first.username, first.role, first.agent):
        return CLOSE_FORBIDDEN, "role changed: reconnect"
    return None


def create_live_router(
    hub: LiveHub,
    access: Access,
    *,
    ping_interval_s: float = 20.0,
    idle_timeout_s: float = 60.0,
) -> APIRouter:
    router = APIRouter(tags=["live"])

    @router.websocket("/api/live")
    async def live(ws: WebSocket, token: str | None = None) -> None:
        principal, code = await asyncio.to_thread(_identify, access, ws, token)
        await ws.accept()
        if principal is None:
            await ws.close(code, "log in first" if code == CLOSE_UNAUTHORIZED else "not allowed")
            return
        hub.start()
        accept = _everything if principal.role in SUPERVISORS else agent_filter(principal.agent)
        # Subscribed before the snapshot is taken: no change falls between the two.
        sub = hub.bus.subscribe(hub.client_queue, accept)
        hub.clients += 1
        try:
            await ws.send_text(json.dumps(_own_snapshot(hub.initial(), principal), default=str))

            async def still_valid() -> tuple[int, str] | None:
                assert principal is not None
                return await asyncio.to_thread(_recheck, access, ws, token, principal)

            await _serve(ws, sub, ping_interval_s, idle_timeout_s, still_valid)
        except WebSocketDisconnect:
            pass
        finally:
            hub.clients -= 1
            sub.close()

    return router


async def _serve(
    ws: WebSocket,
    sub: Any,
    ping_interval_s: float,
    idle_timeout_s: float,
    still_valid: Callable[[], Awaitable[tuple[int, str] | None]],
) -> None:
    loop = asyncio.get_running_loop()
    last_heard = loop.time()
    send_lock = asyncio.Lock()

    async def send(text: str) -> None:
        async with send_lock:
            await ws.send_text(text)

    async def reader() -> None:
        nonlocal last_heard
        while True:
            text = await ws.receive_text()
            last_heard = loop.time()
            with contextlib.suppress(ValueError, AttributeError):
                if json.loads(text).get("type") == "ping":
                    await send('{"type":"pong"}')

    async def writer() -> tuple[int, str] | None:
        next_ping = loop.time() + ping_interval_s
        while True:
            try:
                event = await asyncio.wait_for(sub.get(), max(0.0, next_ping - loop.time()))
            except TimeoutError:
                if loop.time() - last_heard >= idle_timeout_s:
                    return CLOSE_IDLE, "no pong"
                if (ended := await still_valid()) is not None:
                    return ended
                await send('{"type":"ping"}')
                next_ping = loop.time() + ping_interval_s
                continue
            except SubscriptionClosed as exc:
                return (CLOSE_TRY_AGAIN, "too slow: reconnect") if exc.reason == "slow" else None
            await send(event.json())

    read_task = asyncio.create_task(reader())
    write_task = asyncio.create_task(writer())
    try:
        done, _ = await asyncio.wait({read_task, write_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (read_task, write_task):
            task.cancel()
        await asyncio.gather(read_task, write_task, return_exceptions=True)
    if write_task in done and not write_task.cancelled() and write_task.exception() is None:
        closing = write_task.result()
        if closing is not None and ws.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await ws.close(*closing)
