"""Callback keeping the caller's place, end to end.

A SIPp caller is queued with no agent logged in, presses 5 for a callback, types the number and is hung
up on. Then a baresip agent registers: its phone rings first (auto-answer; it hears who is called
back), then the "PSTN" — a SIPp UAS behind the SIP trunk that demands digest authentication — rings
and answers. Audio flows both ways (agent: 600 Hz, customer: 800 Hz) and the records say what happened.
"""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callcenter.testing.audio import tone_fraction
from callcenter.testing.baresip import Baresip, write_wav
from callcenter.testing.pcap import Segment, write_rtp_pcap
from callcenter.testing.server import ServerProcess, StartServer, free_port
from callcenter.testing.sipp import run_sipp

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sipp", "baresip")]

AGENT_HZ, CUSTOMER_HZ = 600.0, 800.0
NUMBER = "5551234"

FLOW = """\
id: callback_flow
language: en-US
start: queue
nodes:
  queue:
    type: queue
    queue: sales
    callback: {key: "5", after_s: 0}
    next: bye
    on_overflow: bye
  bye:
    type: hangup
"""

CONFIG = """\
sip:
  trunk:
    uri: 127.0.0.1:{trunk_port}
    username: acme
    password: trunk-secret
ivr:
  flows_dir: {flows}
  numbers: {{"300": callback_flow}}
routing:
  queues:
    sales: {{skills: {{sales: 1}}, join_when_empty: true, ring_timeout_s: 15}}
  callback_retries: 0
"""

# The caller: like uac_pcap.xml, but the server hangs up (after the callback is confirmed).
CALLER = """\
<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="caller asks for a callback">
  <send retrans="500">
    <![CDATA[
      INVITE sip:300@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "pcap caller" <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:300@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:caller@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16
      a=ptime:20
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[
      ACK sip:300@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "pcap caller" <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:300@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop><action><exec play_pcap_audio="@PCAP@"/></action></nop>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""

# The customer's phone behind the trunk: 401 first, then answers an INVITE whose credentials check.
TRUNK = """\
<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="pstn behind a trunk with digest auth">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[
      SIP/2.0 401 Unauthorized
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      WWW-Authenticate: Digest realm="trunk.test", nonce="[pid]n[call_number]", algorithm=MD5
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>
  <recv request="INVITE">
    <action>
      <verifyauth assign_to="authvalid" username="acme" password="trunk-secret"/>
    </action>
  </recv>
  <nop hide="true" test="authvalid" next="good"/>
  <send next="refused">
    <![CDATA[
      SIP/2.0 403 Forbidden
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag02[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <label id="good"/>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag02[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag02[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:pstn@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=pstn 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
      a=ptime:20
    ]]>
  </send>
  <recv request="ACK"/>
  <nop><action><exec play_pcap_audio="@PCAP@"/></action></nop>
  <recv request="BYE"/>
  <send next="done">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <label id="refused"/>
  <recv request="ACK" optional="true"/>
  <label id="done"/>
</scenario>
"""


def _tone(seconds: float, hz: float) -> np.ndarray:
    t = np.arange(int(8000 * seconds)) / 8000
    return (6000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(8000 * seconds), dtype=np.int16)


def _wav(path: str | Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return data.reshape(-1, w.getnchannels())


def _start_trunk(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    work = tmp_path / "trunk"
    work.mkdir()
    pcap = work / "customer.pcap"
    write_rtp_pcap(pcap, [Segment(pcm=_tone(25, CUSTOMER_HZ))])
    scenario = work / "trunk.xml"
    scenario.write_text(TRUNK.replace("@PCAP@", str(pcap)))
    cmd = ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port),
           "-mp", str(free_port(even=True)), "-m", "1", "-timeout", "150s", "-nostdin",
           "-trace_err", "-error_file", str(work / "errors.log"), "-trace_msg",
           "-message_file", str(work / "messages.log")]
    return subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)


def _caller(server: ServerProcess, tmp_path: Path) -> Any:
    pcap = tmp_path / "caller.pcap"
    segments = [Segment(pcm=_silence(2.0)), Segment(digit="5"), Segment(pcm=_silence(1.5))]
    for d in NUMBER + "#":
        segments += [Segment(digit=d), Segment(pcm=_silence(0.15))]
    segments.append(Segment(pcm=_silence(15.0)))
    write_rtp_pcap(pcap, segments)
    scenario = tmp_path / "caller.xml"
    scenario.write_text(CALLER.replace("@PCAP@", str(pcap)))
    return run_sipp(f"127.0.0.1:{server.sip_port}", tmp_path / "sipp", scenario=str(scenario), timeout_s=60)


def test_a_callback_keeps_the_place_rings_the_agent_first_then_the_customer_through_the_trunk(
    start_server: StartServer, tmp_path: Path
) -> None:
    trunk_port = free_port()
    trunk = _start_trunk(tmp_path, trunk_port)
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "callback_flow.yaml").write_text(FLOW)
    server = start_server(config=CONFIG.format(trunk_port=trunk_port, flows=flows), CALLCENTER_CALLS_RECORD=1)
    agent: Baresip | None = None
    try:
        server.cli("agents", "add", "sam", "--password", "pw-sam", "--skills", "sales:2")
        result = _caller(server, tmp_path)
        assert result.successful == 1 and result.failed == 0, (result.errors, server.log_text()[-3000:])
        requested = server.wait_for_event("callback_requested", timeout=10)
        assert requested["number"] == NUMBER and requested["position"] == 1
        (original,) = server.new_calls(set(), 1, timeout=20)
        assert original["disposition"] == "callback" and original["hangup_by"] == "server"
        assert original["callback"]["status"] == "pending"

        # Now an agent logs in: their phone rings first, then the customer's.
        work = tmp_path / "sam"
        work.mkdir()
        mic = write_wav(work / "mic.wav", 22, AGENT_HZ)  # baresip hangs up when its WAV ends
        account = f"<sip:sam@127.0.0.1:{server.sip_port}>;auth_pass=pw-sam;answermode=auto;regint=600"
        agent = Baresip(work, account, audio_wav=mic, record_dir=work / "rec", life_s=90).start()
        ended = server.wait_for_event("callback_ended", timeout=90)
        assert ended["outcome"] == "answered" and ended["agent"] == "sam", server.log_text()[-3000:]
        events = [e["event"] for e in server.log_events()]
        assert events.index("agent_answered") < events.index("trunk_dialing") < events.index("trunk_answered")
        # router-driven agent transitions are logged like logins
        states = [e["state"] for e in server.events("agent_state", agent="sam")]
        assert states[:3] == ["available", "reserved", "on_call"] and "available" in states[3:]
        assert trunk.wait(timeout=30) == 0
        messages = (tmp_path / "trunk" / "messages.log").read_text(errors="replace")
        assert "Authorization: Digest" in messages and 'username="acme"' in messages

        calls = server.wait_for_calls(
            lambda cs: any(c.get("callback_of") and c["ended_at"] for c in cs)
            and any(c.get("callback", {}).get("status") == "done" for c in cs),
            timeout=20,
        )
        (callback,) = [c for c in calls if c.get("callback_of")]
        (original,) = [c for c in calls if c["sip_call_id"] == requested["call_id"]]
        assert original["disposition"] == "callback"
        assert original["callback"]["status"] == "done" and original["callback"]["outcome"] == "answered"
        assert callback["disposition"] == "callback" and callback["callback_outcome"] == "answered"
        assert callback["agent"] == "sam" and callback["queue"] == "sales" and callback["talk_s"] > 5
        assert callback["callback_of"] == requested["call_id"]
    finally:
        if agent is not None:
            agent.stop()
        if trunk.poll() is None:
            trunk.kill()
            trunk.wait(5)
    server.stop()  # finalises the recordings
    recording = _wav(callback["recording"])
    assert tone_fraction(recording[:, 0], CUSTOMER_HZ) > 0.5  # the customer's side
    assert tone_fraction(recording[:, 1], AGENT_HZ) > 0.5  # the agent's side
    heard = agent.recordings("dec")
    assert heard, agent.output()
    agent_heard = _wav(max(heard, key=lambda p: p.stat().st_size))[:, 0]
    assert tone_fraction(agent_heard[-6 * 8000 :], CUSTOMER_HZ) > 0.5
