"""pyVoIP 1.6.8, a sloppy phone (no port in its Request-URI, late and repeated ACKs with a wrong
To-tag), calls the server; the call is recorded and the server keeps serving the next caller."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from callcenter.testing.server import StartServer, free_port
from callcenter.testing.sipp import run_sipp

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sipp")]


def test_pyvoip_calls_and_the_server_keeps_serving(start_server: StartServer, tmp_path: Path) -> None:
    # A dev dependency: its absence is a set-up error, not a reason to skip.
    assert importlib.util.find_spec("pyVoIP"), "pyVoIP 1.6.8 (the dev extra) is not installed"
    server = start_server(
        CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S=30, CALLCENTER_IVR_NUMBERS=""
    )  # no flow on 100: the demo tone
    before = {c["sip_call_id"] for c in server.calls()}
    rtp = free_port(even=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "callcenter.testing.pyvoip_caller",
            "--port",
            str(server.sip_port),
            "--number",
            "100",
            "--sip-port",
            str(free_port()),
            "--rtp-low",
            str(rtp),
            "--rtp-high",
            str(rtp + 4),
            "--hold",
            "1.5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    steps = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    names = [s["step"] for s in steps]
    assert proc.returncode == 0, (proc.stdout, proc.stderr[-3000:])
    assert names[:3] == ["dialled", "answered", "hung-up"], names
    call_id = steps[0]["call_id"]

    [call] = server.new_calls(before, 1)
    assert call["sip_call_id"] == call_id
    assert (call["disposition"], call["hangup_by"]) == ("answered", "caller"), call
    assert call["answered_at"], call
    assert call["rtp"]["packets_received"] > 0, call  # pyVoIP sends (silence) RTP

    # The server shrugged off pyVoIP's sloppiness: the next caller is answered as usual.
    result = run_sipp(
        f"127.0.0.1:{server.sip_port}",
        tmp_path / "sipp",
        builtin="uac",
        calls=2,
        rate=20,
        extra=["-d", "200"],
        timeout_s=20,
    )
    assert (result.successful, result.failed, result.returncode) == (2, 0, 0), result.errors[-3000:]
    calls = server.new_calls(before | {call_id}, 2)
    assert [c["disposition"] for c in calls] == ["answered", "answered"], calls
    assert not server.events("call_error") and not server.events("call_crashed")
