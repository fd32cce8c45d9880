"""An agent on SIP over TLS with SRTP takes a plain-RTP caller, end to end.

amy's baresip (srtp module, ``mediaenc=srtp-mand``, the server's certificate as its only CA)
registers over TLS; a SIPp caller (plain RTP/AVP, a 1000 Hz tone) is queued to her. The server's
INVITE to amy goes over the connection she registered on and offers RTP/SAVP with a=crypto (every
ringing branch registered over TLS: calls/agent_leg.py), while the caller's leg stays plain RTP: the
bridge joins two legs, each with its own crypto context (or none).

Checked as users would notice it: the server's recording has the caller's tone on the caller's
channel and amy's 600 Hz tone on what the caller heard (so the server decrypted amy's SRTP and sent
it on in the clear to a plain caller); amy's phone heard the caller's tone (so the server encrypted
toward her with the key it announced); and a loopback capture of the media ports shows the agent
leg as SRTP both ways (PCMU + 80-bit tag, no tone a listener could decode) beside the caller's plain
PCMU, in which the caller's tone is plain to hear.
"""

from __future__ import annotations

import shutil
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callcenter.media import g711
from callcenter.sip.transport.tls import make_self_signed
from callcenter.testing.agents import agent_phone
from callcenter.testing.audio import read_wav, tone_fraction
from callcenter.testing.baresip import MODULE_PATH, Baresip, write_wav
from callcenter.testing.pcap import Segment, write_rtp_pcap
from callcenter.testing.server import ServerProcess, StartServer, free_port
from callcenter.testing.sipp import pcap_caller_scenario, run_sipp

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.usefixtures("sipp", "baresip"),
    pytest.mark.skipif(not Path(MODULE_PATH, "srtp.so").exists(), reason="baresip has no srtp module"),
    pytest.mark.skipif(shutil.which("dumpcap") is None, reason="dumpcap (Debian tshark) is not installed"),
]

CALLER_HZ, AGENT_HZ = 1000.0, 600.0
TALK_S = 8
PCMU_SRTP = 12 + 160 + 10  # RTP header + 20 ms of PCMU + AES_CM_128_HMAC_SHA1_80 tag (RFC 3711 §4.2)
PCMU_RTP = 12 + 160

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
    sales: {{skills: {{sales: 1}}, ring_timeout_s: 10}}
"""


class TlsAgentPhone(Baresip):
    """baresip with the srtp module, trusting only the server's certificate."""

    def __init__(self, *args: Any, cafile: Path, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.cafile = cafile

    def _write_config(self) -> Path:
        cfg = super()._write_config()
        with (cfg / "config").open("a") as f:
            f.write(f"module srtp.so\nsip_cafile {self.cafile}\n")
        return cfg


def tls_agent(server: ServerProcess, work_root: Path, name: str, tls_port: int, cafile: Path) -> Baresip:
    """Like callcenter.testing.agents.agent_phone, but registered over TLS and insisting on SRTP."""
    server.cli("agents", "add", name, "--password", f"pw-{name}", "--skills", "sales:1")
    account = (
        f"<sip:{name}@127.0.0.1:{tls_port};transport=tls>;auth_pass=pw-{name};answermode=auto;"
        "regint=600;audio_codecs=PCMU;mediaenc=srtp-mand"
    )
    work = work_root / name
    work.mkdir()
    wav = write_wav(work / "mic.wav", 70, AGENT_HZ)
    phone = TlsAgentPhone(work, account, audio_wav=wav, record_dir=work / "rec", life_s=70, cafile=cafile)
    phone.start()
    server.wait_for_event("agent_registered", username=name, timeout=15)
    server.wait_for_event("agent_state", agent=name, state="available", timeout=15)
    return phone


class Capture:
    """dumpcap on lo (pcap), stopped by its PID; UDP datagrams as (source port, dest port, payload)."""

    def __init__(self, path: Path, bpf: str) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            ["dumpcap", "-q", "-P", "-i", "lo", "-f", bpf, "-w", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not (path.exists() and path.stat().st_size >= 24):  # the header: dumpcap is listening
            assert self.proc.poll() is None and time.monotonic() < deadline, "dumpcap did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def datagrams(self) -> list[tuple[int, int, bytes]]:
        data = self.path.read_bytes()
        link = {0: 4, 1: 14, 113: 16, 276: 20}[struct.unpack("<I", data[20:24])[0]]
        out: list[tuple[int, int, bytes]] = []
        offset = 24
        while offset + 16 <= len(data):
            caplen = struct.unpack("<I", data[offset + 8 : offset + 12])[0]
            ip = data[offset + 16 + link : offset + 16 + caplen]
            offset += 16 + caplen
            udp = ip[(ip[0] & 0x0F) * 4 :]
            sport, dport = struct.unpack("!HH", udp[:4])
            out.append((sport, dport, udp[8:]))
        return out


def _pcmu_rtp(packets: list[bytes]) -> list[bytes]:
    return [p for p in packets if len(p) >= 12 and p[0] >> 6 == 2 and p[1] & 0x7F == 0]


def _decoded(packets: list[bytes]) -> np.ndarray:
    return np.concatenate([g711.decode(p[12:172], "PCMU") for p in packets])


def test_a_tls_srtp_agent_takes_a_plain_rtp_caller_with_audio_both_ways(
    start_server: StartServer, tmp_path: Path
) -> None:
    cert, key = make_self_signed(tmp_path / "tls", ["127.0.0.1"])
    tls_port = free_port()
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "to_sales.yaml").write_text(FLOW)
    server = start_server(
        config=CONFIG.format(flows=flows),
        CALLCENTER_SIP_TRANSPORTS="udp,tls",
        CALLCENTER_SIP_TLS_PORT=tls_port,
        CALLCENTER_SIP_TLS_CERT=cert,
        CALLCENTER_SIP_TLS_KEY=key,
        CALLCENTER_MEDIA_SRTP="optional",  # SRTP toward the TLS agent, plain RTP for the plain caller
        CALLCENTER_CALLS_RECORD=1,
    )
    ours = range(server.rtp_min, server.rtp_min + 100)
    capture = Capture(tmp_path / "media.pcap", f"udp and portrange {ours.start}-{ours.stop - 1}")
    amy = tls_agent(server, tmp_path, "amy", tls_port, cert)
    results: list[Any] = []
    try:
        pcap = tmp_path / "caller.pcap"
        t = np.arange(int(8000 * (TALK_S + 2))) / 8000
        write_rtp_pcap(pcap, [Segment(pcm=(6000 * np.sin(2 * np.pi * CALLER_HZ * t)).astype(np.int16))])

        def run() -> None:
            results.append(
                run_sipp(
                    f"127.0.0.1:{server.sip_port}",
                    tmp_path / "sipp",
                    scenario=str(pcap_caller_scenario(tmp_path, pcap, number="300")),
                    extra=["-d", str(TALK_S * 1000)],
                    timeout_s=TALK_S + 40,
                )
            )

        caller = threading.Thread(target=run)
        caller.start()
        server.wait_for_event("agent_answered", agent="amy", timeout=20)
        caller.join(timeout=TALK_S + 45)
        (result,) = results
        assert result.successful == 1 and result.failed == 0, result.errors
        (call,) = server.new_calls(set(), 1, timeout=20)
        assert amy.wait_for_output("terminated", "session closed", timeout=15), amy.output()[-2000:]
    finally:
        amy.stop()
        capture.stop()
    assert (call["disposition"], call["agent"]) == ("answered", "amy"), call
    server.stop()  # the recording is finalised once the server has exited

    # The server: the caller's tone as sent, and amy's (decrypted from SRTP) as the caller heard it.
    rate, frames = read_wav(Path(call["recording"]))
    assert rate == 8000
    assert tone_fraction(frames[:, 0][8000:], CALLER_HZ) > 0.5
    assert len(frames) >= 4 * 8000 and tone_fraction(frames[:, 1][8000:], AGENT_HZ) > 0.5
    # amy's phone decrypted what the bridge sent her: the caller's tone.
    heard = [read_wav(p)[1][:, 0] for p in amy.recordings("dec")]
    assert max(tone_fraction(pcm[8000:], CALLER_HZ) for pcm in heard if len(pcm) > 16000) > 0.5

    # On the wire: the agent leg is SRTP in both directions (under media.srtp optional the server
    # offers it only to an agent registered over TLS, so the INVITE went there), the caller's plain.
    datagrams = capture.datagrams()
    to_us = _pcmu_rtp([p for s, d, p in datagrams if d in ours and s not in ours])
    from_us = _pcmu_rtp([p for s, d, p in datagrams if s in ours and d not in ours])
    srtp_in = [p for p in to_us if len(p) == PCMU_SRTP]
    srtp_out = [p for p in from_us if len(p) == PCMU_SRTP]
    plain_in = [p for p in to_us if len(p) == PCMU_RTP]
    assert len(srtp_in) >= 100 and len(srtp_out) >= 100, (len(srtp_in), len(srtp_out))
    assert tone_fraction(_decoded(plain_in), CALLER_HZ) > 0.5  # a tone in the clear is heard ...
    assert tone_fraction(_decoded(srtp_in), AGENT_HZ) < 0.1  # ... amy's is not, on her leg to us
    assert tone_fraction(_decoded(srtp_out), CALLER_HZ) < 0.1  # nor the caller's, sent on to amy


PSTN_HZ = 450.0


class TlsPstn(Baresip):
    """The "PSTN" behind a TLS trunk: baresip with its own certificate (it listens for TLS on its SIP
    port + 1), auto-answering with SRTP required and playing a PSTN_HZ tone. Debian's SIPp has no TLS
    (no ``-t l1``), so a real softphone stands in for the SIPp UAS here."""

    def __init__(self, *args: Any, certificate: Path, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.certificate = certificate

    @property
    def tls_port(self) -> int:
        return self.sip_port + 1

    def _write_config(self) -> Path:
        cfg = super()._write_config()
        with (cfg / "config").open("a") as f:
            f.write(f"module srtp.so\nsip_certificate {self.certificate}\n")
        return cfg


def test_an_agent_dials_a_number_through_a_tls_trunk_with_srtp(
    start_server: StartServer, tmp_path: Path
) -> None:
    cert, key = make_self_signed(tmp_path / "pstn_tls", ["127.0.0.1"])
    both = cert.with_name("cert_and_key.pem")
    both.write_text(cert.read_text() + key.read_text())
    work = tmp_path / "pstn"
    work.mkdir()
    pstn = TlsPstn(
        work,
        "<sip:+4930123456@127.0.0.1>;regint=0;answermode=auto;audio_codecs=PCMU;mediaenc=srtp-mand",
        audio_wav=write_wav(work / "mic.wav", 60, PSTN_HZ),
        record_dir=work / "rec",
        certificate=both,
    )
    pstn.start()
    assert pstn.wait_for_output("baresip is ready", timeout=15), pstn.output()
    trunk = f"sip:\n  tls_ca: {cert}\n  trunk:\n    uri: 127.0.0.1:{pstn.tls_port}\n    transport: tls\n"
    server = start_server(config=trunk, CALLCENTER_CALLS_RECORD=1)  # media.srtp: optional (default)
    amy = agent_phone(server, tmp_path, "amy", "sales:1", tone_hz=AGENT_HZ, life_s=60)
    try:
        amy.command(f"/dial sip:+4930123456@127.0.0.1:{server.sip_port}")
        own = server.wait_for_event("agent_call", agent="amy", timeout=15)
        assert own["target"] == "number:+4930123456"
        assert pstn.wait_for_output("Call established", timeout=20), pstn.output()[-3000:]
        time.sleep(5.0)  # amy and the dialled party talk
        amy.command("/hangup")
        assert pstn.wait_for_output("terminated", timeout=20), pstn.output()[-3000:]
        (call,) = server.new_calls(set(), 1, timeout=20)
    finally:
        amy.stop()
        pstn.stop()
    assert (call["disposition"], call["agent"]) == ("answered", "+4930123456"), call
    assert "SRTP is Enabled" in pstn.output()  # the trunk leg negotiated SRTP over TLS
    # audio both ways through the bridge: plain RTP to amy, SRTP to the trunk
    heard_by_pstn = [read_wav(p)[1][:, 0] for p in pstn.recordings("dec")]
    assert max(tone_fraction(pcm[8000:], AGENT_HZ) for pcm in heard_by_pstn if len(pcm) > 16000) > 0.5
    heard_by_amy = [read_wav(p)[1][:, 0] for p in amy.recordings("dec")]
    assert max(tone_fraction(pcm[8000:], PSTN_HZ) for pcm in heard_by_amy if len(pcm) > 16000) > 0.5
