"""Two callcenter nodes behind Kamailio (issue 10), with PostgreSQL and Redis, all on loopback.

SIPp calls Kamailio; the calls spread over both nodes and land in the shared database. One node is
killed with SIGKILL while calls run: calls it held drop (documented), new calls go to the other node,
nothing it had recorded is lost, and it rejoins when restarted. An agent's baresip registers once,
through Kamailio (Path, RFC 3327), and the node's call to it goes back through Kamailio.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callcenter.testing.baresip import Baresip, tone_energy_fraction, write_wav
from callcenter.testing.cluster import Cluster, cluster_missing
from callcenter.testing.pcap import Segment, write_rtp_pcap
from callcenter.testing.sipp import SippResult, pcap_caller_scenario, run_sipp

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sipp")]

PING_S = 2  # Kamailio's OPTIONS probe interval


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    missing = cluster_missing()
    if missing:
        pytest.skip(missing)
    config = getattr(request, "param", None)
    with Cluster(
        tmp_path / "cluster", env={"CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S": "60"}, config=config,
        ping_interval_s=PING_S,
    ) as c:  # fmt: skip
        yield c


def _calls(
    cluster: Cluster, workdir: Path, count: int, *, rate: float = 10, hold_ms: int = 300
) -> SippResult:
    return run_sipp(
        cluster.sip_address, workdir, scenario="uac.xml", calls=count, rate=rate,
        extra=["-d", str(hold_ms)], timeout_s=40,
    )  # fmt: skip


def _detail(result: SippResult) -> str:
    return (
        f"sipp rc={result.returncode} ok={result.successful} failed={result.failed}\n{result.errors[-3000:]}"
    )


def _db_call_ids(cluster: Cluster, node: int = 0) -> dict[str, dict[str, Any]]:
    return {c["sip_call_id"]: c for c in cluster.nodes[node].calls()}


def test_calls_spread_over_both_nodes_and_survive_a_node_killed_mid_run(
    cluster: Cluster, tmp_path: Path
) -> None:
    first = _calls(cluster, tmp_path / "sipp1", 10)
    assert (first.successful, first.failed) == (10, 0), _detail(first)
    records = cluster.nodes[0].wait_for_calls(lambda cs: sum(1 for c in cs if c["ended_at"]) >= 10)
    assert len(records) == 10 and all(c["disposition"] == "answered" for c in records), records
    # Round-robin: both nodes took calls, and either node reads every record (one PostgreSQL).
    per_node = [len(cluster.ended_calls(i)) for i in range(2)]
    assert all(n > 0 for n in per_node) and sum(per_node) == 10, per_node
    assert set(_db_call_ids(cluster, 1)) == {c["sip_call_id"] for c in records}

    # Longer calls keep running while node 2 dies.
    results: list[SippResult] = []
    sent_to_2 = _dispatched(cluster, 1)
    runner = threading.Thread(
        target=lambda: results.append(_calls(cluster, tmp_path / "sipp2", 16, rate=4, hold_ms=3000))
    )
    runner.start()
    _wait_dispatched(cluster, 1, count=sent_to_2 + 2)  # node 2 holds calls of this run now
    finished_on_2 = {e["call_id"] for e in cluster.ended_calls(1)}
    cluster.kill_node(1)
    held_by_2 = _dispatched(cluster, 1) - sent_to_2
    runner.join(timeout=120)
    (during,) = results
    # Calls held by the dead node drop (their BYE finds no one); every other call of the run, including
    # those sent to node 2 after it died (Kamailio's failure route moves them on), succeeded.
    assert during.successful + during.failed == 16, _detail(during)
    assert during.failed <= held_by_2, _detail(during)

    # New calls: all succeed, within the probe interval at most (bounded: a few batches).
    for attempt in range(5):
        batch = _calls(cluster, tmp_path / f"sipp3-{attempt}", 6)
        if (batch.successful, batch.failed) == (6, 0):
            break
    else:
        pytest.fail(f"new calls kept failing after node 2 died: {_detail(batch)}")
    assert cluster.kamailio is not None and "marked down" in cluster.kamailio.log_text()

    # Nothing durable lost: every call node 2 had finished before it died is in PostgreSQL.
    stored = _db_call_ids(cluster)
    assert finished_on_2 <= set(stored), finished_on_2 - set(stored)
    assert all(stored[cid]["ended_at"] for cid in finished_on_2)

    # Restarted, node 2 answers Kamailio's probes again and takes new calls.
    cluster.restart_node(1)
    before = len(cluster.ended_calls(1))
    for attempt in range(8):
        batch = _calls(cluster, tmp_path / f"sipp4-{attempt}", 4)
        assert (batch.successful, batch.failed) == (4, 0), _detail(batch)
        if len(cluster.ended_calls(1)) > before:
            break
    else:
        pytest.fail("node 2 did not rejoin the dispatcher set")


QUEUE_FLOW = """\
id: to_sales
language: en-US
start: queue
nodes:
  queue:
    type: queue
    queue: sales
    max_wait_s: 30
    next: bye
  bye:
    type: hangup
"""


def _queue_config(tmp_path: Path) -> str:
    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "to_sales.yaml").write_text(QUEUE_FLOW)
    return (
        f'ivr:\n  flows_dir: {flows}\n  numbers: {{"300": to_sales}}\n'
        "routing:\n  queues:\n    sales: {skills: {sales: 1}, ring_timeout_s: 6}\n"
    )


@pytest.mark.usefixtures("baresip")
def test_agent_registered_through_kamailio_is_called_through_it(tmp_path: Path) -> None:
    missing = cluster_missing()
    if missing:
        pytest.skip(missing)
    with Cluster(tmp_path / "cluster", config=_queue_config(tmp_path), ping_interval_s=PING_S) as cluster:
        cluster.nodes[0].cli("agents", "add", "sam", "--password", "pw-sam", "--skills", "sales:1")
        account = f"<sip:sam@{cluster.sip_address}>;auth_pass=pw-sam;answermode=auto;regint=600"
        work = tmp_path / "sam"
        work.mkdir()
        phone = Baresip(work, account, audio_wav=write_wav(work / "mic.wav", 40, 600.0), life_s=40)
        phone.start()
        try:
            # The REGISTER went to one node (hash over the To URI), carrying Kamailio's Path.
            home = _wait_logged(cluster, "agent_registered", username="sam")
            node = cluster.nodes[home]
            # (with Redis, agent states are the leader's: logged by whichever node leads)
            _wait_logged(cluster, "agent_state", agent="sam", state="available")

            # Customers' calls relayed by Kamailio come from the same address as the agent's REGISTER:
            # they are still customers' calls (answered by the IVR, not challenged as the agent's).
            plain = _calls(cluster, tmp_path / "plain", 4)
            assert (plain.successful, plain.failed) == (4, 0), _detail(plain)

            # A caller queued on the agent's node: the node rings sam at Kamailio, Route = the Path.
            pcap = tmp_path / "caller.pcap"
            t = np.arange(8000 * 10) / 8000
            write_rtp_pcap(pcap, [Segment(pcm=(6000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16))])
            result = run_sipp(
                f"127.0.0.1:{node.sip_port}", tmp_path / "caller",
                scenario=str(pcap_caller_scenario(tmp_path, pcap, number="300")),
                extra=["-d", "6000"], timeout_s=60,
            )  # fmt: skip
            assert (result.successful, result.failed) == (1, 0), _detail(result)
            node.wait_for_event("agent_answered", agent="sam", timeout=20)
            (call,) = [c for c in node.calls() if c.get("queue") == "sales"]
            assert call["agent"] == "sam" and call["disposition"] == "answered", call
            assert cluster.kamailio is not None
            assert f"INVITE from node 127.0.0.1:{node.sip_port}" in cluster.kamailio.log_text()
        finally:
            phone.stop()


def _dispatched(cluster: Cluster, node: int) -> int:
    """How many new calls Kamailio has sent to node ``node`` so far (its log)."""
    assert cluster.kamailio is not None
    return cluster.kamailio.log_text().count(f"to node sip:127.0.0.1:{cluster.nodes[node].sip_port}\n")


def _wait_dispatched(cluster: Cluster, node: int, count: int, timeout: float = 20.0) -> None:
    """Bounded wait until Kamailio has sent ``count`` calls in all to node ``node``."""
    deadline = time.monotonic() + timeout
    while _dispatched(cluster, node) < count:
        assert time.monotonic() < deadline, f"Kamailio sent no calls to node {node + 1}"
        time.sleep(0.1)


def _wait_logged(cluster: Cluster, event: str, timeout: float = 15.0, **fields: Any) -> int:
    """The index of the first node that logged ``event`` with ``fields`` (bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i, node in enumerate(cluster.nodes):
            if node.events(event, **fields):
                return i
        time.sleep(0.1)
    logs = "\n".join(n.log_text()[-1500:] for n in cluster.nodes)
    raise AssertionError(f"no node logged {event} {fields}:\n{logs}")


def _tone_caller(tmp_path: Path, name: str, address: str, hold_ms: int = 6000) -> SippResult:
    """One SIPp caller dialling 300 (the sales queue) at ``address``, sending a 1 kHz tone."""
    pcap = tmp_path / f"{name}.pcap"
    t = np.arange(8000 * 10) / 8000
    write_rtp_pcap(pcap, [Segment(pcm=(6000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16))])
    return run_sipp(
        address, tmp_path / name,
        scenario=str(pcap_caller_scenario(tmp_path, pcap, number="300")),
        extra=["-d", str(hold_ms)], timeout_s=60,
    )  # fmt: skip


@pytest.mark.usefixtures("baresip")
def test_agent_registered_on_one_node_answers_callers_held_by_the_other_even_after_it_dies(
    tmp_path: Path,
) -> None:
    """The registration is shared through Redis (cluster/bindings.py): node A rings an agent whose
    REGISTER landed on node B, through Kamailio (the binding's Path); with B killed the binding is still
    there, A still reaches the agent, and the agent's own call through Kamailio is recognised on A."""
    missing = cluster_missing()
    if missing:
        pytest.skip(missing)
    with Cluster(tmp_path / "cluster", config=_queue_config(tmp_path), ping_interval_s=PING_S) as cluster:
        cluster.nodes[0].cli("agents", "add", "sam", "--password", "pw-sam", "--skills", "sales:1")
        account = f"<sip:sam@{cluster.sip_address}>;auth_pass=pw-sam;answermode=auto;regint=600"
        work = tmp_path / "sam"
        work.mkdir()
        phone = Baresip(
            work, account, audio_wav=write_wav(work / "mic.wav", 90, 600.0), record_dir=work / "heard",
            life_s=100,
        )  # fmt: skip
        phone.start()
        try:
            home = _wait_logged(cluster, "agent_registered", username="sam")  # node B
            other = 1 - home  # node A: holds the callers, never saw sam's REGISTER
            node_a = cluster.nodes[other]
            _wait_logged(cluster, "agent_state", agent="sam", state="available")

            first = _tone_caller(tmp_path, "caller1", f"127.0.0.1:{node_a.sip_port}")
            assert (first.successful, first.failed) == (1, 0), _detail(first)
            node_a.wait_for_event("agent_answered", agent="sam", timeout=20)
            (call,) = [c for c in node_a.calls() if c.get("queue") == "sales"]
            assert call["agent"] == "sam" and call["disposition"] == "answered", call
            assert cluster.kamailio is not None
            assert f"INVITE from node 127.0.0.1:{node_a.sip_port}" in cluster.kamailio.log_text()
            ended = phone.wait_for_output("terminated (duration", timeout=20)
            assert ended is not None, phone.output()[-3000:]
            heard = phone.recordings("dec")
            assert heard, phone.output()[-3000:]
            assert tone_energy_fraction(heard[-1], 1000) > 0.5  # the caller's tone reached the agent

            # Node B dies: sam's binding stays in Redis; a new caller on A still reaches sam. When B
            # led the dispatcher, A takes over once B's lease runs out (up to ttl + retry, ~7 s): the
            # caller waits through it, so it holds longer than that.
            cluster.kill_node(home)
            second = _tone_caller(tmp_path, "caller2", f"127.0.0.1:{node_a.sip_port}", hold_ms=20000)
            assert (second.successful, second.failed) == (1, 0), _detail(second)
            answered = node_a.events("agent_answered", agent="sam")
            assert len(answered) == 2, node_a.log_text()[-3000:]
            calls = [c for c in node_a.calls() if c.get("queue") == "sales"]
            assert [c["agent"] for c in calls] == ["sam", "sam"], calls

            # sam calls out through Kamailio, which lands on A (B is dead): Kamailio's
            # X-Callcenter-Source names the phone, so A knows it is sam's call (challenged with 407,
            # then served as an agent's call to the queue) although A never saw sam's REGISTER.
            phone.command(f"/dial sip:sales@{cluster.sip_address}")
            own = node_a.wait_for_event("agent_call", agent="sam", timeout=20)
            assert own["target"] == "queue:sales", own
            phone.command("/hangup")
        finally:
            phone.stop()
