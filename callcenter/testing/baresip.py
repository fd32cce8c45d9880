"""baresip (Debian's baresip-core, 1.0.0) as a headless softphone for end-to-end tests.

Each instance gets a private config directory and HOME, listens on a free loopback port, reads its
microphone from a WAV file (aufile) and, with `record_dir`, dumps what it hears and sends as WAV
(sndfile). Its console output goes to a file, line-buffered, so tests can read what the phone
reported while it runs. It is stopped by its PID; `-t` bounds its life even if a test forgets.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import wave
from pathlib import Path

from callcenter.testing.server import free_port

START_ATTEMPTS = 5  # starts tried when a picked port turned out taken

MODULE_PATH = "/usr/lib/baresip/modules"

# What baresip 1.0.0 prints (console, no -v):
#   agent1@127.0.0.1: {0/UDP/v4} 200 OK (callcenter/0.1.0) [1 binding]   registration accepted
#   reg: sip:agent1@127.0.0.1:5060: 403 Forbidden (callcenter/0.1.0)     registration refused
#   caller@127.0.0.1: Call established: sip:100@127.0.0.1:5060           outgoing call answered
#   sip:caller@127.0.0.1: Call with sip:100@... terminated (duration: 2 secs)


def baresip_available() -> bool:
    return shutil.which("baresip") is not None and Path(MODULE_PATH, "g711.so").exists()


def write_wav(path: Path, seconds: float, hz: float | None = None, rate: int = 8000) -> Path:
    """An 8 kHz mono 16-bit WAV: a sine at `hz`, or silence. aufile ends the call when it ends."""
    n = int(seconds * rate)
    if hz is None:
        frames = bytes(2 * n)
    else:
        frames = b"".join(
            struct.pack("<h", int(6000 * math.sin(2 * math.pi * hz * i / rate))) for i in range(n)
        )
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return path


class Baresip:
    """One baresip process with one account line; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        workdir: Path,
        account: str,
        *,
        commands: list[str] | None = None,
        audio_wav: Path | None = None,
        record_dir: Path | None = None,
        life_s: int = 60,
        sip_trace: bool = False,
    ) -> None:
        self.workdir = workdir
        self.account = account
        self.commands = commands or []
        self.audio_wav = audio_wav
        self.record_dir = record_dir
        self.life_s = life_s
        self.sip_trace = sip_trace
        self.sip_port, self.cons_port = self._ports()
        self.log_path = workdir / "baresip.out"
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _ports() -> tuple[int, int]:
        """(SIP, console) ports. baresip also listens for SIP over TLS on the SIP port + 1 (TCP)."""
        for _ in range(50):
            sip = free_port()
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("127.0.0.1", sip + 1))
            except OSError:
                continue
            return sip, free_port()  # the cons module's UDP console: keys, incl. DTMF digits
        raise RuntimeError("no free port pair found")

    def _write_config(self) -> Path:
        cfg = self.workdir / ".baresip"
        cfg.mkdir(parents=True, exist_ok=True)
        wav = self.audio_wav or write_wav(self.workdir / "silence.wav", self.life_s + 5)
        lines = [
            "poll_method epoll",
            f"sip_listen 127.0.0.1:{self.sip_port}",
            "net_interface 127.0.0.1",  # the address: the interface name `lo` fails here
            "audio_player alsa,null",
            "audio_alert alsa,null",
            f"audio_source aufile,{wav}",
            f"module_path {MODULE_PATH}",
            "module g711.so",
            "module aufile.so",
            "module alsa.so",
            "module cons.so",
            "module_app account.so",
            "module_app menu.so",
            f"cons_listen 127.0.0.1:{self.cons_port}",
        ]
        if self.record_dir is not None:
            self.record_dir.mkdir(parents=True, exist_ok=True)
            lines += ["module sndfile.so", f"snd_path {self.record_dir}"]
        (cfg / "config").write_text("\n".join(lines) + "\n")
        (cfg / "accounts").write_text(self.account + "\n")
        return cfg

    def start(self) -> Baresip:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self._write_config()
        cmd = ["baresip", "-f", str(cfg), "-t", str(self.life_s)]
        if self.sip_trace:
            cmd.append("-s")
        for c in self.commands:
            cmd += ["-e", c]
        if shutil.which("stdbuf"):
            cmd = ["stdbuf", "-oL", "-eL", *cmd]  # line-buffered: its output is readable while it runs
        env = {**os.environ, "HOME": str(self.workdir)}
        # A port free when picked can be taken before baresip binds it (another process's outgoing
        # connection gets it from the same ephemeral range): then pick new ports and start again.
        for _ in range(START_ATTEMPTS):
            with self.log_path.open("wb") as out:
                self.proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.workdir,
                )
            if self.wait_for_output("baresip is ready.", timeout=15) is not None:
                break
            if self.proc.poll() is None or "Address already in use" not in self.output():
                break  # something else: the test sees it
            self.sip_port, self.cons_port = self._ports()
            self._write_config()
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_output(self, *needles: str, timeout: float = 10.0) -> str | None:
        """The first of `needles` to appear in the output (bounded by `timeout`), else None."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.output()
            for needle in needles:
                if needle in text:
                    return needle
            if time.monotonic() >= deadline or (self.proc is not None and self.proc.poll() is not None):
                text = self.output()
                return next((n for n in needles if n in text), None)
            time.sleep(0.1)

    def press(self, keys: str, *, hold_s: float = 0.1, timeout: float = 5.0) -> None:
        """Press each of `keys` (0-9 * # A-D during a call: DTMF) on the cons UDP console.

        A key is held for `hold_s` (the length of the RFC 4733 event, like a finger on a keypad),
        then released with the byte 0x04 — without the release the event never ends. The next key
        goes only once baresip has reported sending the previous one's end ("send DTMF digit end").
        """
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for key in keys:
                sent = f"send DTMF digit end: '{key}'"
                before = self.output().count(sent)
                s.sendto(key.encode(), ("127.0.0.1", self.cons_port))
                time.sleep(hold_s)  # the key is held down: this is the input, not a wait for it
                s.sendto(b"\x04", ("127.0.0.1", self.cons_port))
                if not self._wait_for_count(sent, before + 1, timeout):
                    raise RuntimeError(f"baresip did not send DTMF {key!r}: {self.output()[-2000:]}")

    def command(self, text: str) -> None:
        """A long menu command on the cons console, e.g. ``command("/transfer sip:bob@host")``."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(text.encode() + b"\n", ("127.0.0.1", self.cons_port))

    def _wait_for_count(self, needle: str, count: int, timeout: float) -> bool:
        """Whether `needle` appears `count` times in the output within `timeout` (polled)."""
        deadline = time.monotonic() + timeout
        while self.output().count(needle) < count:
            if time.monotonic() >= deadline or (self.proc is not None and self.proc.poll() is not None):
                return self.output().count(needle) >= count
            time.sleep(0.05)
        return True

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (baresip unregisters and hangs up), then SIGKILL if it lingers; by PID only."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def recordings(self, kind: str = "dec") -> list[Path]:
        """WAVs sndfile wrote: "dec" is what the phone heard, "enc" what it sent."""
        if self.record_dir is None:
            return []
        return sorted(self.record_dir.glob(f"dump-*-{kind}.wav"))

    def __enter__(self) -> Baresip:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tone_energy_fraction(path: Path, hz: float, width_hz: float = 15.0) -> float:
    """Share of a WAV's spectral energy within `width_hz` of `hz` (0..1); 0 for an empty file."""
    import numpy as np

    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        raw = w.readframes(w.getnframes())
        channels = w.getnchannels()
    x = np.frombuffer(raw, dtype="<i2").astype(np.float64)
    if channels > 1:
        x = x[::channels]
    if len(x) < rate // 10:
        return 0.0
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    total = float(spectrum.sum())
    if total == 0:
        return 0.0
    return float(spectrum[np.abs(freqs - hz) <= width_hz].sum() / total)
