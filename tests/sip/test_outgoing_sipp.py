"""The UAC side (OutgoingCall) against SIPp acting as a phone: answered, hung up, cancelled."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from callcenter.sip.endpoint import EndpointConfig, SipEndpoint
from callcenter.sip.transaction import Addr
from callcenter.testing.server import free_port
from callcenter.testing.sipp import SCENARIOS

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (sip-tester) is not installed"),
]

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)


async def _sipp_uas(tmp_path: Path, port: int, scenario: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "sipp", "-i", "127.0.0.1", "-p", str(port), *scenario, "-m", "1", "-nostdin",
        "-timeout", "20s", "-timeout_error", "-trace_err", "-error_file", str(tmp_path / "err.log"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )


async def _endpoint() -> SipEndpoint:
    endpoint = SipEndpoint(EndpointConfig(listen=[("udp", "127.0.0.1", free_port())]))
    await endpoint.start()
    return endpoint


async def _wait_listening(port: int) -> None:
    """SIPp binds its port before it reads anything; give it a bounded moment."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return  # taken: SIPp is there
        await asyncio.sleep(0.05)


async def test_answered_call_is_acked_and_hung_up_with_bye(tmp_path: Path) -> None:
    port = free_port()
    sipp = await _sipp_uas(tmp_path, port, ["-sn", "uas"])
    endpoint = await _endpoint()
    try:
        await _wait_listening(port)
        leg = endpoint.invite(f"sip:agent@127.0.0.1:{port}", Addr("udp", "127.0.0.1", port), sdp=SDP)
        final = await leg.wait_answer(10)
        assert final is not None and final.status == 200
        assert leg.state == "confirmed" and b"m=audio" in leg.answer_body
        await asyncio.sleep(0.2)  # SIPp's uas expects the ACK before the BYE
        await leg.hangup()
        assert leg.ended.result() == "local" and leg.hangup_by == "server"
        assert await asyncio.wait_for(sipp.wait(), 20) == 0, (tmp_path / "err.log").read_text()
    finally:
        if sipp.returncode is None:
            sipp.kill()
            await sipp.wait()
        await endpoint.close()
    assert not endpoint.dialogs


async def test_unanswered_call_is_cancelled_after_ringing(tmp_path: Path) -> None:
    port = free_port()
    sipp = await _sipp_uas(tmp_path, port, ["-sf", str(SCENARIOS / "uas_ring_cancel.xml")])
    endpoint = await _endpoint()
    rang = asyncio.Event()
    try:
        await _wait_listening(port)
        leg = endpoint.invite(f"sip:agent@127.0.0.1:{port}", Addr("udp", "127.0.0.1", port), sdp=SDP)
        leg.on_provisional = lambda response: rang.set() if response.status == 180 else None
        await asyncio.wait_for(rang.wait(), 10)
        assert await leg.wait_answer(0.5) is None  # still ringing
        leg.cancel()
        final = await leg.wait_answer(10)
        assert leg.ended.result() == "cancel"
        assert final is not None and final.status == 487
        assert await asyncio.wait_for(sipp.wait(), 20) == 0, (tmp_path / "err.log").read_text()
    finally:
        if sipp.returncode is None:
            sipp.kill()
            await sipp.wait()
        await endpoint.close()


async def test_nobody_there_times_out(tmp_path: Path) -> None:
    """INVITE to a port nobody listens on: timer B ends the leg (stepped, not waited for)."""
    endpoint = await _endpoint()
    try:
        port = free_port()
        leg = endpoint.invite(f"sip:agent@127.0.0.1:{port}", Addr("udp", "127.0.0.1", port), sdp=SDP)
        endpoint.layer.handle_timer(endpoint.now + 64 * 0.5 + 1)
        endpoint._process()
        assert leg.final.done() and leg.final.result() is None
        assert leg.ended.result() == "error"
    finally:
        await endpoint.close()
