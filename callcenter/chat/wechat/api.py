"""The WeChat server API an account calls: access_token and the customer-service message API.

access_token comes from ``POST {api_base}/cgi-bin/stable_token`` (getStableAccessToken), chosen over
``GET /cgi-bin/token`` because (1) the AppSecret travels in the JSON body, never in a URL that an HTTP
log line could show, and (2) in normal mode a second server process gets the *same* token instead of
invalidating the first one's. The token is cached and fetched again at 80 % of ``expires_in``, one
fetch at a time (concurrent senders wait for it). On 40001/42001/40014 (invalid or expired token) it is
fetched again once; if WeChat hands back the very token that just failed, the refetch uses
``force_refresh`` (limited to 20 a day by WeChat).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx

from callcenter.core.clock import Clock

__all__ = ["INVALID_TOKEN_CODES", "WechatApi", "WechatApiError"]

INVALID_TOKEN_CODES = frozenset({40001, 42001, 40014})
REFRESH_FRACTION = 0.8

# httpx logs every request URL at INFO; the CS API's URL carries the access_token.
logging.getLogger("httpx").setLevel(logging.WARNING)


class WechatApiError(Exception):
    """WeChat answered ``errcode`` (≠ 0), or the call failed (errcode -1: network, HTTP status, JSON)."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"errcode {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class WechatApi:
    """One account's API client; ``client`` is shared (its timeouts apply), ``clock`` is monotonic."""

    def __init__(
        self, client: httpx.AsyncClient, api_base: str, app_id: str, app_secret: str, clock: Clock
    ) -> None:
        self._client = client
        self._base = api_base.rstrip("/")
        self._app_id = app_id
        self._secret = app_secret
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self.token_fetches = 0

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._client.request(method, f"{self._base}{path}", **kwargs)
            response.raise_for_status()
            data = response.json()
        except httpx.HTTPStatusError as exc:
            raise WechatApiError(-1, f"HTTP {exc.response.status_code}") from None
        except (httpx.HTTPError, ValueError) as exc:
            raise WechatApiError(-1, f"{type(exc).__name__}") from None
        if not isinstance(data, dict):
            raise WechatApiError(-1, "not a JSON object")
        code = data.get("errcode", 0)
        if code:
            raise WechatApiError(int(code), str(data.get("errmsg", "")))
        return data

    async def access_token(self, *, failed: str | None = None) -> str:
        """The cached token, fetched when missing, due (80 % of its life) or equal to ``failed``."""
        async with self._lock:  # single flight: waiters find the fresh token when they get in
            if self._token is not None and self._token != failed and self._clock.now() < self._refresh_at:
                return self._token
            force = failed is not None and self._token == failed
            data = await self._fetch(force=False)
            if force and data["access_token"] == failed:
                data = await self._fetch(force=True)
            self._token = str(data["access_token"])
            expires = float(data.get("expires_in", 7200))
            self._refresh_at = self._clock.now() + expires * REFRESH_FRACTION
            return self._token

    async def _fetch(self, *, force: bool) -> dict[str, Any]:
        self.token_fetches += 1
        body = {
            "grant_type": "client_credential",
            "appid": self._app_id,
            "secret": self._secret,
            "force_refresh": force,
        }
        data = await self._call("POST", "/cgi-bin/stable_token", json=body)
        if not isinstance(data.get("access_token"), str):
            raise WechatApiError(-1, "no access_token in the answer")
        return data

    async def send(self, payload: dict[str, Any]) -> None:
        """``POST /cgi-bin/message/custom/send``; one retry with a fresh token on 40001/42001/40014."""
        token = await self.access_token()
        try:
            await self._send_with(token, payload)
        except WechatApiError as exc:
            if exc.errcode not in INVALID_TOKEN_CODES:
                raise
            token = await self.access_token(failed=token)
            await self._send_with(token, payload)

    async def _send_with(self, token: str, payload: dict[str, Any]) -> None:
        await self._call(
            "POST",
            "/cgi-bin/message/custom/send",
            params={"access_token": token},
            content=_json(payload),
            headers={"Content-Type": "application/json"},
        )

    async def send_text(self, openid: str, text: str) -> None:
        await self.send({"touser": openid, "msgtype": "text", "text": {"content": text}})

    async def send_news(self, openid: str, title: str, description: str, url: str, picurl: str = "") -> None:
        """One article (msgtype ``news``; WeChat now shows one article per news message)."""
        article = {"title": title, "description": description, "url": url, "picurl": picurl}
        await self.send({"touser": openid, "msgtype": "news", "news": {"articles": [article]}})


def _json(payload: dict[str, Any]) -> bytes:
    # UTF-8 as is rather than \uXXXX escapes, as WeChat's samples send it
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
