"""The batching message writer behind ChatStore.append: a message is committed (readable) once its
await returns, concurrent messages all land in order, a refused one fails only its own sender."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

import callcenter.store.crm  # noqa: F401 - registers the tables
from callcenter.chat.store import ChatStore
from callcenter.chat.writer import MessageWriter
from callcenter.store import Store

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def _store(tmp_path: Path) -> tuple[ChatStore, int]:
    store = Store(f"sqlite:///{tmp_path / 'chat.db'}")
    store.create_all()
    chat = ChatStore(store.engine)
    conv_id, _ = chat.open_conversation("webchat", "web", "v" * 22, T0, None)
    return chat, conv_id


def test_concurrent_messages_are_all_stored_in_order_when_their_awaits_return(tmp_path: Path) -> None:
    chat, conv_id = _store(tmp_path)

    async def main() -> list[int]:
        async def one(i: int) -> int:
            stored = await chat.append(conv_id, "caller", f"m{i}", T0 + timedelta(seconds=i))
            # committed: a fresh session (another thread) sees it at once
            assert any(m.id == stored.id for m in await asyncio.to_thread(chat.messages, conv_id))
            return stored.id

        return await asyncio.gather(*(one(i) for i in range(300)))

    ids = asyncio.run(main())
    assert len(set(ids)) == 300
    rows = chat.messages(conv_id)
    assert [m.text for m in rows] == [f"m{i}" for i in range(300)]
    assert [m.id for m in rows] == ids  # each caller got its own message's id
    assert chat.writer.batches < 300  # they were written together, not one transaction each


def test_a_refused_message_fails_only_its_sender(tmp_path: Path) -> None:
    chat, conv_id = _store(tmp_path)

    async def main() -> tuple[object, ...]:
        return await asyncio.gather(
            chat.append(conv_id, "caller", "before", T0),
            chat.append(999_999, "caller", "no such conversation", T0),  # foreign key refused
            chat.append(conv_id, "agent", "after", T0 + timedelta(seconds=1)),
            return_exceptions=True,
        )

    _, refused, _ = asyncio.run(main())
    assert isinstance(refused, IntegrityError)
    assert [m.text for m in chat.messages(conv_id)] == ["before", "after"]
    assert chat.writer.refused == 1


def test_writes_go_on_after_the_writer_thread_went_idle(tmp_path: Path) -> None:
    chat, conv_id = _store(tmp_path)
    chat.writer = MessageWriter(chat.engine, idle_s=0.0)  # the thread ends as soon as it is idle

    async def send(text: str) -> None:
        await chat.append(conv_id, "caller", text, T0)

    asyncio.run(send("one"))
    thread = chat.writer._thread
    if thread is not None:
        thread.join(10)
        assert not thread.is_alive()
    asyncio.run(send("two"))
    assert [m.text for m in chat.messages(conv_id)] == ["one", "two"]


def test_a_message_is_stored_even_when_its_sender_gives_up_waiting(tmp_path: Path) -> None:
    chat, conv_id = _store(tmp_path)

    async def main() -> None:
        task = asyncio.create_task(chat.append(conv_id, "caller", "sent", T0))
        await asyncio.sleep(0)  # queued
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await chat.append(conv_id, "caller", "next", T0)  # FIFO: done after the first

    asyncio.run(main())
    assert [m.text for m in chat.messages(conv_id)] == ["sent", "next"]
