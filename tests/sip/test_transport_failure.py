"""A request the transport cannot deliver fails its transaction at once (RFC 3261 §17.1.4: the TU hears a
transport error, §8.1.3.1: as a 503), so a call out to a trunk we cannot reach or do not trust fails
within a moment, not after the ring timeout.

The TLS trunk is tests/sip/test_tls_trunk.py's responder. The ring timeout is the maximum (300 s) and
every wait is bounded by a few seconds: a dial that returns at all returned long before its ring timeout.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from test_tls_trunk import TlsTrunk  # tests/sip is on sys.path

from callcenter.calls.agent_leg import AgentRing, CallerInfo, RingTarget
from callcenter.calls.outbound import DialResult, dial, install_trunk, outside_dest
from callcenter.core.config import MediaSettings, Settings
from callcenter.media.engine import MediaEngine
from callcenter.sip.endpoint import EndpointConfig, SipEndpoint
from callcenter.sip.message import Headers, SipRequest, make_response
from callcenter.sip.transaction import (
    Addr,
    ResponseReceived,
    TransactionLayer,
    TransportFailure,
    transport_failure,
)
from callcenter.sip.transport.tls import make_self_signed

WAIT = 8.0  # far below the 300 s ring timeout
TLS = Addr("tls", "192.0.2.7", 5061)


def request(method: str, branch: str = "z9hG4bKone") -> SipRequest:
    h = Headers()
    h.add("Via", f"SIP/2.0/TLS 192.0.2.1:5061;branch={branch}")
    h.add("From", "<sip:callcenter@192.0.2.1>;tag=abc")
    h.add("To", "<sip:5551234@192.0.2.7>")
    h.add("Call-ID", "call-1@192.0.2.1")
    h.add("CSeq", f"1 {method}")
    return SipRequest(method, "sip:5551234@192.0.2.7;transport=tls", h)


# --- the transaction layer --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["INVITE", "OPTIONS"])
def test_a_transport_failure_ends_the_client_transaction_at_once_as_a_503(method: str) -> None:
    layer = TransactionLayer()
    req = request(method)
    layer.send_request(req, TLS, 0.0)
    layer.outgoing.clear()
    failure = transport_failure(req.serialize(), "connection refused")
    assert failure is not None
    layer.receive_response(failure, TLS, 0.1)
    (event,) = layer.events
    assert isinstance(event, ResponseReceived) and event.response.status == 503
    assert isinstance(event.response, TransportFailure) and event.response.error == "connection refused"
    assert layer.client == {} and layer.get_timer() is None  # terminated: no timer B left to fire
    assert layer.outgoing == []  # no ACK: nothing could carry it


def test_a_transport_failure_after_the_final_response_changes_nothing() -> None:
    layer = TransactionLayer()
    req = request("INVITE")
    layer.send_request(req, TLS, 0.0)
    layer.receive_response(make_response(req, 486, to_tag="x"), TLS, 0.1)
    layer.events.clear()
    failure = transport_failure(req.serialize(), "connection reset")
    assert failure is not None
    layer.receive_response(failure, TLS, 0.2)
    assert list(layer.events) == []


def test_only_requests_awaiting_an_answer_become_failures() -> None:
    assert transport_failure(request("ACK").serialize(), "refused") is None  # nothing waits for an ACK
    assert transport_failure(make_response(request("INVITE"), 200).serialize(), "refused") is None
    assert transport_failure(b"\r\n\r\n", "refused") is None
    assert transport_failure(b"garbage", "refused") is None


# --- calls out ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("tls")
    return {
        "trunk": make_self_signed(root / "trunk", ["127.0.0.1"]),
        "stranger": make_self_signed(root / "stranger", ["127.0.0.1"]),
        "misnamed": make_self_signed(root / "misnamed", ["pstn.example.net"]),
    }


def settings(port: int, transport: str, ca: Path | None) -> Settings:
    trunk = {"uri": f"127.0.0.1:{port}", "transport": transport, "ring_timeout_s": 300}
    return Settings.model_validate({"sip": {"trunk": trunk, "tls_ca": str(ca) if ca else None}})


async def call_out(config: Settings) -> DialResult:
    ep = SipEndpoint(EndpointConfig(listen=[("udp", "127.0.0.1", 0)]))
    media = MediaEngine(MediaSettings())
    await ep.start()
    try:
        install_trunk(ep, config)
        return await asyncio.wait_for(dial(ep, media, config, "5551234"), WAIT)
    finally:
        await ep.close()
        await media.stop()


def failed_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.__dict__["cc_fields"] for r in caplog.records if r.getMessage() == "trunk_tls_failed"]


@pytest.mark.parametrize(
    ("served", "trusted", "why"),
    [
        ("trunk", "stranger", "certificate verify failed"),  # not signed by sip.tls_ca
        ("misnamed", "misnamed", "mismatch"),  # trusted, but issued to another name
    ],
)
async def test_a_trunk_whose_certificate_is_refused_fails_the_dial_at_once_with_the_reason(
    certs: dict[str, tuple[Path, Path]], served: str, trusted: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    trunk = await TlsTrunk(certs[served]).start()
    try:
        result = await call_out(settings(trunk.port, "tls", certs[trusted][0]))
    finally:
        await trunk.close()
    assert result.outcome == "failed" and why in result.detail
    assert trunk.invites == []
    (line,) = failed_lines(caplog)  # one line per failed connection, with the reason
    assert why in line["error"] and "sip.tls_ca" in line["hint"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens here once the socket is closed


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_a_trunk_refusing_the_connection_fails_the_dial_at_once(
    transport: str, certs: dict[str, tuple[Path, Path]]
) -> None:
    result = await call_out(settings(closed_port(), transport, certs["trunk"][0]))
    assert result.outcome == "failed" and "connection refused" in result.detail


async def test_a_transfer_ring_to_an_unreachable_trunk_ends_at_once(
    certs: dict[str, tuple[Path, Path]], caplog: pytest.LogCaptureFixture
) -> None:
    """The IVR's transfer to a number rings the trunk through a plain AgentRing (calls/acd.py): it hears
    the failure too, as an unreachable branch, and the caller moves on."""
    caplog.set_level(logging.INFO)
    trunk = await TlsTrunk(certs["trunk"]).start()
    config = settings(trunk.port, "tls", certs["stranger"][0])
    ep = SipEndpoint(EndpointConfig(listen=[("udp", "127.0.0.1", 0)]))
    media = MediaEngine(MediaSettings())
    await ep.start()
    try:
        install_trunk(ep, config)
        uri = f"sip:5551234@127.0.0.1:{trunk.port};transport=tls"
        dest = await outside_dest(ep, config, uri)
        ring = AgentRing(
            ep,
            media,
            CallerInfo("call-9", "100"),
            {"5551234": [RingTarget(uri, dest)]},
            ptime_ms=20,
            timeout_s=300,
        )
        result = await asyncio.wait_for(ring.ring(), WAIT)
    finally:
        await ep.close()
        await media.stop()
        await trunk.close()
    assert result.agent is None and result.outcomes == {"5551234": "unreachable"}
    assert len(failed_lines(caplog)) == 1
