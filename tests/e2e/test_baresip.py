"""baresip 1.0.0 (Debian's baresip-core), a real softphone, against the server.

As an agent it registers over UDP and TCP; as a caller it dials the server and hears the demo tone.
Assertions are on what baresip printed and on what the server logged and recorded.

baresip 1.0.0's digest code (libre 1.x) gives up with ENOSYS ("Register: Function not implemented")
when any WWW-Authenticate challenge in a 401 names an algorithm other than MD5, even next to an MD5
one: that is why `sip.digest_algorithms` defaults to MD5 only, and these tests run on the default.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from callcenter.testing.baresip import Baresip, tone_energy_fraction, write_wav
from callcenter.testing.server import StartServer

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("baresip")]

REGISTERED = "200 OK"  # "agent1@127.0.0.1: {0/UDP/v4} 200 OK (callcenter/0.1.0) [1 binding]"
REFUSED = "403 Forbidden"  # "reg: sip:agent1@127.0.0.1:PORT: 403 Forbidden (callcenter/0.1.0)"


def agent_account(port: int, password: str, transport: str) -> str:
    params = ";transport=tcp" if transport == "tcp" else ""
    return f"<sip:agent1@127.0.0.1:{port}{params}>;auth_pass={password};answermode=auto;regint=60"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_baresip_registers_as_an_agent(start_server: StartServer, tmp_path: Path, transport: str) -> None:
    server = start_server()
    server.cli("agents", "add", "agent1", "--password", "pw-agent1")
    phone = Baresip(tmp_path / "baresip", agent_account(server.sip_port, "pw-agent1", transport))
    try:
        phone.start()
        event = server.wait_for_event("agent_registered", username="agent1")
        seen = phone.wait_for_output(REGISTERED, "Register:", REFUSED)
        out = phone.output()
        assert seen == REGISTERED, out
        assert f"{{0/{transport.upper()}/v4}} 200 OK" in out, out
        assert str(event["source"]).startswith(f"{transport}:"), event
        assert f"127.0.0.1:{phone.sip_port}" in str(event["contact"]), event
    finally:
        phone.stop()
    # baresip unregisters on the way out.
    server.wait_for_event("agent_unregistered", username="agent1")


def test_baresip_with_a_wrong_password_is_refused(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server()
    server.cli("agents", "add", "agent1", "--password", "pw-agent1")
    phone = Baresip(tmp_path / "baresip", agent_account(server.sip_port, "not-the-password", "udp"))
    try:
        phone.start()
        server.wait_for_event("register_auth_failed", username="agent1")
        seen = phone.wait_for_output(REFUSED, REGISTERED)
        assert seen == REFUSED, phone.output()
    finally:
        phone.stop()
    assert not server.events("agent_registered")


def test_baresip_registers_with_the_default_digest_challenges(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server()
    server.cli("agents", "add", "agent1", "--password", "pw-agent1")
    phone = Baresip(tmp_path / "baresip", agent_account(server.sip_port, "pw-agent1", "udp"))
    try:
        phone.start()
        seen = phone.wait_for_output(REGISTERED, "Register:", REFUSED)
        assert seen == REGISTERED, phone.output()
    finally:
        phone.stop()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_baresip_calls_in_and_hears_the_tone(
    start_server: StartServer, tmp_path: Path, transport: str
) -> None:
    server = start_server(
        CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S=2, CALLCENTER_CALLS_RING_S=0.3, CALLCENTER_IVR_NUMBERS=""
    )  # no flow on 100: the demo tone
    before = {c["sip_call_id"] for c in server.calls()}
    work = tmp_path / "baresip"
    work.mkdir()
    phone = Baresip(
        work,
        "<sip:caller@127.0.0.1>;regint=0;answermode=manual;audio_codecs=PCMU",
        commands=[
            f"/dial sip:100@127.0.0.1:{server.sip_port}" + (";transport=tcp" if transport == "tcp" else "")
        ],
        audio_wav=write_wav(work / "mic.wav", 20, hz=1000),
        record_dir=work / "heard",
    )
    try:
        phone.start()
        assert phone.wait_for_output("Call established") == "Call established", phone.output()
        # The server hangs up after demo_hangup_after_s; baresip reports the end of the call.
        assert phone.wait_for_output("terminated (duration") is not None, phone.output()
    finally:
        phone.stop()
    out = phone.output()
    assert "180 Ringing" in out, out
    [call] = server.new_calls(before, 1)
    assert (call["disposition"], call["hangup_by"]) == ("answered", "server"), call
    assert call["answered_at"], call
    assert call["rtp"]["packets_received"] > 0, call  # the server heard baresip's microphone
    [heard] = phone.recordings("dec")
    assert tone_energy_fraction(heard, 440) > 0.8  # baresip heard the 440 Hz demo tone


def test_a_phone_whose_port_was_taken_meanwhile_starts_on_other_ports(tmp_path: Path) -> None:
    # A port picked free can be taken before baresip binds it (here: its TLS port, SIP port + 1).
    phone = Baresip(tmp_path / "phone", "<sip:nobody@127.0.0.1:9>;regint=0", life_s=10)
    taken = phone.sip_port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", taken + 1))
        squatter.listen()
        try:
            phone.start()
            assert phone.proc is not None and phone.proc.poll() is None, phone.output()
            assert "baresip is ready." in phone.output()
            assert phone.sip_port != taken
        finally:
            phone.stop()
