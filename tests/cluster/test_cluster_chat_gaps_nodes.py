"""Chats across two nodes in one process, sharing a real Redis (tests/cluster/conftest.py) and a real
PostgreSQL (callcenter/testing/postgres.py; a shared SQLite file when PostgreSQL is not installed): a
visitor's first messages on both nodes at once make one conversation; an agent's typing through a
node that does not hold the chat reaches the visitor's widget, and a visitor's typing reaches the agent;
a waiting chat's place and the queue's ``max_length`` count every node's chats; WeChat's passive reply
comes back from the node holding the conversation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlmodel import Session, col, select

import callcenter.store.crm  # noqa: F401 - registers the tables
from callcenter.chat.cluster import ChatCluster, ClusterChatRouter
from callcenter.chat.engine import ConversationEngine
from callcenter.chat.store import ChatStore
from callcenter.chat.webchat import ACCOUNT, WebchatGateway
from callcenter.chat.wechat import WechatGateway, create_wechat_router
from callcenter.cluster.node import ClusterNode
from callcenter.core.config import ChatSettings, WebchatSettings, WechatSettings
from callcenter.ivr.loader import load_flow_text
from callcenter.ivr.services import Services
from callcenter.routing.queues import QueueConfig
from callcenter.store import Store
from callcenter.store.crm import Conversation
from callcenter.testing.postgres import find_pg_bin, postgres_cluster  # noqa: F401 - the fixture
from callcenter.testing.wechat_standin import CallbackClient, WechatStandin, message_xml

FLOW = """
id: gapflow
language: en-US
start: hello
nodes:
  hello:
    type: say
    text: Welcome to Acme.
    next: menu
  menu:
    type: menu
    prompt: Say billing or help.
    options:
      - {dtmf: "1", speech: [billing], next: q}
      - {dtmf: "2", speech: [help], next: helped}
    no_input: Are you still there?
    invalid: Sorry, I did not get that.
    retries: 1
    on_failure: q
  helped:
    type: say
    text: Here is some help.
    next: q
  q:
    type: queue
    queue: general
    on_overflow: bye
  bye:
    type: hangup
    prompt: Goodbye.
"""
TOKEN, APP_ID, APP_SECRET = "gapstoken", "wxgaps0001", "gaps-secret"
SECRET = b"one-secret-for-every-node-0123456789"


async def until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Let the loop run until ``check()`` is truthy (bounded: a safety net, not a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
    return value


async def next_typing(frames: asyncio.Queue[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The next typing frame a widget gets (messages such as "ann has joined" skipped), bounded."""
    while True:
        frame = await asyncio.wait_for(frames.get(), 10.0)
        if frame is None or frame.get("type") == "typing":
            return frame


class Node:
    def __init__(
        self,
        name: str,
        redis_url: str,
        db_url: str,
        queues: dict[str, QueueConfig],
        tmp: Path,
        **cluster: Any,
    ) -> None:
        self.name = name
        self.redis = Redis.from_url(redis_url)
        self.node = ClusterNode(self.redis, name, queues, ttl_s=3.0, retry_s=0.2)
        self.store = Store(db_url)
        flow = load_flow_text(FLOW)
        self.engine = ConversationEngine(
            ChatStore(self.store.engine),
            ClusterChatRouter(queues, self.node),
            settings=ChatSettings(reply_timeout_s=120, idle_close_s=600, flows={"wechat": "gapflow"}),
            flows=lambda flow_id: (flow, Services()) if flow_id == "gapflow" else None,
        )
        self.cluster = ChatCluster(self.redis, self.node, **{"refresh_s": 0.05, "sweep_s": 0.5, **cluster})
        self.engine.agents = self.cluster.agents
        self.cluster.attach(self.engine)
        self.web = WebchatGateway(WebchatSettings(), tmp / name, secret=SECRET)
        self.web.attach(self.engine)
        self.wechat: WechatGateway | None = None

    async def start(self) -> None:
        await self.node.start()
        await self.engine.start()

    async def stop(self) -> None:
        await self.engine.aclose()
        if self.wechat is not None:
            await self.wechat.aclose()
        await self.node.stop()
        await self.redis.aclose()
        self.store.close()

    def frames(self, visitor: str) -> asyncio.Queue[dict[str, Any] | None]:
        """What a widget connected to this node receives (as the WebSocket writer would)."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.web._boxes[visitor].sockets.add(queue)
        return queue


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if find_pg_bin() is None:
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    cluster = request.getfixturevalue("postgres_cluster")
    url = cluster.create_database()
    yield url
    with contextlib.suppress(Exception):
        cluster.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture
async def make_nodes(
    redis: Redis, redis_url: str, database: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    Store(database).create_all()
    started: list[Node] = []

    async def make(queues: dict[str, QueueConfig], *per_node: dict[str, Any]) -> list[Node]:
        nodes = [
            Node(f"n{i + 1}", redis_url, database, queues, tmp_path, **kw) for i, kw in enumerate(per_node)
        ]
        for node in nodes:
            await node.start()
            started.append(node)
        await until(lambda: any(n.node.became_leader.is_set() for n in nodes), "a leader")
        return nodes

    yield make
    for node in reversed(started):
        await node.stop()


def open_rows(database: str, visitor: str) -> list[int]:
    store = Store(database)
    try:
        with Session(store.engine) as session:
            rows = session.exec(
                select(Conversation.id).where(
                    Conversation.address == f"{ACCOUNT}/{visitor}", col(Conversation.ended_at).is_(None)
                )
            ).all()
            return [int(r) for r in rows if r is not None]
    finally:
        store.close()


async def test_a_visitor_opening_on_two_nodes_at_once_gets_one_conversation(
    make_nodes: Callable[..., Any], database: str
) -> None:
    one, two = await make_nodes({"general": QueueConfig("general", join_when_empty=True)}, {}, {})
    for i in range(5):
        visitor = f"racer{i:03d}-0123456789abcd"[:22]
        a, b = await asyncio.gather(
            one.web.visitor_message(visitor, f"hello {i} from one"),
            two.web.visitor_message(visitor, f"hello {i} from two"),
        )
        box_one, box_two = one.web._boxes[visitor], two.web._boxes[visitor]
        assert box_one.conversation_id == box_two.conversation_id is not None
        assert open_rows(database, visitor) == [box_one.conversation_id]
        texts = [m.text for m in one.engine.store.messages(box_one.conversation_id)]
        assert f"hello {i} from one" in texts and f"hello {i} from two" in texts
        assert a["text"] and b["text"]


async def test_typing_both_ways_whichever_node_the_agent_and_the_widget_use(
    make_nodes: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    one, two = await make_nodes({"general": QueueConfig("general", join_when_empty=True)}, {}, {})
    one.node.send("define", agent="ann", skills={}, languages=[], max_chats=2)
    one.node.send("presence", agent="ann", event="set_available")
    visitor = "typist-0123456789abcdef"[:22]
    await one.web.visitor_message(visitor, "hello")  # held by node 1, the widget on node 1
    conv = one.web._boxes[visitor].conversation_id
    assert conv is not None
    live = one.engine.live(conv)
    assert live is not None
    await until(lambda: live.agent == "ann", "the chat assigned to ann")
    widget = one.frames(visitor)
    for _ in range(2000):  # node 1 writes the chat's summary (with its agent) on the next loop turn
        if ((await two.cluster.summary(conv)) or {}).get("agent") == "ann":
            break
        await asyncio.sleep(0.01)

    # ann types through node 2, which does not hold the chat: the widget on node 1 shows it
    assert await two.web.agent_typing(conv, True, agent="ann")
    frame = await next_typing(widget)
    assert frame == {"type": "typing", "typing": True, "name": "ann"}
    assert not await two.web.agent_typing(conv, True, agent="bob")  # not bob's chat: "not yours"
    assert await two.web.agent_typing(conv, False, agent=None)  # a supervisor may
    assert await next_typing(widget) == {"type": "typing", "typing": False, "name": "ann"}

    # the visitor's widget moves to node 2 (a reload through the load balancer) and types there
    await two.web.box(visitor)
    with caplog.at_level(logging.INFO, logger="callcenter"):
        await two.web.visitor_typing(visitor, True)
    typed = [r for r in caplog.records if r.getMessage() == "chat_typing"]
    assert [r.cc_fields for r in typed] == [  # type: ignore[attr-defined]
        {"conversation_id": conv, "agent": "ann", "who": "customer", "typing": True}
    ]
    # and ann typing through node 1 (the holder) reaches that widget on node 2
    widget_two = two.frames(visitor)
    assert await one.web.agent_typing(conv, True, agent="ann")
    assert await next_typing(widget_two) == {"type": "typing", "typing": True, "name": "ann"}


async def test_places_and_max_length_count_every_nodes_chats(make_nodes: Callable[..., Any]) -> None:
    queues = {"general": QueueConfig("general", join_when_empty=True, max_length=2)}
    # node 2 never reads the leader's line again after its start: only the leader can stop it
    one, two = await make_nodes(queues, {}, {"refresh_s": 3600.0})
    await one.web.visitor_message("first-0123456789abcdef"[:22], "first, on node one")
    first = one.web._boxes["first-0123456789abcdef"[:22]].conversation_id
    await until(lambda: one.cluster.line("general") == [first], "the first chat in the leader's line")
    await two.web.visitor_message("second-0123456789abcde"[:22], "second, on node two")
    second = two.web._boxes["second-0123456789abcde"[:22]].conversation_id
    assert first is not None and second is not None
    # node 2 knows only its own chat, the leader's line says it is second
    await until(lambda: one.cluster.line("general") == [first, second], "both chats in the line")
    assert one.engine.position(second, "general") == 2
    assert one.engine.position(first) == 1
    live_first = one.engine.live(first)
    assert live_first is not None and live_first.summary()["position"] == 1

    # a third chat on node 1: node 1 reads the line, the queue is full at once
    third_visitor = "third-0123456789abcdef"[:22]
    await one.web.visitor_message(third_visitor, "third, on node one")
    await until(
        lambda: any("nobody is available" in e["text"] for e in one.web._boxes[third_visitor].entries),
        "the third visitor told the queue is full",
    )
    # a fourth on node 2, which believes there is room: the leader refuses it (chat_full)
    fourth_visitor = "fourth-0123456789abcde"[:22]
    await two.web.visitor_message(fourth_visitor, "fourth, on node two")
    await until(
        lambda: any("nobody is available" in e["text"] for e in two.web._boxes[fourth_visitor].entries),
        "the fourth visitor told the queue is full",
    )
    assert one.cluster.line("general") == [first, second]
    fourth = two.web._boxes[fourth_visitor].conversation_id
    await until(lambda: two.engine.live(fourth or 0) is None, "the refused chat closed")


@pytest.fixture
async def standin() -> AsyncIterator[WechatStandin]:
    server = WechatStandin(APP_ID, APP_SECRET)
    await server.start()
    yield server
    await server.stop()


def wechat_settings(api_base: str) -> WechatSettings:
    account = {"token": TOKEN, "app_id": APP_ID, "app_secret": APP_SECRET, "mode": "plain"}
    return WechatSettings.model_validate({"accounts": {"default": account}, "api_base": api_base})


async def test_wechats_passive_reply_comes_back_from_the_node_holding_the_conversation(
    make_nodes: Callable[..., Any], standin: WechatStandin
) -> None:
    one, two = await make_nodes({"general": QueueConfig("general", join_when_empty=True)}, {}, {})
    clients = []
    for node in (one, two):
        api = httpx.AsyncClient(timeout=5.0)
        clients.append(api)
        node.wechat = WechatGateway(wechat_settings(standin.base_url), client=api)
        node.wechat.attach(node.engine)
    apps = []
    for node in (one, two):
        app = FastAPI()
        assert node.wechat is not None
        app.include_router(create_wechat_router(node.wechat))
        apps.append(httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://callcenter"))
    openid = "oGapsCustomer0001"
    callback = CallbackClient("/wechat", TOKEN)
    try:
        # the first message reaches node 1: it opens the conversation and answers passively
        [first] = await callback.post(apps[0], message_xml("text", openid, "gh_acme", Content="hi"))
        assert callback.open_reply(first.text)["Content"] == "Welcome to Acme."
        await standin.wait_sent(1)  # the menu, through the customer-service API
        assert standin.sent[0]["text"]["content"].startswith("Say billing or help.")
        # the answer reaches node 2: forwarded to node 1, whose bot's reply comes back passively
        [second] = await callback.post(apps[1], message_xml("text", openid, "gh_acme", Content="help"))
        assert callback.open_reply(second.text)["Content"] == "Here is some help."
        assert len(standin.sent) == 1  # not also sent through the API
        assert two.engine.conversations() == [] and len(one.engine.conversations()) == 1
    finally:
        for client in apps + clients:
            await client.aclose()
