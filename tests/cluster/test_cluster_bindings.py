"""Agents' registrations shared through a real Redis (cluster/bindings.py): an agent registered through
one node rings from, and is recognised by, every node; presence is raised once cluster-wide; a dead
node's bindings expire once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from callcenter.calls.agent_leg import RingTarget
from callcenter.cluster.bindings import SharedBindings
from callcenter.core.config import SipSettings
from callcenter.sip.auth import compute_ha1
from callcenter.sip.client_auth import ClientCredentials, authorize, pick_challenge
from callcenter.sip.message import SipRequest, SipResponse
from callcenter.sip.parser import parse_message
from callcenter.sip.registrar import Binding, ContactRequest, Registrar
from callcenter.sip.registration import RegistrationService
from callcenter.sip.transaction import Addr, ServerTransaction, TransactionLayer, server_key

KAMAILIO = Addr("udp", "127.0.0.1", 5060)


def _path(phone_port: int) -> str:
    return f"<sip:127.0.0.1:5060;lr;received=sip:127.0.0.1%3A{phone_port}>"


class Clocks:
    """One fake monotonic clock per node (they differ) and one shared wall clock."""

    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.offsets: dict[str, float] = {}

    def mono(self, node: str) -> Callable[[], float]:
        offset = self.offsets.setdefault(node, 1000.0 * (len(self.offsets) + 1))
        return lambda: self.wall - 1_700_000_000.0 + offset

    def advance(self, seconds: float) -> None:
        self.wall += seconds

    async def shared(self) -> float:
        """The shared clock the nodes read (Redis's TIME in production), advanced with the others."""
        return self.wall


class _Store:
    def __init__(self, realm: str) -> None:
        self.ha1s = {
            u: (compute_ha1(u, realm, "pw", "MD5"), compute_ha1(u, realm, "pw", "SHA-256"))
            for u in ("agent1", "agent2")
        }

    def get_agent_credentials(self, username: str) -> tuple[str, str] | None:
        return self.ha1s.get(username)


class _Responder:
    def __init__(self) -> None:
        self.responses: list[SipResponse] = []

    def respond(self, txn: ServerTransaction, response: Any) -> None:
        self.responses.append(response)


class Node:
    def __init__(self, name: str, redis: Redis, clocks: Clocks) -> None:
        self.name = name
        self.clock = clocks.mono(name)
        self.responder = _Responder()
        settings = SipSettings()
        self.service = RegistrationService(
            settings, self.responder, _Store(settings.realm), secret=b"k" * 32, clock=self.clock
        )
        self.presence: list[tuple[str, bool]] = []
        self.service.listeners.append(lambda user, b, registered: self.presence.append((user, registered)))
        self.shared = SharedBindings(
            redis, name, sweep_s=3600.0, clock=self.clock, wall=lambda: clocks.wall, redis_time=clocks.shared
        )
        self.shared.attach(self.service)

    async def register(self, user: str, phone_port: int, expires: int = 60, cseq: int = 1) -> int:
        """A REGISTER relayed by Kamailio (Path with the phone's received address), digest and all."""
        lines = [
            "REGISTER sip:127.0.0.1 SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-k{cseq}{phone_port}",
            f"Path: {_path(phone_port)}",
            f"From: <sip:{user}@127.0.0.1>;tag=f1",
            f"To: <sip:{user}@127.0.0.1>",
            f"Call-ID: reg-{user}-{phone_port}",
            f"CSeq: {cseq} REGISTER",
            f"Contact: <sip:{user}@127.0.0.1:{phone_port}>",
            f"Expires: {expires}",
            "Content-Length: 0",
        ]
        request = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
        assert isinstance(request, SipRequest)
        layer = TransactionLayer()
        svc, responses = self.service, self.responder.responses
        svc.on_register(ServerTransaction(layer, server_key(request), request, KAMAILIO), request, KAMAILIO)
        challenge = pick_challenge(responses[-1])
        assert challenge is not None
        again = authorize(
            request, challenge, ClientCredentials(user, "pw"), branch=f"z9hG4bK-a{cseq}{phone_port}"
        )
        again.headers.set("CSeq", f"{cseq + 1} REGISTER")
        n = len(responses)
        svc.on_register(ServerTransaction(layer, server_key(again), again, KAMAILIO), again, KAMAILIO)
        await _until(lambda: _true(len(responses) > n), "the REGISTER answered")
        await self.shared.flush()
        return responses[-1].status


async def _true(value: bool) -> bool:
    return value


async def _until(predicate: Callable[[], Awaitable[bool]], what: str, limit_s: float = 10.0) -> None:
    """A bounded wait for something another task does (a worker thread, a pub/sub message)."""

    async def poll() -> None:
        while not await predicate():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), limit_s)
    except TimeoutError:
        raise AssertionError(f"never: {what}") from None


@pytest.fixture
async def nodes(redis: Redis) -> AsyncIterator[tuple[Node, Node, Clocks]]:
    clocks = Clocks()
    a, b = Node("a", redis, clocks), Node("b", redis, clocks)
    await a.shared.start()
    await b.shared.start()
    try:
        yield a, b, clocks
    finally:
        await a.shared.kill()
        await b.shared.kill()


async def test_agent_registered_through_one_node_rings_from_the_other_through_the_proxy(
    nodes: tuple[Node, Node, Clocks],
) -> None:
    a, b, _ = nodes
    assert await b.register("agent1", 40000) == 200

    async def a_sees() -> bool:
        return bool(a.service.lookup("agent1"))

    await _until(a_sees, "node a sees agent1's phone (pub/sub)")
    (binding,) = a.service.lookup("agent1")
    target = RingTarget.from_binding(binding)
    assert target.uri == "sip:agent1@127.0.0.1:40000"
    assert target.dest == KAMAILIO and target.route == (_path(40000),)
    assert 59 <= binding.remaining(a.clock()) <= 60  # the expiry, on a's own monotonic clock
    # a call from that phone, relayed by the proxy to node a, is the agent's
    assert a.service.agents_at(Addr("udp", "127.0.0.1", 40000)) == ["agent1"]
    assert a.service.agents_at(KAMAILIO) == []
    # presence: raised once, by the node that took the REGISTER
    assert b.presence == [("agent1", True)] and a.presence == []


async def test_presence_is_raised_once_for_the_first_and_the_last_phone_on_any_node(
    nodes: tuple[Node, Node, Clocks],
) -> None:
    a, b, _ = nodes
    await b.register("agent1", 40000)
    await a.register("agent1", 40002)  # a second phone, through the other node: already logged in
    await b.register("agent1", 40000, cseq=3)  # a refresh: nothing to raise
    assert b.presence == [("agent1", True)] and a.presence == []
    await a.shared.refresh("agent1")
    assert {bd.contact for bd in a.service.lookup("agent1")} == {
        "sip:agent1@127.0.0.1:40000",
        "sip:agent1@127.0.0.1:40002",
    }

    await b.register("agent1", 40000, expires=0, cseq=5)  # one phone unregisters: still logged in
    assert a.presence == [] and b.presence == [("agent1", True)]
    await a.register("agent1", 40002, expires=0, cseq=5)  # the last one: logged out, by a
    assert a.presence == [("agent1", False)]
    assert b.presence == [("agent1", True)]
    assert a.service.lookup("agent1") == []
    await b.shared.refresh("agent1")
    assert b.service.lookup("agent1") == []


async def test_a_dead_nodes_binding_expires_once_on_another_node(
    redis: Redis, nodes: tuple[Node, Node, Clocks]
) -> None:
    a, b, clocks = nodes
    c = Node("c", redis, clocks)
    await c.shared.start()
    try:
        await b.register("agent1", 40000, expires=60)
        await b.shared.kill()  # node b is SIGKILLed: nobody runs its registrar's sweep
        clocks.advance(30)
        assert await a.shared.sweep() == 0  # not yet expired
        await a.shared.refresh("agent1")
        assert a.service.lookup("agent1")  # still rings from a
        clocks.advance(31)
        removed = await asyncio.gather(a.shared.sweep(), c.shared.sweep())
        assert sorted(removed) == [0, 1]
        assert [*a.presence, *c.presence] == [("agent1", False)]
        assert a.service.lookup("agent1") == [] and c.service.lookup("agent1") == []
        assert await redis.zcard(a.shared.zset_key) == 0
    finally:
        await c.shared.kill()


async def test_a_refreshed_binding_is_not_swept_at_its_first_expiry(nodes: tuple[Node, Node, Clocks]) -> None:
    a, b, clocks = nodes
    await b.register("agent1", 40000, expires=60)
    clocks.advance(50)
    await b.register("agent1", 40000, expires=60, cseq=3)
    clocks.advance(20)  # past the first expiry, within the refreshed one
    assert await a.shared.sweep() == 0
    await a.shared.refresh("agent1")
    assert len(a.service.lookup("agent1")) == 1
    assert a.presence == [] and b.presence == [("agent1", True)]


async def test_the_registrar_expiry_on_the_owning_node_logs_out_once(
    nodes: tuple[Node, Node, Clocks],
) -> None:
    a, b, clocks = nodes
    await b.register("agent1", 40000, expires=60)
    clocks.advance(61)
    expired = b.service.registrar.expire(b.clock())  # what its sweep task does each second
    for aor, binding in expired:
        b.service._notify(aor, binding, False)
    await b.shared.flush()
    assert await a.shared.sweep() == 0  # b got there first: nothing left to announce
    assert b.presence == [("agent1", True), ("agent1", False)] and a.presence == []


async def test_a_phone_moving_to_another_node_is_rung_once_and_stays_logged_in(
    redis: Redis, nodes: tuple[Node, Node, Clocks]
) -> None:
    a, b, _ = nodes
    await b.register("agent1", 40000)
    await b.shared.kill()  # b dies; Kamailio sends the phone's next REGISTER to a
    await a.register("agent1", 40000, cseq=3)
    assert a.presence == []  # the agent never went away
    await a.shared.refresh("agent1")
    (binding,) = a.service.lookup("agent1")
    assert await redis.hkeys(a.shared.hash_key("agent1")) == [f"a|{binding.key}".encode()]  # b's gone


async def test_a_restarted_node_still_rings_its_previous_runs_phones(
    redis: Redis, nodes: tuple[Node, Node, Clocks]
) -> None:
    a, _, clocks = nodes
    await a.register("agent2", 40004)
    await a.shared.kill()
    again = Node("a", redis, clocks)  # same node id, empty registrar
    await again.shared.start()
    try:
        (binding,) = again.service.lookup("agent2")
        assert binding.contact == "sip:agent2@127.0.0.1:40004"
    finally:
        await again.shared.kill()


def test_records_round_trip_with_wall_clock_expiry() -> None:
    from callcenter.cluster.bindings import decode_binding, encode_binding

    registrar = Registrar()
    result = registrar.register(
        "agent1", [ContactRequest("sip:agent1@127.0.0.1:40000", q=0.5, params={"+sip.instance": '"<u:1>"'})],
        False, 120, "c1", 7, 10.0, ("127.0.0.1", 5060), "udp", path=[_path(40000)],
    )  # fmt: skip
    (binding,) = result.bindings
    import json

    record = json.loads(encode_binding(binding, "n1", now=10.0, wall=5000.0))
    assert record["x"] == 5120.0
    back: Binding = decode_binding("agent1", record, now=900.0, wall=5010.0)  # another node, 10 s later
    assert back.expires_at == 1010.0 and back.remaining(900.0) == 110
    assert (back.contact, back.key, back.q, back.path, back.origin()) == (
        binding.contact, binding.key, 0.5, binding.path, ("udp", "127.0.0.1", 40000),
    )  # fmt: skip
