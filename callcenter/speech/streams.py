"""Plumbing shared by ASR streams: the queue behind ``async for result in stream``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from callcenter.speech.base import AsrResult, SpeechError


class ResultQueue:
    """Results in order; iteration ends after ``close`` and raises ``SpeechError`` after ``fail``.

    Bound to the event loop the stream was opened on (an ``asyncio.Queue``); fed from that loop only.
    """

    def __init__(self, engine: str) -> None:
        self._engine = engine
        self._q: asyncio.Queue[AsrResult | BaseException | None] = asyncio.Queue()

    def put(self, result: AsrResult) -> None:
        self._q.put_nowait(result)

    def fail(self, exc: BaseException) -> None:
        self._q.put_nowait(exc)

    def close(self) -> None:
        self._q.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[AsrResult]:
        while True:
            item = await self._q.get()
            if item is None:
                self._q.put_nowait(None)  # a second iterator ends too
                return
            if isinstance(item, BaseException):
                raise SpeechError(f"{self._engine}: decoding failed: {item}") from item
            yield item
