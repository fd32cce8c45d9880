"""Chat events reach /api/live: supervisors get all, an agent only the events of their own chats."""

from __future__ import annotations

from datetime import UTC, datetime

from callcenter.api.live import agent_filter
from callcenter.events import LIVE_KINDS, Event, kind_of


def event(name: str, **data: object) -> Event:
    return Event(kind_of(name) or "", name, datetime.now(UTC), dict(data))


def test_chat_events_are_live_events() -> None:
    for name in ("chat_assigned", "chat_message", "chat_closed", "chat_requeued"):
        assert kind_of(name) == "chat"
    assert "chat" in LIVE_KINDS


def test_an_agent_gets_only_their_own_chats_events() -> None:
    al = agent_filter("al")
    assert al(event("chat_assigned", conversation_id=1, agent="al"))
    assert al(event("chat_message", conversation_id=1, agent="al", text="hi"))
    assert not al(event("chat_message", conversation_id=2, agent="bo", text="secret"))
    assert not al(event("chat_message", conversation_id=3, agent=None, text="still with the bot"))
    # a chat taken from al: al hears that it went
    assert al(event("chat_assigned", conversation_id=1, agent="bo", previous_agent="al"))
