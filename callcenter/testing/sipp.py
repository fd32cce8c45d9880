"""Run SIPp (Debian's sip-tester) against a server and read what it saw from its statistics file."""

from __future__ import annotations

import csv
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from callcenter.testing.server import free_port

SCENARIOS = Path(__file__).resolve().parent / "sipp"


def sipp_available() -> bool:
    return shutil.which("sipp") is not None


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    retransmissions: int
    elapsed_s: float
    stdout: str
    stderr: str
    errors: str  # the -trace_err log: messages SIPp did not expect

    @property
    def total(self) -> int:
        return self.successful + self.failed


def _elapsed(text: str) -> float:
    h, m, s = text.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def run_sipp(
    target: str,
    workdir: Path,
    *,
    scenario: str | None = None,
    builtin: str | None = None,
    calls: int = 1,
    rate: float = 10,
    transport: str = "u1",
    local_port: int | None = None,
    timeout_s: float = 60,
    extra: list[str] | None = None,
    inject: list[list[str]] | None = None,
    local_ip: str | None = None,
    media_port: int | None = None,
) -> SippResult:
    """Run one SIPp client to completion (bounded by `timeout_s`) and summarise its statistics.

    `scenario` is a file name under callcenter/testing/sipp/ or a path; `builtin` a `-sn` name.
    `inject` rows become a SEQUENTIAL injection file ([field0], [field1], ...).
    `local_ip` defaults to the loopback of the target's family ("[::1]:5060" → ::1). SIPp's own
    SIP and media ports default to free ones: its built-in 5060/6000 would clash with anything else
    running on the machine.
    """
    if local_ip is None:
        local_ip = "::1" if target.startswith("[") else "127.0.0.1"
    if local_port is None:
        local_port = free_port(host=local_ip)
    if media_port is None:
        media_port = free_port(host=local_ip, even=True)
    workdir.mkdir(parents=True, exist_ok=True)
    stat = workdir / "stat.csv"
    err = workdir / "errors.log"
    for f in (stat, err):
        f.unlink(missing_ok=True)
    cmd = [
        "sipp",
        target,
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-t",
        transport,
        "-i",
        local_ip,
        "-p",
        str(local_port),
        "-mp",
        str(media_port),
        "-timeout",
        f"{int(timeout_s)}s",
        "-timeout_error",
        "-nostdin",
        "-trace_stat",
        "-stf",
        str(stat),
        "-trace_err",
        "-error_file",
        str(err),
        "-max_recv_loops",
        "10000",
        "-max_sched_loops",
        "10000",
    ]
    if scenario is not None:
        path = Path(scenario) if "/" in scenario else SCENARIOS / scenario
        cmd += ["-sf", str(path)]
    else:
        cmd += ["-sn", builtin or "uac"]
    if inject is not None:
        inf = workdir / "inject.csv"
        inf.write_text("SEQUENTIAL\n" + "".join(";".join(row) + ";\n" for row in inject))
        cmd += ["-inf", str(inf)]
    cmd += extra or []
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=workdir, timeout=timeout_s + 30, stdin=subprocess.DEVNULL
    )
    successful = failed = retrans = 0
    elapsed = 0.0
    if stat.exists():
        rows = list(csv.reader(stat.open(), delimiter=";"))
        if len(rows) >= 2:
            head, last = rows[0], rows[-1]
            col = {name: i for i, name in enumerate(head)}
            successful = int(last[col["SuccessfulCall(C)"]])
            failed = int(last[col["FailedCall(C)"]])
            retrans = int(last[col["Retransmissions(C)"]])
            elapsed = _elapsed(last[col["ElapsedTime(C)"]])
    errors = err.read_text(errors="replace") if err.exists() else ""
    return SippResult(proc.returncode, successful, failed, retrans, elapsed, proc.stdout, proc.stderr, errors)


def render_scenario(name: str, workdir: Path, **subs: str) -> Path:
    """A copy of scenario `name` with each @KEY@ replaced (for values SIPp cannot take as fields)."""
    text = (SCENARIOS / name).read_text()
    for key, value in subs.items():
        text = text.replace(f"@{key.upper()}@", value)
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / name
    out.write_text(text)
    return out


def pcap_caller_scenario(
    workdir: Path,
    pcap: Path,
    *,
    telephone_event: bool = True,
    number: str = "100",
    server_hangs_up: bool = False,
) -> Path:
    """uac_pcap.xml for `pcap` dialling `number`, offering PCMU with telephone-event 101 or (for in-band
    DTMF) without; the caller hangs up after ``-d`` ms, or with ``server_hangs_up`` waits for the
    server's BYE (uac_pcap_server_bye.xml: the call succeeds only when it comes)."""
    te = "\n      a=rtpmap:101 telephone-event/8000\n      a=fmtp:101 0-16" if telephone_event else ""
    return render_scenario(
        "uac_pcap_server_bye.xml" if server_hangs_up else "uac_pcap.xml",
        workdir,
        pcap=str(pcap),
        formats="0 101" if telephone_event else "0",
        telephone_event=te,
        number=number,
    )
