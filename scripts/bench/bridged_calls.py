"""Benchmark: N concurrent callers queued to N agents and bridged, with call recording on.

One run, bounded (about talk_s + 40 s for the defaults):

1. A fresh `callcenter serve` (calls.record on) with a flow whose `queue` node sends number 300 to
   queue `sales`; N agents with the `sales` skill are created in its database.
2. One SIPp registers all N agents (digest auth) from one UDP port, then exits; a second SIPp bound
   to that same port plays the agents' softphones: it answers every INVITE the server sends there
   (the server rings the contact from where it registered) and plays a 600 Hz tone from a pcap.
3. A third SIPp places N callers (rate --rate) to 300, each playing a 1000 Hz tone from a pcap and
   hanging up --talk-s seconds after its answer.
4. Once every agent is on a call (/api/agents/live), the server's CPU (ServerProcess.cpu_seconds)
   and the whole machine's busy time are measured over --measure-s seconds (and the server's CPU
   for 3 s with the agents registered and no calls, as a baseline).
5. After the calls end: `calls list --json` gives answered-by-agent counts and the RTP statistics of
   what the server received from each caller (`rtp` extra); each recording must exist, and carry the
   caller's tone on its left channel and the agent's tone on its right (what the caller heard),
   which shows audio crossed the bridge both ways; and every agent must be available again.

Ends with one line: RESULT bridged_calls=... cpu_percent=... cpu_percent_per_call=... ...
The figure is noisy on a shared machine: read it with the machine's busy share printed beside it.

    .venv/bin/python scripts/bench/bridged_calls.py [--calls 50] [--talk-s 30] [--measure-s 15]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from callcenter.core.config import load_settings
from callcenter.media import tones
from callcenter.store import Store
from callcenter.testing.audio import read_wav, tone_fraction
from callcenter.testing.pcap import Segment, write_rtp_pcap
from callcenter.testing.server import ServerProcess, free_port
from callcenter.testing.sipp import SippResult, pcap_caller_scenario, run_sipp

SCENARIOS = Path(__file__).resolve().parent / "sipp"
NUMBER = "300"
CALLER_HZ, AGENT_HZ = 1000.0, 600.0
RTP_MIN = 44000  # away from ServerProcess's default (20000-39999) and media_calls.py (30000-34000)

FLOW = """\
id: to_sales
language: en-US
start: queue
nodes:
  queue:
    type: queue
    queue: sales
    max_wait_s: 60
    next: bye
    on_overflow: overflowed
  bye:
    type: hangup
  overflowed:
    type: hangup
    reason: overflow
"""

CONFIG = """\
ivr:
  flows_dir: {flows}
  numbers: {{"{number}": to_sales}}
routing:
  queues:
    sales: {{skills: {{sales: 1}}, ring_timeout_s: 5}}
"""


def _agent_names(n: int) -> list[tuple[str, str]]:
    return [(f"agent{i:03d}", f"pw-agent{i:03d}") for i in range(n)]


def _add_agents(data_dir: Path, agents: list[tuple[str, str]]) -> None:
    """Create the agents straight in the server's database (as `callcenter agents add` does, without
    paying a CLI start-up per agent)."""
    settings = load_settings(Path(os.devnull), {"data_dir": str(data_dir)}, env={})
    store = Store.from_settings(settings)
    try:
        for name, password in agents:
            store.add_agent(name, password, settings.sip.realm, {"sales": 1})
    finally:
        store.close()


def _register_scenario(work: Path, agents: list[tuple[str, str]]) -> Path:
    """register_agents.xml with its per-agent block repeated for every agent."""
    text = (SCENARIOS / "register_agents.xml").read_text()
    head, rest = text.split("<!-- BEGIN agent -->", 1)
    block, tail = rest.split("<!-- END agent -->", 1)
    blocks = []
    for i, (name, password) in enumerate(agents):
        blocks.append(
            block.replace("@USER@", name)
            .replace("@PASSWORD@", password)
            .replace("@CSEQ1@", str(2 * i + 1))
            .replace("@CSEQ2@", str(2 * i + 2))
        )
    out = work / "register_agents.xml"
    out.write_text(head + "".join(blocks) + tail)
    return out


def _uas_scenario(work: Path, pcap: Path) -> Path:
    out = work / "agent_uas.xml"
    out.write_text((SCENARIOS / "agent_uas.xml").read_text().replace("@PCAP@", str(pcap)))
    return out


TOKEN = "bridged-calls-bench-token"  # the API needs credentials


def _get(server: ServerProcess, path: str) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=5) as r:
        return json.loads(r.read())


def _agent_states(server: ServerProcess) -> dict[str, int]:
    counts: dict[str, int] = {}
    for agent in _get(server, "/api/agents/live").values():
        counts[agent["state"]] = counts.get(agent["state"], 0) + 1
    return counts


def _poll(check: Callable[[], bool], timeout: float, every: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)
    return True


def _udp_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _wait_quiet(server: ServerProcess, timeout: float = 20.0) -> float:
    """Wait until the server's start-up work (it loads the speech recogniser in a worker after it
    reports healthy) is over: two 0.5 s windows in a row under 5 % of a core. Returns the seconds
    waited."""
    t0 = time.monotonic()
    quiet = 0
    while quiet < 2 and time.monotonic() - t0 < timeout:
        c0 = server.cpu_seconds()
        time.sleep(0.5)
        quiet = quiet + 1 if server.cpu_seconds() - c0 < 0.025 else 0
    return time.monotonic() - t0


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return float(sum(fields) - idle), float(sum(fields))


class _Background(threading.Thread):
    """run_sipp in a thread; its SippResult in .result."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self.kwargs = kwargs
        self.result: SippResult | None = None

    def run(self) -> None:
        self.result = run_sipp(**self.kwargs)


def _check_recording(path: str | None) -> tuple[bool, float, float, float]:
    """(file exists, seconds, caller tone share on the left, agent tone share on the right), the
    shares over the last 10 s before the final second (the agent's audio replaces hold music once
    bridged)."""
    if not path or not Path(path).is_file():
        return False, 0.0, 0.0, 0.0
    rate, pcm = read_wav(Path(path))
    seconds = len(pcm) / rate
    if pcm.shape[1] < 2 or seconds < 4:
        return True, seconds, 0.0, 0.0
    tail = pcm[max(0, len(pcm) - 11 * rate) : len(pcm) - rate]
    left, right = tone_fraction(tail[:, 0], CALLER_HZ, rate), tone_fraction(tail[:, 1], AGENT_HZ, rate)
    return True, seconds, left, right


def run(work: Path, calls: int, talk_s: float, measure_s: float, rate: float, record: bool = True) -> int:
    ramp_s = calls / rate
    measure_s = min(measure_s, talk_s - ramp_s - 5)
    if measure_s < 3:
        print(f"--talk-s {talk_s} is too short for {calls} calls at {rate}/s", file=sys.stderr)
        return 2
    agents = _agent_names(calls)
    flows = work / "flows"
    flows.mkdir(parents=True)
    (flows / "to_sales.yaml").write_text(FLOW)
    caller_pcap, agent_pcap = work / "caller.pcap", work / "agent.pcap"
    write_rtp_pcap(caller_pcap, [Segment(pcm=tones.sine(CALLER_HZ, talk_s + 2))], ssrc=0x0CA11E55)
    write_rtp_pcap(agent_pcap, [Segment(pcm=tones.sine(AGENT_HZ, talk_s + ramp_s + 15))], ssrc=0x0A6E0701)

    data = work / "data"
    server = ServerProcess(
        data,
        config=CONFIG.format(flows=flows, number=NUMBER),
        env={
            "CALLCENTER_CALLS_RECORD": "1" if record else "0",
            "CALLCENTER_HTTP_ADMIN_TOKEN": TOKEN,
            # media cost only: the bench's tones are not speech (transcription is measured apart)
            "CALLCENTER_SPEECH_TRANSCRIBE_BRIDGED": "false",
            "CALLCENTER_MEDIA_RTP_PORT_MIN": str(RTP_MIN),
            "CALLCENTER_MEDIA_RTP_PORT_MAX": str(RTP_MIN + 4 * calls + 200),
        },
    )
    _add_agents(data, agents)
    caller_port = free_port()
    agent_port = free_port()
    with server:
        target = f"127.0.0.1:{server.sip_port}"
        print(f"  server settled {_wait_quiet(server):.1f} s after it reported healthy", flush=True)
        t0 = time.monotonic()
        reg = run_sipp(
            target, work / "register", scenario=str(_register_scenario(work, agents)),
            local_port=agent_port, timeout_s=30,
        )
        if reg.successful != 1:
            print(f"registration failed: {reg.errors[-2000:] or reg.stderr[-2000:]}", file=sys.stderr)
            return 1
        if not _poll(lambda: _agent_states(server).get("available", 0) == calls, 15):
            print(f"agents not all available: {_agent_states(server)}", file=sys.stderr)
            return 1
        print(f"  {calls} agents registered and available in {time.monotonic() - t0:.1f} s", flush=True)
        idle0, t_i0 = server.cpu_seconds(), time.monotonic()
        time.sleep(3.0)
        idle_pct = 100 * (server.cpu_seconds() - idle0) / (time.monotonic() - t_i0)

        phones = _Background(
            target=target, workdir=work / "agents", scenario=str(_uas_scenario(work, agent_pcap)),
            calls=calls, local_port=agent_port, timeout_s=talk_s + ramp_s + 60,
        )
        phones.start()
        if not _poll(lambda: _udp_bound(agent_port), 10, every=0.05):
            print("the agents' SIPp did not bind its port", file=sys.stderr)
            return 1
        callers = _Background(
            target=target, workdir=work / "callers",
            scenario=str(pcap_caller_scenario(work, caller_pcap, number=NUMBER)),
            calls=calls, rate=rate, local_port=caller_port, timeout_s=talk_s + ramp_s + 60,
            extra=["-l", str(calls), "-d", str(int(talk_s * 1000))],
        )
        t_calls = time.monotonic()
        callers.start()
        bridged = _poll(lambda: _agent_states(server).get("on_call", 0) == calls, ramp_s + 20)
        states = _agent_states(server)
        print(f"  {states.get('on_call', 0)} of {calls} agents on a call "
              f"{time.monotonic() - t_calls:.1f} s after the first caller: {states}", flush=True)
        time.sleep(1.0)  # let the last bridges settle
        cpu0, busy0, t_m0 = server.cpu_seconds(), _machine_busy(), time.monotonic()
        time.sleep(measure_s)
        cpu1, busy1, t_m1 = server.cpu_seconds(), _machine_busy(), time.monotonic()
        on_call_after = _agent_states(server).get("on_call", 0)
        callers.join(talk_s + ramp_s + 120)
        phones.join(60)
        records = server.new_calls(set(), calls, timeout=60)
        # No state sticks: every agent is offered again once the calls are over (wrap-up is 0 s).
        _poll(lambda: _agent_states(server).get("available", 0) == calls, 15)
        states_after = _agent_states(server)
    # Recordings are finalised when the server stops (it has, leaving the `with`).

    window = t_m1 - t_m0
    cpu_pct = 100 * (cpu1 - cpu0) / window
    machine_pct = 100 * (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1])
    answered = [c for c in records if c.get("agent") and c.get("disposition") == "answered"]
    rtp = [c.get("rtp") or {} for c in records]
    received = sum(int(r.get("packets_received", 0)) for r in rtp)
    lost = sum(max(0, int(r.get("packets_lost", 0))) for r in rtp)
    jitter = max((float(r.get("jitter_ms", 0.0)) for r in rtp), default=0.0)
    checks = [_check_recording(c.get("recording")) for c in records]
    rec_ok = sum(1 for exists, seconds, _left, _right in checks if exists and seconds > talk_s / 2)
    both_ways = sum(1 for _exists, _seconds, left, right in checks if left > 0.5 and right > 0.5)
    left_min = min((c[2] for c in checks), default=0.0)
    right_min = min((c[3] for c in checks), default=0.0)
    secs = [c[1] for c in checks if c[0]]
    callers_res, phones_res = callers.result, phones.result

    print(f"  SIPp callers: {callers_res.successful if callers_res else '?'} ok, "
          f"{callers_res.failed if callers_res else '?'} failed; agents' SIPp: "
          f"{phones_res.successful if phones_res else '?'} ok, "
          f"{phones_res.failed if phones_res else '?'} failed; agents afterwards: {states_after}")
    print(f"  call records {len(records)}: answered by an agent {len(answered)} "
          f"({len({c['agent'] for c in answered})} distinct agents), dispositions "
          f"{sorted({str(c.get('disposition')) for c in records})}, "
          f"wait_s max {max((float(c.get('wait_s') or 0) for c in records), default=0):.2f}")
    print(f"  steady period {window:.1f} s with {calls if bridged else states.get('on_call', 0)} bridged "
          f"({on_call_after} still on call at its end): server CPU {cpu_pct:.1f} % of a core "
          f"({cpu_pct / calls:.2f} % per bridged call; {idle_pct:.1f} % idle before the calls); "
          f"whole machine {machine_pct:.0f} % busy of {os.cpu_count()} cores (load generator and "
          f"other users included)")
    print(f"  RTP from callers: {received} packets received, {lost} lost "
          f"({100 * lost / max(1, received + lost):.3f} %), max jitter {jitter:.2f} ms")
    if record:
        print(f"  recordings: {rec_ok} of {len(records)} exist (> {talk_s / 2:.0f} s; "
              f"{min(secs, default=0):.1f}-{max(secs, default=0):.1f} s); both tones heard in "
              f"{both_ways} (min share: caller {left_min:.2f} left, agent {right_min:.2f} right)")
    else:
        print("  recordings: off (--no-record)")
    ok = (
        bridged
        and len(answered) == calls
        and states_after.get("available", 0) == calls
        and (not record or (rec_ok == calls and both_ways == calls))
    )
    print(
        f"RESULT bridged_calls={len(answered)}/{calls} cpu_percent={cpu_pct:.1f} "
        f"cpu_percent_per_call={cpu_pct / calls:.2f} idle_cpu_percent={idle_pct:.1f} "
        f"packets_lost={lost} record={'on' if record else 'off'} recordings={rec_ok} "
        f"both_ways={both_ways} machine_busy_percent={machine_pct:.0f}"
        f"{'' if ok else ' (INCOMPLETE)'}"
    )
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=50, help="callers, and agents (one each)")
    parser.add_argument("--talk-s", type=float, default=30.0, help="callers hang up this long after answer")
    parser.add_argument("--measure-s", type=float, default=15.0, help="CPU window once all are bridged")
    parser.add_argument(
        "--no-record", action="store_true", help="calls.record off (to see what recording costs)"
    )
    parser.add_argument("--rate", type=float, default=10.0, help="new callers per second")
    parser.add_argument("--keep", type=Path, help="keep the work files (logs, recordings) in this folder")
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        print("sipp not found: run `make test-peers` first", file=sys.stderr)
        return 1
    options = (args.calls, args.talk_s, args.measure_s, args.rate, not args.no_record)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=False)
        return run(args.keep.resolve(), *options)
    with tempfile.TemporaryDirectory(prefix="cc-bridge-bench-") as tmp:
        return run(Path(tmp), *options)


if __name__ == "__main__":
    raise SystemExit(main())
