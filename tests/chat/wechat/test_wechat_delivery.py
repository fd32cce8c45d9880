"""Passive replies within 5 s, the `success` + customer-service API fallback, retries, tokens, 45015/45047,
against the local WeChat stand-in on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from wechat_helpers import (
    AES_KEY,
    APP_ID,
    APP_SECRET,
    OPENID,
    TOKEN,
    FakeEngine,
    asgi_client,
    settings,
    until,
)

from callcenter.chat.model import Inbound, Outbound
from callcenter.chat.wechat import DeliveryRefused, WechatGateway
from callcenter.chat.wechat.xmlsafe import parse_fields
from callcenter.core.clock import FakeClock
from callcenter.testing.wechat_standin import CallbackClient, WechatStandin, message_xml


@pytest.fixture
async def standin() -> AsyncIterator[WechatStandin]:
    server = WechatStandin(APP_ID, APP_SECRET)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def api_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


async def test_an_answer_in_time_is_the_passive_reply_with_html_kept_as_text() -> None:
    gateway = WechatGateway(settings())
    gateway.attach(FakeEngine(lambda m: ["<script>alert(1)</script> ]]> & done"]))
    client = CallbackClient("/wechat", TOKEN)
    async with asgi_client(gateway) as http:
        [response] = await client.post(http, message_xml("text", OPENID, "gh_acct", Content="hi"))
    assert response.headers["content-type"].startswith("application/xml")
    reply = client.open_reply(response.text)
    assert reply["Content"] == "<script>alert(1)</script> ]]> & done"  # CDATA split, text unchanged
    assert (reply["MsgType"], reply["ToUserName"], reply["FromUserName"]) == ("text", OPENID, "gh_acct")
    await gateway.aclose()


async def test_an_article_in_time_is_a_news_reply() -> None:
    gateway = WechatGateway(settings(encoding_aes_key=AES_KEY, mode="safe"))
    engine = FakeEngine(lambda m: ["How to return an item"])
    engine.articles = True
    gateway.attach(engine)
    client = CallbackClient("/wechat", TOKEN, APP_ID, AES_KEY, safe=True)
    async with asgi_client(gateway) as http:
        [response] = await client.post(http, message_xml("text", OPENID, Content="return"))
    outer, _ = parse_fields(response.text)
    assert "Content" not in outer and "Encrypt" in outer  # nothing readable outside the envelope
    _, root = parse_fields(client.crypto().decrypt(outer["Encrypt"]))
    assert root.findtext("MsgType") == "news" and root.findtext("ArticleCount") == "1"
    assert root.findtext("Articles/item/Title") == "How to return an item"
    assert root.findtext("Articles/item/Url") == "https://kb.example/1"
    await gateway.aclose()


async def test_a_late_answer_gets_success_then_goes_through_the_cs_api(
    standin: WechatStandin, api_client: httpx.AsyncClient
) -> None:
    gateway = WechatGateway(settings(standin.base_url, passive_reply_s=0.05), client=api_client)
    engine = FakeEngine(lambda m: ["first answer", "second answer"])
    engine.gate = asyncio.Event()  # the bot answers only after the passive window
    gateway.attach(engine)
    client = CallbackClient("/wechat", TOKEN)
    async with asgi_client(gateway) as http:
        [response] = await client.post(http, message_xml("text", OPENID, Content="slow question"))
    assert (response.status_code, response.text) == (200, "success")
    assert standin.sent == []
    engine.gate.set()
    await engine.idle()
    assert engine.failures == []
    assert [(m["touser"], m["msgtype"], m["text"]["content"]) for m in standin.sent] == [
        (OPENID, "text", "first answer"),
        (OPENID, "text", "second answer"),
    ]
    assert standin.token_calls == 1  # one token for both sends
    await gateway.aclose()


async def test_a_second_message_in_one_answer_goes_after_the_passive_one(
    standin: WechatStandin, api_client: httpx.AsyncClient
) -> None:
    gateway = WechatGateway(settings(standin.base_url), client=api_client)
    gateway.attach(FakeEngine(lambda m: ["one", "two"]))
    client = CallbackClient("/wechat", TOKEN)
    async with asgi_client(gateway) as http:
        [response] = await client.post(http, message_xml("text", OPENID, Content="q"))
        await standin.wait_sent(1)
    assert client.open_reply(response.text)["Content"] == "one"
    assert standin.sent[0]["text"]["content"] == "two"
    await gateway.aclose()


async def test_retries_of_a_message_in_progress_run_it_once_and_get_the_same_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="callcenter.chat.wechat")
    gateway = WechatGateway(settings())
    engine = FakeEngine()
    engine.gate = asyncio.Event()
    gateway.attach(engine)
    client = CallbackClient("/wechat", TOKEN)
    query, body = client.signed(message_xml("text", OPENID, Content="once", msg_id=424242))
    async with asgi_client(gateway) as http:
        first = asyncio.create_task(http.post("/wechat", params=query, content=body))
        await until(engine.got.is_set)
        retries = [asyncio.create_task(http.post("/wechat", params=query, content=body)) for _ in range(2)]
        await until(lambda: sum(r.getMessage() == "wechat_retry" for r in caplog.records) == 2)
        engine.gate.set()
        responses = [await first, *[await r for r in retries]]
        responses.append(await http.post("/wechat", params=query, content=body))  # after the answer
    assert {client.open_reply(r.text)["Content"] for r in responses} == {"echo: once"}
    assert len(engine.received) == 1
    await gateway.aclose()


async def test_wechat_style_retries_of_an_unanswered_message_all_get_success() -> None:
    gateway = WechatGateway(settings(passive_reply_s=0.2))
    engine = FakeEngine()
    engine.gate = asyncio.Event()  # the bot never answers in time
    gateway.attach(engine)
    client = CallbackClient("/wechat", TOKEN)
    async with asgi_client(gateway) as http:
        responses = await client.post(
            http, message_xml("text", OPENID, Content="slow"), retries=3, retry_after_s=0.02
        )
    assert len(responses) >= 2  # no answer within 0.02 s: WeChat's side sent it again
    assert {r.text for r in responses} == {"success"}
    assert len(engine.received) == 1
    engine.gate.set()
    await gateway.aclose()


async def test_events_are_deduplicated_by_sender_and_create_time() -> None:
    gateway = WechatGateway(settings())
    gateway.attach(engine := FakeEngine(lambda m: []))
    gateway.settings.passive_reply_s = 0.01
    client = CallbackClient("/wechat", TOKEN)
    async with asgi_client(gateway) as http:
        await client.post(http, message_xml("event", OPENID, Event="subscribe", create_time=1700000000))
        await client.post(http, message_xml("event", OPENID, Event="subscribe", create_time=1700000000))
        await client.post(http, message_xml("event", OPENID, Event="subscribe", create_time=1700000001))
        await client.post(http, message_xml("event", "oOther", Event="subscribe", create_time=1700000000))
    assert [(m.visitor, m.external_id) for m in engine.received] == [
        (OPENID, f"event:{OPENID}:1700000000"),
        (OPENID, f"event:{OPENID}:1700000001"),
        ("oOther", "event:oOther:1700000000"),
    ]
    await gateway.aclose()


def _out(text: str, kind: str = "text", **extra: str) -> Outbound:
    from datetime import UTC, datetime

    return Outbound(3, "wechat", "default", OPENID, kind, text, "agent ann", datetime.now(UTC), extra)  # type: ignore[arg-type]


async def test_the_token_is_cached_and_fetched_again_at_80_percent_of_its_life(
    standin: WechatStandin, api_client: httpx.AsyncClient
) -> None:
    clock = FakeClock()
    gateway = WechatGateway(settings(standin.base_url), client=api_client, clock=clock)
    await asyncio.gather(*(gateway.deliver(_out(f"m{i}")) for i in range(5)))
    assert standin.token_calls == 1  # single flight: five concurrent sends, one fetch
    clock.advance(7200 * 0.79)
    await gateway.deliver(_out("still cached"))
    assert standin.token_calls == 1
    clock.advance(7200 * 0.02)
    await gateway.deliver(_out("refreshed"))
    assert standin.token_calls == 2
    assert len(standin.sent) == 7
    await gateway.aclose()


async def test_an_expired_token_is_replaced_once_and_the_message_sent(
    standin: WechatStandin, api_client: httpx.AsyncClient
) -> None:
    gateway = WechatGateway(settings(standin.base_url), client=api_client)
    await gateway.deliver(_out("first"))
    standin.expire_tokens()  # 42001 on the next send
    await gateway.deliver(_out("after expiry"))
    standin.fail_next_sends(40001)  # invalid token while WeChat still hands out the same one: forced
    await gateway.deliver(_out("after invalidation"))
    assert [m["text"]["content"] for m in standin.sent] == ["first", "after expiry", "after invalidation"]
    assert standin.forced_refreshes == 1
    standin.fail_next_sends(42001, 42001)  # refused twice in a row: given up, not looped
    with pytest.raises(DeliveryRefused):
        await gateway.deliver(_out("lost"))
    await gateway.aclose()


async def test_45015_is_not_retried_and_notes_the_conversation(
    standin: WechatStandin, api_client: httpx.AsyncClient
) -> None:
    notes: list[tuple[int, str]] = []

    async def note(out: Outbound, reason: str) -> None:
        notes.append((out.conversation_id, reason))

    gateway = WechatGateway(settings(standin.base_url), client=api_client, on_undeliverable=note)
    standin.fail_next_sends(45015)
    with pytest.raises(DeliveryRefused, match="48 hours"):
        await gateway.deliver(_out("too late"))
    assert len(standin.refused) == 1 and standin.sent == []
    assert notes == [(3, "not delivered: the customer has not written to the account for 48 hours (45015)")]
    await gateway.deliver(_out("next one is tried again"))
    assert [m["text"]["content"] for m in standin.sent] == ["next one is tried again"]
    await gateway.aclose()


async def test_45047_holds_messages_until_the_customer_writes_again(
    standin: WechatStandin, api_client: httpx.AsyncClient
) -> None:
    gateway = WechatGateway(settings(standin.base_url, passive_reply_s=0.01), client=api_client)
    gateway.attach(engine := FakeEngine(lambda m: []))
    standin.fail_next_sends(45047)
    await gateway.deliver(_out("held 1"))
    await gateway.deliver(
        _out("held 2", "article", title="Returns", url="https://kb.example/r", snippet="30 days")
    )
    assert standin.sent == []
    async with asgi_client(gateway) as http:
        await CallbackClient("/wechat", TOKEN).post(http, message_xml("text", OPENID, Content="I'm back"))
    await gateway.drain()
    assert [m["msgtype"] for m in standin.sent] == ["text", "news"]
    assert standin.sent[0]["text"]["content"] == "held 1"
    assert standin.sent[1]["news"]["articles"][0] == {
        "title": "Returns",
        "description": "30 days",
        "url": "https://kb.example/r",
        "picurl": "",
    }
    assert [m.text for m in engine.received] == ["I'm back"]
    await gateway.aclose()


async def test_an_account_without_api_credentials_refuses_late_messages() -> None:
    gateway = WechatGateway(settings(app_id=None, app_secret=None))
    with pytest.raises(DeliveryRefused):
        await gateway.deliver(_out("no way to send"))
    await gateway.aclose()


async def test_an_engine_failure_is_500_and_the_retry_runs_the_message_again() -> None:
    class Flaky(FakeEngine):
        fail = True

        async def receive(self, message: Inbound) -> int | None:
            if self.fail:
                self.fail = False
                raise RuntimeError("database is down")
            return await super().receive(message)

    gateway = WechatGateway(settings())
    gateway.attach(engine := Flaky())
    client = CallbackClient("/wechat", TOKEN)
    query, body = client.signed(message_xml("text", OPENID, Content="again"))
    async with asgi_client(gateway) as http:
        assert (await http.post("/wechat", params=query, content=body)).status_code == 500
        retry = await http.post("/wechat", params=query, content=body)
    assert client.open_reply(retry.text)["Content"] == "echo: again"
    assert [m.text for m in engine.received] == ["again"]
    await gateway.aclose()
