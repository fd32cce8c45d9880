"""baresip calls the server over SIP/TLS with SRTP (SDES, RFC 4568) and real audio both ways.

baresip (Debian baresip-core 1.0.0, its srtp module) dials the demo-tone number over TLS with
``mediaenc=srtp-mand`` (RTP/SAVP + a=crypto) and plays a 1 kHz tone; the server records the call
and plays its 440 Hz tone back. Checked as users would notice it: the server's recording has the
caller's tone (so it decrypted the SRTP), baresip heard the server's tone (so the server encrypted
with the key it announced), and a loopback capture of what baresip sent to the server's media ports
is not PCMU a listener could play: the tone is not in the raw payloads.
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

from callcenter.media import g711
from callcenter.sip.transport.tls import make_self_signed
from callcenter.testing.audio import read_wav, tone_fraction
from callcenter.testing.baresip import MODULE_PATH, Baresip, write_wav
from callcenter.testing.server import StartServer, free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.usefixtures("baresip"),
    pytest.mark.skipif(not Path(MODULE_PATH, "srtp.so").exists(), reason="baresip has no srtp module"),
    pytest.mark.skipif(shutil.which("dumpcap") is None, reason="dumpcap (Debian tshark) is not installed"),
]

CALLER_HZ = 1000  # what baresip's microphone plays
SERVER_HZ = 440  # the server's demo tone (calls.demo_tone_hz default)
HANGUP_AFTER_S = 6


class TlsSrtpBaresip(Baresip):
    """baresip with the srtp module and the server's certificate as its only trusted CA."""

    def __init__(self, *args: object, cafile: Path, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.cafile = cafile

    def _write_config(self) -> Path:
        cfg = super()._write_config()
        with (cfg / "config").open("a") as f:
            f.write(f"module srtp.so\nsip_cafile {self.cafile}\n")
        return cfg


class Capture:
    """dumpcap on lo (pcap format), stopped by its PID."""

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

    def rtp_packets(self) -> list[bytes]:
        """Every captured UDP payload that looks like RTP version 2 with payload type 0 (PCMU)."""
        data = self.path.read_bytes()
        linktype = struct.unpack("<I", data[20:24])[0]
        link = {0: 4, 1: 14, 113: 16, 276: 20}[linktype]
        out: list[bytes] = []
        offset = 24
        while offset + 16 <= len(data):
            caplen = struct.unpack("<I", data[offset + 8 : offset + 12])[0]
            frame = data[offset + 16 : offset + 16 + caplen]
            offset += 16 + caplen
            ip = frame[link:]
            udp = ip[(ip[0] & 0x0F) * 4 :]
            packet = udp[8:]
            if len(packet) >= 12 and packet[0] >> 6 == 2 and packet[1] & 0x7F == 0:
                out.append(packet)
        return out


def test_baresip_over_tls_with_srtp_both_ways(start_server: StartServer, tmp_path: Path) -> None:
    cert, key = make_self_signed(tmp_path / "tls", ["127.0.0.1"])
    tls_port = free_port()
    server = start_server(
        CALLCENTER_SIP_TRANSPORTS="udp,tls",
        CALLCENTER_SIP_TLS_PORT=tls_port,
        CALLCENTER_SIP_TLS_CERT=cert,
        CALLCENTER_SIP_TLS_KEY=key,
        CALLCENTER_MEDIA_SRTP="required",  # a plain-RTP call would be refused: SRTP is what we test
        CALLCENTER_CALLS_RECORD=1,
        CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S=HANGUP_AFTER_S,
        CALLCENTER_IVR_NUMBERS="",  # no flow on 100: the demo tone
    )
    work = tmp_path / "baresip"
    work.mkdir()
    capture = Capture(
        tmp_path / "to_server.pcap", f"udp and dst portrange {server.rtp_min}-{server.rtp_min + 99}"
    )
    phone = TlsSrtpBaresip(
        work,
        "<sip:caller@127.0.0.1;transport=tls>;regint=0;answermode=manual;audio_codecs=PCMU;"
        "mediaenc=srtp-mand",
        commands=[f"/dial sip:100@127.0.0.1:{tls_port};transport=tls"],
        audio_wav=write_wav(work / "mic.wav", HANGUP_AFTER_S + 20, hz=CALLER_HZ),
        record_dir=work / "heard",
        cafile=cert,
    )
    try:
        phone.start()
        assert phone.wait_for_output("Call established", timeout=15) == "Call established", phone.output()
        ended = phone.wait_for_output("terminated (duration", timeout=HANGUP_AFTER_S + 15)
        assert ended is not None, phone.output()[-3000:]
    finally:
        phone.stop()
        capture.stop()

    (call,) = server.new_calls(set(), 1)
    assert (call["disposition"], call["hangup_by"]) == ("answered", "server"), call
    server.stop()  # the recording is finalised once the server has exited

    # The server decrypted what baresip sent: the caller's tone is on the recording's left channel.
    rate, frames = read_wav(Path(call["recording"]))
    assert rate == 8000 and len(frames) >= 3 * 8000
    assert tone_fraction(frames[:, 0], CALLER_HZ) > 0.8
    # baresip decrypted what the server sent: it heard the demo tone.
    (heard_path,) = phone.recordings("dec")
    _, heard = read_wav(heard_path)
    assert len(heard) >= 8000 and tone_fraction(heard[:, 0], SERVER_HZ) > 0.8

    # On the wire: SRTP (payload + 80-bit tag), and the payload is no tone a listener could decode.
    packets = capture.rtp_packets()
    assert len(packets) >= 100, len(packets)
    assert all(len(p) == 12 + 160 + 10 for p in packets[:50])
    raw = np.concatenate([g711.decode(p[12:172], "PCMU") for p in packets])
    assert tone_fraction(raw, CALLER_HZ) < 0.1
