"""Fixtures for the conversation engine tests (helpers in chat_helpers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from chat_helpers import World


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.store.close()


@pytest.fixture
async def running(world: World) -> AsyncIterator[World]:
    yield world
    await world.engine.aclose()
