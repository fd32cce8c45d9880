"""A throwaway callcenter cluster on loopback: PostgreSQL, Redis, N nodes, Kamailio in front.

``Cluster(workdir, nodes=2).start()`` gives two ``callcenter serve`` processes sharing one PostgreSQL
database (``database_url``) and one Redis (``redis_url``), each with its own ``node_id`` and data
folder, and Kamailio dispatching to them (callcenter/testing/kamailio.py). Everything runs as the
current user (PostgreSQL as ``nobody`` under root, see postgres.py) and is stopped by its PID.
``kill_node(i)`` sends SIGKILL (a crash), ``restart_node(i)`` brings the node back on its old ports.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from callcenter.testing.kamailio import KamailioProcess, kamailio_available
from callcenter.testing.postgres import PostgresCluster, find_pg_bin
from callcenter.testing.server import ServerProcess, free_port

__all__ = ["Cluster", "RedisProcess", "cluster_missing", "redis_available"]

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


def cluster_missing() -> str | None:
    """Why a cluster cannot start here (the Debian package to install), or None."""
    if not kamailio_available():
        return "kamailio is not installed (make test-peers installs kamailio)"
    if not redis_available():
        return "redis-server is not installed (make test-peers installs redis-server)"
    if find_pg_bin() is None:
        return "PostgreSQL server binaries are not installed (make test-peers installs postgresql)"
    return None


class RedisProcess:
    """``redis-server`` on a free loopback port, nothing persisted, stopped by its PID."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port(socket.SOCK_STREAM)
        self.log_path = workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "yes",
             "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ping():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}): {self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING: {self._log_tail()}")
            time.sleep(0.05)  # polling a subprocess start-up, not a test's timing
        return self

    def ping(self) -> bool:
        """PING over RESP with a plain socket (no client library needed for the harness itself)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Cluster:
    """PostgreSQL + Redis + ``nodes`` callcenter nodes + Kamailio, all on 127.0.0.1."""

    def __init__(
        self,
        workdir: Path,
        *,
        nodes: int = 2,
        env: dict[str, str] | None = None,
        config: str | None = None,
        ping_interval_s: int = 2,
        algorithm: int = 4,
        postgres: PostgresCluster | None = None,
    ) -> None:
        self.workdir = workdir
        self.env = env or {}
        self.config = config
        self._own_postgres = postgres is None
        self.postgres = postgres
        self.redis = RedisProcess(workdir / "redis")
        self.database_url = ""
        self.nodes: list[ServerProcess] = []
        self._node_count = nodes
        self.kamailio: KamailioProcess | None = None
        self._ping_interval_s = ping_interval_s
        self._algorithm = algorithm

    @property
    def sip_address(self) -> str:
        """host:port to send calls and REGISTERs to (Kamailio)."""
        assert self.kamailio is not None
        return self.kamailio.address

    def start(self) -> Cluster:
        try:
            if self.postgres is None:
                self.postgres = PostgresCluster().start()
            self.database_url = self.postgres.create_database()
            self.redis.start()
            for i in range(self._node_count):
                node = ServerProcess(
                    self.workdir / f"node{i + 1}",
                    env={
                        "CALLCENTER_DATABASE_URL": self.database_url,
                        "CALLCENTER_REDIS_URL": self.redis.url,
                        "CALLCENTER_NODE_ID": f"node{i + 1}",
                        **self.env,
                    },
                    config=self.config,
                )
                node.rtp_min += i * 100  # distinct RTP ranges: two nodes on one host
                node.env["CALLCENTER_MEDIA_RTP_PORT_MIN"] = str(node.rtp_min)
                node.env["CALLCENTER_MEDIA_RTP_PORT_MAX"] = str(node.rtp_min + 98)
                self.nodes.append(node)
            # The first node creates the schema; the others start once it is there.
            self.nodes[0].start()
            for node in self.nodes[1:]:
                node.start()
            self.kamailio = KamailioProcess(
                self.workdir / "kamailio",
                [("127.0.0.1", n.sip_port) for n in self.nodes],
                ping_interval_s=self._ping_interval_s,
                algorithm=self._algorithm,
            ).start()
        except BaseException:
            self.stop()
            raise
        return self

    def ended_calls(self, i: int) -> list[dict[str, Any]]:
        """The call_ended events node ``i`` logged."""
        return self.nodes[i].events("call_ended")

    def kill_node(self, i: int) -> None:
        """SIGKILL: the node dies as in a crash (no BYEs, no records flushed after this)."""
        node = self.nodes[i]
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait(STOP_TIMEOUT_S)

    def restart_node(self, i: int) -> ServerProcess:
        """Start node ``i`` again on the same ports (Kamailio's probes bring it back into the set)."""
        return self.nodes[i].start()

    def stop(self) -> None:
        if self.kamailio is not None:
            self.kamailio.stop()
        for node in self.nodes:
            node.stop()
        self.redis.stop()
        if self.postgres is not None and self._own_postgres:
            self.postgres.stop()
        elif self.postgres is not None and self.database_url:
            with contextlib.suppress(Exception):
                self.postgres.drop_database(self.database_url.rsplit("/", 1)[1])

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
