"""A small ChatEngine of our own, the gateway behind an ASGI app, and the stand-in around them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI

from callcenter.chat.model import ChatChannel, Deliver, Inbound, Outbound
from callcenter.chat.wechat import WechatGateway, create_wechat_router
from callcenter.core.config import WechatSettings

TOKEN = "standintoken"
APP_ID = "wxstandin0001"
APP_SECRET = "standin-secret"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
OLD_AES_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"
OPENID = "oStandinCustomer0001"


class FakeEngine:
    """Answers each inbound with ``replies(inbound)``; with ``gate`` set, only once the gate opens."""

    def __init__(self, replies: Callable[[Inbound], list[str]] | None = None) -> None:
        self.deliver: Deliver | None = None
        self.received: list[Inbound] = []
        self.replies = replies or (lambda m: [f"echo: {m.text}"])
        self.gate: asyncio.Event | None = None
        self.got = asyncio.Event()
        self.failures: list[BaseException] = []
        self.articles = False
        self._seen: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def register_channel(self, channel: ChatChannel, deliver: Deliver) -> None:
        assert channel == "wechat"
        self.deliver = deliver

    async def receive(self, message: Inbound) -> int | None:
        if message.external_id in self._seen:
            return None
        if message.external_id:
            self._seen.add(message.external_id)
        self.received.append(message)
        self.got.set()
        self._tasks.append(asyncio.create_task(self._answer(message)))
        return 7

    async def _answer(self, message: Inbound) -> None:
        if self.gate is not None:
            await self.gate.wait()
        assert self.deliver is not None
        for text in self.replies(message):
            extra: dict[str, Any] = {}
            kind: Any = "text"
            if self.articles:
                kind, extra = "article", {"title": text, "url": "https://kb.example/1", "snippet": "s"}
            out = Outbound(
                7, "wechat", message.account, message.visitor, kind, text, "bot", datetime.now(UTC), extra
            )
            try:
                await self.deliver(out)
            except Exception as exc:  # noqa: BLE001 - the engine logs and keeps going
                self.failures.append(exc)

    async def history(
        self, channel: ChatChannel, account: str, visitor: str, limit: int = 50
    ) -> list[Outbound]:
        return []

    async def idle(self) -> None:
        await asyncio.gather(*self._tasks)


def settings(api_base: str = "http://127.0.0.1:9", **account: Any) -> WechatSettings:
    base = {"token": TOKEN, "app_id": APP_ID, "app_secret": APP_SECRET, "mode": "plain"}
    extra = {
        k: account.pop(k) for k in ("passive_reply_s", "max_body_bytes", "timestamp_window_s") if k in account
    }
    return WechatSettings.model_validate(
        {"accounts": {"default": base | account}, "api_base": api_base, **extra}
    )


def asgi_client(gateway: WechatGateway) -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(create_wechat_router(gateway))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://callcenter")


async def until(condition: Callable[[], bool], rounds: int = 2000) -> None:
    """Let the loop run until ``condition`` holds: ``rounds`` turns of the loop, then short sleeps (a
    loaded machine) — bounded (~20 s more), no assertion on how long it took."""
    for i in range(rounds + 2000):
        if condition():
            return
        await asyncio.sleep(0 if i < rounds else 0.01)
    raise AssertionError("condition never became true")
