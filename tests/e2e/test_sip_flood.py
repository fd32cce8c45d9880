"""A flood of malformed SIP over UDP and TCP (scripts/flood_sip.py) against the real server: it keeps
running, answers OPTIONS on both transports afterwards, completes a SIPp call, and logs no crash."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from callcenter.testing.server import ServerProcess
from callcenter.testing.sipp import run_sipp, sipp_available

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import flood_sip  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not sipp_available(), reason="SIPp not installed")]


def test_the_server_survives_a_flood_of_malformed_sip_and_still_completes_calls(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        sent = flood_sip.flood("127.0.0.1", server.sip_port, seconds=5.0, seed=7)
        assert sent["udp"] > 1000 and sent["tcp_messages"] > 100  # the flood really happened
        assert server.proc is not None and server.proc.poll() is None
        assert flood_sip.options_answered("127.0.0.1", server.sip_port, "udp")
        assert flood_sip.options_answered("127.0.0.1", server.sip_port, "tcp")
        result = run_sipp(
            f"127.0.0.1:{server.sip_port}",
            tmp_path / "sipp",
            builtin="uac",
            calls=1,
            extra=["-d", "300"],
            timeout_s=30,
        )
        assert result.successful == 1, result
        log = server.log_text()
    assert "Traceback" not in log
    errors = [line for line in log.splitlines() if '"level":"error"' in line]
    assert errors == []  # bad input is a warning at most: nothing in the server went wrong
