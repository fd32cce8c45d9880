"""The WeChat Official Account adapter: callbacks in, passive replies or CS API messages out.

One request, in order (each failure ends it):

1. unknown account → 404; ``timestamp`` further than ``timestamp_window_s`` from our clock → 403
   (WeChat's retries of one message come within ~15 s, so 300 s is generous and still bounds replays);
2. ``signature`` (SHA-1 of sorted token, timestamp, nonce) wrong → 403 (safe mode may rely on
   ``msg_signature`` alone; when ``signature`` is present it must be right);
3. the body (its size was capped by the router: 413) through defusedxml → 400 on DTD, entities, junk;
4. safe mode (or compat with ``encrypt_type=aes``): ``msg_signature`` over token, timestamp, nonce and
   ``Encrypt`` → 403; decrypt with the current key, then the previous one; another AppId → 403;
   undecryptable → 400; the inner XML through defusedxml again;
5. wechatpy parses it → :class:`Inbound`; a retry (same MsgId, or FromUserName+CreateTime for events)
   gets the first request's answer — waiting for it while the first is still running;
6. ``engine.receive``, then up to ``passive_reply_s`` for the conversation's first Outbound: it becomes
   the passive reply (encrypted in safe mode); otherwise ``success`` and every later message goes
   through the customer-service API.

Cluster mode (``redis_url``): the gateway also offers its passive slot to the engine
(:meth:`passive_slot`, registered with ``passive_reply_s``). A message posted to a node that does not
hold the conversation is forwarded to the holder with the time left; the holder waits in its own slot for
the bot's answer and returns it, and this node's waiting request answers passively with it (see
callcenter/chat/cluster.py). Otherwise, as on one node: ``success``, and the CS API.

Outbound ordering per customer: an Outbound arriving while an earlier one is still on its way back as a
passive reply waits until that HTTP answer has been handed over; CS API sends to one customer go one
at a time (an asyncio.Lock, FIFO).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from callcenter.chat.model import ChatEngine, Outbound
from callcenter.chat.wechat.api import WechatApi, WechatApiError
from callcenter.chat.wechat.crypto import AppIdMismatch, DecryptError, MessageCrypto, check_signature
from callcenter.chat.wechat.messages import Parsed, parse
from callcenter.chat.wechat.replies import passive_reply, plain_text
from callcenter.chat.wechat.xmlsafe import BadXml, parse_fields
from callcenter.core.clock import Clock, MonotonicClock
from callcenter.core.config import WechatAccountSettings, WechatSettings
from callcenter.core.logging import log_event

__all__ = ["DeliveryRefused", "Reply", "WechatGateway"]

log = logging.getLogger("callcenter.chat.wechat")

SUCCESS = "success"
DEDUPE_TTL_S = 120.0  # WeChat gives up after 3 retries 5 s apart; answers are kept well beyond that
DEDUPE_MAX = 10_000
ERR_OUT_OF_WINDOW = 45015  # the customer has not written for 48 hours
ERR_TOO_MANY = 45047  # too many CS messages since the customer last wrote


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: str
    media_type: str = "text/plain"


class DeliveryRefused(Exception):
    """WeChat refused the message for good (45015, no API credentials, other errcodes)."""


@dataclass
class _Account:
    name: str
    settings: WechatAccountSettings
    crypto: MessageCrypto | None
    api: WechatApi | None


@dataclass
class _Waiter:
    """A request waiting for its passive reply."""

    future: asyncio.Future[Outbound]
    released: asyncio.Event = field(default_factory=asyncio.Event)  # its HTTP answer was handed over


@dataclass
class _Seen:
    answer: asyncio.Future[Reply]
    expires: float = float("inf")


UndeliverableHook = Callable[[Outbound, str], Awaitable[None]]


class WechatGateway:
    """Build once per process; :meth:`attach` registers :meth:`deliver` with the engine."""

    def __init__(
        self,
        settings: WechatSettings,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
        on_undeliverable: UndeliverableHook | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock or MonotonicClock()
        self._wall = wall
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(settings.api_timeout_s))
        self._on_undeliverable = on_undeliverable
        self.engine: ChatEngine | None = None
        self.accounts = {name: self._build(name, a) for name, a in settings.accounts.items()}
        self._default = settings.default_account()
        self._seen: collections.OrderedDict[tuple[str, str], _Seen] = collections.OrderedDict()
        self._waiting: dict[tuple[str, str], list[_Waiter]] = {}
        self._send_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._held: dict[tuple[str, str], list[Outbound]] = {}  # 45047: until the customer writes
        self._tasks: set[asyncio.Task[None]] = set()

    def _build(self, name: str, a: WechatAccountSettings) -> _Account:
        assert a.token is not None  # the settings validator fills or refuses it
        crypto = None
        if a.encoding_aes_key is not None and a.app_id is not None:
            keys = [a.encoding_aes_key] + ([a.previous_aes_key] if a.previous_aes_key else [])
            crypto = MessageCrypto(a.token, a.app_id, keys)
        api = None
        if a.app_id is not None and a.app_secret is not None:
            api = WechatApi(self._client, self.settings.api_base, a.app_id, a.app_secret, self._clock)
        return _Account(name, a, crypto, api)

    def attach(self, engine: ChatEngine) -> None:
        self.engine = engine
        engine.register_channel("wechat", self.deliver)
        register = getattr(engine, "register_passive", None)  # the conversation engine (cluster mode)
        if register is not None:
            register("wechat", self.passive_slot, self.settings.passive_reply_s)

    @contextlib.asynccontextmanager
    async def passive_slot(self, account: str, visitor: str) -> AsyncIterator[asyncio.Future[Outbound]]:
        """While open, the next Outbound to this customer resolves the future instead of being sent;
        later ones wait until the slot closes (their order), then go through the CS API."""
        key = (account, visitor)
        waiter = _Waiter(asyncio.get_running_loop().create_future())
        self._waiting.setdefault(key, []).append(waiter)
        try:
            yield waiter.future
        finally:
            if not waiter.future.done():
                waiter.future.cancel()
            waiters = self._waiting.get(key, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiting.pop(key, None)
            waiter.released.set()

    def account(self, name: str | None) -> _Account | None:
        return self.accounts.get(name if name is not None else (self._default or ""))

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._own_client:
            await self._client.aclose()

    # ----------------------------------------------------------------------------------------------
    # Inbound

    def _refuse(self, status: int, event: str, account: str | None, **fields: Any) -> Reply:
        # one line, no secrets: never the token, the signatures or the body
        log_event(log, event, level=logging.WARNING, account=account, status=status, **fields)
        return Reply(status, {400: "bad request", 403: "forbidden", 404: "not found"}.get(status, "error"))

    def _check_time(self, name: str, query: Mapping[str, str]) -> Reply | None:
        raw = query.get("timestamp", "")
        try:
            skew = abs(self._wall() - int(raw))
        except ValueError:
            return self._refuse(403, "wechat_bad_timestamp", name)
        if skew > self.settings.timestamp_window_s:
            return self._refuse(403, "wechat_stale_timestamp", name, skew_s=int(skew))
        return None

    def verify_url(self, name: str | None, query: Mapping[str, str]) -> Reply:
        """``GET``: echo ``echostr`` when signed with the Token (safe mode: ``msg_signature`` over the
        encrypted ``echostr`` is accepted too, and the decrypted text is echoed)."""
        account = self.account(name)
        if account is None:
            return self._refuse(404, "wechat_unknown_account", name)
        if (late := self._check_time(account.name, query)) is not None:
            return late
        token = account.settings.token or ""
        ts, nonce, echostr = query.get("timestamp", ""), query.get("nonce", ""), query.get("echostr", "")
        if account.crypto is not None and query.get("msg_signature"):
            if not check_signature(token, query.get("msg_signature"), ts, nonce, echostr):
                return self._refuse(403, "wechat_forged_signature", account.name, where="verify")
            try:
                return Reply(200, account.crypto.decrypt(echostr))
            except (AppIdMismatch, DecryptError):
                return self._refuse(403, "wechat_bad_echostr", account.name)
        if not check_signature(token, query.get("signature"), ts, nonce):
            return self._refuse(403, "wechat_forged_signature", account.name, where="verify")
        log_event(log, "wechat_url_verified", account=account.name)
        return Reply(200, echostr)

    async def handle_post(self, name: str | None, query: Mapping[str, str], body: bytes) -> Reply:
        account = self.account(name)
        if account is None:
            return self._refuse(404, "wechat_unknown_account", name)
        if (late := self._check_time(account.name, query)) is not None:
            return late
        token = account.settings.token or ""
        ts, nonce = query.get("timestamp", ""), query.get("nonce", "")
        encrypted_mode = account.settings.mode == "safe" or (
            account.settings.mode == "compat" and query.get("encrypt_type", "").lower() == "aes"
        )
        if ("signature" in query or not encrypted_mode) and not check_signature(
            token, query.get("signature"), ts, nonce
        ):
            return self._refuse(403, "wechat_forged_signature", account.name)
        try:
            fields, _ = parse_fields(body)
        except BadXml as exc:
            return self._refuse(400, "wechat_bad_xml", account.name, error=str(exc))
        xml = body.decode("utf-8", errors="replace")
        if encrypted_mode:
            encrypted = fields.get("Encrypt")
            if not encrypted or account.crypto is None:
                return self._refuse(400, "wechat_not_encrypted", account.name)
            if not check_signature(token, query.get("msg_signature"), ts, nonce, encrypted):
                return self._refuse(403, "wechat_forged_signature", account.name, where="msg_signature")
            try:
                xml = account.crypto.decrypt(encrypted)
            except AppIdMismatch:
                return self._refuse(403, "wechat_wrong_appid", account.name)
            except DecryptError:
                return self._refuse(400, "wechat_undecryptable", account.name)
            try:
                fields, _ = parse_fields(xml.encode("utf-8"))
            except BadXml as exc:
                return self._refuse(400, "wechat_bad_xml", account.name, error=str(exc), inner=True)
        try:
            parsed = parse(xml, fields, account.name, datetime.fromtimestamp(self._wall(), UTC))
        except BadXml as exc:
            return self._refuse(400, "wechat_bad_message", account.name, error=str(exc))
        return await self._once(account, parsed, encrypted_mode, nonce)

    async def _once(self, account: _Account, parsed: Parsed, encrypted: bool, nonce: str) -> Reply:
        """Run a message once; a retry waits for (or repeats) the first one's answer."""
        self._expire()
        key = (account.name, parsed.key)
        seen = self._seen.get(key)
        if seen is not None:
            log_event(log, "wechat_retry", account=account.name, what=parsed.what)
            try:
                return await asyncio.wait_for(asyncio.shield(seen.answer), self.settings.passive_reply_s)
            except TimeoutError:
                return Reply(200, SUCCESS)
        seen = _Seen(asyncio.get_running_loop().create_future())
        self._seen[key] = seen
        try:
            reply = await self._handle(account, parsed, encrypted, nonce)
        except Exception:  # the engine failed: forget the message so WeChat's next retry runs it again
            log_event(log, "wechat_engine_failed", level=logging.ERROR, account=account.name, exc_info=True)
            del self._seen[key]
            reply = Reply(500, "error")
        except BaseException:  # cancelled: same, and whoever waits on this answer gets `success`
            del self._seen[key]
            seen.answer.set_result(Reply(200, SUCCESS))
            raise
        seen.answer.set_result(reply)
        # a replay inside the timestamp window must still find its answer here
        seen.expires = self._clock.now() + max(DEDUPE_TTL_S, self.settings.timestamp_window_s + 60)
        return reply

    def _expire(self) -> None:
        now = self._clock.now()
        while self._seen:
            key, oldest = next(iter(self._seen.items()))
            if not oldest.answer.done() or (oldest.expires > now and len(self._seen) <= DEDUPE_MAX):
                break  # a message still running is never forgotten mid-flight
            del self._seen[key]

    async def _handle(self, account: _Account, parsed: Parsed, encrypted: bool, nonce: str) -> Reply:
        inbound = parsed.inbound
        log_event(log, "wechat_message", account=account.name, what=parsed.what)
        if inbound is None or self.engine is None:
            if self.engine is None and inbound is not None:
                log_event(log, "wechat_no_engine", level=logging.WARNING, account=account.name)
            return Reply(200, SUCCESS)
        visitor = (account.name, inbound.visitor)
        if self._held.get(visitor):
            self._spawn(self._release_held(visitor))  # 45047 lifted: the customer wrote again
        async with self.passive_slot(*visitor) as future:
            started = asyncio.get_running_loop().time()
            conversation = await self.engine.receive(inbound)
            if conversation is None:
                return Reply(200, SUCCESS)  # the engine had it already
            left = self.settings.passive_reply_s - (asyncio.get_running_loop().time() - started)
            try:
                out = await asyncio.wait_for(asyncio.shield(future), max(left, 0.0))
            except TimeoutError:
                if not future.done() or future.cancelled():
                    log_event(log, "wechat_passive_timeout", account=account.name, conversation=conversation)
                    return Reply(200, SUCCESS)
                out = future.result()  # delivered at the very last moment: still ours to answer
            return self._passive(account, parsed, out, encrypted, nonce)

    def _passive(
        self, account: _Account, parsed: Parsed, out: Outbound, encrypted: bool, nonce: str
    ) -> Reply:
        now = int(self._wall())
        xml = passive_reply(out, parsed.openid, parsed.account_id, now)
        if encrypted and account.crypto is not None:
            xml = account.crypto.envelope(xml, str(now), nonce or secrets.token_hex(8))
        log_event(
            log, "wechat_passive_reply", account=account.name, kind=out.kind, conversation=out.conversation_id
        )
        return Reply(200, xml, "application/xml")

    # ----------------------------------------------------------------------------------------------
    # Outbound

    async def deliver(self, out: Outbound) -> None:
        """The engine's Deliver for ``wechat``: the passive slot of a waiting request if there is one,
        else the customer-service API. Raises DeliveryRefused when WeChat will not take it."""
        visitor = (out.account, out.visitor)
        earlier: list[_Waiter] = []
        for waiter in self._waiting.get(visitor, []):
            if not waiter.future.done():
                waiter.future.set_result(out)
                return
            earlier.append(waiter)
        for waiter in earlier:  # keep order: after the passive reply that is on its way
            await waiter.released.wait()
        await self._send(out)

    async def _send(self, out: Outbound) -> None:
        account = self.accounts.get(out.account)
        if account is None or account.api is None:
            await self._undeliverable(out, "no app_id/app_secret for the customer-service API")
            raise DeliveryRefused(f"wechat account {out.account!r} cannot send outside a passive reply")
        visitor = (out.account, out.visitor)
        lock = self._send_locks.setdefault(visitor, asyncio.Lock())
        async with lock:
            if self._held.get(visitor):  # 45047 pending: keep the order behind what waits already
                self._held[visitor].append(out)
                return
            try:
                await self._send_one(account.api, out)
            except WechatApiError as exc:
                await self._failed(out, exc)

    async def _send_one(self, api: WechatApi, out: Outbound) -> None:
        if out.kind == "article" and out.extra.get("url"):
            await api.send_news(
                out.visitor,
                str(out.extra.get("title") or out.text),
                str(out.extra.get("snippet") or ""),
                str(out.extra["url"]),
                str(out.extra.get("picurl") or ""),
            )
        else:
            await api.send_text(out.visitor, plain_text(out))
        log_event(log, "wechat_cs_sent", account=out.account, kind=out.kind, conversation=out.conversation_id)

    async def _failed(self, out: Outbound, exc: WechatApiError) -> None:
        visitor = (out.account, out.visitor)
        if exc.errcode == ERR_TOO_MANY:
            self._held.setdefault(visitor, []).append(out)
            log_event(
                log,
                "wechat_cs_held",
                level=logging.WARNING,
                account=out.account,
                errcode=exc.errcode,
                conversation=out.conversation_id,
            )
            return
        log_event(
            log,
            "wechat_cs_failed",
            level=logging.WARNING,
            account=out.account,
            errcode=exc.errcode,
            errmsg=exc.errmsg[:200],
            conversation=out.conversation_id,
        )
        if exc.errcode == ERR_OUT_OF_WINDOW:
            reason = "not delivered: the customer has not written to the account for 48 hours (45015)"
        else:
            reason = f"not delivered: WeChat answered errcode {exc.errcode}"
        await self._undeliverable(out, reason)
        raise DeliveryRefused(reason) from None

    async def _undeliverable(self, out: Outbound, reason: str) -> None:
        if self._on_undeliverable is not None:
            try:
                await self._on_undeliverable(out, reason)
            except Exception:  # noqa: BLE001 - a failing note must not hide the refusal
                log_event(log, "wechat_note_failed", level=logging.ERROR, exc_info=True)

    async def _release_held(self, visitor: tuple[str, str]) -> None:
        account = self.accounts.get(visitor[0])
        if account is None or account.api is None:
            return
        lock = self._send_locks.setdefault(visitor, asyncio.Lock())
        async with lock:
            held = self._held.pop(visitor, [])
            for index, out in enumerate(held):
                try:
                    await self._send_one(account.api, out)
                except WechatApiError as exc:
                    if exc.errcode == ERR_TOO_MANY:  # still capped: keep the rest, in order
                        self._held[visitor] = held[index:]
                        return
                    try:
                        await self._failed(out, exc)
                    except DeliveryRefused:
                        continue

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for background sends (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
