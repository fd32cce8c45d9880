"""A callcenter server in a child process on free loopback ports, with its own data directory."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any


def free_port(kind: int = socket.SOCK_DGRAM, host: str = "127.0.0.1", even: bool = False) -> int:
    """A port free for both UDP and TCP on `host` (IPv4 or IPv6) right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        with socket.socket(family, kind) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if even and port % 2:
            continue
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        try:
            with socket.socket(family, other) as s:
                s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port found")


class ServerProcess:
    """`callcenter serve` on 127.0.0.1 with free SIP/HTTP ports; stopped (by its PID) on exit."""

    def __init__(
        self,
        data_dir: Path,
        *,
        env: dict[str, str] | None = None,
        ipv6: bool = False,
        config: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.config = config  # YAML text for --config (sections env cannot express, e.g. routing.queues)
        self.sip_port = free_port()
        self.http_port = free_port(socket.SOCK_STREAM)
        self.rtp_min = 20000 + (os.getpid() % 200) * 100
        self.log_path = data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {
            "CALLCENTER_SIP_HOST": "127.0.0.1",
            "CALLCENTER_SIP_HOST_V6": "::1" if ipv6 else "",
            "CALLCENTER_HTTP_HOST": "127.0.0.1",
            "CALLCENTER_MEDIA_RTP_PORT_MIN": str(self.rtp_min),
            "CALLCENTER_MEDIA_RTP_PORT_MAX": str(self.rtp_min + 98),
            **(env or {}),
        }

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `callcenter ARGS --data-dir D` against this server's data."""
        return subprocess.run(
            [sys.executable, "-m", "callcenter.cli", *args, "--data-dir", str(self.data_dir)],
            capture_output=True, text=True, check=check, env=self._environ(), timeout=60,
        )

    def _environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCENTER_")}
        env.update(self.env)
        return env

    def start(self, timeout: float = 20.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = os.devnull
        if self.config is not None:
            config = str(self.data_dir / "config.yaml")
            Path(config).write_text(self.config)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "callcenter.cli", "serve", "--config", config,
             "--sip-port", str(self.sip_port), "--http-port", str(self.http_port),
             "--data-dir", str(self.data_dir)],
            stdout=log, stderr=subprocess.STDOUT, env=self._environ(),
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_text()[-2000:]}")
            try:
                if self.health().get("sip") == "up":
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become healthy: {self.log_text()[-2000:]}")

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=2) as r:
            return dict(json.loads(r.read()))

    def calls(self) -> list[dict[str, Any]]:
        return list(json.loads(self.cli("calls", "list", "--json", "--limit", "1000").stdout))

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far (Linux /proc)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def errors(self) -> list[str]:
        """What the server logged at level error or worse, and any traceback it printed: an e2e test's
        server is expected to log none (an exception swallowed and logged is still a bug)."""
        out: list[str] = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    level = json.loads(line).get("level")
                except (ValueError, AttributeError):
                    continue
                if level in ("error", "critical"):
                    out.append(line)
            elif line.startswith("Traceback (most recent call last)"):
                out.append(line)
        return out

    def wait_for_event(self, event: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """The first logged `event` whose fields equal `fields`; polls the log, bounded by `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(event, **fields)
            if found:
                return found[0]
            if time.monotonic() >= deadline:
                tail = self.log_text()[-3000:]
                raise AssertionError(f"no {event} {fields} logged within {timeout} s:\n{tail}")
            time.sleep(0.1)

    def wait_for_calls(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """`calls list` once `done(calls)` holds (records are written in batches, a moment late)."""
        deadline = time.monotonic() + timeout
        while True:
            calls = self.calls()
            if done(calls) or time.monotonic() >= deadline:
                return calls
            time.sleep(0.2)

    def new_calls(self, before: set[str], count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Calls recorded since `before` (Call-IDs seen earlier), once `count` of them have ended."""

        def fresh(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [c for c in calls if c["sip_call_id"] not in before]

        calls = self.wait_for_calls(
            lambda cs: len(fresh(cs)) >= count and all(c["ended_at"] for c in fresh(cs)), timeout
        )
        return fresh(calls)

    def events(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        """Logged `event`s whose fields equal `fields`."""
        return [
            e for e in self.log_events()
            if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
        ]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# A test fixture's factory: start_server(ipv6=False, **CALLCENTER_env_overrides) -> a started server.
StartServer = Callable[..., ServerProcess]
