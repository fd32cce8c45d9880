"""The inbox summaries a node writes to Redis land in the order the chat changed, even when one write is
slow (found under load: a "waiting" summary overtook the "open" one, and the chat never showed up in
the other node's inbox)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

from callcenter.chat.cluster import ChatCluster


class SlowFirstRedis:
    """Just what the summary writes use: HSET in a pipeline; the first pipeline is slow."""

    def __init__(self) -> None:
        self.info: dict[str, str] = {}
        self.pipelines = 0
        self.release_first = asyncio.Event()

    def register_script(self, script: str) -> Any:
        async def run(keys: Any = None, args: Any = None) -> Any:
            if "chat:info" in str(keys):
                self.info.pop(str(args[0]), None)  # the forget script drops the summary
            return 1

        return run

    def pipeline(self, transaction: bool = False) -> Any:
        redis = self
        redis.pipelines += 1
        slow = redis.pipelines == 1
        writes: list[tuple[str, str]] = []

        class Pipe:
            async def __aenter__(self) -> Pipe:
                return self

            async def __aexit__(self, *exc: object) -> None:
                return None

            def hset(self, key: str, field: str, value: str) -> None:
                if key.endswith("chat:info"):
                    writes.append((field, value))

            def hget(self, *args: Any) -> None:
                return None

            def delete(self, *args: Any) -> None:
                return None

            async def execute(self) -> list[Any]:
                if slow:
                    await redis.release_first.wait()
                for field, value in writes:
                    redis.info[field] = value
                return []

        return Pipe()


class Chat:
    def __init__(self) -> None:
        self.id, self.state, self.language = 7, "waiting", None
        self.key = ("webchat", "web", "v-7")

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "state": "open" if self.state == "assigned" else self.state}


async def test_a_slow_summary_write_cannot_overtake_a_later_one() -> None:
    redis = SlowFirstRedis()
    node: Any = SimpleNamespace(node_id="node1", prefix="cc:")
    cluster = ChatCluster(redis, node)  # type: ignore[arg-type]
    chat: Any = Chat()
    cluster.changed(chat)  # waiting: this write is slow
    for _ in range(20):
        await asyncio.sleep(0)
    chat.state = "assigned"
    cluster.changed(chat)  # open
    for _ in range(20):
        await asyncio.sleep(0)
    redis.release_first.set()
    for _ in range(50):
        await asyncio.sleep(0)
    assert json.loads(redis.info["7"])["state"] == "open"


async def test_a_summary_write_in_flight_does_not_bring_back_a_closed_chat() -> None:
    redis = SlowFirstRedis()
    node: Any = SimpleNamespace(node_id="node1", prefix="cc:")
    cluster = ChatCluster(redis, node)  # type: ignore[arg-type]
    chat: Any = Chat()
    cluster.changed(chat)  # the slow write is in flight...
    for _ in range(20):
        await asyncio.sleep(0)
    chat.state = "closed"
    closing = asyncio.create_task(cluster.closed(chat))  # ...when the chat closes
    for _ in range(20):
        await asyncio.sleep(0)
    redis.release_first.set()
    await asyncio.wait_for(closing, 5)
    assert "7" not in redis.info
