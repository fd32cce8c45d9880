"""SIP over TLS on loopback with a self-signed certificate: a TLS client sends OPTIONS and INVITE.

The client trusts only the certificate ``make_self_signed`` wrote, so a handshake that succeeds
proves the server presented it. Waits are bounded by asyncio.wait_for.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_endpoint import SDP, WAIT, Server, TcpClient, free_port  # tests/sip is on sys.path

from callcenter.core.errors import ConfigError
from callcenter.sip.endpoint import EndpointConfig, SipEndpoint
from callcenter.sip.invite import IncomingCall
from callcenter.sip.message import SipRequest
from callcenter.sip.transaction import Addr
from callcenter.sip.transport.tls import make_self_signed
from callcenter.sip.uri import parse_name_addr, parse_uri, parse_via


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed(tmp_path_factory.mktemp("tls"), ["localhost", "127.0.0.1"])


async def start_tls_server(certs: tuple[Path, Path], **config: object) -> Server:
    port = free_port("127.0.0.1")
    cert, key = certs
    ep = SipEndpoint(
        EndpointConfig(
            listen=[("tls", "127.0.0.1", port)],
            tls_cert=str(cert),
            tls_key=str(key),
            **config,  # type: ignore[arg-type]
        )
    )
    server = Server(ep, "127.0.0.1", port)

    def on_invite(call: IncomingCall) -> None:
        server.calls.append(call)
        call.answer(SDP)

    ep.on_invite = on_invite
    await ep.start()
    return server


class TlsClient(TcpClient):
    transport = "TLS"

    def __init__(self, server: Server, cafile: Path) -> None:
        super().__init__(server)
        self.context = ssl.create_default_context(cafile=str(cafile))

    async def connect(self) -> TlsClient:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(
                self.server.host, self.server.port, ssl=self.context, server_hostname="127.0.0.1"
            ),
            WAIT,
        )
        self.local = self.writer.get_extra_info("sockname")[:2]
        return self


@pytest.fixture
async def server(certs: tuple[Path, Path]) -> AsyncIterator[Server]:
    s = await start_tls_server(certs)
    try:
        yield s
    finally:
        await s.ep.close()


@pytest.fixture
async def tls(server: Server, certs: tuple[Path, Path]) -> AsyncIterator[TlsClient]:
    c = await TlsClient(server, certs[0]).connect()
    yield c
    c.close()


async def test_options_over_tls_gets_200(server: Server, tls: TlsClient) -> None:
    await tls.send(tls.request("OPTIONS"))
    ok = await tls.next_response()
    assert ok.status == 200
    assert "INVITE" in (ok.headers.get("Allow") or "")
    via = parse_via(ok.headers.get("Via") or "")
    assert via.transport.upper() == "TLS" and via.params["received"] == "127.0.0.1"


async def test_invite_over_tls_is_answered_with_a_tls_contact(server: Server, tls: TlsClient) -> None:
    await tls.send(tls.request("INVITE", body=SDP))
    assert (await tls.next_response()).status == 100
    ok = await tls.next_response()
    assert ok.status == 200
    contact = parse_name_addr(ok.headers.get("Contact") or "").parsed_uri()
    assert contact.transport == "tls" and contact.port == server.port
    call = server.calls[-1]
    assert call.source.transport == "tls"


async def test_in_dialog_bye_from_the_server_reuses_the_callers_connection(
    server: Server, tls: TlsClient
) -> None:
    await tls.send(tls.request("INVITE", body=SDP))
    await tls.next_response()
    ok = await tls.next_response()
    tag = parse_name_addr(ok.headers.get("To") or "").tag
    await tls.send(tls.request("ACK", to_tag=tag))
    call = server.calls[-1]
    assert call.dialog is not None
    bye = asyncio.ensure_future(server.ep.bye(call.dialog))
    request = await tls.recv()  # over the connection the phone opened (RFC 3261 §18.2.2)
    assert isinstance(request, SipRequest) and request.method == "BYE"
    assert parse_via(request.headers.get("Via") or "").transport.upper() == "TLS"
    response = (
        f"SIP/2.0 200 OK\r\nVia: {request.headers.get('Via')}\r\nFrom: {request.headers.get('From')}\r\n"
        f"To: {request.headers.get('To')}\r\nCall-ID: {request.call_id}\r\n"
        f"CSeq: {request.headers.get('CSeq')}\r\nContent-Length: 0\r\n\r\n"
    )
    await tls.send(response.encode())
    final = await asyncio.wait_for(bye, WAIT)
    assert final is not None and final.status == 200


async def test_plain_tcp_on_the_tls_port_gets_no_sip_answer(server: Server) -> None:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(server.host, server.port), WAIT)
    try:
        writer.write(TcpClient(server).request("OPTIONS"))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(65536), WAIT)
        assert not data.startswith(b"SIP/2.0")  # a TLS alert or a closed connection, never SIP
    finally:
        writer.close()


async def test_server_connects_out_over_tls_and_verifies_with_tls_ca(
    certs: tuple[Path, Path], tmp_path: Path
) -> None:
    """Two endpoints: the second sends OPTIONS to the first over a TLS connection it opens itself;
    with a CA that does not match, the connection is refused, nothing is delivered and the request
    fails at once as a transport error."""
    target = await start_tls_server(certs)
    trusting = SipEndpoint(EndpointConfig(listen=[("udp", "127.0.0.1", 0)], tls_ca=str(certs[0])))
    other_cert, _ = make_self_signed(tmp_path / "other", ["127.0.0.1"])
    distrusting = SipEndpoint(EndpointConfig(listen=[("udp", "127.0.0.1", 0)], tls_ca=str(other_cert)))
    await trusting.start()
    await distrusting.start()
    try:
        dest = Addr("tls", "127.0.0.1", target.port)
        assert await options(trusting, dest) == 200
        # the handshake fails: the transaction ends at once with a local 503 (RFC 3261 §8.1.3.1)
        assert await options(distrusting, dest) == 503
    finally:
        for ep in (trusting, distrusting, target.ep):
            await ep.close()


async def options(ep: SipEndpoint, dest: Addr) -> int | None:
    uri = f"sip:probe@127.0.0.1:{dest.port};transport=tls"
    host, port = ep.local_addr_for(dest)
    request = SipRequest("OPTIONS", uri)
    h = request.headers
    h.add("Via", f"SIP/2.0/TLS {host}:{port};branch=z9hG4bK-tls-{id(ep)}")
    h.add("Max-Forwards", "70")
    h.add("From", f"<sip:probe@{host}>;tag=t{id(ep)}")
    h.add("To", f"<{uri}>")
    h.add("Call-ID", f"tls-options-{id(ep)}")
    h.add("CSeq", "1 OPTIONS")
    h.add("Content-Length", "0")
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    txn = ep.send_request(request, dest)
    txn.user_data = future
    try:
        response = await asyncio.wait_for(future, 3.0)
    except TimeoutError:
        return None
    return getattr(response, "status", None)


def test_missing_certificate_files_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls_cert"):
        SipEndpoint(
            EndpointConfig(
                listen=[("tls", "127.0.0.1", 0)],
                tls_cert=str(tmp_path / "no.pem"),
                tls_key=str(tmp_path / "no.key"),
            )
        )


def test_sips_uri_means_tls() -> None:
    assert parse_uri("sips:agent@example.com").transport == "tls"
