"""A throwaway PostgreSQL cluster for tests, from Debian's ``postgresql`` package.

``PostgresCluster`` runs ``initdb`` in a temporary folder and ``postgres`` on a free loopback port
(trust authentication, no fsync: nothing here must survive), creates one database per test on demand,
and stops the server by its PID. PostgreSQL refuses to run as root, so under root (CI containers) the
binaries run as ``nobody`` through ``runuser``; every wait is bounded.

Pytest fixtures for any test module's conftest (``from callcenter.testing.postgres import ...``):
``postgres_cluster`` (session-wide; skipped with the reason when the binaries are missing) and
``database_url`` (a fresh empty database per test, parametrised over SQLite and PostgreSQL; the
``CALLCENTER_TEST_DATABASES`` environment variable, e.g. ``sqlite``, narrows the backends).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "PostgresCluster",
    "PostgresUnavailable",
    "TEST_BACKENDS",
    "database_url",
    "find_pg_bin",
    "postgres_cluster",
    "test_backends",
]

TEST_BACKENDS = ("sqlite", "postgresql")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
_RUN_AS = "nobody"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed (Debian: ``apt-get install postgresql``)."""


def find_pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``: $PG_BIN, Debian's newest version, or $PATH."""
    candidates = [os.environ.get("PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    which = shutil.which("pg_ctl")
    if which:
        candidates.append(str(Path(which).resolve().parent))
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "postgres").is_file():
            return Path(folder)
    return None


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.name
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """One disposable cluster: ``start()``, ``create_database()`` as often as needed, ``stop()``."""

    def __init__(self, pg_bin: Path | None = None) -> None:
        found = pg_bin or find_pg_bin()
        if found is None:
            raise PostgresUnavailable("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.pg_bin = found
        self.root = Path(tempfile.mkdtemp(prefix="callcenter-pg-"))
        self.data_dir = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self.port = 0
        self.user = "postgres"
        self._proc: subprocess.Popen[bytes] | None = None
        self._databases = 0
        self._as_other_user = os.geteuid() == 0

    # -- lifecycle ---------------------------------------------------------------------------------------

    def _cmd(self, program: str, *args: str) -> list[str]:
        cmd = [str(self.pg_bin / program), *args]
        return ["runuser", "-u", _RUN_AS, "--", *cmd] if self._as_other_user else cmd

    def start(self) -> PostgresCluster:
        if self._as_other_user:
            shutil.chown(self.root, user=_RUN_AS)
        subprocess.run(
            self._cmd(
                "initdb", "-D", str(self.data_dir), "-U", self.user, "--auth=trust",
                "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
            ),
            check=True, capture_output=True, timeout=START_TIMEOUT_S, cwd=self.root,
        )  # fmt: skip
        self.port = _free_port()
        log = open(self.log_file, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            self._cmd(
                "postgres", "-D", str(self.data_dir), "-p", str(self.port), "-h", "127.0.0.1",
                "-k", str(self.root),  # the Unix socket lives here, not in /run/postgresql
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=200",
            ),
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True,
        )  # fmt: skip
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self._proc.returncode}): {self._log_tail()}")
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"postgres did not accept connections: {self._log_tail()}") from None
                time.sleep(0.1)  # polling a subprocess start-up, not a test's timing

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def _server_pid(self) -> int | None:
        """The postmaster's PID from postmaster.pid (runuser forks: it is not our child's PID)."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster), bounded; then the folder is removed."""
        pid = self._server_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
        if self._proc is not None:
            try:
                self._proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self._proc.kill()
                self._proc.wait(STOP_TIMEOUT_S)
            self._proc = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases ---------------------------------------------------------------------------------------

    def dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={database}"

    def url(self, database: str) -> str:
        """SQLAlchemy URL (psycopg 3 driver)."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        if name is None:
            self._databases += 1
            name = f"test_{self._databases}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


# -- pytest fixtures ---------------------------------------------------------------------------------------


def test_backends() -> tuple[str, ...]:
    """The backends tests run on: $CALLCENTER_TEST_DATABASES (comma-separated) or both."""
    raw = os.environ.get("CALLCENTER_TEST_DATABASES", "")
    chosen = tuple(b.strip() for b in raw.split(",") if b.strip()) or TEST_BACKENDS
    return tuple(b for b in TEST_BACKENDS if b in chosen)


test_backends.__test__ = False  # type: ignore[attr-defined]  # not a test, despite the name

try:
    import pytest
except ImportError:  # pragma: no cover - the server does not need pytest
    pass
else:

    @pytest.fixture(scope="session")
    def postgres_cluster() -> Iterator[PostgresCluster]:
        if find_pg_bin() is None:
            pytest.skip("PostgreSQL server binaries not installed (make test-peers installs postgresql)")
        with PostgresCluster() as cluster:
            yield cluster

    @pytest.fixture(params=test_backends())
    def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
        """A fresh, empty database per test: a SQLite file, or a database on the shared cluster."""
        if request.param == "sqlite":
            yield f"sqlite:///{tmp_path / 'test.db'}"
            return
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        url = cluster.create_database()
        yield url
        with contextlib.suppress(Exception):  # a test that left connections open must not fail here
            cluster.drop_database(url.rsplit("/", 1)[1])
