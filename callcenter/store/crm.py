"""Customer-service tables: customers, conversations (voice, web chat, WeChat), tickets and CSAT.

Tickets link to their conversations from the conversation side (``conversation.ticket_id``): a ticket
gathers every call or chat about it, and no foreign key cycle is needed. Every change to a ticket is a
``ticket_event`` row (who, what, old → new, when), written in the same transaction as the change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import JSON, CheckConstraint, Text
from sqlmodel import Field, SQLModel

from callcenter.store.db import UTCDateTime, utcnow

__all__ = [
    "CHANNELS",
    "PRIORITIES",
    "SPEAKERS",
    "Channel",
    "Conversation",
    "Customer",
    "CustomerPhone",
    "Feedback",
    "Message",
    "Priority",
    "Speaker",
    "Ticket",
    "TicketEvent",
]

Channel = Literal["voice", "webchat", "wechat"]
CHANNELS: tuple[Channel, ...] = ("voice", "webchat", "wechat")
Speaker = Literal["caller", "agent", "system", "bot"]
SPEAKERS: tuple[Speaker, ...] = ("caller", "agent", "system", "bot")
Priority = Literal["low", "normal", "high", "urgent"]
PRIORITIES: tuple[Priority, ...] = ("low", "normal", "high", "urgent")  # ascending


class Customer(SQLModel, table=True):
    __tablename__ = "customer"
    __table_args__ = (CheckConstraint("vip_level BETWEEN 0 AND 9", name="ck_customer_vip_level"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(default="", max_length=200)
    email: str | None = Field(default=None, max_length=254, index=True)
    wechat_openid: str | None = Field(default=None, max_length=128, unique=True)
    vip_level: int = Field(default=0, ge=0, le=9, description="0 = not VIP, 1-9 = VIP tiers")
    external_id: str | None = Field(default=None, max_length=128, unique=True, description="CRM id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CustomerPhone(SQLModel, table=True):
    """One phone number of a customer, normalised (``+4930123456`` or bare digits); unique."""

    __tablename__ = "customer_phone"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True, ondelete="CASCADE")
    number: str = Field(max_length=32, unique=True)


class Conversation(SQLModel, table=True):
    __tablename__ = "conversation"

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(default="voice", max_length=16, description="voice, webchat or wechat")
    customer_id: int | None = Field(default=None, foreign_key="customer.id", index=True, ondelete="SET NULL")
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id", index=True, ondelete="SET NULL")
    call_id: str | None = Field(default=None, max_length=255, unique=True, description="SIP Call-ID")
    address: str | None = Field(default=None, max_length=255, description="caller number or chat handle")
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    queue: str | None = Field(default=None, max_length=64)
    agent: str | None = Field(default=None, max_length=64, description="username of the last agent")
    intent: str | None = Field(default=None, max_length=64)
    language: str | None = Field(default=None, max_length=35)
    disposition: str | None = Field(default=None, max_length=64)
    recording: str | None = Field(default=None, max_length=1024)
    summary: str = Field(default="", sa_type=Text, description="extractive summary of this conversation")


class Message(SQLModel, table=True):
    """One utterance or chat message of a conversation."""

    __tablename__ = "message"

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id", index=True, ondelete="CASCADE")
    speaker: str = Field(max_length=16, description="caller, agent, system or bot")
    text: str = Field(sa_type=Text)
    at: datetime = Field(sa_type=UTCDateTime)
    confidence: float | None = Field(default=None, description="recogniser confidence 0-1 (speech)")


class Ticket(SQLModel, table=True):
    """A ticket; its number is its id."""

    __tablename__ = "ticket"

    id: int | None = Field(default=None, primary_key=True)
    subject: str = Field(max_length=200)
    body: str = Field(default="", sa_type=Text)
    status: str = Field(default="new", max_length=16, index=True)
    priority: str = Field(default="normal", max_length=16)
    queue: str | None = Field(default=None, max_length=64, index=True)
    assignee: str | None = Field(default=None, max_length=64, index=True)
    tags: list[str] = Field(default_factory=list, sa_type=JSON)
    category: str | None = Field(default=None, max_length=64)
    customer_id: int | None = Field(default=None, foreign_key="customer.id", index=True, ondelete="SET NULL")
    summary: str = Field(default="", sa_type=Text)
    entities: dict[str, Any] = Field(default_factory=dict, sa_type=JSON, description="kind -> values")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    solved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # SLA (callcenter.tickets.sla): due times in business time, the resolution clock's paused time,
    # which warnings/breaches were raised, and when the checker must look at this ticket next.
    first_response_due: datetime | None = Field(default=None, sa_type=UTCDateTime)
    first_response_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    resolution_due: datetime | None = Field(default=None, sa_type=UTCDateTime)
    sla_paused_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    sla_paused_s: float = Field(default=0.0, description="business seconds spent pending/solved")
    sla_fired: list[str] = Field(default_factory=list, sa_type=JSON, description="e.g. resolution:warning")
    sla_next_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)

    @property
    def number(self) -> int:
        assert self.id is not None, "a ticket has a number once stored"
        return self.id


class TicketEvent(SQLModel, table=True):
    """Audit trail: one row per change (``field`` created, status, priority, assignee, tags, note, …)."""

    __tablename__ = "ticket_event"

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True, ondelete="CASCADE")
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    actor: str = Field(max_length=128, description="system, ivr, cli, api:NAME, agent:NAME")
    field: str = Field(max_length=32)
    old: str | None = Field(default=None, sa_type=Text)
    new: str | None = Field(default=None, sa_type=Text)


class Feedback(SQLModel, table=True):
    """A customer-satisfaction answer for one conversation (and the agent who handled it)."""

    __tablename__ = "feedback"
    __table_args__ = (CheckConstraint("score BETWEEN 1 AND 5", name="ck_feedback_score"),)

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id", index=True, ondelete="CASCADE")
    agent: str | None = Field(default=None, max_length=64, index=True)
    score: int = Field(ge=1, le=5, description="CSAT 1 (very unhappy) - 5 (very happy)")
    comment: str | None = Field(default=None, sa_type=Text)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
