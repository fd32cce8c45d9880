"""`callcenter serve` as an admin meets it: health check, clean stop, refusals that name the problem."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from callcenter import __version__
from callcenter.testing.server import ServerProcess, free_port


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CALLCENTER_")}
    environ.update(
        {
            "CALLCENTER_SIP_HOST": "127.0.0.1",
            "CALLCENTER_SIP_HOST_V6": "",
            "CALLCENTER_HTTP_HOST": "127.0.0.1",
            **(env or {}),
        }
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "callcenter.cli",
            "serve",
            "--config",
            os.devnull,
            "--data-dir",
            str(tmp_path / "data"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
    )


def test_healthz_reports_every_part_and_sigterm_stops_cleanly(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        health = server.health()
        assert health["sip"] == "up" and health["http"] == "up" and health["db"] == "up"
        assert health["version"] == __version__
        assert health["speech"] in ("warming", "ready")  # the sample flows need a recogniser
        deadline = time.monotonic() + 60
        while server.health()["speech"] == "warming" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.health()["speech"] == "ready"
    finally:
        code = server.stop(signal.SIGTERM)
    assert code == 0
    events = [e["event"] for e in server.log_events()]
    assert "server_started" in events and "server_stopping" in events


def test_a_sip_port_in_use_is_named_and_nothing_starts(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", port))
        http_port = free_port(socket.SOCK_STREAM)
        result = _serve(tmp_path, "--sip-port", str(port), "--http-port", str(http_port))
    assert result.returncode == 2
    assert f"sip.port: UDP 127.0.0.1:{port} is already in use" in result.stderr
    # Nothing half-started: the HTTP port is still free.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", http_port))


def test_an_http_port_in_use_is_named_and_sip_is_released(tmp_path: Path) -> None:
    sip_port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        http_port = taken.getsockname()[1]
        result = _serve(tmp_path, "--sip-port", str(sip_port), "--http-port", str(http_port))
    assert result.returncode == 2
    assert f"http.port: TCP 127.0.0.1:{http_port} is already in use" in result.stderr
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", sip_port))


def test_a_wrong_setting_stops_start_up_with_one_line(tmp_path: Path) -> None:
    result = _serve(tmp_path, env={"CALLCENTER_MEDIA_RTP_PORT_MIN": "10001"})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("media.rtp_port_min:"), result.stderr


def test_fixed_prompts_of_the_flows_are_rendered_after_start(tmp_path: Path) -> None:
    """Issue 4: every fixed prompt of every flow is synthesised at start-up, before a caller asks."""
    server = ServerProcess(tmp_path / "data").start()
    try:
        event = server.wait_for_event("prompts_rendered", timeout=60)
    finally:
        server.stop()
    rendered = list((tmp_path / "data" / "prompts").rglob("*.wav"))
    assert event["count"] > 30 and len(rendered) >= event["count"]


def test_a_broken_intents_file_stops_start_up_naming_the_place(tmp_path: Path) -> None:
    bad = tmp_path / "intents.yaml"
    bad.write_text("intents:\n  - name: refund\n    colour: red\n")
    result = _serve(tmp_path, env={"CALLCENTER_IVR_INTENTS_FILE": str(bad)})
    assert result.returncode == 2
    assert f"{bad}:3:" in result.stderr, result.stderr
