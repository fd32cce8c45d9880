"""Secrets never reach the log (issue 11): a server with every kind of secret configured, at debug level,
taken through requests that use each one — then its whole output is searched for them."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from callcenter.testing.server import ServerProcess
from callcenter.testing.sipp import run_sipp, sipp_available
from callcenter.testing.wechat_standin import CallbackClient, WechatStandin, message_xml

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not sipp_available(), reason="SIPp not installed")]

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "AdminTokenS3cret-0a1b2c3d4e5f"
METRICS_TOKEN = "MetricsTokenS3cret-9f8e7d6c"
TRUNK_PASSWORD = "TrunkPassw0rdS3cret-77"
WECHAT_TOKEN = "WxTok3nS3cretValue"
WECHAT_APP_SECRET = "WxAppS3cretValue-5e6f7a8b"
WEBCHAT_SECRET = "WebchatSigningS3cret-0123456789abcdefXYZ"
WEBHOOK_SECRET = "WebhookSigningS3cret-abcdef012345"
AGENT_PASSWORD = "AgentSipPassw0rd-S3cret"
WRONG_AGENT_PASSWORD = "WrongSipPassw0rd-Guess42"
WEB_PASSWORD_GUESS = "WebLoginPassw0rd-Guess42"


class Standin:
    """The WeChat API stand-in on its own event loop in a thread (the test itself is synchronous)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.api: WechatStandin | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> str:
        self.thread.start()

        async def start() -> str:
            self.api = WechatStandin("wxSecretsTest", WECHAT_APP_SECRET)
            return await self.api.start()

        return asyncio.run_coroutine_threadsafe(start(), self.loop).result(20)

    def stop(self) -> None:
        if self.api is not None:
            asyncio.run_coroutine_threadsafe(self.api.stop(), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def standin() -> Iterator[Standin]:
    s = Standin()
    yield s
    s.stop()


def http(server: ServerProcess, method: str, path: str, body: Any = None, token: str | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}{path}", data, headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_no_secret_reaches_the_log(standin: Standin, tmp_path: Path) -> None:
    api_base = standin.start()
    config = f"""
ivr:
  numbers: {{}}
  flows_dir: {REPO / "ivr_flows"}
  intents_file: {REPO / "ivr_flows" / "intents" / "intents.yaml"}
sip:
  trunk: {{uri: "sip:127.0.0.1:9", username: trunkuser, password: "{TRUNK_PASSWORD}"}}
wechat:
  api_base: "{api_base}"
  passive_reply_s: 0.5
  accounts:
    default: {{token: "{WECHAT_TOKEN}", app_id: wxSecretsTest, app_secret: "{WECHAT_APP_SECRET}"}}
chat:
  webchat: {{secret: "{WEBCHAT_SECRET}"}}
webhooks:
  - {{url: "http://127.0.0.1:9/hook", secret: "{WEBHOOK_SECRET}", events: ["call_ended"]}}
"""
    server = ServerProcess(
        tmp_path / "data",
        env={
            "CALLCENTER_LOG_LEVEL": "debug",
            "CALLCENTER_HTTP_ADMIN_TOKEN": ADMIN_TOKEN,
            "CALLCENTER_HTTP_METRICS_TOKEN": METRICS_TOKEN,
        },
        config=config,
    )
    server.start()
    try:
        server.cli("agents", "add", "alice", "--password", AGENT_PASSWORD)
        # the API with the admin token, metrics with theirs, a web login with a wrong password
        assert http(server, "GET", "/api/agents/live", token=ADMIN_TOKEN) == 200
        assert http(server, "GET", "/metrics", token=METRICS_TOKEN) == 200
        assert (
            http(server, "POST", "/api/auth/login", {"username": "admin", "password": WEB_PASSWORD_GUESS})
            == 401
        )
        # REGISTER with the right password, then a wrong one
        target = f"127.0.0.1:{server.sip_port}"
        ok = run_sipp(target, tmp_path / "reg", scenario="register.xml", inject=[["alice"]],
                      extra=["-au", "alice", "-ap", AGENT_PASSWORD], timeout_s=20)  # fmt: skip
        assert ok.successful == 1, ok.errors[-2000:]
        bad = run_sipp(target, tmp_path / "bad", scenario="register_rejected.xml", inject=[["alice"]],
                       extra=["-au", "alice", "-ap", WRONG_AGENT_PASSWORD], timeout_s=20)  # fmt: skip
        assert bad.successful == 1, bad.errors[-2000:]
        # a call (its end goes to the webhook), a web chat, WeChat messages answered through the API
        call = run_sipp(target, tmp_path / "call", builtin="uac", calls=1, extra=["-d", "500"], timeout_s=30)
        assert call.successful == 1
        session = urllib.request.Request(
            f"http://127.0.0.1:{server.http_port}/chat/session", b"{}", method="POST"
        )
        with urllib.request.urlopen(session, timeout=10) as r:
            visitor = json.loads(r.read())["token"]
        message = urllib.request.Request(
            f"http://127.0.0.1:{server.http_port}/chat/messages",
            json.dumps({"text": "hi"}).encode(),
            {"Content-Type": "application/json", "X-Chat-Visitor": visitor},
            method="POST",
        )
        with urllib.request.urlopen(message, timeout=10) as r:
            assert r.status == 201
        wechat = CallbackClient(f"http://127.0.0.1:{server.http_port}/wechat", WECHAT_TOKEN)
        with httpx.Client(timeout=10) as client:
            for text in ("hello", "sales"):
                query, body = wechat.signed(message_xml("text", "openid-secrets", Content=text))
                assert client.post(f"{wechat.url}?{urlencode(query)}", content=body).status_code == 200
            verify = {**wechat.signed("")[0], "echostr": "echo-1"}
            assert client.get(f"{wechat.url}?{urlencode(verify)}").text == "echo-1"
        # the agent (available since her REGISTER) answers the WeChat chat: through WeChat's API
        listing = urllib.request.Request(
            f"http://127.0.0.1:{server.http_port}/api/chats?state=open",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        with urllib.request.urlopen(listing, timeout=10) as r:
            wx = [c["id"] for c in json.loads(r.read()) if c["channel"] == "wechat"]
        assert wx, "the WeChat chat never reached the agent"
        reply = {"text": "How can I help?"}
        assert http(server, "POST", f"/api/chats/{wx[0]}/messages", reply, token=ADMIN_TOKEN) == 201
        deadline = time.monotonic() + 20
        while standin.api is not None and not standin.api.sent and time.monotonic() < deadline:
            time.sleep(0.2)
        assert standin.api is not None and standin.api.token_calls >= 1, "no WeChat API call was made"
        access_tokens = list(standin.api.tokens)
    finally:
        server.stop()

    log = server.log_text()
    assert '"event"' in log  # it did log, at debug level
    secrets = {
        "admin token": ADMIN_TOKEN,
        "metrics token": METRICS_TOKEN,
        "trunk password": TRUNK_PASSWORD,
        "WeChat token": WECHAT_TOKEN,
        "WeChat AppSecret": WECHAT_APP_SECRET,
        "web chat key": WEBCHAT_SECRET,
        "webhook secret": WEBHOOK_SECRET,
        "agent password": AGENT_PASSWORD,
        "wrong agent password": WRONG_AGENT_PASSWORD,
        "web password guess": WEB_PASSWORD_GUESS,
        "web chat visitor token": visitor,
        **{f"WeChat access_token {i}": t for i, t in enumerate(access_tokens)},
    }
    leaked = {
        name: line[:300] for name, value in secrets.items() for line in log.splitlines() if value in line
    }
    assert not leaked, leaked
