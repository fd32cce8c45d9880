"""Builds the conversation engine from the server's parts (kept out of ``app.py``): the voice ACD's
queues and agent board, the IVR's live flows, the ticket service."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from callcenter.chat.engine import ConversationEngine
from callcenter.chat.routing import ChatRouter
from callcenter.chat.store import ChatStore
from callcenter.core.config import Settings
from callcenter.ivr.schema import Flow
from callcenter.ivr.services import Services
from callcenter.routing.agents import Agent
from callcenter.store import Store
from callcenter.tickets.service import HandledCall

if TYPE_CHECKING:
    from callcenter.calls.acd import Acd
    from callcenter.calls.control import IvrRuntime
    from callcenter.tickets import TicketService

__all__ = ["build_chat_engine", "flow_source"]


def flow_source(ivr: Callable[[], IvrRuntime | None]) -> Callable[[str], tuple[Flow, Services] | None]:
    """flow id → (flow, services) from the IVR runtime: with live versions, the whole set is frozen
    when the conversation starts (as for a call), so later publishes do not change it midway."""

    def source(flow_id: str) -> tuple[Flow, Services] | None:
        runtime = ivr()
        if runtime is None:
            return None
        if runtime.registry is None:
            flow = runtime.flows.get(flow_id)
            return (flow, runtime.services) if flow is not None else None
        flows = runtime.registry.snapshot()
        flow = flows.get(flow_id)
        return (flow, replace(runtime.services, flows=flows)) if flow is not None else None

    return source


def build_chat_engine(
    settings: Settings,
    store: Store,
    acd: Acd,
    *,
    ivr: Callable[[], IvrRuntime | None],
    tickets: Callable[[], TicketService | None],
) -> ConversationEngine:
    def agents() -> Iterable[Agent]:
        return list(acd.router.agents)

    router = ChatRouter(
        acd.router.queues,
        offer_during_calls=settings.chat.offer_during_calls,
        default_max_chats=settings.routing.default_max_chats,
    )
    cluster = None
    node = getattr(acd.router, "node", None)
    if settings.redis_url is not None and node is not None:
        # Scale-out: the chat ACD runs on the cluster's leader; conversations stay on the node that opened
        # them, and agents on any node reach them (callcenter/chat/cluster.py).
        from callcenter.chat.cluster import ChatCluster, ClusterChatRouter

        node.router_args["offer_during_calls"] = settings.chat.offer_during_calls
        router = ClusterChatRouter(
            acd.router.queues,
            node,
            offer_during_calls=settings.chat.offer_during_calls,
            default_max_chats=settings.routing.default_max_chats,
        )
        cluster = ChatCluster(
            node.redis, node, local_agents=agents, default_max_chats=settings.routing.default_max_chats
        )
        agents = cluster.agents

    async def file_ticket(call: HandledCall) -> int | None:
        service = tickets()
        return await service.record_call(call) if service is not None else None

    default_flow = next(iter(settings.ivr.numbers.values()), None) or settings.ivr.default_flow
    engine = ConversationEngine(
        ChatStore(store.engine),
        router,
        settings=settings.chat,
        flows=flow_source(ivr),
        default_flow=default_flow,
        agents=agents,
        tickets=file_ticket,
    )
    if cluster is not None:
        cluster.attach(engine)
    return engine
