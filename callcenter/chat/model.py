"""What channel adapters (web chat, WeChat) and the conversation engine exchange.

An adapter turns what arrives on its channel into an :class:`Inbound` and hands it to
:meth:`ChatEngine.receive`; the engine answers through the adapter's :class:`Deliver` callable with
:class:`Outbound` messages (bot replies, agent replies, system notices). Neither side knows the other's
transport: the WeChat adapter decides between a passive reply and the customer-service API, the web
adapter between a WebSocket push and a long-poll answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

__all__ = ["ChatChannel", "ChatEngine", "Deliver", "Inbound", "InboundKind", "Outbound", "OutboundKind"]

ChatChannel = Literal["webchat", "wechat"]  # the Conversation.channel values of text conversations
InboundKind = Literal["text", "image", "voice", "location", "link", "file", "event"]
OutboundKind = Literal["text", "article", "image", "system"]


@dataclass(frozen=True, slots=True)
class Inbound:
    """One thing a customer sent (or did) on a text channel.

    ``account``: the WeChat account name from config (``default`` for ``/wechat``) or ``web``;
    ``visitor``: the WeChat OpenID or the web visitor id (from the signed cookie) — together with
    ``channel`` and ``account`` they name the customer's open conversation.
    ``text``: the message text; for voice the recognition text WeChat sent, for location "lat,lon
    label", for a link its title and URL, for an event its name (``subscribe``, ``unsubscribe``,
    ``CLICK:<key>``). ``external_id``: the channel's message id (WeChat MsgId, or FromUserName+CreateTime
    for events) used to drop retries; ``media``: kind-specific extras (MediaId, PicUrl, upload path,
    size, Label, Url …).
    """

    channel: ChatChannel
    account: str
    visitor: str
    kind: InboundKind
    text: str
    received_at: datetime
    external_id: str | None = None
    media: dict[str, Any] = field(default_factory=dict)
    display_name: str | None = None  # what the visitor called themself (web offline form, profile)


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message to the customer. ``sender``: ``bot``, ``system`` or the agent's name."""

    conversation_id: int
    channel: ChatChannel
    account: str
    visitor: str
    kind: OutboundKind
    text: str
    sender: str
    sent_at: datetime
    # For kind "article": {"title", "url", "snippet"}; for "image": {"media_id" or "url"}.
    extra: dict[str, Any] = field(default_factory=dict)


# An adapter's way to get a message to the customer; raising means "not delivered" (the engine logs it,
# keeps the message in the conversation and does not retry on its own).
Deliver = Callable[[Outbound], Awaitable[None]]


class ChatEngine(Protocol):
    """The conversation engine as adapters see it."""

    def register_channel(self, channel: ChatChannel, deliver: Deliver) -> None:
        """Where outbound messages of ``channel`` go (one adapter per channel; accounts inside)."""

    async def receive(self, message: Inbound) -> int | None:
        """Take one inbound message: dedupe by ``external_id``, store it, and let the conversation's
        flow (or its agent) react. Returns the conversation id, or None when it was a duplicate.
        Returns once stored; replies come later through the channel's ``Deliver``."""
        ...

    async def history(
        self, channel: ChatChannel, account: str, visitor: str, limit: int = 50
    ) -> list[Outbound]:
        """The visitor's current conversation so far (both directions, oldest first) — for the web
        widget after a reload. Inbound messages appear with ``sender`` ``customer``."""
        ...
