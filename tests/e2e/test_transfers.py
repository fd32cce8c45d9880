"""Hold and transfers end to end: baresip softphones as agents, SIPp as the caller.

The caller (SIPp) plays a 1000 Hz tone; each agent's microphone is its own tone (sam 600 Hz, bob
800 Hz). What the caller heard is the right channel of the server's call recording; what an agent
heard is baresip's decoded recording. Hold and transfers are driven from the agent's phone (baresip
`/hold`, `/resume`) or the admin API; the call record and the live agents API must show nothing left
behind (every agent back to available, no leg left ringing or bridged).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callcenter.testing.agents import agent_phone
from callcenter.testing.audio import tone_fraction
from callcenter.testing.baresip import Baresip
from callcenter.testing.pcap import Segment, write_rtp_pcap
from callcenter.testing.server import ServerProcess, StartServer, free_port
from callcenter.testing.sipp import pcap_caller_scenario, render_scenario, run_sipp

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sipp", "baresip")]

CALLER_HZ = 1000.0
TONES = {"sam": 600.0, "bob": 800.0}
TOKEN = "transfer-test-admin-token"

FLOW = """\
id: to_sales
language: en-US
start: queue
nodes:
  queue:
    type: queue
    queue: sales
    max_wait_s: 40
    next: bye
    on_overflow: bye
  bye:
    type: hangup
"""

CONFIG = """\
ivr:
  flows_dir: {flows}
  numbers: {{"300": to_sales}}
routing:
  queues:
    sales: {{skills: {{sales: 1}}, ring_timeout_s: 6}}
    support: {{skills: {{support: 1}}, ring_timeout_s: 6}}
"""


def _server(start_server: StartServer, tmp_path: Path) -> ServerProcess:
    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "to_sales.yaml").write_text(FLOW)
    return start_server(
        config=CONFIG.format(flows=flows), CALLCENTER_CALLS_RECORD=1, CALLCENTER_HTTP_ADMIN_TOKEN=TOKEN
    )


def _agent(server: ServerProcess, tmp_path: Path, name: str, skills: str) -> Baresip:
    return agent_phone(server, tmp_path, name, skills, tone_hz=TONES[name], life_s=80)


def _call(server: ServerProcess, tmp_path: Path, talk_s: float) -> tuple[threading.Thread, list[Any]]:
    """A SIPp caller who talks for `talk_s` seconds, then hangs up; runs in a thread."""
    pcap = tmp_path / "caller.pcap"
    t = np.arange(int(8000 * (talk_s + 2))) / 8000
    write_rtp_pcap(pcap, [Segment(pcm=(6000 * np.sin(2 * np.pi * CALLER_HZ * t)).astype(np.int16))])
    results: list[Any] = []

    def run() -> None:
        results.append(
            run_sipp(
                f"127.0.0.1:{server.sip_port}",
                tmp_path / "sipp",
                scenario=str(pcap_caller_scenario(tmp_path, pcap, number="300")),
                extra=["-d", str(int(talk_s * 1000))],
                timeout_s=talk_s + 40,
            )
        )

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results


def _api(server: ServerProcess, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as r:
        return json.loads(r.read())


def _api_error(server: ServerProcess, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    with pytest.raises(urllib.error.HTTPError) as refused:
        _api(server, method, path, body)
    return refused.value.code


def _wav(path: str | Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return data.reshape(-1, w.getnchannels())


def _seconds(pcm: np.ndarray) -> list[np.ndarray]:
    return [pcm[i : i + 8000] for i in range(0, len(pcm) - 7999, 8000)]


def _heard(phone: Baresip) -> np.ndarray:
    heard = phone.recordings("dec")
    assert heard, phone.output()
    return _wav(max(heard, key=lambda p: p.stat().st_size))[:, 0]


def _settled(server: ServerProcess, names: list[str], timeout: float = 15.0) -> dict[str, Any]:
    """The live agents once all of `names` are available again (or what they are at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        live = _api(server, "GET", "/api/agents/live")
        if all(live[n]["state"] == "available" for n in names) or time.monotonic() > deadline:
            return dict(live)
        time.sleep(0.2)


def _music_seconds(caller_heard: np.ndarray, agent_hz: float) -> int:
    """Seconds in which the caller heard something loud that was neither agent's voice: hold music."""
    return sum(
        1
        for s in _seconds(caller_heard)
        if np.sqrt(np.mean(s.astype(np.float64) ** 2)) > 200
        and tone_fraction(s, agent_hz) < 0.2
        and all(tone_fraction(s, hz) < 0.2 for hz in TONES.values())
    )


def test_the_agents_phone_holds_the_caller_hears_music_until_resume(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = _server(start_server, tmp_path)
    sam = _agent(server, tmp_path, "sam", "sales:2")
    try:
        sipp, results = _call(server, tmp_path, talk_s=16)
        answered = server.wait_for_event("agent_answered", agent="sam", timeout=20)
        time.sleep(3.0)  # sam and the caller talk
        sam.command("/hold")
        server.wait_for_event("call_held", by="phone", timeout=10)
        time.sleep(4.0)  # the caller waits on hold
        sam.command("/resume")
        server.wait_for_event("call_resumed", by="phone", timeout=10)
        sipp.join(timeout=60)
        (result,) = results
        assert result.successful == 1 and result.failed == 0, result.errors
        (call,) = server.new_calls(set(), 1, timeout=20)
        assert call["sip_call_id"] == answered["call_id"]
        assert call["agent"] == "sam" and call["disposition"] == "answered"
        assert call["holds"] == 1 and 2.5 <= call["hold_s"] <= 8, call
        assert call["transfers"] == []
        assert _settled(server, ["sam"])["sam"]["state"] == "available"
    finally:
        sam.stop()
    server.stop()  # finalises the recording
    caller_heard = _wav(call["recording"])[:, 1]
    seconds = _seconds(caller_heard)
    # the agent before and after the hold, hold music in between (not the agent's voice)
    assert sum(tone_fraction(s, TONES["sam"]) > 0.5 for s in seconds) >= 6
    assert _music_seconds(caller_heard, TONES["sam"]) >= 2
    assert tone_fraction(caller_heard[-3 * 8000 :], TONES["sam"]) > 0.5


def test_api_attended_transfer_consults_then_completes_and_frees_the_first_agent(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = _server(start_server, tmp_path)
    sam = _agent(server, tmp_path, "sam", "sales:2")
    bob = _agent(server, tmp_path, "bob", "support:2")
    try:
        sipp, results = _call(server, tmp_path, talk_s=22)
        call_id = server.wait_for_event("agent_answered", agent="sam", timeout=20)["call_id"]
        time.sleep(2.0)
        # nothing to complete yet; no such queue; no such call
        assert _api_error(server, "POST", f"/api/calls/{call_id}/transfer/complete") == 409
        assert _api_error(server, "POST", f"/api/calls/{call_id}/transfer", {"to": "queue:nope"}) == 422
        assert _api_error(server, "POST", "/api/calls/no-such-call/hold") == 404
        attended = {"to": "queue:support", "mode": "attended"}
        view = _api(server, "POST", f"/api/calls/{call_id}/transfer", attended)
        assert view["state"] == "consult_ringing" and view["on_hold"]
        server.wait_for_event("transfer_consulting", target="bob", timeout=20)
        time.sleep(3.0)  # sam briefs bob while the caller hears hold music
        done = _api(server, "POST", f"/api/calls/{call_id}/transfer/complete")
        assert done["state"] in ("consulting", "talking")
        server.wait_for_event("transfer_completed", agent="bob", timeout=10)
        # sam's phone was released and sam is free at once (no wrap-up configured)
        assert sam.wait_for_output("terminated", "session closed", timeout=10), sam.output()
        live = _settled(server, ["sam"])
        assert live["sam"]["state"] == "available" and live["bob"]["state"] == "on_call"
        sipp.join(timeout=60)
        (result,) = results
        assert result.successful == 1 and result.failed == 0, result.errors
        (call,) = server.new_calls(set(), 1, timeout=20)
        assert call["agent"] == "bob" and call["agents"] == ["sam", "bob"], call
        assert call["transfers"] == [
            {
                "kind": "attended",
                "from": "sam",
                "to": "queue:support",
                "via": "api",
                "outcome": "completed",
                "agent": "bob",
            }
        ]
        assert call["holds"] == 1 and call["hold_s"] >= 2.5
        first, second = call["queue_visits"]
        assert (first["agent"], first["transferred_to"]) == ("sam", "queue:support")
        assert (second["queue"], second["agent"], second["disposition"]) == ("support", "bob", "answered")
        assert _settled(server, ["sam", "bob"])["bob"]["state"] == "available"
    finally:
        sam.stop()
        bob.stop()
    server.stop()
    # bob heard sam during the consultation and the caller after it; the caller heard bob at the end
    bob_heard = _heard(bob)
    assert any(tone_fraction(s, TONES["sam"]) > 0.5 for s in _seconds(bob_heard))
    assert tone_fraction(bob_heard[-4 * 8000 :], CALLER_HZ) > 0.3
    caller_heard = _wav(call["recording"])[:, 1]
    assert tone_fraction(caller_heard[-4 * 8000 :], TONES["bob"]) > 0.5
    assert _music_seconds(caller_heard, TONES["sam"]) >= 2  # the caller never heard sam brief bob


def test_api_hold_resume_and_a_cancelled_transfer_bring_the_caller_back_to_the_agent(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = _server(start_server, tmp_path)
    sam = _agent(server, tmp_path, "sam", "sales:2")
    bob = _agent(server, tmp_path, "bob", "support:2")
    try:
        sipp, results = _call(server, tmp_path, talk_s=22)
        call_id = server.wait_for_event("agent_answered", agent="sam", timeout=20)["call_id"]
        time.sleep(1.0)
        assert _api(server, "POST", f"/api/calls/{call_id}/hold")["held_by"] == ["api"]
        time.sleep(3.0)
        assert not _api(server, "POST", f"/api/calls/{call_id}/resume")["on_hold"]
        assert _api_error(server, "POST", f"/api/calls/{call_id}/resume") == 409  # not on hold any more
        _api(server, "POST", f"/api/calls/{call_id}/transfer", {"to": "agent:bob", "mode": "attended"})
        server.wait_for_event("transfer_consulting", target="bob", timeout=20)
        time.sleep(2.0)
        _api(server, "POST", f"/api/calls/{call_id}/transfer/cancel")
        server.wait_for_event("transfer_ended", outcome="cancelled", timeout=10)
        assert bob.wait_for_output("terminated", "session closed", timeout=10), bob.output()
        assert _settled(server, ["bob"])["bob"]["state"] == "available"
        sipp.join(timeout=60)
        (result,) = results
        assert result.successful == 1 and result.failed == 0, result.errors
        (call,) = server.new_calls(set(), 1, timeout=20)
        assert call["agent"] == "sam" and call["agents"] == ["sam"], call
        assert call["holds"] == 2 and call["hold_s"] >= 4
        assert [t["outcome"] for t in call["transfers"]] == ["cancelled"]
        live = _settled(server, ["sam", "bob"])
        assert live["sam"]["state"] == "available" and live["bob"]["state"] == "available"
    finally:
        sam.stop()
        bob.stop()
    server.stop()
    caller_heard = _wav(call["recording"])[:, 1]
    assert tone_fraction(caller_heard[-4 * 8000 :], TONES["sam"]) > 0.5  # back with sam to the end
    assert _music_seconds(caller_heard, TONES["sam"]) >= 3  # whole seconds within ~5 s of music


# -- attended transfer from the phone (RFC 5589 §7) -----------------------------------------------------


def _sipp_agent(
    server: ServerProcess, tmp_path: Path, name: str, skills: str, *, target: str, refer_on: str
) -> tuple[threading.Thread, list[Any]]:
    """Agent ``name`` on SIPp: registered (register.xml) from a port, then, from the same port, the
    scenario that answers the offer, consults ``target`` through the server and REFERs with Replaces
    on the caller's dialog (``refer_on="caller"``) or on the consultation (``"consult"``)."""
    server.cli("agents", "add", name, "--password", f"pw-{name}", "--skills", skills)
    port = free_port()
    work = tmp_path / name
    registered = run_sipp(
        f"127.0.0.1:{server.sip_port}", work / "register", scenario="register.xml", local_port=port,
        inject=[[name]], extra=["-au", name, "-ap", f"pw-{name}"], timeout_s=15,
    )
    assert registered.successful == 1, registered.errors
    server.wait_for_event("agent_state", agent=name, state="available", timeout=15)
    pcap = work / "voice.pcap"
    t = np.arange(8000 * 40) / 8000
    write_rtp_pcap(pcap, [Segment(pcm=(6000 * np.sin(2 * np.pi * TONES[name] * t)).astype(np.int16))])
    scenario = render_scenario(
        "agent_attended_transfer.xml", work, agent=name, target=target, pcap=str(pcap),
        consult_ms="3000", refer_label=f"refer_on_{refer_on}",
    )
    results: list[Any] = []

    def run() -> None:
        results.append(
            run_sipp(
                f"127.0.0.1:{server.sip_port}", work / "run", scenario=str(scenario), local_port=port,
                extra=[
                    "-au", name, "-ap", f"pw-{name}",
                    # SIPp's digest uri is remote_ip:remote_port unless told: ours checks the Request-URI
                    "-auth_uri", f"{target}@127.0.0.1:{server.sip_port}",
                    "-trace_msg", "-message_file", str(work / "messages.log"),
                ],
                timeout_s=60,
            )
        )

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results


@pytest.mark.parametrize("refer_on", ["caller", "consult"])
def test_phone_attended_transfer_joins_the_caller_with_the_consulted_agent(
    start_server: StartServer, tmp_path: Path, refer_on: str
) -> None:
    server = _server(start_server, tmp_path)
    bob = _agent(server, tmp_path, "bob", "support:2")
    try:
        sam, sam_results = _sipp_agent(server, tmp_path, "sam", "sales:2", target="bob", refer_on=refer_on)
        sipp, results = _call(server, tmp_path, talk_s=18)
        server.wait_for_event("agent_call", agent="sam", target="agent:bob", timeout=20)
        server.wait_for_event("transfer_completed", by="sam", agent="bob", timeout=25)
        sam.join(timeout=60)
        (sam_result,) = sam_results
        assert sam_result.successful == 1 and sam_result.failed == 0, sam_result.errors
        # sam's two dialogs were released by the server; sam is free, bob has the caller
        live = _settled(server, ["sam"])
        assert live["sam"]["state"] == "available" and live["bob"]["state"] == "on_call"
        sipp.join(timeout=60)
        (result,) = results
        assert result.successful == 1 and result.failed == 0, result.errors
        calls = {c["sip_call_id"]: c for c in server.new_calls(set(), 2, timeout=20)}
        (call,) = [c for c in calls.values() if c.get("flow") == "to_sales"]
        assert call["agent"] == "bob" and call["agents"] == ["sam", "bob"], call
        assert call["transfers"] == [
            {"kind": "attended", "from": "sam", "to": "agent:bob", "via": "phone", "outcome": "completed",
             "agent": "bob"}
        ]
        (consult,) = [c for c in calls.values() if c.get("flow") == "agent_call"]
        assert consult["placed_by"] == "sam" and consult["dialled"] == "agent:bob", consult
        live = _settled(server, ["sam", "bob"])
        assert live["sam"]["state"] == "available" and live["bob"]["state"] == "available"
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/healthz").read())
        assert health["active_calls"] == 0, health  # no dialog left behind
    finally:
        bob.stop()
    server.stop()
    # the caller heard bob at the end, and bob heard the caller
    caller_heard = _wav(call["recording"])[:, 1]
    assert tone_fraction(caller_heard[-4 * 8000 :], TONES["bob"]) > 0.5
    bob_heard = _heard(bob)
    assert tone_fraction(bob_heard[-4 * 8000 :], CALLER_HZ) > 0.3


def test_an_agents_call_needs_the_agents_password(start_server: StartServer, tmp_path: Path) -> None:
    """INVITE from a registered agent's phone → 407; a wrong password → 403, and nothing rings."""
    server = _server(start_server, tmp_path)
    bob = _agent(server, tmp_path, "bob", "support:2")
    try:
        server.cli("agents", "add", "sam", "--password", "pw-sam", "--skills", "sales:2")
        port = free_port()
        registered = run_sipp(
            f"127.0.0.1:{server.sip_port}", tmp_path / "register", scenario="register.xml", local_port=port,
            inject=[["sam"]], extra=["-au", "sam", "-ap", "pw-sam"], timeout_s=15,
        )
        assert registered.successful == 1, registered.errors
        scenario = render_scenario("agent_invite_rejected.xml", tmp_path / "rejected", target="bob")
        refused = run_sipp(
            f"127.0.0.1:{server.sip_port}", tmp_path / "rejected", scenario=str(scenario), local_port=port,
            inject=[["sam"]], timeout_s=15,
            extra=["-au", "sam", "-ap", "wrong", "-auth_uri", f"bob@127.0.0.1:{server.sip_port}"],
        )
        assert refused.successful == 1 and refused.failed == 0, refused.errors
        failed = server.wait_for_event("agent_call_auth_failed", username="sam")
        assert failed["reason"] == "wrong credentials"
        assert not server.events("agent_offered") and not server.events("agent_call")
        assert _settled(server, ["bob", "sam"])["bob"]["state"] == "available"
    finally:
        bob.stop()


PSTN_HZ = 450.0
TRUNK_CONFIG = """\
sip:
  trunk:
    uri: 127.0.0.1:{trunk_port}
    username: acme
    password: trunk-secret
"""


def _start_trunk(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    """The PSTN behind a trunk with digest auth (trunk_uas_auth.xml): answers one call, plays a tone."""
    work = tmp_path / "trunk"
    pcap = work / "pstn.pcap"
    work.mkdir()
    t = np.arange(8000 * 30) / 8000
    write_rtp_pcap(pcap, [Segment(pcm=(6000 * np.sin(2 * np.pi * PSTN_HZ * t)).astype(np.int16))])
    scenario = render_scenario("trunk_uas_auth.xml", work, pcap=str(pcap))
    cmd = ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port),
           "-mp", str(free_port(even=True)), "-m", "1", "-timeout", "90s", "-nostdin",
           "-trace_err", "-error_file", str(work / "errors.log")]
    return subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)


def test_blind_transfer_to_a_number_goes_out_through_the_trunk(
    start_server: StartServer, tmp_path: Path
) -> None:
    trunk_port = free_port()
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "to_sales.yaml").write_text(FLOW)
    server = start_server(
        config=CONFIG.format(flows=flows) + TRUNK_CONFIG.format(trunk_port=trunk_port),
        CALLCENTER_CALLS_RECORD=1, CALLCENTER_HTTP_ADMIN_TOKEN=TOKEN,
    )
    pstn = _start_trunk(tmp_path, trunk_port)
    sam = _agent(server, tmp_path, "sam", "sales:2")
    try:
        sipp, results = _call(server, tmp_path, talk_s=14)
        call_id = server.wait_for_event("agent_answered", agent="sam", timeout=20)["call_id"]
        time.sleep(1.0)
        blind = {"to": "number:+49 30 1234", "mode": "blind"}
        view = _api(server, "POST", f"/api/calls/{call_id}/transfer", blind)
        assert view["state"] == "ended"
        assert sam.wait_for_output("terminated", "session closed", timeout=10), sam.output()
        assert pstn.wait(timeout=60) == 0, (tmp_path / "trunk" / "errors.log").read_text()
        sipp.join(timeout=60)
        (result,) = results
        assert result.successful == 1 and result.failed == 0, result.errors
        (call,) = server.new_calls(set(), 1, timeout=20)
        assert call["transfers"] == [
            {"kind": "blind", "from": "sam", "to": "number:+49301234", "via": "api", "outcome": "transferred"}
        ]
        first, second = call["queue_visits"]
        assert first["transferred_to"] == "number:+49301234"
        assert (second["queue"], second["agent"], second["disposition"]) == (
            "transfer:+49301234", "+49301234", "answered")
        assert _settled(server, ["sam"])["sam"]["state"] == "available"
        assert server.events("trunk_auth_failed") == []
    finally:
        sam.stop()
        if pstn.poll() is None:
            pstn.kill()
    server.stop()
    caller_heard = _wav(call["recording"])[:, 1]
    assert tone_fraction(caller_heard[-4 * 8000 :], PSTN_HZ) > 0.5  # the dialled party, through the trunk
