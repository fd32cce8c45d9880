"""Skills-based routing end to end: baresip softphones as agents, SIPp as the caller.

The caller (SIPp, pcap audio: a 1000 Hz tone) dials a number whose flow queues it; the server rings the
right agent's registered softphone (baresip, auto-answer, microphone = a 600 Hz tone) and bridges the
audio. Assertions use what each side heard (baresip's recording, the server's call recording), what
the call record says (`calls list --json`) and the live routing API.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callcenter.media import g711
from callcenter.testing.agents import agent_phone
from callcenter.testing.audio import tone_fraction
from callcenter.testing.baresip import Baresip
from callcenter.testing.pcap import Segment, write_rtp_pcap
from callcenter.testing.server import ServerProcess, StartServer
from callcenter.testing.sipp import pcap_caller_scenario, run_sipp

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sipp", "baresip")]

CALLER_HZ, AGENT_HZ = 1000.0, 600.0
TOKEN = "routing-test-admin-token"

QUEUE_FLOW = """\
id: to_sales
language: en-US
start: queue
nodes:
  queue:
    type: queue
    queue: sales
    max_wait_s: 40
    record: true
    next: bye
    on_overflow: overflowed
  bye:
    type: hangup
  overflowed:
    type: hangup
    reason: overflow
"""

CONFIG = """\
ivr:
  flows_dir: {flows}
  numbers: {{"300": to_sales}}
routing:
  queues:
    sales: {{skills: {{sales: 1}}, ring_timeout_s: 4}}
    support: {{skills: {{support: 1}}}}
"""


def _server(start_server: StartServer, tmp_path: Path, **env: Any) -> ServerProcess:
    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "to_sales.yaml").write_text(QUEUE_FLOW)
    env = {"CALLCENTER_HTTP_ADMIN_TOKEN": TOKEN, **env}  # the API needs credentials
    # calls.record stays off: the flow's queue node records from the agent's answer (record: true)
    return start_server(config=CONFIG.format(flows=flows), **env)


def _agent(
    server: ServerProcess,
    tmp_path: Path,
    name: str,
    skills: str,
    *,
    answer: bool = True,
    mic: np.ndarray | None = None,
) -> Baresip:
    return agent_phone(server, tmp_path, name, skills, tone_hz=AGENT_HZ, mic=mic, answer=answer)


def _caller(
    server: ServerProcess,
    tmp_path: Path,
    talk_s: float,
    hangup_after_ms: int,
    audio: np.ndarray | None = None,
) -> Any:
    pcap = tmp_path / "caller.pcap"
    if audio is None:
        t = np.arange(int(8000 * talk_s)) / 8000
        audio = (6000 * np.sin(2 * np.pi * CALLER_HZ * t)).astype(np.int16)
    write_rtp_pcap(pcap, [Segment(pcm=audio)])
    return run_sipp(
        f"127.0.0.1:{server.sip_port}",
        tmp_path / "sipp",
        scenario=str(pcap_caller_scenario(tmp_path, pcap, number="300")),
        extra=["-d", str(hangup_after_ms)],
        timeout_s=60,
    )


def _get(server: ServerProcess, path: str, token: str | None = TOKEN) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as r:
        return json.loads(r.read())


def _wav(path: str | Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return data.reshape(-1, w.getnchannels())


def _wait_agent_state(server: ServerProcess, name: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        agent = _get(server, "/api/agents/live")[name]
        if agent["state"] == state or time.monotonic() > deadline:
            return dict(agent)
        time.sleep(0.2)


def test_the_caller_reaches_the_agent_with_the_skill_and_both_hear_each_other(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = _server(start_server, tmp_path, CALLCENTER_HTTP_ADMIN_TOKEN=TOKEN)
    sam = _agent(server, tmp_path, "sam", "sales:3")
    bob = _agent(server, tmp_path, "bob", "support:2")
    try:
        results: list[Any] = []
        sipp = threading.Thread(
            target=lambda: results.append(_caller(server, tmp_path, talk_s=14, hangup_after_ms=10_000))
        )
        sipp.start()
        offered = server.wait_for_event("agent_offered", timeout=20)
        server.wait_for_event("agent_answered", agent="sam", timeout=20)
        # The screen-pop link the agent's phone got (Call-Info) shows the live call to an admin.
        url = offered["screen_pop"]
        assert url.startswith(f"http://127.0.0.1:{server.http_port}/api/calls/"), offered
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 401
        pop = _get(server, url.removeprefix(f"http://127.0.0.1:{server.http_port}"), token=TOKEN)
        assert pop["live"] and pop["queue"] == "sales" and pop["agent"] == "sam" and pop["flow"] == "to_sales"
        assert pop["caller"] == "caller" and pop["ivr_path"] == ["queue"]
        sipp.join(timeout=60)
        (result,) = results
        assert result.successful == 1 and result.failed == 0, result.errors
        (call,) = server.new_calls(set(), 1, timeout=20)
        assert call["queue"] == "sales"
        assert call["agent"] == "sam", call
        assert call["offered_agents"] == ["sam"]  # bob lacks the skill: never rung
        assert call["disposition"] == "answered" and call["hangup_by"] == "caller"
        assert 0 <= call["wait_s"] < 10 and call["talk_s"] > 3
        # The agent's phone saw the server hang up its leg when the caller left, and is free again.
        assert _wait_agent_state(server, "sam", "available")["state"] == "available"
        assert "Incoming call" not in bob.output()
    finally:
        sam.stop()
        bob.stop()
    server.stop()  # finalises the call recording
    # What the agent heard: the caller's tone (baresip's decoded recording).
    heard = [p for p in sam.recordings("dec")]
    assert heard, sam.output()
    agent_heard = _wav(max(heard, key=lambda p: p.stat().st_size))[:, 0]
    assert tone_fraction(agent_heard, CALLER_HZ) > 0.5
    # What the caller heard: the agent's tone, on the right channel of the server's recording.
    # The flow's `record: true` started it at the agent's answer: both voices, nothing before.
    recorded = _wav(call["recording"])
    caller_heard = recorded[:, 1]
    assert tone_fraction(caller_heard[-5 * 8000 :], AGENT_HZ) > 0.5
    assert tone_fraction(recorded[:, 0], CALLER_HZ) > 0.5
    assert len(recorded) < (call["talk_s"] + 3) * 8000


def test_no_answer_moves_the_call_to_the_next_agent(start_server: StartServer, tmp_path: Path) -> None:
    server = _server(start_server, tmp_path)
    # Registered first, so longest idle: offered first, but never answers.
    slow = _agent(server, tmp_path, "slow", "sales:1", answer=False)
    time.sleep(1.0)
    quick = _agent(server, tmp_path, "quick", "sales:1")
    try:
        result = _caller(server, tmp_path, talk_s=16, hangup_after_ms=12_000)
        assert result.successful == 1 and result.failed == 0, result.errors
        (call,) = server.new_calls(set(), 1, timeout=20)
        assert call["offered_agents"] == ["slow", "quick"], call
        assert call["agent"] == "quick" and call["disposition"] == "answered"
        assert call["wait_s"] >= 3.5  # the first agent's ring timeout (4 s) passed first
        failed = server.events("agent_offer_failed", agent="slow")
        assert failed and failed[0]["outcome"] == "no_answer"
        # The ring timeout cancelled the slow agent's leg: its phone stopped ringing.
        assert slow.wait_for_output("session closed", timeout=5) == "session closed", slow.output()
        live = _get(server, "/api/agents/live")
        assert live["slow"]["missed_in_row"] == 1 and live["slow"]["state"] == "available"
    finally:
        slow.stop()
        quick.stop()


def test_a_caller_who_hangs_up_while_the_agent_rings_cancels_the_agent_leg(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = _server(start_server, tmp_path)
    slow = _agent(server, tmp_path, "slow", "sales:1", answer=False)
    try:
        result = _caller(server, tmp_path, talk_s=3, hangup_after_ms=2_500)
        assert result.successful == 1 and result.failed == 0, result.errors
        (call,) = server.new_calls(set(), 1, timeout=20)
        assert call["disposition"] == "abandoned" and call["agent"] is None
        assert call["offered_agents"] == ["slow"]
        assert slow.wait_for_output("session closed", timeout=5) == "session closed", slow.output()
        agent = _wait_agent_state(server, "slow", "available")
        assert agent["state"] == "available" and agent["missed_in_row"] == 0  # not the agent's fault
        sales = _get(server, "/api/queues")["sales"]
        assert sales["waiting"] == 0
        assert sales["stats"]["abandoned"] == 1 and sales["stats"]["answered"] == 0
    finally:
        slow.stop()


def test_the_agent_blind_transfers_the_caller_to_another_queue_by_refer(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = _server(start_server, tmp_path)
    sam = _agent(server, tmp_path, "sam", "sales:3")
    bob = _agent(server, tmp_path, "bob", "support:2")
    try:
        sipp = threading.Thread(
            target=lambda: results.append(_caller(server, tmp_path, talk_s=20, hangup_after_ms=16_000))
        )
        results: list[Any] = []
        sipp.start()
        server.wait_for_event("agent_answered", agent="sam", timeout=20)
        time.sleep(1.0)  # sam talks for a moment, then transfers the caller to the support queue
        sam.command(f"/transfer sip:support@127.0.0.1:{server.sip_port}")
        server.wait_for_event("agent_answered", agent="bob", timeout=20)
        sipp.join(timeout=60)
        (result,) = results
        assert result.successful == 1 and result.failed == 0, result.errors
        (call,) = server.new_calls(set(), 1, timeout=20)
        first, second = call["queue_visits"]
        assert (first["queue"], first["agent"], first["transferred_to"]) == ("sales", "sam", "queue:support")
        assert (second["queue"], second["agent"], second["disposition"]) == ("support", "bob", "answered")
        assert call["agent"] == "bob" and call["disposition"] == "answered"
        assert _wait_agent_state(server, "sam", "available")["state"] == "available"
    finally:
        sam.stop()
        bob.stop()
    heard = bob.recordings("dec")
    assert heard, bob.output()
    assert tone_fraction(_wav(max(heard, key=lambda p: p.stat().st_size))[:, 0], CALLER_HZ) > 0.5


CORPUS = Path(__file__).resolve().parents[1] / "speech" / "corpus" / "audio"


def _speech(name: str, *, lead_s: float, gap_s: float, tail_s: float) -> np.ndarray:
    """A human recording (tests/speech/corpus) said twice: silence, speech, a pause, speech, silence."""
    voice = g711.decode((CORPUS / name).read_bytes(), "PCMU").astype(np.int16)

    def quiet(s: float) -> np.ndarray:
        return np.zeros(int(8000 * s), np.int16)

    return np.concatenate([quiet(lead_s), voice, quiet(gap_s), voice, quiet(tail_s)])


def test_both_sides_of_a_bridged_call_are_transcribed_with_their_speaker(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = _server(start_server, tmp_path)
    # The agent (baresip's microphone) and the caller (SIPp's pcap) each say a different sentence.
    agent_voice = _speech("asterisk_agent-pass.ulaw", lead_s=2, gap_s=2, tail_s=60)
    sam = _agent(server, tmp_path, "sam", "sales:3", mic=agent_voice)
    try:
        caller_voice = _speech("asterisk_conf-onlyone.ulaw", lead_s=3, gap_s=2, tail_s=4)
        result = _caller(server, tmp_path, 0, hangup_after_ms=16_000, audio=caller_voice)
        assert result.successful == 1 and result.failed == 0, result.errors
        (call,) = server.new_calls(set(), 1, timeout=30)
    finally:
        sam.stop()
    assert call["agent"] == "sam" and call["disposition"] == "answered", call
    said = {"caller": "", "agent": ""}
    for u in call.get("transcript", []):
        if u["speaker"] in said:
            said[u["speaker"]] += " " + u["text"].lower()
    # "There is currently one other participant in the conference." / "Please enter your password
    # followed by the pound key." — through two G.711 hops and Whisper tiny.en.
    assert "participant" in said["caller"] or "conference" in said["caller"], call.get("transcript")
    assert "password" in said["agent"] or "pound" in said["agent"], call.get("transcript")
    assert "password" not in said["caller"] and "participant" not in said["agent"], call.get("transcript")
