"""Unknown SIP sources reach only public numbers, end to end (issue 11, toll-fraud protection).

The server trusts no network (``trusted: []``), so SIPp on loopback is an unknown source like a
customer's softphone on the internet. Its calls to the public numbers (an IVR number, a listed prefix)
are answered; its calls to other numbers get 404 at once with no call record; three distinct refused
numbers ban it (a number scan), after which even a public number gets no answer from it. A registered
baresip agent on another loopback address dials a queue and is still served (challenged, then queued).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from callcenter.testing.agents import agent_phone
from callcenter.testing.server import ServerProcess, StartServer
from callcenter.testing.sipp import SippResult, run_sipp

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sipp", "baresip")]

CONFIG = """\
sip:
  protection:
    trusted: []
    public_numbers: ["555*"]
    number_scan_failures: 3
calls:
  demo_hangup_after_s: 30
"""
SCANNER = "127.0.0.2"  # the banned source; the agent's phone stays on 127.0.0.1
CALLER = "127.0.0.3"

_INVITE = """\
      INVITE sip:[field0]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[pid]-[call_number]-inv;rport
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[field0]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[media_ip_type] [media_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
"""
_IN_DIALOG = """\
      {method} [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch};rport
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[field0]@[remote_ip]:[remote_port]>[peer_tag_param]
      [routes]
      Call-ID: [call_id]
      CSeq: {cseq} {method}
      Max-Forwards: 70
      Content-Length: 0
"""
# INVITE -> (100/180) -> 200 -> ACK -> pause (-d) -> BYE -> 200: the call to [field0] is answered
ANSWERED = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uac to a number">
  <send retrans="500"><![CDATA[
{_INVITE}
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[
{_IN_DIALOG.format(method="ACK", branch="[branch]", cseq=1)}
  ]]></send>
  <pause/>
  <send retrans="500"><![CDATA[
{_IN_DIALOG.format(method="BYE", branch="[branch]", cseq=2)}
  ]]></send>
  <recv response="200"/>
</scenario>
"""
# INVITE -> (100) -> 404 -> ACK (the INVITE's branch, RFC 3261 §17.1.1.3)
NOT_FOUND = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uac refused with 404">
  <send retrans="500"><![CDATA[
{_INVITE}
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="404"/>
  <send><![CDATA[
{
    _IN_DIALOG.replace("[next_url]", "sip:[field0]@[remote_ip]:[remote_port]")
    .replace("[routes]", "")
    .format(method="ACK", branch="z9hG4bK-[pid]-[call_number]-inv", cseq=1)
}
  ]]></send>
</scenario>
"""


def _sipp(
    server: ServerProcess, work: Path, scenario: str, numbers: list[str], local_ip: str, timeout_s: float = 30
) -> SippResult:
    work.mkdir(parents=True, exist_ok=True)
    path = work / "scenario.xml"
    path.write_text(scenario)
    return run_sipp(
        f"127.0.0.1:{server.sip_port}",
        work,
        scenario=str(path),
        calls=len(numbers),
        rate=5,
        inject=[[n] for n in numbers],
        local_ip=local_ip,
        extra=["-d", "1500"],
        timeout_s=timeout_s,
    )


def _passed(result: SippResult, calls: int) -> None:
    detail = f"sipp rc={result.returncode}\n{result.errors[-3000:]}\n{result.stderr[-2000:]}"
    assert (result.successful, result.failed, result.returncode) == (calls, 0, 0), detail
    assert "unexpected" not in result.errors.lower(), detail


def test_unknown_sources_reach_public_numbers_only_and_a_number_scan_is_banned(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(config=CONFIG)
    before = {c["sip_call_id"] for c in server.calls()}

    # public numbers: the sample hotline (an ivr.numbers key) and a listed prefix (the demo tone)
    _passed(_sipp(server, tmp_path / "public", ANSWERED, ["100", "555-0123"], CALLER), 2)
    answered = server.new_calls(before, 2)
    assert sorted(c["disposition"] for c in answered) == ["answered", "answered"], answered
    assert not server.events("unknown_source_refused")

    # anything else: 404 at once, no call record; three distinct numbers are a scan: banned
    _passed(_sipp(server, tmp_path / "scan", NOT_FOUND, ["9001", "9002", "9003"], SCANNER), 3)
    server.wait_for_event("sip_source_banned", source=SCANNER, reason="number_scan")
    refused = server.events("unknown_source_refused", source=SCANNER)
    assert [e["number"] for e in refused] == ["9001"], refused  # one line per source per minute
    # once banned, the scanner hears nothing back, even calling a public number
    late = _sipp(server, tmp_path / "banned", ANSWERED, ["100"], SCANNER, timeout_s=6)
    assert late.successful == 0, late.errors
    calls = server.calls()
    assert {c["sip_call_id"] for c in calls} - before == {c["sip_call_id"] for c in answered}, calls

    # a registered agent's phone is known: it dials a queue (not a public number) and is served
    amy = agent_phone(server, tmp_path, "amy", "sales:1", life_s=60)
    try:
        amy.command(f"/dial sip:support@127.0.0.1:{server.sip_port}")
        placed = server.wait_for_event("agent_call", agent="amy", timeout=20)
        assert placed["target"] == "queue:support", placed
        amy.command("/hangup")
        deadline = time.monotonic() + 20
        while not any(c.get("flow") == "agent_call" and c["ended_at"] for c in server.calls()):
            assert time.monotonic() < deadline, server.calls()
            time.sleep(0.2)
    finally:
        amy.stop()
    assert not server.events("unknown_source_refused", source="127.0.0.1")
