"""A local stand-in for WeChat: its API server (tokens, customer-service messages) and its callback
client (signing, encrypting and POSTing to ``/wechat`` as WeChat's servers do, retries included).

Built to the public Official Account docs: ``POST /cgi-bin/stable_token`` (normal mode returns the
valid token again, ``force_refresh`` replaces it), ``GET /cgi-bin/token`` (a new token every call),
``POST /cgi-bin/message/custom/send`` (``text`` and ``news``); errors as ``{"errcode", "errmsg"}`` with
HTTP 200, 40001 for an unknown token and 42001 for an expired one. Tests can make the next sends fail
with a given errcode (45015, 45047, 42001 …). It runs in-process on 127.0.0.1 under uvicorn.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from callcenter.chat.wechat.crypto import MessageCrypto, check_signature, signature
from callcenter.chat.wechat.xmlsafe import Node, build_xml, parse_fields
from callcenter.core.clock import Clock, MonotonicClock

__all__ = ["CallbackClient", "WechatStandin", "message_xml"]

_ERRMSG = {
    40001: "invalid credential, access_token is invalid or not latest",
    42001: "access_token expired",
    40014: "invalid access_token",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    40013: "invalid appid",
    40125: "invalid appsecret",
}


def _error(code: int) -> JSONResponse:
    return JSONResponse({"errcode": code, "errmsg": _ERRMSG.get(code, "error")})


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class WechatStandin:
    """The API side. ``clock`` decides token expiry; ``token_ttl_s`` is the ``expires_in`` handed out."""

    app_id: str
    app_secret: str
    token_ttl_s: int = 7200
    clock: Clock = field(default_factory=MonotonicClock)
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry
    token_calls: int = 0
    forced_refreshes: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    refused: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    _fail_next: collections.deque[int] = field(default_factory=collections.deque)
    _stable: str | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _server: _QuietServer | None = None
    _task: asyncio.Task[None] | None = None
    base_url: str = ""

    async def wait_sent(self, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Wait (no polling) until ``count`` messages were accepted; ``timeout_s`` is a safety net."""

        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.sent) >= count)

        await asyncio.wait_for(wait(), timeout_s)
        return self.sent

    def fail_next_sends(self, *errcodes: int) -> None:
        """The next ``len(errcodes)`` custom/send calls answer these errcodes, in order."""
        self._fail_next.extend(errcodes)

    def expire_tokens(self) -> None:
        """Every token issued so far is expired now (as if 2 hours had passed on WeChat's side)."""
        now = self.clock.now()
        self.tokens = dict.fromkeys(self.tokens, now - 1)

    def _issue(self) -> str:
        token = secrets.token_urlsafe(48)
        self.tokens[token] = self.clock.now() + self.token_ttl_s
        return token

    def _credentials_error(self, appid: Any, secret: Any) -> JSONResponse | None:
        if appid != self.app_id:
            return _error(40013)
        if secret != self.app_secret:
            return _error(40125)
        return None

    def app(self) -> FastAPI:
        api = FastAPI()

        @api.get("/cgi-bin/token")
        async def token(grant_type: str = "", appid: str = "", secret: str = "") -> JSONResponse:
            self.token_calls += 1
            if grant_type != "client_credential":
                return _error(40002)
            if (bad := self._credentials_error(appid, secret)) is not None:
                return bad
            return JSONResponse({"access_token": self._issue(), "expires_in": self.token_ttl_s})

        @api.post("/cgi-bin/stable_token")
        async def stable_token(request: Request) -> JSONResponse:
            self.token_calls += 1
            body = await request.json()
            if body.get("grant_type") != "client_credential":
                return _error(40002)
            if (bad := self._credentials_error(body.get("appid"), body.get("secret"))) is not None:
                return bad
            now = self.clock.now()
            current = self._stable
            if body.get("force_refresh"):
                self.forced_refreshes += 1
                if current is not None:
                    self.tokens.pop(current, None)
                current = None
            if current is None or self.tokens.get(current, 0) <= now:
                current = self._stable = self._issue()
            return JSONResponse({"access_token": current, "expires_in": int(self.tokens[current] - now)})

        @api.post("/cgi-bin/message/custom/send")
        async def custom_send(request: Request, access_token: str = "") -> JSONResponse:
            expiry = self.tokens.get(access_token)
            body = json.loads(await request.body())
            if expiry is None:
                return _error(40001)
            if expiry <= self.clock.now():
                return _error(42001)
            if self._fail_next:
                code = self._fail_next.popleft()
                self.refused.append((code, body))
                return _error(code)
            kind = body.get("msgtype")
            if not body.get("touser") or kind not in ("text", "news", "image") or kind not in body:
                return _error(40008)
            async with self._changed:
                self.sent.append(body)
                self._changed.notify_all()
            return JSONResponse({"errcode": 0, "errmsg": "ok"})

        return api

    async def start(self) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.setblocking(False)
        config = uvicorn.Config(self.app(), log_config=None, access_log=False, lifespan="off")
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.005)  # start-up poll, not a test wait
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self.base_url

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task


def message_xml(
    kind: str,
    openid: str,
    account_id: str = "gh_standin",
    *,
    create_time: int | None = None,
    msg_id: int | None = None,
    **fields: str | int,
) -> str:
    """A callback message as WeChat sends it: ``kind`` is the MsgType (``event`` with ``Event=...``)."""
    nodes: list[Node] = [
        ("ToUserName", account_id),
        ("FromUserName", openid),
        ("CreateTime", create_time if create_time is not None else int(time.time())),
        ("MsgType", kind),
    ]
    nodes += list(fields.items())
    if kind != "event":
        nodes.append(("MsgId", msg_id if msg_id is not None else secrets.randbelow(1 << 62)))
    return build_xml(nodes)


@dataclass
class CallbackClient:
    """WeChat's side of the callback: signs (and in safe mode encrypts) and POSTs a message XML."""

    url: str
    token: str
    app_id: str | None = None
    encoding_aes_key: str | None = None
    safe: bool = False
    wall: Callable[[], float] = time.time

    def crypto(self) -> MessageCrypto:
        assert self.app_id is not None and self.encoding_aes_key is not None
        return MessageCrypto(self.token, self.app_id, [self.encoding_aes_key])

    def signed(self, xml: str, *, timestamp: int | None = None) -> tuple[dict[str, str], bytes]:
        """The query string and body WeChat would send for ``xml``."""
        ts = str(timestamp if timestamp is not None else int(self.wall()))
        nonce = str(secrets.randbelow(10**10))
        query = {
            "signature": signature(self.token, ts, nonce),
            "timestamp": ts,
            "nonce": nonce,
            "openid": "standin",
        }
        if not self.safe:
            return query, xml.encode("utf-8")
        fields, _ = parse_fields(xml)
        encrypted = self.crypto().encrypt(xml)
        query |= {"encrypt_type": "aes", "msg_signature": signature(self.token, ts, nonce, encrypted)}
        body = build_xml([("ToUserName", fields.get("ToUserName", "")), ("Encrypt", encrypted)])
        return query, body.encode("utf-8")

    async def post(
        self, client: httpx.AsyncClient, xml: str, *, retries: int = 0, retry_after_s: float = 5.0
    ) -> list[httpx.Response]:
        """POST like WeChat: when no answer came within ``retry_after_s``, the same request again (up
        to ``retries`` more times) while the earlier ones stay open. Every attempt's response."""
        query, body = self.signed(xml)
        url = f"{self.url}?{urlencode(query)}"
        attempts: list[asyncio.Task[httpx.Response]] = []
        for _ in range(retries + 1):
            attempts.append(asyncio.create_task(client.post(url, content=body)))
            done, _pending = await asyncio.wait(attempts, timeout=retry_after_s)
            if done:
                break  # an answer (even `success`) in time: WeChat does not retry
        return list(await asyncio.gather(*attempts))

    def open_reply(self, text: str) -> dict[str, str]:
        """A passive reply's fields; in safe mode its MsgSignature is checked and it is decrypted."""
        fields, _ = parse_fields(text)
        if not self.safe:
            return fields
        ok = check_signature(
            self.token,
            fields.get("MsgSignature"),
            fields.get("TimeStamp", ""),
            fields.get("Nonce", ""),
            fields.get("Encrypt", ""),
        )
        if not ok:
            raise ValueError("the reply's MsgSignature is wrong")
        inner, _ = parse_fields(self.crypto().decrypt(fields["Encrypt"]))
        return inner
