"""SIPp calls the server: answered calls over UDP, TCP and IPv6, a server hang-up, CANCEL, and 488.

Each test asserts on what SIPp saw (its success/failure counts and its log of unexpected messages)
and on what the server recorded (`callcenter calls list --json`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from callcenter.testing.server import ServerProcess, StartServer
from callcenter.testing.sipp import SippResult, run_sipp

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sipp")]


def assert_all_succeeded(result: SippResult, calls: int) -> None:
    """SIPp ran every call through its scenario and saw nothing it did not expect."""
    detail = f"sipp rc={result.returncode}\n{result.errors[-3000:]}\n{result.stderr[-2000:]}"
    assert (result.successful, result.failed) == (calls, 0), detail
    assert result.returncode == 0, detail
    assert "unexpected" not in result.errors.lower(), detail


def call_ids(server: ServerProcess) -> set[str]:
    return {c["sip_call_id"] for c in server.calls()}


def assert_answered_by_caller(calls: list[dict[str, object]], count: int) -> None:
    assert len(calls) == count, calls
    for call in calls:
        assert call["disposition"] == "answered", call
        assert call["hangup_by"] == "caller", call
        assert call["answered_at"], call
        assert call["ended_at"], call


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_sipp_calls_are_answered_and_recorded(
    start_server: StartServer, tmp_path: Path, transport: str
) -> None:
    server = start_server(CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S=30)
    before = call_ids(server)
    result = run_sipp(
        f"127.0.0.1:{server.sip_port}",
        tmp_path / "sipp",
        builtin="uac",
        calls=5,
        rate=20,
        transport=transport,
        extra=["-d", "300"],
        timeout_s=30,
    )
    assert_all_succeeded(result, 5)
    assert_answered_by_caller(server.new_calls(before, 5), 5)


@pytest.mark.usefixtures("ipv6")
@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_sipp_calls_over_ipv6(start_server: StartServer, tmp_path: Path, transport: str) -> None:
    server = start_server(ipv6=True, CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S=30)
    before = call_ids(server)
    result = run_sipp(
        f"[::1]:{server.sip_port}",
        tmp_path / "sipp",
        scenario="uac.xml",
        calls=3,
        rate=20,
        transport=transport,
        extra=["-d", "300"],
        timeout_s=30,
    )
    assert_all_succeeded(result, 3)
    calls = server.new_calls(before, 3)
    assert_answered_by_caller(calls, 3)
    assert all("[::1]" in str(c["from"]) for c in calls), calls


@pytest.mark.usefixtures("ipv6")
def test_sipp_builtin_uac_over_ipv6(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(ipv6=True, CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S=30)
    result = run_sipp(
        f"[::1]:{server.sip_port}",
        tmp_path / "sipp",
        builtin="uac",
        calls=1,
        extra=["-d", "300"],
        timeout_s=20,
    )
    assert_all_succeeded(result, 1)


def test_server_hangs_up_after_the_demo_time(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S=1)
    before = call_ids(server)
    # The scenario only succeeds if the server's BYE arrives (SIPp answers it 200).
    result = run_sipp(
        f"127.0.0.1:{server.sip_port}",
        tmp_path / "sipp",
        scenario="uac_server_bye.xml",
        calls=2,
        rate=20,
        timeout_s=20,
    )
    assert_all_succeeded(result, 2)
    calls = server.new_calls(before, 2)
    assert len(calls) == 2
    for call in calls:
        assert (call["disposition"], call["hangup_by"]) == ("answered", "server"), call
        assert call["answered_at"], call


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_cancel_while_ringing_is_an_abandoned_call(
    start_server: StartServer, tmp_path: Path, transport: str
) -> None:
    server = start_server(CALLCENTER_CALLS_RING_S=10)
    before = call_ids(server)
    # INVITE → 100 → 180 → CANCEL → 200 (CANCEL) → 487 (INVITE) → ACK, in this order, or SIPp fails.
    result = run_sipp(
        f"127.0.0.1:{server.sip_port}",
        tmp_path / "sipp",
        scenario="cancel.xml",
        calls=2,
        rate=20,
        transport=transport,
        timeout_s=20,
    )
    assert_all_succeeded(result, 2)
    calls = server.new_calls(before, 2)
    assert len(calls) == 2
    for call in calls:
        assert (call["disposition"], call["hangup_by"]) == ("abandoned", "caller"), call
        assert call["answered_at"] is None, call


def test_offer_without_a_common_codec_gets_488(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server()
    before = call_ids(server)
    # Offers only G.729 (PT 18) and a made-up dynamic codec; SIPp expects 488 and ACKs it.
    result = run_sipp(
        f"127.0.0.1:{server.sip_port}", tmp_path / "sipp", scenario="invite_488.xml", calls=1, timeout_s=20
    )
    assert_all_succeeded(result, 1)
    [call] = server.new_calls(before, 1)
    assert call["disposition"] == "rejected", call
    assert call["answered_at"] is None, call
    # The server still answers the next caller normally.
    result = run_sipp(
        f"127.0.0.1:{server.sip_port}",
        tmp_path / "sipp2",
        builtin="uac",
        calls=1,
        extra=["-d", "100"],
        timeout_s=20,
    )
    assert_all_succeeded(result, 1)


def test_a_caller_that_sends_no_rtp_is_hung_up_and_its_media_released(
    start_server: StartServer, tmp_path: Path
) -> None:
    """SIPp's scenario sends no RTP at all: after media.rtp_timeout_s the server ends the call with BYE."""
    server = start_server(CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S=0, CALLCENTER_MEDIA_RTP_TIMEOUT_S=2)
    before = call_ids(server)
    result = run_sipp(
        f"127.0.0.1:{server.sip_port}",
        tmp_path / "sipp",
        scenario="uac_server_bye.xml",
        calls=1,
        timeout_s=30,
    )
    assert_all_succeeded(result, 1)
    (call,) = server.new_calls(before, 1)
    assert (call["disposition"], call["hangup_by"], call["end_reason"]) == (
        "answered",
        "server",
        "rtp-timeout",
    )
    assert server.health()["active_calls"] == 0
