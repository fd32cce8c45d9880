"""Connection caps and timeouts on real TCP and TLS sockets on 127.0.0.1 (``trusted: []`` so loopback
counts as a source). Timeouts are small; every wait is bounded and nothing asserts how long it took."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvloop
from test_endpoint import WAIT, Server, TcpClient, free_port  # tests/sip is on sys.path

from callcenter.api.metrics import Metrics
from callcenter.core.config import SipSettings
from callcenter.sip.auth import compute_ha1
from callcenter.sip.client_auth import ClientCredentials, authorize, pick_challenge
from callcenter.sip.endpoint import EndpointConfig, SipEndpoint
from callcenter.sip.guard import GuardSettings, SipGuard
from callcenter.sip.message import SipRequest
from callcenter.sip.parser import parse_message
from callcenter.sip.registration import RegistrationService
from callcenter.sip.transport.limits import ConnectionLimits
from callcenter.sip.transport.tls import make_self_signed

QUICK = 0.3  # the handshake / first-message timeout of these servers, in seconds


class _Store:
    def __init__(self, realm: str) -> None:
        self.ha1s = (compute_ha1("agent1", realm, "pw", "MD5"), compute_ha1("agent1", realm, "pw", "SHA-256"))

    def get_agent_credentials(self, username: str) -> tuple[str, str] | None:
        return self.ha1s if username == "agent1" else None


@dataclass
class Site:
    """The server under test: its TCP side (``tcp``: a Server for TcpClient) and its TLS port."""

    ep: SipEndpoint
    registration: RegistrationService
    tcp: Server
    tls_port: int


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed(tmp_path_factory.mktemp("tls"), ["127.0.0.1"])


async def start(certs: tuple[Path, Path], **limits: float) -> Site:
    settings = {"max_per_source": 3, "handshake_timeout_s": QUICK, "first_message_timeout_s": QUICK,
                "idle_timeout_s": 60.0, "trusted": ()}  # fmt: skip
    settings.update(limits)
    tcp_port, tls_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    ep = SipEndpoint(
        EndpointConfig(
            listen=[("tcp", "127.0.0.1", tcp_port), ("tls", "127.0.0.1", tls_port)],
            tls_cert=str(certs[0]),
            tls_key=str(certs[1]),
            connections=ConnectionLimits(**settings),  # type: ignore[arg-type]
        )
    )
    sip = SipSettings()
    registration = RegistrationService(sip, ep, _Store(sip.realm), secret=b"k" * 32)
    ep.on_register = registration.on_register
    ep.keep_connection = registration.has_binding_from
    await ep.start()
    await registration.start()
    return Site(ep, registration, Server(ep, "127.0.0.1", tcp_port), tls_port)


async def stop(sites: list[Site]) -> None:
    for site in sites:
        await site.registration.stop()
        await site.ep.close()


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Read (pongs, responses) until the server closes the connection: True, or False after WAIT."""
    try:
        while True:
            if not await asyncio.wait_for(reader.read(65536), WAIT):
                return True
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


async def raw(site: Site, port: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port or site.tcp.port), WAIT)


async def options_ok(client: TcpClient) -> bool:
    await client.send(client.request("OPTIONS"))
    return (await client.next_response()).status == 200


async def register(client: TcpClient, expires: int = 60) -> int:
    """REGISTER agent1 from ``client``'s connection, answering the digest challenge; the final status."""
    headers = [("Expires", str(expires))]
    first = parse_message(
        client.request("REGISTER", user="agent1", call_id=f"reg-{expires}", headers=headers)
    )
    assert isinstance(first, SipRequest)
    await client.send(first.serialize())
    challenge = pick_challenge(await client.next_response())
    assert challenge is not None
    again = authorize(first, challenge, ClientCredentials("agent1", "pw"), branch=f"z9hG4bK-r{expires}")
    await client.send(again.serialize())
    return (await client.next_response()).status


# -- caps ----------------------------------------------------------------------------------------


async def the_connection_beyond_the_per_source_cap_is_closed_and_the_others_keep_working(
    certs: tuple[Path, Path], sites: list[Site]
) -> None:
    site = await start(certs, first_message_timeout_s=60.0)
    sites.append(site)
    clients = [await TcpClient(site.tcp).connect() for _ in range(3)]
    for client in clients:
        assert await options_ok(client)

    reader, writer = await raw(site)  # the kernel accepts it; the server closes it at once
    writer.write(TcpClient(site.tcp).request("OPTIONS"))
    assert await closed_by_server(reader)
    writer.close()

    for client in clients:
        assert await options_ok(client)
    scraped = Metrics(sip_connections=site.ep.connection_stats).render().decode()
    assert 'callcenter_sip_connections{transport="tcp"} 3.0' in scraped
    assert 'callcenter_sip_connections_refused_total{limit="max_per_source",transport="tcp"} 1.0' in scraped
    clients.pop().close()
    for _ in range(100):  # until the server has seen that one go (bounded)
        if site.ep.tcp.table.from_source("127.0.0.1") < 3:
            break
        await asyncio.sleep(0.01)
    replacement = await TcpClient(site.tcp).connect()
    assert await options_ok(replacement)  # room again
    replacement.close()
    for client in clients:
        client.close()


async def a_tls_connection_beyond_the_cap_gets_no_handshake(
    certs: tuple[Path, Path], sites: list[Site]
) -> None:
    site = await start(certs, max_per_source=1, handshake_timeout_s=60.0, first_message_timeout_s=60.0)
    sites.append(site)
    context = ssl.create_default_context(cafile=str(certs[0]))
    first = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", site.tls_port, ssl=context, server_hostname="127.0.0.1"), WAIT
    )
    with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
        await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", site.tls_port, ssl=context, server_hostname="127.0.0.1"),
            WAIT,
        )
    first[1].close()


async def a_banned_sources_new_connections_are_closed_at_once(
    certs: tuple[Path, Path], sites: list[Site]
) -> None:
    site = await start(certs, first_message_timeout_s=60.0, handshake_timeout_s=60.0)
    sites.append(site)
    before = await TcpClient(site.tcp).connect()
    assert await options_ok(before)
    site.ep.guard = SipGuard(GuardSettings(trusted=(), auth_failures=1))
    site.ep.guard.auth_failed("127.0.0.1", site.ep.now, username="guess")  # banned from now on
    for port in (site.tcp.port, site.tls_port):  # TCP, and TLS without a handshake
        reader, writer = await raw(site, port)
        assert await closed_by_server(reader)
        writer.close()
    stats = site.ep.connection_stats()
    assert stats["tcp"]["refused_banned"] == 1 and stats["tls"]["refused_banned"] == 1
    before.close()


# -- timeouts ------------------------------------------------------------------------------------


async def a_tls_connection_that_never_handshakes_is_closed(
    certs: tuple[Path, Path], sites: list[Site]
) -> None:
    site = await start(certs, first_message_timeout_s=60.0)
    sites.append(site)
    reader, writer = await raw(site, site.tls_port)  # TCP only: no ClientHello ever comes
    assert await closed_by_server(reader)
    writer.close()
    assert len(site.ep.tls.table) == 0


async def silent_and_trickling_connections_are_closed_and_the_server_still_registers(
    certs: tuple[Path, Path], sites: list[Site]
) -> None:
    site = await start(certs)
    sites.append(site)
    silent = await raw(site)  # never a byte
    trickle = await raw(site)
    head = TcpClient(site.tcp).request("OPTIONS")
    trickle[1].write(head)  # one whole message (answered), then the next one a byte at a time

    async def slowloris() -> None:
        for byte in head[:-4]:  # never the final CRLF CRLF
            trickle[1].write(bytes([byte]))
            await asyncio.sleep(0.02)

    task = asyncio.create_task(slowloris())
    try:
        assert await closed_by_server(silent[0])
        assert await closed_by_server(trickle[0])
    finally:
        task.cancel()
    for _, writer in (silent, trickle):
        writer.close()

    phone = await TcpClient(site.tcp).connect()
    assert await register(phone) == 200
    assert await options_ok(phone)
    phone.close()


async def an_idle_connection_is_closed_while_one_sending_keep_alives_stays(
    certs: tuple[Path, Path], sites: list[Site]
) -> None:
    site = await start(certs, idle_timeout_s=0.5)
    sites.append(site)
    quiet = await TcpClient(site.tcp).connect()
    pinging = await TcpClient(site.tcp).connect()
    assert await options_ok(quiet) and await options_ok(pinging)

    async def keep_alive() -> None:
        while True:
            await pinging.send(b"\r\n\r\n")  # RFC 5626 §4.4.1
            await asyncio.sleep(0.05)

    task = asyncio.create_task(keep_alive())
    try:
        assert await closed_by_server(quiet.reader)
    finally:
        task.cancel()
    pongs = await asyncio.wait_for(pinging.reader.read(65536), WAIT)
    assert pongs.strip(b"\r\n") == b""  # still open: the pongs are there
    assert await options_ok(pinging)
    quiet.close()
    pinging.close()


async def a_registered_phones_connection_outlives_the_idle_timeout_while_its_binding_lasts(
    certs: tuple[Path, Path], sites: list[Site]
) -> None:
    site = await start(certs, idle_timeout_s=0.3)
    sites.append(site)
    phone = await TcpClient(site.tcp).connect()
    assert await register(phone) == 200
    other = await TcpClient(site.tcp).connect()
    assert await options_ok(other)
    assert await closed_by_server(other.reader)  # idle longer than the timeout: closed...

    assert await options_ok(phone)  # ...while the phone, idle longer still, was kept

    assert await register(phone, expires=0) == 200  # unregistered: nothing keeps it now
    assert await closed_by_server(phone.reader)
    other.close()
    phone.close()


# -- the same on both loops: the server runs on uvloop, whose transports differ in the details ----

Scenario = Callable[[tuple[Path, Path], list[Site]], Awaitable[None]]
SCENARIOS: list[Scenario] = [
    the_connection_beyond_the_per_source_cap_is_closed_and_the_others_keep_working,
    a_tls_connection_beyond_the_cap_gets_no_handshake,
    a_banned_sources_new_connections_are_closed_at_once,
    a_tls_connection_that_never_handshakes_is_closed,
    silent_and_trickling_connections_are_closed_and_the_server_still_registers,
    an_idle_connection_is_closed_while_one_sending_keep_alives_stays,
    a_registered_phones_connection_outlives_the_idle_timeout_while_its_binding_lasts,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_on_asyncio(scenario: Scenario, certs: tuple[Path, Path]) -> None:
    sites: list[Site] = []
    try:
        await scenario(certs, sites)
    finally:
        await stop(sites)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_on_uvloop(scenario: Scenario, certs: tuple[Path, Path]) -> None:
    async def run() -> None:
        sites: list[Site] = []
        try:
            await scenario(certs, sites)
        finally:
            await stop(sites)

    uvloop.run(run())
