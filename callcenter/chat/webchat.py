"""The web chat channel: the embeddable widget's server side (registers channel ``webchat``).

Visitor identity: a random visitor id signed with HMAC-SHA256 (``chat.webchat.secret``, else a key
generated once into ``data_dir/webchat_secret``) — ``ID.SIG``. It travels three ways, checked the same:

- the ``cc_visitor`` cookie (HttpOnly; over https ``SameSite=None; Secure; Partitioned`` so it works
  inside other sites — CHIPS keeps it per embedding site; over plain http ``SameSite=Lax``, as browsers
  drop ``SameSite=None`` without ``Secure``);
- because browsers increasingly block third-party cookies (Safari ITP, Firefox TCP, Chrome's
  settings), the widget also keeps the same signed token in the embedding site's ``localStorage`` and
  sends it as the ``X-Chat-Visitor`` header (and in the WebSocket's first frame: no token in URLs, so
  none in access logs or Referer headers). The header wins over the cookie.

Routes (all under ``/chat``): ``POST /chat/session`` (identity + history + online), ``GET /chat/ws``
(WebSocket: ``hello`` first, then messages and typing both ways), ``GET /chat/poll?after=N`` and
``POST /chat/messages`` / ``POST /chat/typing`` (long-poll fallback), ``POST /chat/upload`` (raw body,
type by magic bytes), ``GET /chat/files/{id}`` (the visitor who sent it, and the agents of its
conversation), ``POST /chat/offline`` (a ticket when nobody is there), ``GET /chat/widget.js``,
``GET /chat/demo``; for agents ``POST /chat/agent/typing/{conversation_id}``.

Guards: an Origin allow-list (``chat.webchat.allowed_origins``; the server's own origin always) on every
route and the WebSocket; per-visitor and per-address token buckets (429 + Retry-After; on the WebSocket
an ``error`` frame); body limits (413) read as a stream, never trusting Content-Length alone. Text is
sent as JSON and the widget renders it with ``textContent`` only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from callcenter.chat.engine import ConversationEngine
from callcenter.chat.model import Inbound, Outbound
from callcenter.core.clock import Clock, MonotonicClock
from callcenter.core.config import WebchatSettings
from callcenter.core.logging import log_event
from callcenter.core.ratelimit import KeyedBuckets
from callcenter.ivr.schema import QueueNode, Schedule
from callcenter.ivr.services import TicketDraft, Tickets

__all__ = [
    "COOKIE",
    "HEADER",
    "RateLimited",
    "VisitorSigner",
    "WebchatGateway",
    "create_webchat_router",
    "load_secret",
    "sniff",
]

log = logging.getLogger("callcenter.chat.webchat")

COOKIE = "cc_visitor"
HEADER = "x-chat-visitor"
ACCOUNT = "web"
_WEB_DIR = Path(__file__).resolve().parent.parent / "web"
_VISITOR = re.compile(r"^[A-Za-z0-9_-]{22}$")
_FILE_ID = re.compile(r"^[A-Za-z0-9_-]{24}$")
_BOX_MAX = 200  # messages kept per visitor for the widget (history on reload, long-poll)
_BOXES_MAX = 20_000  # visitors kept in memory (least recently used go; re-read from the store)
_TEXT_MAX = 10_000
_NOTE = re.compile(r"^\[(image|file): (/chat/files/[A-Za-z0-9_-]{24})\]\s*(.*)$", re.S)


# -- identity --------------------------------------------------------------------------------------------


def load_secret(configured: str | None, data_dir: Path) -> bytes:
    """The configured key, else one generated once into ``data_dir/webchat_secret`` (mode 0600)."""
    if configured:
        return configured.encode("utf-8")
    path = data_dir / "webchat_secret"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48).encode("ascii")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


class VisitorSigner:
    """``ID.SIG``: a random 128-bit id and its HMAC-SHA256 (base64url, untruncated)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the web chat secret must have at least 16 bytes")
        self._key = secret

    def _mac(self, visitor: str) -> str:
        digest = hmac.new(self._key, b"webchat-visitor:" + visitor.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def new(self) -> tuple[str, str]:
        """A new visitor id and its token."""
        visitor = secrets.token_urlsafe(16)
        return visitor, self.sign(visitor)

    def sign(self, visitor: str) -> str:
        return f"{visitor}.{self._mac(visitor)}"

    def verify(self, token: str | None) -> str | None:
        """The visitor id of a well-formed, correctly signed token, else None."""
        if not token or len(token) > 100:
            return None
        visitor, _, mac = token.partition(".")
        if not _VISITOR.match(visitor):
            return None
        return (
            visitor
            if hmac.compare_digest(mac.encode("ascii", "replace"), self._mac(visitor).encode())
            else None
        )


# -- uploads ---------------------------------------------------------------------------------------------

_MAGIC: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("image/png", lambda b: b.startswith(b"\x89PNG\r\n\x1a\n")),
    ("image/jpeg", lambda b: b.startswith(b"\xff\xd8\xff")),
    ("image/gif", lambda b: b[:6] in (b"GIF87a", b"GIF89a")),
    ("image/webp", lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP"),
    ("application/pdf", lambda b: b.startswith(b"%PDF-")),
)
_EXT = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "application/pdf": "pdf",
}


def sniff(head: bytes) -> str | None:
    """The type of a file from its first bytes (never its name), None when unknown."""
    for mime, test in _MAGIC:
        if test(head):
            return mime
    return None


@dataclass(frozen=True)
class StoredFile:
    file_id: str
    visitor: str
    conversation_id: int | None
    mime: str
    name: str
    size: int


# -- errors ----------------------------------------------------------------------------------------------


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many requests: retry after {retry_after} s")
        self.retry_after = retry_after


class TooLarge(Exception):
    pass


# -- per-visitor mailbox (what the widget shows) ---------------------------------------------------------


def _utc_ms(at: datetime) -> int:
    """Milliseconds since the epoch; naive times (as the store gives them back) are UTC."""
    return int((at if at.tzinfo is not None else at.replace(tzinfo=UTC)).timestamp() * 1000)


@dataclass
class Mailbox:
    """One visitor's messages as the widget numbers them (``seq``), their open connections, and a
    condition long-polls wait on."""

    visitor: str
    entries: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_BOX_MAX))
    keys: deque[tuple[str, str, int]] = field(default_factory=lambda: deque(maxlen=_BOX_MAX))
    seq: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    sockets: set[asyncio.Queue[dict[str, Any] | None]] = field(default_factory=set)
    conversation_id: int | None = None
    agent_typing: bool = False
    visitor_typing: bool = False

    def add(
        self, frm: str, name: str, kind: str, text: str, at: datetime, extra: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        # The same stored message can reach us twice (history read while it was being delivered).
        key = (frm, text, _utc_ms(at))
        if key in self.keys:
            return None
        self.keys.append(key)
        self.seq += 1
        entry = {
            "type": "message",
            "seq": self.seq,
            "from": frm,
            "name": name,
            "kind": kind,
            "text": text,
            "at": at.isoformat(),
            **({"extra": dict(extra)} if extra else {}),
        }
        self.entries.append(entry)
        return entry

    def after(self, seq: int) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["seq"] > seq]


def _from_of(sender: str, kind: str) -> str:
    """visitor, bot, system or agent — who the widget shows a message from."""
    if sender == "customer":
        return "visitor"
    if sender == "system" or kind == "system":
        return "system"
    return "bot" if sender == "bot" else "agent"


def _visitor_note(text: str) -> tuple[str, str, dict[str, Any]]:
    """A stored visitor message back into (kind, text, extra): uploads are stored as ``[image: URL] name``."""
    m = _NOTE.match(text)
    if m is None:
        return "text", text, {}
    return m.group(1), m.group(3), {"url": m.group(2)}


# -- the gateway -----------------------------------------------------------------------------------------


class WebchatGateway:
    """The ``webchat`` channel adapter: mailboxes, rate limits, uploads, offline tickets."""

    def __init__(
        self,
        settings: WebchatSettings,
        data_dir: Path,
        *,
        tickets: Callable[[], Tickets | None] = lambda: None,
        schedules: Callable[[], Mapping[str, Schedule]] = dict,
        clock: Clock | None = None,
        secret: bytes | None = None,
    ) -> None:
        self.settings = settings
        self.signer = VisitorSigner(secret or load_secret(settings.secret, data_dir))
        self.uploads = data_dir / "webchat" / "uploads"
        self.tickets = tickets
        self.schedules = schedules
        self.clock = clock or MonotonicClock()
        self.by_visitor = KeyedBuckets(settings.visitor_rate_per_s, settings.visitor_burst)
        self.by_address = KeyedBuckets(settings.ip_rate_per_s, settings.ip_burst)
        self._boxes: OrderedDict[str, Mailbox] = OrderedDict()
        self.engine: ConversationEngine | None = None

    def attach(self, engine: ConversationEngine) -> None:
        self.engine = engine
        engine.register_channel(
            "webchat", self.deliver, watching=self.watching, typing=self.show_agent_typing
        )

    def watching(self, visitor: str) -> bool:
        """Whether this node keeps the visitor's mailbox (cluster mode: other nodes' messages to them
        are delivered here too)."""
        return visitor in self._boxes

    # -- limits ------------------------------------------------------------------------------------------

    def limit(self, *, address: str | None = None, visitor: str | None = None) -> None:
        """Spend a token of the address's and/or the visitor's bucket; raises :class:`RateLimited`."""
        now = self.clock.now()
        for buckets, key in ((self.by_address, address), (self.by_visitor, visitor)):
            if key is not None and not buckets.take(key, now):
                wait = buckets.retry_after(key, now)
                log_event(log, "webchat_rate_limited", level=logging.INFO, key=key[:40], retry_after=wait)
                raise RateLimited(wait)

    # -- mailboxes ---------------------------------------------------------------------------------------

    async def box(self, visitor: str) -> Mailbox:
        """The visitor's mailbox; a new one starts with the open conversation's history from the store."""
        box = self._boxes.get(visitor)
        if box is not None:
            self._boxes.move_to_end(visitor)
            await box.ready.wait()
            return box
        box = Mailbox(visitor)
        self._boxes[visitor] = box
        while len(self._boxes) > _BOXES_MAX:
            old, dropped = next(iter(self._boxes.items()))
            if dropped.sockets:  # connected visitors stay
                self._boxes.move_to_end(old)
                break
            del self._boxes[old]
        try:
            if self.engine is not None:
                for out in await self.engine.history("webchat", ACCOUNT, visitor, limit=_BOX_MAX):
                    box.conversation_id = out.conversation_id
                    frm = _from_of(out.sender, out.kind)
                    kind, text, extra = (
                        _visitor_note(out.text) if frm == "visitor" else (out.kind, out.text, {})
                    )
                    box.add(frm, out.sender if frm == "agent" else frm, kind, text, out.sent_at, extra)
        finally:
            box.ready.set()
        return box

    async def _publish(self, box: Mailbox, frame: dict[str, Any]) -> None:
        for queue in list(box.sockets):
            try:
                queue.put_nowait(frame)
            except asyncio.QueueFull:  # a connection that does not read: drop it (the widget reconnects)
                box.sockets.discard(queue)
        async with box.changed:
            box.changed.notify_all()

    async def deliver(self, out: Outbound) -> None:
        """The engine's :data:`~callcenter.chat.model.Deliver` for ``webchat``."""
        box = await self.box(out.visitor)
        box.conversation_id = out.conversation_id
        frm = _from_of(out.sender, out.kind)
        extra = {k: v for k, v in out.extra.items() if k in ("title", "url", "snippet")}
        entry = box.add(frm, out.sender if frm == "agent" else frm, out.kind, out.text, out.sent_at, extra)
        if frm == "agent":
            box.agent_typing = False
        if entry is not None:
            await self._publish(box, entry)

    async def visitor_message(
        self,
        visitor: str,
        text: str,
        *,
        kind: Literal["text", "image", "file"] = "text",
        extra: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """A visitor's message into the engine and onto their mailbox (other tabs see it too)."""
        engine = self._engine()
        text = text.strip()[:_TEXT_MAX]
        now = datetime.now(UTC)
        media = dict(extra or {})
        inbound = Inbound("webchat", ACCOUNT, visitor, kind, text, now, media=media, display_name=name)
        box = await self.box(visitor)
        box.visitor_typing = False
        box.conversation_id = await engine.receive(inbound)
        entry = box.add("visitor", "visitor", kind, text, now, media)
        if entry is None:  # the same text in the same millisecond: still answer with the newest
            return box.entries[-1]
        await self._publish(box, entry)
        return entry

    async def visitor_typing(self, visitor: str, typing: bool) -> None:
        """Tell the agent (a ``chat_typing`` live event) — only on a change. Cluster mode, the
        conversation held by another node: reported from here with its agent (chat/cluster.py)."""
        box = await self.box(visitor)
        if box.visitor_typing == typing:
            return
        box.visitor_typing = typing
        engine = self.engine
        live = engine.live_for("webchat", ACCOUNT, visitor) if engine is not None else None
        if live is not None:
            if live.agent is not None:
                log_event(
                    log,
                    "chat_typing",
                    conversation_id=live.id,
                    agent=live.agent,
                    who="customer",
                    typing=typing,
                )
            return
        if engine is not None and engine.remote is not None:
            await engine.remote.visitor_typing("webchat", ACCOUNT, visitor, typing)

    async def agent_typing(self, conversation_id: int, typing: bool, *, agent: str | None) -> bool:
        """An agent (``agent`` None: a supervisor) typing in the conversation; False when not theirs.
        Cluster mode: the conversation may be held by another node and the visitor's widget served by
        any node — the typing goes to every node (throttled), each shows it to the widgets it serves."""
        engine = self._engine()
        live = engine.live(conversation_id)
        channel: str | None
        if live is not None:
            channel, visitor, holder = live.channel, live.visitor, live.agent
        elif engine.remote is not None:
            info = await engine.remote.summary(conversation_id)
            if info is None:
                return False
            channel, visitor, holder = info.get("channel"), str(info.get("visitor")), info.get("agent")
        else:
            return False
        if channel != "webchat" or (agent is not None and holder != agent):
            return False
        name = str(holder or "agent")
        await self.show_agent_typing(visitor, typing, name, create=live is not None)
        if engine.remote is not None:
            await engine.remote.typing(conversation_id, "webchat", visitor, typing, name)
        return True

    async def show_agent_typing(self, visitor: str, typing: bool, name: str, *, create: bool = False) -> None:
        """The agent's typing on the visitor's connections here — only on a change. ``create``: make the
        mailbox when this node has none (else only a node serving the visitor shows it)."""
        if not create and visitor not in self._boxes:
            return
        box = await self.box(visitor)
        if box.agent_typing != typing:
            box.agent_typing = typing
            await self._publish(box, {"type": "typing", "typing": typing, "name": name})

    async def wait(self, visitor: str, after: int, timeout_s: float) -> tuple[list[dict[str, Any]], Mailbox]:
        """Messages after ``after``; waits up to ``timeout_s`` for the first one (long-poll)."""
        box = await self.box(visitor)
        news = box.after(after)
        if news or timeout_s <= 0:
            return news, box
        async with box.changed:
            try:
                await asyncio.wait_for(box.changed.wait_for(lambda: bool(box.after(after))), timeout_s)
            except TimeoutError:
                pass
        return box.after(after), box

    # -- online / offline ----------------------------------------------------------------------------------

    def watched_queues(self) -> list[str]:
        engine = self._engine()
        if self.settings.queues:
            return [q for q in self.settings.queues if q in engine.router.queues]
        found: list[str] = []
        flow_id = engine.settings.flows.get(f"webchat:{ACCOUNT}") or engine.settings.flows.get("webchat")
        flow_id = flow_id or engine.default_flow
        chosen = engine.flows(flow_id) if engine.flows is not None and flow_id else None
        if chosen is not None:
            found = [n.queue for n in chosen[0].nodes.values() if isinstance(n, QueueNode)]
        else:
            fallback = engine.fallback_queue()
            found = [fallback] if fallback else []
        return [q for q in dict.fromkeys(found) if q in engine.router.queues]

    def online(self, when: datetime | None = None) -> bool:
        """Whether a visitor can reach someone: inside ``schedule`` (when set) and an agent logged in
        with the skills of one of the watched queues."""
        engine = self._engine()
        name = self.settings.schedule
        if name is not None:
            schedule = self.schedules().get(name)
            if schedule is not None and not schedule.is_open(when or datetime.now(UTC)):
                return False
        agents = list(engine.agents())
        return any(engine.router.anyone_for(q, agents) for q in self.watched_queues())

    async def offline_ticket(self, name: str, email: str, message: str, visitor: str) -> str | None:
        tickets = self.tickets()
        if tickets is None:
            return None
        draft = TicketDraft(
            subject=f"Web chat message from {name}"[:200],
            body=f"From: {name} <{email}>\n\n{message}",
            tags=("webchat", "offline"),
            call_id="",
            variables={"channel": "webchat", "visitor": visitor, "email": email},
        )
        ticket = await tickets.create(draft)
        log_event(log, "webchat_offline_ticket", ticket=ticket)
        return ticket

    # -- files -------------------------------------------------------------------------------------------

    async def store_upload(self, visitor: str, name: str, chunks: AsyncIterator[bytes]) -> StoredFile:
        """Read the body (at most ``max_upload_bytes``), check its type by magic bytes, keep it."""
        limit = self.settings.max_upload_bytes
        file_id = secrets.token_urlsafe(18)
        self.uploads.mkdir(parents=True, exist_ok=True)
        part = self.uploads / f"{file_id}.part"
        size, head = 0, b""
        try:
            with part.open("wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge()
                    if len(head) < 16:
                        head += chunk[: 16 - len(head)]
                    await asyncio.to_thread(f.write, chunk)
            mime = sniff(head)
            if mime is None or mime not in self.settings.upload_types:
                raise ValueError(
                    f"files of this type are not accepted ({', '.join(self.settings.upload_types)})"
                )
            if size == 0:
                raise ValueError("empty file")
            clean = re.sub(r"[^\w .()-]", "_", name)[:100].strip() or f"file.{_EXT[mime]}"
            stored = StoredFile(file_id, visitor, None, mime, clean, size)
            part.rename(self.uploads / f"{file_id}.bin")
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return stored

    def _meta_path(self, file_id: str) -> Path:
        return self.uploads / f"{file_id}.json"

    def save_meta(self, stored: StoredFile) -> None:
        self._meta_path(stored.file_id).write_text(json.dumps(stored.__dict__), encoding="utf-8")

    def file(self, file_id: str) -> tuple[StoredFile, Path] | None:
        if not _FILE_ID.match(file_id):
            return None
        try:
            meta = json.loads(self._meta_path(file_id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return StoredFile(**meta), self.uploads / f"{file_id}.bin"

    def agent_may_see(self, stored: StoredFile, agent: str) -> bool:
        if stored.conversation_id is None:
            return False
        engine = self._engine()
        live = engine.live(stored.conversation_id)
        if live is not None:
            return agent == live.agent or agent in live.agents_seen
        conv = engine.store.conversation(stored.conversation_id)
        return conv is not None and conv.agent == agent

    # -- misc --------------------------------------------------------------------------------------------

    def _engine(self) -> ConversationEngine:
        if self.engine is None:
            raise RuntimeError("the web chat gateway is not attached to a conversation engine")
        return self.engine

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """No Origin (not a browser, or a same-origin GET): allowed; else the server's own origin or one
        of ``allowed_origins``."""
        if origin is None:
            return True
        origin = origin.lower().rstrip("/")
        if origin == "null":
            return False
        if host is not None and urlsplit(origin).netloc == host.lower():
            return True
        allowed = self.settings.allowed_origins
        return "*" in allowed or origin in allowed


# -- HTTP ------------------------------------------------------------------------------------------------


class MessageBody(BaseModel):
    text: str = Field(min_length=1, max_length=_TEXT_MAX)


class TypingBody(BaseModel):
    typing: bool


class OfflineBody(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
    message: str = Field(min_length=1, max_length=5000)


_PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def _address(request: Request | WebSocket) -> str:
    return request.client.host if request.client is not None else "unknown"


def _cors_headers(origin: str | None) -> dict[str, str]:
    if origin is None:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


def create_webchat_router(
    gateway: WebchatGateway,
    *,
    staff: Callable[..., Any] | None = None,
    identify_staff: Callable[[Request], Any] | None = None,
) -> APIRouter:
    """The ``/chat`` routes. ``staff``: a FastAPI dependency giving the logged-in principal (``role``,
    ``agent``) for the agents' routes; ``identify_staff(request)``: the principal or None (files)."""
    settings = gateway.settings
    router = APIRouter(tags=["webchat"])

    def visitor_of(request: Request) -> str | None:
        return gateway.signer.verify(request.headers.get(HEADER) or request.cookies.get(COOKIE))

    def need_visitor(request: Request) -> str:
        visitor = visitor_of(request)
        if visitor is None:
            raise HTTPException(401, "no web chat session: POST /chat/session first")
        return visitor

    def guard(request: Request, *, visitor: str | None = None) -> None:
        if not gateway.origin_allowed(request.headers.get("origin"), request.headers.get("host")):
            raise HTTPException(403, "this site may not use the chat")
        try:
            gateway.limit(address=_address(request), visitor=visitor)
        except RateLimited as exc:
            raise HTTPException(429, str(exc), {"Retry-After": str(exc.retry_after)}) from None

    async def read_json(request: Request, model: type[BaseModel]) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_message_bytes:
            raise HTTPException(413, f"body larger than {settings.max_message_bytes} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_message_bytes:
                raise HTTPException(413, f"body larger than {settings.max_message_bytes} bytes")
        try:
            return model.model_validate_json(body or b"{}")
        except ValidationError as exc:
            raise HTTPException(422, exc.errors(include_url=False, include_context=False)) from None

    def cookie(response: Response, request: Request, token: str) -> None:
        https = request.url.scheme == "https"
        value = f"{COOKIE}={token}; Path=/chat; Max-Age={400 * 86400}; HttpOnly"
        # SameSite=None needs Secure (browsers drop it otherwise); Partitioned = CHIPS, kept per top site.
        value += "; SameSite=None; Secure; Partitioned" if https else "; SameSite=Lax"
        response.headers.append("set-cookie", value)

    @router.options("/chat/{rest:path}", include_in_schema=False)
    async def preflight(request: Request, rest: str) -> Response:
        origin = request.headers.get("origin")
        if not gateway.origin_allowed(origin, request.headers.get("host")):
            return Response(status_code=403)
        headers = {
            **_cors_headers(origin),
            "Access-Control-Allow-Methods": "GET, POST",
            "Access-Control-Allow-Headers": "Content-Type, X-Chat-Visitor, X-File-Name",
            "Access-Control-Max-Age": "600",
        }
        return Response(status_code=204, headers=headers)

    @router.post("/chat/session")
    async def session(request: Request) -> JSONResponse:
        """Identity (kept when a valid token came), the history, and whether anyone is there."""
        guard(request)
        visitor = visitor_of(request)
        if visitor is None:
            visitor, token = gateway.signer.new()
        else:
            token = gateway.signer.sign(visitor)
        box = await gateway.box(visitor)
        body = {
            "visitor": visitor,
            "token": token,
            "online": gateway.online(),
            "title": settings.title,
            "messages": list(box.entries),
            "last": box.seq,
            "max_upload_bytes": settings.max_upload_bytes,
            "upload_types": settings.upload_types,
        }
        response = JSONResponse(body, headers=_cors_headers(request.headers.get("origin")))
        cookie(response, request, token)
        return response

    @router.get("/chat/status")
    async def status(request: Request) -> JSONResponse:
        guard(request)
        return JSONResponse(
            {"online": gateway.online()}, headers=_cors_headers(request.headers.get("origin"))
        )

    @router.post("/chat/messages", status_code=201)
    async def post_message(request: Request) -> JSONResponse:
        visitor = need_visitor(request)
        guard(request, visitor=visitor)
        body: MessageBody = await read_json(request, MessageBody)
        if not body.text.strip():
            raise HTTPException(422, "empty message")
        entry = await gateway.visitor_message(visitor, body.text)
        return JSONResponse(entry, status_code=201, headers=_cors_headers(request.headers.get("origin")))

    @router.post("/chat/typing")
    async def typing(request: Request) -> JSONResponse:
        visitor = need_visitor(request)
        guard(request)  # the address only: typing is not a message
        body: TypingBody = await read_json(request, TypingBody)
        await gateway.visitor_typing(visitor, body.typing)
        return JSONResponse({"ok": True}, headers=_cors_headers(request.headers.get("origin")))

    @router.get("/chat/poll")
    async def poll(request: Request, after: int = 0) -> JSONResponse:
        """Messages after ``after``; waits up to ``poll_wait_s`` for one (the long-poll fallback)."""
        visitor = need_visitor(request)
        guard(request)
        news, box = await gateway.wait(visitor, after, settings.poll_wait_s)
        body = {"messages": news, "last": box.seq, "typing": box.agent_typing}
        return JSONResponse(body, headers=_cors_headers(request.headers.get("origin")))

    @router.post("/chat/upload", status_code=201)
    async def upload(request: Request) -> JSONResponse:
        """The raw file as the body (``X-File-Name`` header: its name); its type is read from its bytes."""
        visitor = need_visitor(request)
        guard(request, visitor=visitor)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_upload_bytes:
            raise HTTPException(413, f"files up to {settings.max_upload_bytes} bytes")
        name = unquote(request.headers.get("x-file-name", ""))[:200]
        try:
            stored = await gateway.store_upload(visitor, name, request.stream())
        except TooLarge:
            raise HTTPException(413, f"files up to {settings.max_upload_bytes} bytes") from None
        except ValueError as exc:
            raise HTTPException(415, str(exc)) from None
        url = f"/chat/files/{stored.file_id}"
        kind: Literal["image", "file"] = "image" if stored.mime.startswith("image/") else "file"
        extra = {"url": url, "type": stored.mime, "size": stored.size}
        entry = await gateway.visitor_message(visitor, stored.name, kind=kind, extra=extra)
        box = await gateway.box(visitor)
        final = StoredFile(
            stored.file_id, visitor, box.conversation_id, stored.mime, stored.name, stored.size
        )
        await asyncio.to_thread(gateway.save_meta, final)
        return JSONResponse(entry, status_code=201, headers=_cors_headers(request.headers.get("origin")))

    @router.get("/chat/files/{file_id}")
    async def get_file(file_id: str, request: Request) -> Response:
        found = await asyncio.to_thread(gateway.file, file_id)
        if found is None:
            raise HTTPException(404, "no such file")
        stored, path = found
        allowed = visitor_of(request) == stored.visitor
        if not allowed and identify_staff is not None:
            principal = identify_staff(request)
            if principal is not None and not getattr(principal, "must_change_password", False):
                if principal.role in ("admin", "supervisor"):
                    allowed = True
                elif principal.agent is not None:
                    allowed = await asyncio.to_thread(gateway.agent_may_see, stored, principal.agent)
        if not allowed:
            raise HTTPException(404, "no such file")  # the same answer as for a missing one
        inline = stored.mime.startswith("image/")
        disposition = "inline" if inline else "attachment"
        headers = {
            "Content-Disposition": f'{disposition}; filename="{stored.name}"',
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, max-age=3600",
            **_cors_headers(request.headers.get("origin")),
        }
        return FileResponse(path, media_type=stored.mime, headers=headers)

    @router.post("/chat/offline", status_code=201)
    async def offline(request: Request) -> JSONResponse:
        visitor = visitor_of(request) or "anonymous"
        guard(request, visitor=visitor if visitor != "anonymous" else None)
        body: OfflineBody = await read_json(request, OfflineBody)
        ticket = await gateway.offline_ticket(body.name, body.email, body.message, visitor)
        if ticket is None:
            raise HTTPException(503, "messages cannot be taken right now")
        answer = {
            "ticket": ticket,
            "message": f"Thank you, {body.name}. We will answer by email (ticket {ticket}).",
        }
        return JSONResponse(answer, status_code=201, headers=_cors_headers(request.headers.get("origin")))

    @router.websocket("/chat/ws")
    async def websocket(ws: WebSocket) -> None:
        if not gateway.origin_allowed(ws.headers.get("origin"), ws.headers.get("host")):
            await ws.close(code=1008)
            return
        await ws.accept()
        await _serve_socket(gateway, ws)

    @router.get("/chat/widget.js", include_in_schema=False)
    def widget() -> FileResponse:
        headers = {"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"}
        return FileResponse(
            _WEB_DIR / "widget.js", media_type="text/javascript; charset=utf-8", headers=headers
        )

    @router.get("/chat/demo", include_in_schema=False)
    def demo() -> FileResponse:
        headers = {
            "Content-Security-Policy": _PAGE_CSP,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        }
        return FileResponse(
            _WEB_DIR / "chat_demo.html", media_type="text/html; charset=utf-8", headers=headers
        )

    if staff is not None:
        agent_dep = Depends(staff)

        @router.post("/chat/agent/typing/{conversation_id}")
        async def agent_typing(
            conversation_id: int, body: TypingBody, principal: Any = agent_dep
        ) -> dict[str, bool]:
            """The agent is typing (the inbox calls this; the visitor's widget shows it)."""
            agent = None if principal.role in ("admin", "supervisor") else principal.agent
            if principal.role == "agent" and agent is None:
                raise HTTPException(403, "your user is not linked to an agent")
            if not await gateway.agent_typing(conversation_id, body.typing, agent=agent):
                raise HTTPException(404, f"no chat {conversation_id}")
            return {"ok": True}

    return router


async def _serve_socket(gateway: WebchatGateway, ws: WebSocket) -> None:
    """First frame ``{"type": "hello", "token": ..., "after": N}`` (or the cookie); then
    ``{"type": "message", "text"}`` / ``{"type": "typing", "typing"}`` in, mailbox frames out."""
    settings = gateway.settings
    address = _address(ws)
    try:
        first = await asyncio.wait_for(ws.receive_text(), 15.0)
        hello = json.loads(first) if len(first) <= 1024 else {}
    except (TimeoutError, ValueError, WebSocketDisconnect, RuntimeError):
        await _close(ws, 1008)
        return
    token = hello.get("token") if isinstance(hello, dict) else None
    visitor = gateway.signer.verify(token if isinstance(token, str) else ws.cookies.get(COOKIE))
    if visitor is None:
        await ws.send_json({"type": "error", "error": "no_session"})
        await _close(ws, 1008)
        return
    try:
        gateway.limit(address=address)
    except RateLimited as exc:
        await ws.send_json({"type": "error", "error": "rate_limited", "retry_after": exc.retry_after})
        await _close(ws, 1013)
        return
    box = await gateway.box(visitor)
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=1000)
    wanted = hello.get("after")
    after = wanted if isinstance(wanted, int) else 0
    await ws.send_json(
        {
            "type": "hello",
            "visitor": visitor,
            "online": gateway.online(),
            "messages": box.after(after),
            "last": box.seq,
            "typing": box.agent_typing,
        }
    )
    box.sockets.add(queue)

    async def writer() -> None:
        while (frame := await queue.get()) is not None:
            await ws.send_json(frame)

    send_task = asyncio.create_task(writer())
    try:
        while True:
            raw = await ws.receive_text()
            if len(raw.encode("utf-8")) > settings.max_message_bytes:
                await _close(ws, 1009)
                return
            await _on_frame(gateway, ws, visitor, address, raw)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        box.sockets.discard(queue)
        send_task.cancel()
        await asyncio.gather(send_task, return_exceptions=True)


async def _on_frame(gateway: WebchatGateway, ws: WebSocket, visitor: str, address: str, raw: str) -> None:
    try:
        frame = json.loads(raw)
    except ValueError:
        await ws.send_json({"type": "error", "error": "bad_json"})
        return
    if not isinstance(frame, dict):
        return
    kind = frame.get("type")
    if kind == "typing":
        await gateway.visitor_typing(visitor, bool(frame.get("typing")))
    elif kind == "message":
        text = frame.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > _TEXT_MAX:
            await ws.send_json({"type": "error", "error": "bad_message"})
            return
        try:
            gateway.limit(address=address, visitor=visitor)
        except RateLimited as exc:
            await ws.send_json({"type": "error", "error": "rate_limited", "retry_after": exc.retry_after})
            return
        await gateway.visitor_message(visitor, text)
    elif kind == "ping":
        await ws.send_json({"type": "pong"})


async def _close(ws: WebSocket, code: int) -> None:
    try:
        await ws.close(code=code)
    except RuntimeError:
        pass
