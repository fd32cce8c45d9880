"""The conversation engine end to end in-process: flows in text mode, the chat ACD, agents, tickets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from chat_helpers import World, msg, until

from callcenter.chat.engine import ChatError
from callcenter.ivr.loader import load_flow
from callcenter.ivr.services import Services
from callcenter.routing.agents import AgentState
from callcenter.routing.queues import QueueConfig


async def start(w: World, text: str = "hi", visitor: str = "v1") -> int:
    conv = await w.engine.receive(msg(text, visitor))
    assert conv is not None
    await w.channel.said("What can we do for you?")
    live = w.engine.live(conv)
    assert live is not None
    await until(lambda: live.awaiting_reply)
    return conv


async def test_a_first_message_opens_a_conversation_greeted_with_the_menu_as_text(running: World) -> None:
    w = running
    conv = await start(w)
    texts = w.channel.texts()
    assert texts[0] == "Welcome to Acme."
    # the menu: its prompt and the options (key and first phrase) in one message
    assert texts[1] == "What can we do for you?\n1 billing, 2 question, 9 message, 0 agent, 7 phone"
    rows = w.engine.store.messages(conv)
    assert [(m.speaker, m.text) for m in rows][:3] == [
        ("caller", "hi"),
        ("bot", "Welcome to Acme."),
        ("bot", texts[1]),
    ]
    # the same visitor's next message belongs to the same conversation; another visitor gets their own
    assert await w.engine.receive(msg("hello?", "v1")) == conv
    assert await w.engine.receive(msg("hi", "v2")) != conv


async def test_a_key_or_words_pick_a_menu_option_and_the_chat_reaches_an_agent(running: World) -> None:
    w = running
    w.add_agent("ann")
    conv = await start(w)
    await w.engine.receive(msg("I have an invoice question"))  # "invoice" is a billing phrase
    await w.channel.said("ann has joined the conversation.")
    live = w.engine.live(conv)
    assert live is not None and live.state == "assigned" and live.agent == "ann"
    out = await w.engine.agent_reply(conv, "Hello, how can I help?", agent="ann", sender="ann")
    assert out.sender == "ann" and w.channel.sent[-1].text == "Hello, how can I help?"
    # while with the agent the customer's messages are kept for them, not read by the bot
    await w.engine.receive(msg("My invoice is wrong"))
    assert live.unread == 1
    await w.engine.close(conv, by="agent:ann", agent="ann")
    await w.engine.settle()
    assert w.channel.sent[-1].text == "This conversation has been closed."
    assert w.engine.live(conv) is None
    [call] = w.tickets
    assert call.channel == "webchat" and call.agent == "ann" and call.disposition == "answered"
    assert call.queue == "billing"
    said = [(t.speaker, t.text) for t in call.transcript]
    assert ("caller", "My invoice is wrong") in said and ("agent", "Hello, how can I help?") in said


async def test_an_agent_cannot_act_on_someone_elses_chat(running: World) -> None:
    w = running
    w.add_agent("ann")
    conv = await start(w)
    await w.engine.receive(msg("1"))
    await w.channel.said("ann has joined")
    with pytest.raises(ChatError):
        await w.engine.agent_reply(conv, "hi", agent="bob", sender="bob")
    with pytest.raises(ChatError):
        await w.engine.close(conv, by="agent:bob", agent="bob")


async def test_a_confident_kb_answer_goes_out_as_an_article(running: World) -> None:
    w = running
    await start(w)
    await w.engine.receive(msg("how do refunds work"))  # no option matches: other_speech → kb
    await w.channel.said("Goodbye.")
    article = next(o for o in w.channel.sent if o.kind == "article")
    assert article.text == "Refunds take five working days."
    assert article.extra["title"] == "Refunds" and article.extra["url"].endswith("/7")
    assert w.kb.questions == ["how do refunds work"]
    await w.engine.settle()
    assert w.channel.sent[-1].text == "This conversation has been closed."
    assert w.tickets[0].disposition == "bot" and w.tickets[0].ivr_outcome == "hangup"  # the bye node


async def test_no_kb_answer_takes_the_not_found_branch(running: World) -> None:
    w = running
    w.add_agent("ann")
    await start(w)
    await w.engine.receive(msg("what is the weather"))
    await w.channel.said("ann has joined")
    texts = w.channel.texts()
    assert "Sorry, I have no answer to that." in texts
    assert not any(o.kind == "article" for o in w.channel.sent)


async def test_silence_is_the_menus_no_input_path(running: World) -> None:
    w = running
    conv = await start(w)
    w.tick(59.0)
    assert "Are you still there?" not in "".join(w.channel.texts())
    w.tick(1.0)  # reply_timeout_s (60) has passed
    await w.channel.said("Are you still there?")
    live = w.engine.live(conv)
    assert live is not None
    await until(lambda: live.awaiting_reply)
    w.tick(60.0)  # silent again: the retries are used up → on_failure (bye)
    await w.channel.said("Goodbye.")


async def test_a_retried_message_is_stored_once(running: World) -> None:
    w = running
    first = await w.engine.receive(msg("hi", external_id="m1"))
    again = await w.engine.receive(msg("hi", external_id="m1"))
    assert first is not None and again is None
    assert [m.text for m in w.engine.store.messages(first) if m.speaker == "caller"] == ["hi"]
    # forgotten after chat.dedupe_hours: the id may come again
    w.tick(w.settings.dedupe_hours * 3600 + 1)
    assert await w.engine.receive(msg("hi", external_id="m1")) is not None


async def test_voicemail_asks_to_type_the_message(running: World) -> None:
    w = running
    conv = await start(w)
    await w.engine.receive(msg("9"))
    await w.channel.said("Please type your message.")
    live = w.engine.live(conv)
    assert live is not None
    await until(lambda: live.awaiting_reply)
    await w.engine.receive(msg("Please call me back about order 1234"))
    await w.channel.said("Goodbye.")
    await w.engine.settle()
    [call] = w.tickets
    assert any(t.text == "Please call me back about order 1234" for t in call.transcript)


async def test_a_transfer_to_a_number_tells_the_number_and_ends(running: World) -> None:
    w = running
    conv = await start(w)
    await w.engine.receive(msg("7"))
    await w.channel.said("Please call us at +15551234567.")
    await w.engine.settle()
    assert w.engine.live(conv) is None
    assert w.tickets[0].ivr_outcome == "transferred"


async def test_a_transfer_to_an_agent_lands_in_their_inbox(running: World) -> None:
    w = running
    w.add_agent("ann", AgentState.NOT_READY)  # a direct transfer does not wait for "available"
    conv = await start(w)
    await w.engine.receive(msg("0"))
    await w.channel.said("ann has joined")
    assert [c.id for c in w.engine.conversations("ann")] == [conv]


async def test_no_agent_logged_in_overflows_to_the_flow(running: World) -> None:
    w = running
    w.queues["billing"] = QueueConfig("billing", skills={"billing": 1})  # join_when_empty off
    await start(w)
    await w.engine.receive(msg("1"))
    await w.channel.said("Nobody is free right now.")
    await w.channel.said("Please type your message.")


async def test_an_agent_going_offline_hands_their_chats_to_another_agent(running: World) -> None:
    w = running
    ann = w.add_agent("ann")
    conv = await start(w)
    await w.engine.receive(msg("1"))
    await w.channel.said("ann has joined")
    ann.state = AgentState.OFFLINE
    w.add_agent("bob")
    w.tick()
    await w.channel.said("bob has joined")
    live = w.engine.live(conv)
    assert live is not None and live.agent == "bob"


async def test_an_idle_conversation_is_closed_with_a_notice(running: World) -> None:
    w = running
    w.add_agent("ann")
    conv = await start(w)
    await w.engine.receive(msg("1"))
    await w.channel.said("ann has joined")
    w.tick(599.0)
    assert w.engine.live(conv) is not None
    w.tick(1.0)
    await w.channel.said("closed after a period of inactivity")
    await w.engine.settle()
    assert w.engine.live(conv) is None
    assert w.engine.store.conversation(conv).ended_at is not None  # type: ignore[union-attr]


async def test_a_failed_delivery_keeps_the_message(running: World) -> None:
    w = running
    w.add_agent("ann")
    conv = await start(w)
    await w.engine.receive(msg("1"))
    await w.channel.said("ann has joined")
    w.channel.fail = True
    await w.engine.agent_reply(conv, "Are you there?", agent="ann", sender="ann")
    assert w.engine.delivery_failures == 1
    assert w.engine.store.messages(conv)[-1].text == "Are you there?"


async def test_history_is_the_current_conversation_both_ways(running: World) -> None:
    w = running
    await start(w)
    history = await w.engine.history("webchat", "web", "v1")
    assert [(h.sender, h.text) for h in history][:2] == [("customer", "hi"), ("bot", "Welcome to Acme.")]
    assert await w.engine.history("webchat", "web", "nobody") == []


async def test_the_shipped_hotline_runs_in_text_mode(running: World) -> None:
    w = running
    flow = load_flow(Path(__file__).resolve().parents[2] / "ivr_flows" / "hotline_en.yaml")
    w.engine.flows = lambda flow_id: (flow, Services())
    conv = await w.engine.receive(msg("hello"))
    assert conv is not None
    await w.channel.said("Thank you for calling Example Company.")
    menu = await w.channel.said("For sales, press 1")
    assert "1 sales, 2 support, 3 billing, 4 order status" in menu[-1].text
    live = w.engine.live(conv)
    assert live is not None
    await w.engine.receive(msg("where is my order"))  # the menu's words, typed
    await w.channel.said("Please enter your order number")
    await until(lambda: live.awaiting_reply)
    await w.engine.receive(msg("12345#"))  # keys with the terminator, as on a phone
    confirm = await w.channel.said("Press 1 if that is right")
    assert "12345" in confirm[-1].text.replace(" ", "")


async def test_a_reply_sent_before_the_question_is_asked_answers_it(running: World) -> None:
    w = running
    conv = await w.engine.receive(msg("hi"))
    assert conv is not None
    await w.engine.receive(msg("1"))  # typed at once, while the greeting goes out
    w.add_agent("ann")
    await w.channel.said("ann has joined")
    assert w.engine.live(conv).queue == "billing"  # type: ignore[union-attr]


async def test_a_handed_back_chat_goes_to_another_agent(running: World) -> None:
    w = running
    w.add_agent("ann")
    conv = await start(w)
    await w.engine.receive(msg("1"))
    await w.channel.said("ann has joined")
    w.add_agent("bob")
    await w.engine.hand_back(conv, agent="ann")
    await w.channel.said("bob has joined")
    assert [c.id for c in w.engine.conversations("bob")] == [conv]
    assert w.engine.conversations("ann") == []


async def test_concurrent_retries_of_one_message_store_it_once(running: World) -> None:
    w = running
    results = await asyncio.gather(*(w.engine.receive(msg("hi", external_id="m7")) for _ in range(3)))
    stored = [r for r in results if r is not None]
    assert len(stored) == 1
    assert [m.text for m in w.engine.store.messages(stored[0]) if m.speaker == "caller"] == ["hi"]
