"""Callback URL verification, every message type, and bad input: forged, stale, hostile XML, oversize."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import pytest
from wechat_helpers import AES_KEY, APP_ID, OPENID, TOKEN, FakeEngine, asgi_client, settings

from callcenter.chat.wechat import WechatGateway
from callcenter.chat.wechat.crypto import signature
from callcenter.core.config import WechatSettings
from callcenter.testing.wechat_standin import CallbackClient, message_xml


def _verify_query(token: str = TOKEN, echostr: str = "4938271523", skew: int = 0) -> dict[str, str]:
    ts, nonce = str(int(time.time()) + skew), "738115"
    return {"signature": signature(token, ts, nonce), "timestamp": ts, "nonce": nonce, "echostr": echostr}


async def test_url_verification_echoes_echostr_and_refuses_forgeries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = WechatGateway(settings())
    async with asgi_client(gateway) as http:
        ok = await http.get("/wechat", params=_verify_query())
        assert (ok.status_code, ok.text) == (200, "4938271523")
        assert (await http.get("/wechat/default", params=_verify_query())).text == "4938271523"
        caplog.clear()
        forged = await http.get("/wechat", params=_verify_query(token="notthetoken"))
        assert forged.status_code == 403 and "4938271523" not in forged.text
        stale = await http.get("/wechat", params=_verify_query(skew=-3600))
        assert stale.status_code == 403
        assert (await http.get("/wechat/nosuch", params=_verify_query())).status_code == 404
    forged_lines = [r for r in caplog.records if r.getMessage() == "wechat_forged_signature"]
    assert len(forged_lines) == 1
    assert TOKEN not in caplog.text  # logged without secrets
    await gateway.aclose()


async def test_safe_mode_verification_decrypts_the_echostr() -> None:
    gateway = WechatGateway(settings(encoding_aes_key=AES_KEY, mode="safe"))
    client = CallbackClient("/wechat", TOKEN, APP_ID, AES_KEY, safe=True)
    encrypted = client.crypto().encrypt("plain-echo-123")
    ts, nonce = str(int(time.time())), "99"
    query = {
        "msg_signature": signature(TOKEN, ts, nonce, encrypted),
        "timestamp": ts,
        "nonce": nonce,
        "echostr": encrypted,
    }
    async with asgi_client(gateway) as http:
        assert (await http.get("/wechat", params=query)).text == "plain-echo-123"
        query["msg_signature"] = signature(TOKEN, ts, nonce, "other")
        assert (await http.get("/wechat", params=query)).status_code == 403
    await gateway.aclose()


MESSAGES = [
    (message_xml("text", OPENID, Content="hello <b>there</b>"), "text", "hello <b>there</b>", {}),
    (
        message_xml("image", OPENID, PicUrl="http://mmbiz.example/p.jpg", MediaId="m1"),
        "image",
        "",
        {"MediaId": "m1", "PicUrl": "http://mmbiz.example/p.jpg"},
    ),
    (
        message_xml("voice", OPENID, MediaId="v1", Format="amr", Recognition="我要退款"),
        "voice",
        "我要退款",
        {"MediaId": "v1", "Format": "amr"},
    ),
    (
        message_xml(
            "location",
            OPENID,
            Location_X="23.134521",
            Location_Y="113.358803",
            Scale="20",
            Label="广州市天河区",
        ),
        "location",
        "23.134521,113.358803 广州市天河区",
        {"Label": "广州市天河区"},
    ),
    (
        message_xml("link", OPENID, Title="Order 42", Description="d", Url="https://shop.example/42"),
        "link",
        "Order 42 https://shop.example/42",
        {"Url": "https://shop.example/42"},
    ),
    (message_xml("event", OPENID, Event="subscribe"), "event", "subscribe", {}),
    (
        message_xml("event", OPENID, Event="subscribe", EventKey="qrscene_123", Ticket="t"),
        "event",
        "subscribe",
        {"EventKey": "qrscene_123"},
    ),
    (message_xml("event", OPENID, Event="unsubscribe", EventKey=""), "event", "unsubscribe", {}),
    (
        message_xml("event", OPENID, Event="CLICK", EventKey="HUMAN_PLEASE"),
        "event",
        "CLICK:HUMAN_PLEASE",
        {"EventKey": "HUMAN_PLEASE"},
    ),
]


@pytest.mark.parametrize(("xml", "kind", "text", "media"), MESSAGES)
async def test_every_message_type_becomes_an_inbound(
    xml: str, kind: str, text: str, media: dict[str, str]
) -> None:
    gateway = WechatGateway(settings())
    gateway.attach(engine := FakeEngine(lambda m: []))
    gateway.settings.passive_reply_s = 0.01  # nothing answers: `success`
    query, body = CallbackClient("/wechat", TOKEN).signed(xml)
    async with asgi_client(gateway) as http:
        response = await http.post("/wechat", params=query, content=body)
    assert (response.status_code, response.text) == (200, "success")
    [inbound] = engine.received
    assert (inbound.channel, inbound.account, inbound.visitor) == ("wechat", "default", OPENID)
    assert (inbound.kind, inbound.text) == (kind, text)
    assert media.items() <= inbound.media.items()
    await gateway.aclose()


@pytest.mark.parametrize("event", ["VIEW", "LOCATION", "SCAN", "TEMPLATESENDJOBFINISH", "whatever"])
async def test_other_events_are_answered_success_without_a_conversation(event: str) -> None:
    gateway = WechatGateway(settings())
    gateway.attach(engine := FakeEngine())
    query, body = CallbackClient("/wechat", TOKEN).signed(
        message_xml("event", OPENID, Event=event, EventKey="k")
    )
    async with asgi_client(gateway) as http:
        response = await http.post("/wechat", params=query, content=body)
    assert (response.status_code, response.text) == (200, "success")
    assert engine.received == []
    await gateway.aclose()


async def test_forged_or_stale_posts_are_403() -> None:
    gateway = WechatGateway(settings())
    gateway.attach(engine := FakeEngine())
    xml = message_xml("text", OPENID, Content="hi")
    forger = CallbackClient("/wechat", "someothertoken")
    stale = CallbackClient("/wechat", TOKEN, wall=lambda: time.time() - 3600)
    async with asgi_client(gateway) as http:
        for client in (forger, stale):
            query, body = client.signed(xml)
            assert (await http.post("/wechat", params=query, content=body)).status_code == 403
        query, body = CallbackClient("/wechat", TOKEN).signed(xml)
        del query["signature"]
        assert (await http.post("/wechat", params=query, content=body)).status_code == 403
    assert engine.received == []
    await gateway.aclose()


XXE = """<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>
<MsgType>text</MsgType><Content>&xxe;</Content><MsgId>1</MsgId></xml>"""

LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>
<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>
<MsgType>text</MsgType><Content>&d;</Content><MsgId>1</MsgId></xml>"""

EXTERNAL_DTD = """<?xml version="1.0"?><!DOCTYPE xml SYSTEM "http://attacker.example/x.dtd"><xml/>"""


@pytest.mark.parametrize(
    "body",
    [
        XXE,
        LAUGHS,
        EXTERNAL_DTD,
        "<xml><Content>unclosed</xml>",
        "not xml at all",
        "",
        "<root><MsgType>text</MsgType></root>",
        "<xml><FromUserName>b</FromUserName></xml>",
        message_xml("text", OPENID, Content="x").replace("<CreateTime>", "<CreateTime>soon"),
        message_xml("text", OPENID, Content="x", msg_id=1).replace("<MsgId>1", "<MsgId>one"),
    ],
    ids=[
        "xxe",
        "billion-laughs",
        "external-dtd",
        "malformed",
        "not-xml",
        "empty",
        "wrong-root",
        "no-msgtype",
        "bad-createtime",
        "bad-msgid",
    ],
)
async def test_hostile_or_broken_xml_is_400(body: str) -> None:
    gateway = WechatGateway(settings())
    gateway.attach(engine := FakeEngine())
    query, _ = CallbackClient("/wechat", TOKEN).signed("<xml/>")
    async with asgi_client(gateway) as http:
        response = await http.post("/wechat", params=query, content=body.encode())
    assert response.status_code == 400
    assert "root:" not in response.text
    assert engine.received == []
    await gateway.aclose()


async def test_hostile_xml_inside_the_encrypted_envelope_is_400_too() -> None:
    gateway = WechatGateway(settings(encoding_aes_key=AES_KEY, mode="safe"))
    gateway.attach(engine := FakeEngine())
    client = CallbackClient("/wechat", TOKEN, APP_ID, AES_KEY, safe=True)
    ts, nonce = str(int(time.time())), "5"
    encrypted = client.crypto().encrypt(LAUGHS)
    query = {
        "timestamp": ts,
        "nonce": nonce,
        "encrypt_type": "aes",
        "msg_signature": signature(TOKEN, ts, nonce, encrypted),
        "signature": signature(TOKEN, ts, nonce),
    }
    body = f"<xml><ToUserName>gh</ToUserName><Encrypt>{encrypted}</Encrypt></xml>"
    async with asgi_client(gateway) as http:
        assert (await http.post("/wechat", params=query, content=body)).status_code == 400
    assert engine.received == []
    await gateway.aclose()


async def test_oversize_bodies_are_413_declared_or_streamed() -> None:
    gateway = WechatGateway(settings(max_body_bytes=2048))
    gateway.attach(engine := FakeEngine())
    query, _ = CallbackClient("/wechat", TOKEN).signed("<xml/>")
    big = message_xml("text", OPENID, Content="x" * 5000).encode()

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the router counts while reading
        for i in range(0, len(big), 512):
            yield big[i : i + 512]

    async with asgi_client(gateway) as http:
        assert (await http.post("/wechat", params=query, content=big)).status_code == 413
        assert (await http.post("/wechat", params=query, content=chunks())).status_code == 413
        small = message_xml("text", OPENID, Content="x" * 100).encode()
        assert (await http.post(f"/wechat?{urlencode(query)}", content=small)).status_code == 200
    assert [m.text for m in engine.received] == ["x" * 100]
    await gateway.aclose()


def test_the_default_account_is_default_or_the_only_one() -> None:
    one = WechatSettings.model_validate({"accounts": {"shop": {"token": "abc"}}})
    assert one.default_account() == "shop"
    two = WechatSettings.model_validate({"accounts": {"shop": {"token": "abc"}, "help": {"token": "abd"}}})
    assert two.default_account() is None
    env = WechatSettings.model_validate({"token": "fromenv1", "accounts": {"shop": {"token": "abc"}}})
    assert env.default_account() == "default" and env.accounts["default"].token == "fromenv1"


async def test_several_accounts_each_at_their_own_path() -> None:
    config = WechatSettings.model_validate(
        {"accounts": {"shop": {"token": "shoptoken"}, "help": {"token": "helptoken"}}}
    )
    gateway = WechatGateway(config)
    gateway.attach(engine := FakeEngine(lambda m: []))
    gateway.settings.passive_reply_s = 0.01
    query, body = CallbackClient("/wechat/help", "helptoken").signed(message_xml("text", OPENID, Content="q"))
    async with asgi_client(gateway) as http:
        assert (await http.post("/wechat/help", params=query, content=body)).status_code == 200
        assert (await http.post("/wechat/shop", params=query, content=body)).status_code == 403
        assert (await http.post("/wechat", params=query, content=body)).status_code == 404  # no default
    assert [m.account for m in engine.received] == ["help"]
    await gateway.aclose()
