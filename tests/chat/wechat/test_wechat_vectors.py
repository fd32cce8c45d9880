"""Signature and AES vectors from WeChat's own sample (WXBizMsgCrypt Sample.py), and key rotation."""

from __future__ import annotations

import pytest
from wechat_helpers import AES_KEY, APP_ID, OLD_AES_KEY, OPENID, TOKEN, FakeEngine, asgi_client, settings

from callcenter.chat.wechat import WechatGateway
from callcenter.chat.wechat.crypto import (
    AppIdMismatch,
    DecryptError,
    MessageCrypto,
    check_signature,
    signature,
)
from callcenter.testing.wechat_standin import CallbackClient, message_xml

# The official sample: token, EncodingAESKey, AppId, timestamp, nonce, msg_signature, Encrypt.
S_TOKEN = "spamtest"
S_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
S_APPID = "wx2c2769f8efd9abc2"
S_TIMESTAMP = "1409735669"
S_NONCE = "1320562132"
S_MSG_SIGNATURE = "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
S_SIGNATURE = "16120ec1b8dbb870f510d87ce6bc2463eae6ca1a"  # sha1 of the sorted token, timestamp, nonce
S_ENCRYPT = (
    "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHF"
    "VAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVti"
    "cbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpA"
    "e+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCum"
    "EPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE="
)
S_BODY = (
    "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><Encrypt><![CDATA["
    + S_ENCRYPT
    + "]]></Encrypt></xml>"
)


def test_the_official_signatures() -> None:
    assert signature(S_TOKEN, S_TIMESTAMP, S_NONCE, S_ENCRYPT) == S_MSG_SIGNATURE
    assert check_signature(S_TOKEN, S_MSG_SIGNATURE, S_TIMESTAMP, S_NONCE, S_ENCRYPT)
    assert check_signature(S_TOKEN, S_SIGNATURE, S_TIMESTAMP, S_NONCE)
    assert not check_signature(S_TOKEN, S_SIGNATURE, S_TIMESTAMP, "1320562133")
    assert not check_signature("spamtesT", S_SIGNATURE, S_TIMESTAMP, S_NONCE)
    assert not check_signature(S_TOKEN, None, S_TIMESTAMP, S_NONCE)


def test_the_official_ciphertext_decrypts_and_names_its_appid() -> None:
    inner = MessageCrypto(S_TOKEN, S_APPID, [S_KEY]).decrypt(S_ENCRYPT)
    assert "<Content><![CDATA[abcdteT]]></Content>" in inner
    assert "<MsgId>6054768590064713728</MsgId>" in inner
    with pytest.raises(AppIdMismatch):
        MessageCrypto(S_TOKEN, "wx0000000000000000", [S_KEY]).decrypt(S_ENCRYPT)
    with pytest.raises(DecryptError):
        MessageCrypto(S_TOKEN, S_APPID, [OLD_AES_KEY]).decrypt(S_ENCRYPT)
    with pytest.raises(DecryptError):
        MessageCrypto(S_TOKEN, S_APPID, [S_KEY]).decrypt("not base64 at all!")


async def test_the_official_callback_reaches_the_engine_and_is_answered_encrypted() -> None:
    config = settings(token=S_TOKEN, app_id=S_APPID, encoding_aes_key=S_KEY, mode="safe")
    gateway = WechatGateway(config, wall=lambda: 1409735669.0)
    engine = FakeEngine()
    gateway.attach(engine)
    query = {
        "timestamp": S_TIMESTAMP,
        "nonce": S_NONCE,
        "encrypt_type": "aes",
        "msg_signature": S_MSG_SIGNATURE,
        "signature": S_SIGNATURE,
    }
    async with asgi_client(gateway) as http:
        response = await http.post("/wechat", params=query, content=S_BODY)
    assert response.status_code == 200
    [inbound] = engine.received
    assert (inbound.kind, inbound.text, inbound.visitor) == (
        "text",
        "abcdteT",
        "oyORnuP8q7ou2gfYjqLzSIWZf0rs",
    )
    assert inbound.external_id == "msg:6054768590064713728"
    client = CallbackClient("", S_TOKEN, S_APPID, S_KEY, safe=True)
    reply = client.open_reply(response.text)  # checks MsgSignature, decrypts
    assert reply["Content"] == "echo: abcdteT"
    assert (reply["ToUserName"], reply["FromUserName"]) == ("oyORnuP8q7ou2gfYjqLzSIWZf0rs", "gh_10f6c3c3ac5a")
    await gateway.aclose()


async def test_the_official_callback_with_a_forged_msg_signature_is_403() -> None:
    config = settings(token=S_TOKEN, app_id=S_APPID, encoding_aes_key=S_KEY, mode="safe")
    gateway = WechatGateway(config, wall=lambda: 1409735669.0)
    engine = FakeEngine()
    gateway.attach(engine)
    query = {"timestamp": S_TIMESTAMP, "nonce": S_NONCE, "encrypt_type": "aes", "msg_signature": "0" * 40}
    async with asgi_client(gateway) as http:
        response = await http.post("/wechat", params=query, content=S_BODY)
    assert response.status_code == 403
    assert engine.received == []
    await gateway.aclose()


async def _post_safe(gateway: WechatGateway, key: str, app_id: str = APP_ID) -> int:
    client = CallbackClient("/wechat", TOKEN, app_id, key, safe=True)
    query, body = client.signed(message_xml("text", OPENID, Content="hello"))
    async with asgi_client(gateway) as http:
        return (await http.post("/wechat", params=query, content=body)).status_code


async def test_a_rotated_key_still_decrypts_while_it_is_the_previous_one() -> None:
    rotated = settings(encoding_aes_key=AES_KEY, previous_aes_key=OLD_AES_KEY, mode="safe")
    gateway = WechatGateway(rotated)
    gateway.attach(engine := FakeEngine())
    assert await _post_safe(gateway, OLD_AES_KEY) == 200
    assert await _post_safe(gateway, AES_KEY) == 200
    assert [m.text for m in engine.received] == ["hello", "hello"]
    await gateway.aclose()

    forgotten = WechatGateway(settings(encoding_aes_key=AES_KEY, mode="safe"))
    forgotten.attach(FakeEngine())
    assert await _post_safe(forgotten, OLD_AES_KEY) == 400
    await forgotten.aclose()


async def test_a_message_for_another_appid_is_403() -> None:
    gateway = WechatGateway(settings(encoding_aes_key=AES_KEY, mode="safe"))
    gateway.attach(engine := FakeEngine())
    assert await _post_safe(gateway, AES_KEY, app_id="wxsomebodyelse") == 403
    assert engine.received == []
    await gateway.aclose()


async def test_safe_mode_refuses_plaintext_and_compat_takes_both() -> None:
    plain = CallbackClient("/wechat", TOKEN)
    query, body = plain.signed(message_xml("text", OPENID, Content="hi"))
    safe = WechatGateway(settings(encoding_aes_key=AES_KEY, mode="safe"))
    safe.attach(FakeEngine())
    async with asgi_client(safe) as http:
        assert (await http.post("/wechat", params=query, content=body)).status_code == 400
    compat = WechatGateway(settings(encoding_aes_key=AES_KEY, mode="compat"))
    compat.attach(engine := FakeEngine())
    async with asgi_client(compat) as http:
        assert (await http.post("/wechat", params=query, content=body)).status_code == 200
    assert await _post_safe(compat, AES_KEY) == 200
    assert len(engine.received) == 2
    await safe.aclose()
    await compat.aclose()
