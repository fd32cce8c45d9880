"""With no IVR number (``ivr.numbers: {}``, no default flow) the runtime still starts for the console —
its flows registry takes a first flow — while every dialled number keeps the demo behaviour (no flow)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from callcenter.calls.control import load_ivr_runtime
from callcenter.store import Store

FLOW = """\
id: welcome
language: en-US
start: hi
nodes:
  hi: {type: say, text: Welcome., next: bye}
  bye: {type: hangup}
"""


class SilentTts:
    """A TTS engine stand-in (nothing is synthesised here)."""

    async def synthesize(self, text: str, voice: str, rate: float, pitch: float) -> bytes:
        return b""


def test_the_registry_runs_without_numbers_and_calls_still_get_no_flow(store: Store, tmp_path: Path) -> None:
    flows = tmp_path / "flows"

    async def scenario() -> None:
        runtime = await load_ivr_runtime(flows, {}, None, tmp_path / "data", engine=SilentTts(), store=store)  # type: ignore[arg-type]
        assert runtime is not None and runtime.registry is not None
        assert flows.is_dir()  # made for the console's first flow
        result = await runtime.registry.publish("welcome", FLOW, author="ann")
        assert result.ok and (flows / "welcome.yaml").read_text() == FLOW
        assert runtime.start_flow("100") is None and runtime.start_flow("welcome") is None  # the demo tone
        await runtime.speech.aclose()

    asyncio.run(scenario())


def test_without_a_store_nothing_starts(tmp_path: Path) -> None:
    runtime = asyncio.run(load_ivr_runtime(tmp_path, {}, None, tmp_path / "data", engine=SilentTts()))  # type: ignore[arg-type]
    assert runtime is None
