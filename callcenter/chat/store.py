"""The chat side of the CRM tables: conversations, messages and customers of text channels.

Synchronous (SQLModel sessions); the engine calls these in worker threads — except the hot path,
:meth:`ChatStore.append`, which hands each message to one batching writer thread
(:class:`~callcenter.chat.writer.MessageWriter`). A text conversation is a
:class:`~callcenter.store.crm.Conversation` with ``channel`` webchat/wechat, ``address``
``ACCOUNT/VISITOR`` and ``call_id`` ``chat:ID`` (so the ticket service's post-call path, which keys
conversations by call id, finds it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from callcenter.chat.writer import MessageWriter
from callcenter.store.crm import Conversation, Customer, Message

__all__ = ["ChatStore", "StoredMessage", "address_of"]


def address_of(account: str, visitor: str) -> str:
    return f"{account}/{visitor}"[:255]


@dataclass(frozen=True)
class StoredMessage:
    id: int
    conversation_id: int
    speaker: str  # caller, bot, agent, system
    text: str
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "speaker": self.speaker, "text": self.text, "at": self.at.isoformat()}


def _stored(m: Message) -> StoredMessage:
    assert m.id is not None
    return StoredMessage(m.id, m.conversation_id, m.speaker, m.text, m.at)


class ChatStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.writer = MessageWriter(engine)

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def open_conversation(
        self, channel: str, account: str, visitor: str, started_at: datetime, display_name: str | None
    ) -> tuple[int, int | None]:
        """A new conversation row and its customer (found by WeChat OpenID or an earlier conversation of
        the same web visitor; created when new). Returns (conversation id, customer id)."""
        address = address_of(account, visitor)
        for attempt in range(3):
            try:
                with self._session() as session:
                    customer = self._customer(session, channel, address, visitor, display_name)
                    conv = Conversation(
                        channel=channel, address=address, started_at=started_at, customer_id=customer.id
                    )
                    session.add(conv)
                    session.flush()
                    assert conv.id is not None
                    conv.call_id = f"chat:{conv.id}"
                    session.add(conv)
                    session.commit()
                    return conv.id, customer.id
            except IntegrityError:  # a second conversation created the same customer just now
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _customer(
        self, session: Session, channel: str, address: str, visitor: str, name: str | None
    ) -> Customer:
        if channel == "wechat":
            found = session.exec(select(Customer).where(Customer.wechat_openid == visitor)).first()
            if found is not None:
                return found
            customer = Customer(name=(name or "WeChat user")[:200], wechat_openid=visitor[:128])
        else:
            earlier = session.exec(
                select(Conversation.customer_id)
                .where(Conversation.channel == channel, Conversation.address == address)
                .where(col(Conversation.customer_id).is_not(None))
                .order_by(col(Conversation.id).desc())
            ).first()
            if earlier is not None:
                found = session.get(Customer, earlier)
                if found is not None:
                    return found
            customer = Customer(name=(name or "Web visitor")[:200])
        session.add(customer)
        session.flush()
        return customer

    async def append(self, conversation_id: int, speaker: str, text: str, at: datetime) -> StoredMessage:
        """Store one message (batched with others on the writer thread); returns once committed."""
        message_id = await self.writer.add(conversation_id, speaker, text, at)
        return StoredMessage(message_id, conversation_id, speaker, text, at)

    def add_message(self, conversation_id: int, speaker: str, text: str, at: datetime) -> StoredMessage:
        """Blocking: store one message in its own transaction."""
        with self._session() as session:
            row = Message(conversation_id=conversation_id, speaker=speaker, text=text, at=at)
            session.add(row)
            session.commit()
            return _stored(row)

    def update(self, conversation_id: int, **values: Any) -> None:
        with self._session() as session:
            conv = session.get(Conversation, conversation_id)
            if conv is None:
                return
            for key, value in values.items():
                setattr(conv, key, value)
            session.add(conv)
            session.commit()

    def messages(self, conversation_id: int, limit: int | None = None) -> list[StoredMessage]:
        """Oldest first; with ``limit`` the newest ``limit`` of them."""
        with self._session() as session:
            query = select(Message).where(Message.conversation_id == conversation_id)
            if limit is None:
                rows: Sequence[Message] = session.exec(query.order_by(col(Message.at), col(Message.id))).all()
            else:
                rows = list(
                    session.exec(query.order_by(col(Message.at).desc(), col(Message.id).desc()).limit(limit))
                )[::-1]
            return [_stored(m) for m in rows]

    def conversation(self, conversation_id: int) -> Conversation | None:
        with self._session() as session:
            conv = session.get(Conversation, conversation_id)
            return conv if conv is not None and conv.channel in ("webchat", "wechat") else None

    def closed(self, agent: str | None, limit: int = 50) -> list[Conversation]:
        """Closed text conversations, newest first (``agent``: only theirs)."""
        with self._session() as session:
            query = select(Conversation).where(
                col(Conversation.channel).in_(("webchat", "wechat")), col(Conversation.ended_at).is_not(None)
            )
            if agent is not None:
                query = query.where(Conversation.agent == agent)
            return list(session.exec(query.order_by(col(Conversation.ended_at).desc()).limit(limit)))

    def open_ids(self) -> list[int]:
        """Text conversations never closed (a restart left them): the engine closes them at start-up."""
        with self._session() as session:
            query = select(Conversation.id).where(
                col(Conversation.channel).in_(("webchat", "wechat")), col(Conversation.ended_at).is_(None)
            )
            return [i for i in session.exec(query) if i is not None]
