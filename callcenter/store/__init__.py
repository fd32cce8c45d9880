"""Persistence: SQLModel tables, a synchronous repository and the batched call-record writer."""

from callcenter.store.flow_versions import FlowVersion as FlowVersion  # a table: create_all makes it
from callcenter.store.models import Agent, AgentPublic, CallRecord, HangupBy, agent_public, call_public
from callcenter.store.repo import (
    AgentExistsError,
    InvalidAgentError,
    Store,
    StoreError,
    compute_ha1,
    validate_skills,
)
from callcenter.store.writer import CallRecordWriter

__all__ = [
    "Agent",
    "AgentExistsError",
    "AgentPublic",
    "CallRecord",
    "CallRecordWriter",
    "HangupBy",
    "InvalidAgentError",
    "Store",
    "StoreError",
    "agent_public",
    "call_public",
    "compute_ha1",
    "validate_skills",
]
