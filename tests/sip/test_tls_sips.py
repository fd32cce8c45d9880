"""SIPS in, SIPS Contact out (RFC 3261 §8.1.1.8, §12.1.1; RFC 5630 §3.1.3): a dialog begun with a
``sips:`` Request-URI keeps the peer's in-dialog requests on TLS, so our Contact is ``sips:`` then;
a ``sip:`` Request-URI over TLS keeps ``sip:...;transport=tls``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_endpoint import SDP, WAIT, Server
from test_tls import TlsClient, start_tls_server

from callcenter.sip.endpoint import EndpointConfig, SipEndpoint
from callcenter.sip.message import SipRequest
from callcenter.sip.parser import StreamFramer
from callcenter.sip.transaction import Addr
from callcenter.sip.transport.tls import make_self_signed, server_context
from callcenter.sip.uri import parse_name_addr


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed(tmp_path_factory.mktemp("tls"), ["localhost", "127.0.0.1"])


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


def contact_of(message: SipRequest | object) -> str:
    headers = getattr(message, "headers")  # noqa: B009 - a SipRequest or SipResponse
    return parse_name_addr(headers.get("Contact") or "").uri


def sips(request: bytes) -> bytes:
    """The client's INVITE with a sips: Request-URI (TlsClient writes sip:)."""
    return request.replace(b"INVITE sip:", b"INVITE sips:", 1)


async def test_a_sips_invite_is_answered_with_a_sips_contact(server: Server, tls: TlsClient) -> None:
    await tls.send(sips(tls.request("INVITE", body=SDP)))
    assert (await tls.next_response()).status == 100
    ok = await tls.next_response()
    assert ok.status == 200
    assert contact_of(ok) == f"sips:callcenter@127.0.0.1:{server.port}"  # no ;transport=tls with sips
    call = server.calls[-1]
    assert call.dialog is not None and "sips:" in call.dialog.local_contact  # our re-INVITEs say so too


async def test_a_sip_invite_over_tls_keeps_a_sip_contact_with_transport_tls(
    server: Server, tls: TlsClient
) -> None:
    await tls.send(tls.request("INVITE", body=SDP))
    await tls.next_response()
    ok = await tls.next_response()
    assert contact_of(ok) == f"sip:callcenter@127.0.0.1:{server.port};transport=tls"


async def test_a_sips_record_route_also_asks_for_a_sips_contact(server: Server, tls: TlsClient) -> None:
    proxy = "<sips:proxy.example.net;lr>"
    await tls.send(tls.request("INVITE", body=SDP, headers=[("Record-Route", proxy)]))
    await tls.next_response()
    ok = await tls.next_response()
    assert contact_of(ok).startswith("sips:")
    assert ok.headers.get("Record-Route") == proxy  # copied back unchanged (§12.1.1)


async def test_a_sips_reinvite_in_the_dialog_is_answered_with_the_sips_contact(
    server: Server, tls: TlsClient
) -> None:
    await tls.send(sips(tls.request("INVITE", body=SDP)))
    await tls.next_response()
    ok = await tls.next_response()
    tag = parse_name_addr(ok.headers.get("To") or "").tag
    await tls.send(tls.request("ACK", to_tag=tag))
    await tls.send(sips(tls.request("INVITE", to_tag=tag, cseq=2, body=SDP)))
    reply = await tls.next_response()
    while reply.status < 200:
        reply = await tls.next_response()
    assert reply.status == 200 and contact_of(reply).startswith("sips:")


class TlsPeer:
    """A TLS listener that collects the SIP requests it is sent (answers nothing)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.requests: asyncio.Queue[SipRequest] = asyncio.Queue()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> TlsPeer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = StreamFramer()
        while chunk := await reader.read(65536):
            for message in framer.feed(chunk):
                if isinstance(message, SipRequest):
                    self.requests.put_nowait(message)
        writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


@pytest.mark.parametrize(
    ("scheme", "contact"),
    [("sips", "sips:callcenter@127.0.0.1:{port}"), ("sip", "sip:callcenter@127.0.0.1:{port};transport=tls")],
)
async def test_our_invite_to_a_sips_uri_carries_a_sips_contact(
    certs: tuple[Path, Path], scheme: str, contact: str
) -> None:
    peer = await TlsPeer(server_context(*certs)).start()
    ep = SipEndpoint(EndpointConfig(listen=[("udp", "127.0.0.1", 0)], tls_ca=str(certs[0])))
    await ep.start()
    try:
        transport = "" if scheme == "sips" else ";transport=tls"
        uri = f"{scheme}:agent@127.0.0.1:{peer.port}{transport}"
        ep.invite(uri, Addr("tls", "127.0.0.1", peer.port), sdp=SDP)
        invite = await asyncio.wait_for(peer.requests.get(), WAIT)
        assert invite.method == "INVITE" and invite.uri == uri
        assert contact_of(invite) == contact.format(port=ep.bound_port)
    finally:
        await ep.close()
        await peer.close()
