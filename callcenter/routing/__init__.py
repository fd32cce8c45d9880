"""Skills-based routing, sans-I/O: the agent state machine, queue selection and the dispatcher.

Nothing here reads a clock, sleeps or touches a socket: every method that depends on time takes
``now`` (monotonic seconds). ``callcenter.calls.acd`` drives it on the event loop.
"""

from callcenter.routing.agents import Agent, AgentBoard, AgentEvent, AgentState, InvalidTransition
from callcenter.routing.queues import Escalation, QueueConfig, Waiting, eligible, select
from callcenter.routing.router import Offer, OfferGone, Overflow, QueueStats, Router

__all__ = [
    "Agent",
    "AgentBoard",
    "AgentEvent",
    "AgentState",
    "Escalation",
    "InvalidTransition",
    "Offer",
    "OfferGone",
    "Overflow",
    "QueueConfig",
    "QueueStats",
    "Router",
    "Waiting",
    "eligible",
    "select",
]
