"""A FastAPI app on uvicorn in a thread with its own event loop, for page tests that drive Chromium
against in-process services (stand-in boards, a chat engine) instead of a whole `callcenter serve`.

The live hub starts on the server's loop (its bus binds there); ``on_start`` runs there too before the
server accepts connections, ``on_stop`` (a coroutine factory) before it stops.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import uvicorn
from fastapi import FastAPI

from callcenter.api.live import LiveHub
from callcenter.testing.server import free_port


class InProcessServer:
    def __init__(
        self,
        app: FastAPI,
        hub: LiveHub,
        *,
        on_start: Callable[[], None] | None = None,
        on_stop: Callable[[], Coroutine[Any, Any, Any]] | None = None,
    ) -> None:
        self.port = free_port(socket.SOCK_STREAM)
        self.hub = hub
        self.loop = asyncio.new_event_loop()
        self._on_stop = on_stop
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, lifespan="off")
        self.server = uvicorn.Server(config)
        self.started = threading.Event()

        async def serve() -> None:
            hub.bus.bind()
            if on_start is not None:
                on_start()
            hub.start()
            task = asyncio.create_task(self.server.serve())
            while not self.server.started and not task.done():
                await asyncio.sleep(0.01)
            self.started.set()
            await task

        self.thread = threading.Thread(target=lambda: self.loop.run_until_complete(serve()), daemon=True)

    def __enter__(self) -> InProcessServer:
        self.thread.start()
        assert self.started.wait(30), "uvicorn did not start"
        return self

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
        """Run ``coro`` on the server's loop and return its result (bounded wait)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __exit__(self, *exc: object) -> None:
        if self._on_stop is not None:
            self.run(self._on_stop())
        self.server.should_exit = True
        self.thread.join(10)
