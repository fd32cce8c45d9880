"""The systemd units in scripts/deploy/ (issue 10): systemd itself accepts them, and a node started the
way ``callcenter@.service`` starts it (its ExecStart, Environment, EnvironmentFile from
node.env.example, WorkingDirectory) joins a real PostgreSQL + Redis cluster and stops cleanly on the
unit's KillSignal within TimeoutStopSec.

No systemd runs as PID 1 here, so the unit cannot be started by systemctl; ``systemd-analyze verify``
checks the unit files (keys, sections, that ExecStart commands exist) and the rest is done by hand
exactly as the unit says.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from callcenter.testing.cluster import RedisProcess, redis_available
from callcenter.testing.postgres import PostgresCluster, find_pg_bin
from callcenter.testing.server import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "scripts" / "deploy"
UNIT = DEPLOY / "callcenter@.service"
INSTALLED = "/opt/callcenter/.venv/bin/callcenter"  # where the unit expects the install
CALLCENTER = Path(sys.executable).parent / "callcenter"  # this checkout's, in its place

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def service_section(path: Path, instance: str) -> dict[str, list[str]]:
    """The unit's [Service] keys (each with every value, in order), %i expanded."""
    keys: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service":
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip().replace("%i", instance))
    return keys


def _verify(unit: Path, unit_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_path}:"}  # trailing ':' = and the defaults
    return subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, env=env, timeout=60
    )


@needs_systemd_analyze
def test_systemd_accepts_the_node_unit(tmp_path: Path) -> None:
    # Installed as the README says, with the program where the unit expects it (here: this checkout's).
    text = UNIT.read_text().replace(INSTALLED, str(CALLCENTER))
    unit = tmp_path / "callcenter@node1.service"
    unit.write_text(text)
    result = _verify(unit, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "callcenter@" not in result.stdout + result.stderr, result.stdout + result.stderr  # no warning


@needs_systemd_analyze
def test_systemd_accepts_the_kamailio_drop_in(tmp_path: Path) -> None:
    debian_unit = Path("/lib/systemd/system/kamailio.service")
    if not debian_unit.exists():
        pytest.skip("kamailio (Debian package) is not installed")
    shutil.copy(debian_unit, tmp_path / "kamailio.service")
    (tmp_path / "kamailio.service.d").mkdir()
    shutil.copy(DEPLOY / "kamailio.service.d" / "callcenter.conf", tmp_path / "kamailio.service.d")
    result = _verify(tmp_path / "kamailio.service", tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "callcenter.conf" not in output, output  # a misspelt key would be named here
    # The drop-in's config file reaches the command systemd runs: Debian's ExecStart reads $CFGFILE.
    (exec_start,) = service_section(debian_unit, "")["ExecStart"]
    assert "-f $CFGFILE" in exec_start, exec_start
    drop_in = service_section(DEPLOY / "kamailio.service.d" / "callcenter.conf", "")
    assert "CFGFILE=/etc/kamailio/callcenter.cfg" in drop_in["Environment"], drop_in


def node_environment(instance: str, env_file: Path) -> dict[str, str]:
    """Environment= then EnvironmentFile= (the file's values win, as in systemd)."""
    service = service_section(UNIT, instance)
    env: dict[str, str] = {}
    for value in service.get("Environment", []):
        key, _, val = value.strip("'\"").partition("=")
        env[key] = val
    for line in env_file.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, val = line.partition("=")
            env[key.strip()] = val.strip()
    return env


@pytest.fixture
def shared_state(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(database_url, redis_url): a throwaway PostgreSQL and Redis on loopback."""
    if not redis_available() or find_pg_bin() is None:
        pytest.skip("redis-server and postgresql are needed (make test-peers installs them)")
    postgres = PostgresCluster().start()
    redis = RedisProcess(tmp_path / "redis")
    try:
        redis.start()
        yield postgres.create_database(), redis.url
    finally:
        redis.stop()
        postgres.stop()


def _health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _cluster_status(env: dict[str, str]) -> dict[str, object]:
    result = subprocess.run(
        [str(CALLCENTER), "cluster", "status", "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout))


def test_a_node_started_as_the_unit_says_joins_and_stops_on_its_kill_signal(
    tmp_path: Path, shared_state: tuple[str, str]
) -> None:
    database_url, redis_url = shared_state
    instance = "node1"
    # /etc/callcenter/node1.env from the example, with this machine's loopback for the example's hosts.
    sip_port, http_port = free_port(), free_port(socket.SOCK_STREAM)
    example = (DEPLOY / "node.env.example").read_text()
    assert "10.0.0.21" in example and "CALLCENTER_HTTP_PORT" in example
    env_text = (
        example.replace("10.0.0.21", "127.0.0.1")
        .replace("CALLCENTER_SIP_PORT=5060", f"CALLCENTER_SIP_PORT={sip_port}")
        .replace("CALLCENTER_HTTP_PORT=8080", f"CALLCENTER_HTTP_PORT={http_port}")
    )
    env_lines = [
        f"CALLCENTER_DATABASE_URL={database_url}" if line.startswith("CALLCENTER_DATABASE_URL=")
        else f"CALLCENTER_REDIS_URL={redis_url}" if line.startswith("CALLCENTER_REDIS_URL=")
        else line
        for line in env_text.splitlines()
    ]  # fmt: skip
    etc = tmp_path / "etc" / "callcenter"
    etc.mkdir(parents=True)
    env_file = etc / f"{instance}.env"
    env_file.write_text("\n".join(env_lines) + "\n")
    # /etc/callcenter/config.yaml: the repository's, with the absolute paths the deploy README asks for
    # (the unit's WorkingDirectory is the node's data folder; /opt/callcenter is the checkout here).
    repo = Path(__file__).resolve().parents[2]
    config = (repo / "config.yaml").read_text()
    for key, path in (("flows_dir", "ivr_flows"), ("intents_file", "ivr_flows/intents/intents.yaml"),
                      ("models_dir", "models")):  # fmt: skip
        assert f"  {key}: {path}\n" in config, key
        config = config.replace(f"  {key}: {path}\n", f"  {key}: {repo / path}\n")
    (etc / "config.yaml").write_text(config)

    service = service_section(UNIT, instance)
    var_lib = tmp_path / "var" / "lib" / "callcenter"
    rewrite = {
        INSTALLED: str(CALLCENTER),
        "/etc/callcenter": str(etc),
        "/var/lib/callcenter": str(var_lib),
    }

    def here(value: str) -> str:
        for old, new in rewrite.items():
            value = value.replace(old, new)
        return value

    (env_path,) = service["EnvironmentFile"]
    assert here(env_path) == str(env_file)
    workdir = Path(here(service["WorkingDirectory"][0]))
    workdir.mkdir(parents=True)  # the package's postinst makes it (scripts/deploy/README.md)
    (exec_start,) = service["ExecStart"]
    command = here(exec_start).split()
    assert command[0] == str(CALLCENTER) and command[1] == "serve", command
    base = {k: v for k, v in os.environ.items() if not k.startswith("CALLCENTER_")}
    env = {**base, **node_environment(instance, env_file)}
    env["CALLCENTER_MEDIA_RTP_PORT_MIN"], env["CALLCENTER_MEDIA_RTP_PORT_MAX"] = "31000", "31098"
    assert env["CALLCENTER_NODE_ID"] == instance
    kill_signal = getattr(signal, service["KillSignal"][0])
    stop_timeout = float(service["TimeoutStopSec"][0])

    log = (tmp_path / "node.log").open("wb")
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not _health(http_port):
            assert proc.poll() is None, (tmp_path / "node.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "node.log").read_text()[-3000:]
            time.sleep(0.2)
        # It joined the cluster: `callcenter cluster status` (same environment) sees it alive, leading.
        status = _cluster_status(env)
        nodes = {str(n["node"]): n for n in status["nodes"]}  # type: ignore[attr-defined]
        assert nodes[instance]["alive"] is True, status
        # Its data went where the unit says (PostgreSQL for records; the data dir for local files).
        assert (var_lib / instance).is_dir()

        proc.send_signal(kill_signal)
        try:
            code = proc.wait(timeout=stop_timeout)  # systemd would SIGKILL after TimeoutStopSec
        except subprocess.TimeoutExpired:
            pytest.fail(f"the node did not stop within TimeoutStopSec={stop_timeout:g}")
        assert code == 0, (tmp_path / "node.log").read_text()[-3000:]
        # An orderly stop gives up its heartbeat at once (the others need not wait for it to expire).
        status = _cluster_status(env)
        gone = {str(n["node"]): n for n in status["nodes"]}  # type: ignore[attr-defined]
        assert instance not in gone or gone[instance]["alive"] is False, status
    finally:
        if proc.poll() is None:
            proc.kill()  # our own process, by its PID
            proc.wait(10)
        log.close()
