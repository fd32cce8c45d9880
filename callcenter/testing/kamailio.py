"""Kamailio in front of callcenter nodes, for tests: render scripts/deploy/kamailio.cfg.tmpl, run it.

``render_config`` fills the template's ``@NAME@`` fields; ``KamailioProcess`` writes the config and the
dispatcher list into a folder, checks the config (``kamailio -c``), starts ``kamailio -DD -E`` as the
current user on a loopback port and stops it by its PID (SIGTERM to the main process, which takes its
children down with it; SIGKILL to the process group after a bounded wait).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from callcenter.testing.server import free_port

__all__ = [
    "TEMPLATE",
    "KamailioProcess",
    "KamailioSettings",
    "find_module_path",
    "kamailio_available",
    "render_config",
    "render_dispatcher_list",
]

TEMPLATE = Path(__file__).resolve().parents[2] / "scripts" / "deploy" / "kamailio.cfg.tmpl"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
# The modules the template loads: all in Debian's base `kamailio` package (no kamailio-*-modules).
MODULES = ("tm.so", "sl.so", "rr.so", "path.so", "dispatcher.so", "sanity.so", "textops.so")


def kamailio_available() -> bool:
    return shutil.which("kamailio") is not None and find_module_path() is not None


def find_module_path() -> Path | None:
    """The folder holding dispatcher.so etc.: $KAMAILIO_MODULES or Debian's multiarch folder."""
    candidates = [os.environ.get("KAMAILIO_MODULES", "")]
    candidates += sorted(glob.glob("/usr/lib/*/kamailio/modules")) + ["/usr/lib/kamailio/modules"]
    for folder in candidates:
        if folder and all((Path(folder) / m).is_file() for m in MODULES):
            return Path(folder)
    return None


@dataclass(frozen=True)
class KamailioSettings:
    host: str = "127.0.0.1"
    port: int = 5060
    transports: tuple[str, ...] = ("udp",)
    advertise: str | None = None  # "PUBLIC_IP:PORT" put in Record-Route/Path instead of host:port
    ping_interval_s: int = 2
    algorithm: int = 4  # dispatcher: 4 round-robin, 0 hash over Call-ID
    fr_timer_ms: int = 2000
    children: int = 2


def render_dispatcher_list(nodes: Sequence[tuple[str, int]], setid: int = 1) -> str:
    """dispatcher.list lines: ``SETID sip:HOST:PORT`` per node (a node's SIP address)."""
    return "".join(f"{setid} sip:{host}:{port}\n" for host, port in nodes)


def render_config(
    settings: KamailioSettings, dispatcher_list: Path, module_path: Path, template: Path = TEMPLATE
) -> str:
    """The template with every ``@NAME@`` filled; raises ValueError if one is left."""
    advertise = f" advertise {settings.advertise}" if settings.advertise else ""
    listen = "\n".join(f"listen={t}:{settings.host}:{settings.port}{advertise}" for t in settings.transports)
    values = {
        "LISTEN_LINES": listen,
        "PROXY_HOST": settings.host,
        "CHILDREN": str(settings.children),
        "MODULE_PATH": f"{module_path}/",
        "DISPATCHER_LIST": str(dispatcher_list),
        "PING_INTERVAL": str(settings.ping_interval_s),
        "ALGORITHM": str(settings.algorithm),
        "FR_TIMER_MS": str(settings.fr_timer_ms),
    }
    text = template.read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    left = sorted({word for word in body.split("@") if word.isupper() and word.replace("_", "").isalpha()})
    if left:
        raise ValueError(f"template fields left unfilled: {', '.join(left)}")
    return text


class KamailioProcess:
    """``kamailio -DD -E -f CFG`` on a free loopback port in front of ``nodes`` (their SIP addresses)."""

    def __init__(
        self,
        workdir: Path,
        nodes: Sequence[tuple[str, int]],
        *,
        port: int | None = None,
        ping_interval_s: int = 2,
        algorithm: int = 4,
        fr_timer_ms: int = 2000,
    ) -> None:
        module_path = find_module_path()
        if shutil.which("kamailio") is None or module_path is None:
            raise RuntimeError("kamailio is not installed (Debian: apt-get install kamailio)")
        self.workdir = workdir
        self.nodes = list(nodes)
        self.port = port or free_port()
        self.settings = KamailioSettings(
            port=self.port, ping_interval_s=ping_interval_s, algorithm=algorithm, fr_timer_ms=fr_timer_ms
        )
        self.module_path = module_path
        self.config_path = workdir / "kamailio.cfg"
        self.list_path = workdir / "dispatcher.list"
        self.log_path = workdir / "kamailio.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    def write(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.list_path.write_text(render_dispatcher_list(self.nodes))
        self.config_path.write_text(render_config(self.settings, self.list_path, self.module_path))
        return self.config_path

    def _cmd(self, *extra: str) -> list[str]:
        runtime = self.workdir / "run"
        runtime.mkdir(parents=True, exist_ok=True)
        # -Y: the runtime folder (default /run/kamailio); -m/-M: shared and private memory in MB.
        return ["kamailio", "-f", str(self.config_path), "-Y", str(runtime), "-m", "64", "-M", "8", *extra]

    def check(self) -> None:
        """``kamailio -c``: the config parses and every module loads; RuntimeError with its output."""
        self.write()
        done = subprocess.run(self._cmd("-c"), capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"kamailio -c failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")

    def start(self) -> KamailioProcess:
        self.check()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self._cmd("-DD", "-E"), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the children go with it on stop()
        )  # fmt: skip
        log.close()
        self._wait_listening()
        return self

    def _wait_listening(self) -> None:
        """Bounded wait for an answer to an OPTIONS sent to the proxy itself."""
        deadline = time.monotonic() + START_TIMEOUT_S
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.2)
            n = 0
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"kamailio exited ({self.proc.returncode}): {self.log_text()[-3000:]}")
                n += 1
                s.sendto(
                    _options(self.settings.host, self.port, s.getsockname()[1], n),
                    (self.settings.host, self.port),
                )
                with contextlib.suppress(TimeoutError):
                    if s.recv(65535).startswith(b"SIP/2.0 200"):
                        return
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"kamailio did not answer OPTIONS: {self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group we created: only kamailio's processes
            self.proc.wait(STOP_TIMEOUT_S)

    def __enter__(self) -> KamailioProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _options(host: str, port: int, local_port: int, n: int) -> bytes:
    return (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK-kamcheck{n}-{os.getpid()};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:check@127.0.0.1>;tag=c{n}\r\n"
        f"To: <sip:{host}:{port}>\r\n"
        f"Call-ID: kamcheck-{os.getpid()}-{n}\r\n"
        f"CSeq: {n} OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
