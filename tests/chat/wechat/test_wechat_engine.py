"""One round trip through the real conversation engine (tests/chat/conftest.py's World and flow):
the flow's first message is the passive reply, the menu after it goes through the CS API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from wechat_helpers import APP_ID, APP_SECRET, OPENID, TOKEN, asgi_client, settings

from callcenter.chat.wechat import WechatGateway
from callcenter.testing.wechat_standin import CallbackClient, WechatStandin, message_xml


@pytest.fixture
async def standin() -> AsyncIterator[WechatStandin]:
    server = WechatStandin(APP_ID, APP_SECRET)
    await server.start()
    yield server
    await server.stop()


async def test_a_wechat_customer_talks_to_the_flow(running: Any, standin: WechatStandin) -> None:
    # running: tests/chat/conftest.py's World (not imported: `conftest` is ambiguous across test dirs)
    async with httpx.AsyncClient(timeout=5.0) as api:
        gateway = WechatGateway(settings(standin.base_url), client=api)
        gateway.attach(running.engine)
        client = CallbackClient("/wechat", TOKEN)
        async with asgi_client(gateway) as http:
            [first] = await client.post(http, message_xml("text", OPENID, "gh_acme", Content="hi"))
            assert client.open_reply(first.text)["Content"] == "Welcome to Acme."
            await standin.wait_sent(1)
            assert standin.sent[0]["touser"] == OPENID
            assert standin.sent[0]["text"]["content"].startswith("What can we do for you?")
            await client.post(http, message_xml("text", OPENID, "gh_acme", Content="I have a question"))
        conversation = running.engine.conversations()[0]
        rows = running.engine.store.messages(conversation.id)
        assert [r.text for r in rows if r.speaker == "caller"][:2] == ["hi", "I have a question"]
        assert conversation.channel == "wechat" and conversation.account == "default"
        await gateway.aclose()
