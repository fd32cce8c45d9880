"""What the composition root builds when ``redis_url`` is set: one Redis client, this node's
:class:`ClusterNode` (heartbeat, election, the leader's dispatcher), the :class:`ForwardingRouter`
the Acd routes through, the :class:`SharedBindings` (agents' registrations on every node) and the
:class:`EventBridge` for live events. With ``redis_url: null`` none
of it exists and the single-node server is unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

from redis.asyncio import Redis

from callcenter.cluster.bindings import SharedBindings
from callcenter.cluster.bridge import EventBridge
from callcenter.cluster.forwarding import ForwardingRouter
from callcenter.cluster.node import ClusterNode
from callcenter.core.config import Settings
from callcenter.events import EventBus
from callcenter.routing.queues import QueueConfig

__all__ = ["Cluster"]


class Cluster:
    def __init__(self, settings: Settings, queues: Mapping[str, QueueConfig]) -> None:
        assert settings.redis_url is not None
        self.node_id = settings.node_id
        self.redis = Redis.from_url(settings.redis_url, socket_timeout=10.0, health_check_interval=30)
        routing = settings.routing
        self.node = ClusterNode(
            self.redis,
            settings.node_id,
            queues,
            max_missed=routing.max_missed_offers,
            auto_available=routing.available_on_register,
            default_max_chats=routing.default_max_chats,
            timezone=routing.timezone,  # the leader's midnight: per-day counters, as on one node
        )
        self.router = ForwardingRouter(
            queues,
            self.node,
            max_missed=routing.max_missed_offers,
            auto_available=routing.available_on_register,
        )
        self.router.agents.default_max_chats = routing.default_max_chats
        # Agents' registrations, seen by every node; the Acd attaches its RegistrationService to it
        # (it finds it as ``router.bindings``), so the node's REGISTERs are written there.
        self.bindings = SharedBindings(self.redis, settings.node_id)
        self.router.bindings = self.bindings
        self.bridge: EventBridge | None = None

    async def start(self) -> None:
        """Before the Acd starts (its agent definitions are then forwarded in order)."""
        await self.node.start()
        await self.bindings.start()
        self.router.start()

    async def start_events(self, bus: EventBus) -> None:
        """Once the bus is bound to the running loop."""
        self.bridge = EventBridge(bus, self.redis, self.node_id)
        await self.bridge.start()

    async def stop(self) -> None:
        if self.bridge is not None:
            await self.bridge.stop()
        await self.router.stop()
        await self.bindings.stop()
        await self.node.stop()
        await self.redis.aclose()
