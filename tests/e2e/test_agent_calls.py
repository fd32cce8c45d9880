"""Calls agents place through the server, end to end: baresip agents, a SIPp caller, a SIPp "PSTN".

amy (sales and support) dials the queue ``support`` from her baresip; bob (support) rings and answers;
each hears the other's tone. While her call is up amy is busy to the router: a caller for ``sales``
(which only she serves) waits instead of ringing her; once she hangs up she is available again and
takes that caller.

amy dials a phone number: the call goes out through the SIP trunk to a SIPp UAS that demands digest
auth (401 first), and is bridged. What amy heard is baresip's decoded recording; what the PSTN got is
a loopback capture (dumpcap) of the RTP sent to its media port, decoded (SIPp discards what it hears).
"""

from __future__ import annotations

import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from test_transfers import _api, _call, _server, _wav  # tests/e2e is on sys.path

from callcenter.testing.agents import agent_phone
from callcenter.testing.audio import tone_fraction
from callcenter.testing.baresip import Baresip
from callcenter.testing.pcap import Segment, write_rtp_pcap
from callcenter.testing.server import ServerProcess, StartServer, free_port
from callcenter.testing.sipp import render_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sipp", "baresip")]

AMY_HZ, BOB_HZ, PSTN_HZ = 600.0, 800.0, 450.0
TRUNK_CONFIG = """\
sip:
  trunk:
    uri: 127.0.0.1:{trunk_port}
    username: acme
    password: trunk-secret
"""


class Pstn:
    """The PSTN behind a trunk with digest auth (trunk_uas_auth.xml: 401 first, then answers one call
    whose credentials are acme / trunk-secret and plays a PSTN_HZ tone until the BYE), with a loopback
    capture of the RTP sent to its media port: what it heard."""

    def __init__(self, tmp_path: Path) -> None:
        self.work = tmp_path / "pstn"
        self.work.mkdir()
        self.sip_port, self.media_port = free_port(), free_port(even=True)
        self.capture_path = self.work / "heard.pcap"
        self.sipp: subprocess.Popen[bytes] | None = None
        self.dumpcap: subprocess.Popen[bytes] | None = None

    def start(self) -> Pstn:
        # capture first: the file has its pcap header once dumpcap is listening
        self.dumpcap = subprocess.Popen(
            ["dumpcap", "-q", "-P", "-i", "lo", "-f", f"udp and dst port {self.media_port}",
             "-w", str(self.capture_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not (self.capture_path.exists() and self.capture_path.stat().st_size >= 24):
            assert self.dumpcap.poll() is None and time.monotonic() < deadline, "dumpcap did not start"
            time.sleep(0.05)
        pcap = self.work / "pstn.pcap"
        t = np.arange(8000 * 30) / 8000
        write_rtp_pcap(pcap, [Segment(pcm=(6000 * np.sin(2 * np.pi * PSTN_HZ * t)).astype(np.int16))])
        scenario = render_scenario("trunk_uas_auth.xml", self.work, pcap=str(pcap))
        self.sipp = subprocess.Popen(
            ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(self.sip_port),
             "-mp", str(self.media_port), "-m", "1", "-timeout", "60s", "-nostdin", "-trace_err",
             "-error_file", str(self.work / "errors.log"), "-trace_msg",
             "-message_file", str(self.work / "messages.log")],
            cwd=self.work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        return self

    def wait(self, timeout: float) -> int:
        """SIPp's exit status once the call ended (0: the scenario completed)."""
        assert self.sipp is not None
        return self.sipp.wait(timeout=timeout)

    def wait_for_answer(self, timeout: float) -> None:
        """Until SIPp has sent its 200 OK to the (authenticated) INVITE: the call is bridged."""
        deadline = time.monotonic() + timeout
        while "SIP/2.0 200 OK" not in self.messages():
            assert time.monotonic() < deadline, self.messages()[-3000:]
            time.sleep(0.1)

    def messages(self) -> str:
        path = self.work / "messages.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Both processes, by PID: SIPp killed if still running, dumpcap stopped (flushes the file)."""
        if self.sipp is not None and self.sipp.poll() is None:
            self.sipp.kill()
            self.sipp.wait(5)
        if self.dumpcap is not None and self.dumpcap.poll() is None:
            self.dumpcap.send_signal(signal.SIGINT)
            try:
                self.dumpcap.wait(10)
            except subprocess.TimeoutExpired:
                self.dumpcap.kill()
                self.dumpcap.wait(5)

    def heard(self) -> np.ndarray:
        """The PCMU audio of the captured RTP packets (payload type 0), in capture order, as int16."""
        data = self.capture_path.read_bytes()
        magic, linktype = struct.unpack("<I", data[:4])[0], struct.unpack("<I", data[20:24])[0]
        assert magic == 0xA1B2C3D4, hex(magic)
        link = {0: 4, 1: 14, 113: 16, 276: 20}[linktype]  # null, Ethernet (lo on Linux), SLL, SLL2
        payload = bytearray()
        offset = 24
        while offset + 16 <= len(data):
            caplen = struct.unpack("<I", data[offset + 8 : offset + 12])[0]
            frame = data[offset + 16 : offset + 16 + caplen]
            offset += 16 + caplen
            ip = frame[link:]
            udp = ip[(ip[0] & 0x0F) * 4 :]
            rtp = udp[8:]
            if len(rtp) < 12 or rtp[0] >> 6 != 2 or rtp[1] & 0x7F != 0:
                continue
            payload += rtp[12 + 4 * (rtp[0] & 0x0F) :]
        return _ulaw_decode(bytes(payload))


def _ulaw_decode(data: bytes) -> np.ndarray:
    """G.711 μ-law to linear (ITU-T G.711): sign, 3-bit exponent, 4-bit mantissa, bias 0x84."""
    u = ~np.frombuffer(data, dtype=np.uint8)
    exponent = ((u >> 4) & 0x07).astype(np.int32)
    magnitude = ((((u & 0x0F).astype(np.int32) << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


def _pstn_server(start_server: StartServer, tmp_path: Path, pstn: Pstn) -> ServerProcess:
    return start_server(
        config=TRUNK_CONFIG.format(trunk_port=pstn.sip_port),
        CALLCENTER_CALLS_RECORD=1, CALLCENTER_HTTP_ADMIN_TOKEN="transfer-test-admin-token",
    )


def _heard_tone(phone: Baresip, hz: float) -> float:
    """The best fraction of ``hz`` in any of the phone's decoded recordings (what it heard)."""
    heard = [_wav(p)[:, 0][8000:] for p in phone.recordings("dec")]  # past the first second
    return max((tone_fraction(pcm, hz) for pcm in heard if len(pcm) >= 8000), default=0.0)


def _state(server: ServerProcess, name: str) -> str:
    return str(_api(server, "GET", "/api/agents/live")[name]["state"])


def test_an_agent_calls_a_queue_is_busy_meanwhile_and_takes_the_next_caller_after(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = _server(start_server, tmp_path)
    amy = agent_phone(server, tmp_path, "amy", "sales:2,support:1", tone_hz=AMY_HZ, life_s=80)
    bob = agent_phone(server, tmp_path, "bob", "support:2", tone_hz=BOB_HZ, life_s=80)
    try:
        amy.command(f"/dial sip:support@127.0.0.1:{server.sip_port}")
        own = server.wait_for_event("agent_call", agent="amy", timeout=15)
        server.wait_for_event("agent_answered", agent="bob", timeout=20)
        assert _state(server, "amy") == "own_call"
        sipp, results = _call(server, tmp_path, talk_s=4)  # a sales caller: only amy serves sales
        time.sleep(4.0)  # the caller waits while amy talks (what is checked: nobody rang her meanwhile)
        assert [e for e in server.events("agent_offered") if "amy" in e["agents"]] == []
        amy.command("/hangup")
        offered = server.wait_for_event("agent_answered", agent="amy", timeout=20)
        assert offered["call_id"] != own["call_id"]
        sipp.join(timeout=40)
        (result,) = results
        assert result.successful == 1 and result.failed == 0, result.errors
        calls = server.new_calls(set(), 2, timeout=20)
        placed = next(c for c in calls if c.get("flow") == "agent_call")
        assert placed["placed_by"] == "amy" and placed["dialled"] == "queue:support"
        deadline = time.monotonic() + 15
        while _state(server, "amy") != "available" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _state(server, "amy") == "available"
    finally:
        amy.stop()
        bob.stop()
    assert _heard_tone(amy, BOB_HZ) > 0.5, amy.output()[-2000:]  # audio both ways on amy's own call
    assert _heard_tone(bob, AMY_HZ) > 0.5, bob.output()[-2000:]


@pytest.mark.skipif(shutil.which("dumpcap") is None, reason="dumpcap (Debian tshark) is not installed")
def test_an_agent_dials_a_number_through_the_trunk_and_is_busy_until_it_ends(
    start_server: StartServer, tmp_path: Path
) -> None:
    pstn = Pstn(tmp_path).start()
    try:
        server = _pstn_server(start_server, tmp_path, pstn)
        amy = agent_phone(server, tmp_path, "amy", "sales:1", tone_hz=AMY_HZ, life_s=60)
        try:
            amy.command(f"/dial sip:+4930123456@127.0.0.1:{server.sip_port}")
            own = server.wait_for_event("agent_call", agent="amy", timeout=15)
            assert own["target"] == "number:+4930123456"
            server.wait_for_event("transfer_ringing", target="+4930123456", timeout=20)
            assert _state(server, "amy") == "own_call"  # busy while the number rings ...
            pstn.wait_for_answer(timeout=20)
            time.sleep(5.0)  # amy and the dialled party talk
            assert _state(server, "amy") == "own_call"  # ... and while they talk
            amy.command("/hangup")
            assert pstn.wait(timeout=20) == 0, (pstn.work / "errors.log").read_text(errors="replace")
            (call,) = server.new_calls(set(), 1, timeout=20)
            deadline = time.monotonic() + 15
            while _state(server, "amy") != "available" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _state(server, "amy") == "available"
        finally:
            amy.stop()
    finally:
        pstn.stop()
    # the trunk's challenge was answered with its credentials, not the agent's
    messages = pstn.messages()
    assert "401 Unauthorized" in messages and 'username="acme"' in messages, messages[-3000:]
    assert server.events("trunk_auth_failed") == []
    assert call["sip_call_id"] == own["call_id"]
    assert (call["flow"], call["placed_by"], call["dialled"]) == ("agent_call", "amy", "number:+4930123456")
    assert (call["disposition"], call["hangup_by"], call["agent"]) == ("answered", "caller", "+4930123456")
    (visit,) = call["queue_visits"]
    assert (visit["queue"], visit["disposition"]) == ("transfer:+4930123456", "answered")
    assert call["talk_s"] >= 4.0
    # audio both ways: amy heard the PSTN's tone, the PSTN was sent amy's
    assert _heard_tone(amy, PSTN_HZ) > 0.5, amy.output()[-2000:]
    pstn_heard = pstn.heard()
    assert len(pstn_heard) >= 4 * 8000, len(pstn_heard)
    assert tone_fraction(pstn_heard[8000:], AMY_HZ) > 0.5
