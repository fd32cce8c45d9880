"""The live view of a call names the supervisor monitoring it (the wallboard shows it after a reload)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from callcenter.calls.session import monitor_view


class Acd:
    def __init__(self, talks: dict[str, Any]) -> None:
        self.talks = talks

    def live_talk(self, call_id: str) -> Any:
        return self.talks[call_id]  # KeyError: no agent has the call


def test_a_monitored_call_carries_mode_and_supervisor() -> None:
    watching = SimpleNamespace(mode="whisper", supervisor="sue", state="active")
    acd = Acd({"a": SimpleNamespace(monitor=watching), "b": SimpleNamespace(monitor=None)})
    assert monitor_view(acd, "a") == {"mode": "whisper", "supervisor": "sue", "state": "active"}
    assert monitor_view(acd, "b") is None  # bridged, nobody listening
    assert monitor_view(acd, "c") is None  # not with an agent
    assert monitor_view(None, "a") is None  # no routing at all
