"""Supervisor listen → whisper → barge end to end: SIPp caller, baresip agent, baresip supervisor.

Everyone's voice is a tone: the caller (SIPp) 1000 Hz, the agent sam 600 Hz, the supervisor's phone
(agent account sue, linked to no queue) 1400 Hz. Each mode lasts ~4 s. What the supervisor and the
agent heard is baresip's decoded recording; what the caller heard is the right channel of the server's
call recording (what the caller's leg sent). So, counting seconds in which the supervisor's tone is
heard: the agent hears it in whisper and barge (~8 s), the caller only in barge (~4 s) — a caller
hearing the whisper would count ~8 — and the supervisor hears caller and agent throughout.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_transfers import CALLER_HZ, _api, _api_error, _call, _server, _settled, _wav

from callcenter.testing.agents import agent_phone
from callcenter.testing.audio import tone_fraction
from callcenter.testing.baresip import Baresip
from callcenter.testing.server import ServerProcess, StartServer

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sipp", "baresip")]

SAM_HZ = 600.0
SUE_HZ = 1400.0
MODE_S = 4.0


def _heard(phone: Baresip) -> np.ndarray:
    heard = phone.recordings("dec")
    assert heard, phone.output()
    return _wav(max(heard, key=lambda p: p.stat().st_size))[:, 0]


def _seconds_with(pcm: np.ndarray, hz: float, share: float = 0.1) -> int:
    """Seconds of ``pcm`` in which the ``hz`` tone carries at least ``share`` of the energy."""
    return sum(tone_fraction(pcm[i : i + 8000], hz) > share for i in range(0, len(pcm) - 7999, 8000))


def _events(server: ServerProcess, call_id: str) -> list[str]:
    return [e["action"] for e in server.events("call_monitor", call_id=call_id)]


def test_listen_whisper_barge_each_reach_only_who_they_should(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = _server(start_server, tmp_path)
    sam = agent_phone(server, tmp_path, "sam", "sales:2", tone_hz=SAM_HZ, life_s=60)
    sue = agent_phone(server, tmp_path, "sue", "coaching:1", tone_hz=SUE_HZ, life_s=60)
    try:
        sipp, results = _call(server, tmp_path, talk_s=3 * MODE_S + 6)
        answered = server.wait_for_event("agent_answered", agent="sam", timeout=20)
        call_id = answered["call_id"]
        path = f"/api/calls/{call_id}/monitor"
        started: dict[str, Any] = _api(server, "POST", path, {"mode": "listen", "phone": "sue"})
        assert started["state"] == "ringing" and started["phone"] == "sue"
        assert _api_error(server, "POST", path, {"mode": "barge", "phone": "sue"}) == 409  # once at a time
        server.wait_for_event("call_monitor", call_id=call_id, action="started", timeout=10)
        live = _api(server, "GET", "/api/agents/live")
        assert live["sue"]["state"] == "own_call"  # sue's phone is busy: no queue call offered
        time.sleep(MODE_S)
        assert _api(server, "POST", f"{path}/mode", {"mode": "whisper"})["mode"] == "whisper"
        time.sleep(MODE_S)
        assert _api(server, "POST", f"{path}/mode", {"mode": "barge"})["mode"] == "barge"
        time.sleep(MODE_S)
        _api(server, "DELETE", path)
        server.wait_for_event("call_monitor", call_id=call_id, action="ended", timeout=10)
        assert _api_error(server, "GET", path) == 404
        assert _settled(server, ["sue"])["sue"]["state"] == "available"  # back, no wrap-up
        sipp.join(timeout=60)
        (result,) = results
        assert result.successful == 1 and result.failed == 0, result.errors  # the call went on
        (call,) = server.new_calls(set(), 1, timeout=20)
        assert call["sip_call_id"] == call_id and call["agent"] == "sam"
        (entry,) = call["monitors"]
        assert entry["phone"] == "sue" and entry["modes"] == ["listen", "whisper", "barge"]
        assert entry["outcome"] == "stopped" and entry["end"]
        assert _events(server, call_id) == ["ringing", "started", "mode", "mode", "ended"]
    finally:
        sam.stop()
        sue.stop()
    server.stop()  # finalises the recording
    sue_heard, sam_heard = _heard(sue), _heard(sam)
    caller_heard = _wav(call["recording"])[:, 1]
    heard = {who: {hz: _seconds_with(pcm, hz) for hz in (CALLER_HZ, SAM_HZ, SUE_HZ)}
             for who, pcm in (("sue", sue_heard), ("sam", sam_heard), ("caller", caller_heard))}
    why = f"seconds heard per tone {heard}; the caller leg's media {call.get('rtp')}"
    # the supervisor heard both sides all along (the mixer's input is jitter-buffered: on a machine
    # starved of CPU some of it is lost, hence the margin)
    assert heard["sue"][CALLER_HZ] >= 2 * MODE_S, why
    assert heard["sue"][SAM_HZ] >= 2 * MODE_S, why
    assert heard["sue"][SUE_HZ] == 0, why  # N-1: not their own voice
    # the agent: the supervisor in whisper and barge, and the caller throughout
    assert 2 * MODE_S - 2 <= heard["sam"][SUE_HZ] <= 2 * MODE_S + 1.5, why
    assert heard["sam"][CALLER_HZ] >= 3 * MODE_S, why
    # the caller: the supervisor in barge only (recorded: the caller heard it), the agent throughout
    assert MODE_S - 2 <= heard["caller"][SUE_HZ] <= MODE_S + 1.5, why
    assert heard["caller"][SAM_HZ] >= 3 * MODE_S, why
