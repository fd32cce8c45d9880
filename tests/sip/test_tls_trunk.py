"""The SIP trunk over TLS: ``sip.trunk.transport: tls`` or a ``sips:`` trunk URI sends the INVITE
over TLS, only to a trunk whose certificate verifies (``sip.tls_ca``, else the system's CAs) unless
``sip.trunk.tls_verify`` is false, with SRTP offered per ``media.srtp``.

The trunk is a small asyncio TLS responder (Debian's SIPp is built without TLS: no ``-t l1``) that
answers every INVITE 486 Busy Here, so a dial that reached it ends ``busy``; one that did not ends
``failed`` at once (the refused connection is a transport error, RFC 3261 §8.1.3.1), and the responder
saw nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from test_endpoint import WAIT

from callcenter.calls.outbound import dial, install_trunk, number_uri
from callcenter.core.config import MediaSettings, Settings
from callcenter.core.errors import ConfigError
from callcenter.media.engine import MediaEngine
from callcenter.sip.endpoint import EndpointConfig, SipEndpoint
from callcenter.sip.message import SipRequest, make_response
from callcenter.sip.parser import StreamFramer
from callcenter.sip.transport.tls import make_self_signed, server_context
from callcenter.sip.uri import parse_name_addr


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("tls")
    return {
        "trunk": make_self_signed(root / "trunk", ["127.0.0.1"]),
        "stranger": make_self_signed(root / "stranger", ["127.0.0.1"]),
        "misnamed": make_self_signed(root / "misnamed", ["pstn.example.net"]),
    }


class TlsTrunk:
    """A TLS SIP peer answering each INVITE 486; what it was sent is kept in order."""

    def __init__(self, cert: tuple[Path, Path]) -> None:
        self.context = server_context(*cert)
        self.invites: list[SipRequest] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> TlsTrunk:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = StreamFramer()
        try:
            while chunk := await reader.read(65536):
                for message in framer.feed(chunk):
                    if isinstance(message, SipRequest) and message.method == "INVITE":
                        self.invites.append(message)
                        writer.write(make_response(message, 486, to_tag="busy-trunk").serialize())
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def trunk(certs: dict[str, tuple[Path, Path]]) -> AsyncIterator[TlsTrunk]:
    t = await TlsTrunk(certs["trunk"]).start()
    yield t
    await t.close()


def settings(trunk: dict[str, Any], *, ca: Path | None, srtp: str = "optional") -> Settings:
    trunk = {"ring_timeout_s": 1.5, **trunk}
    return Settings.model_validate(
        {"sip": {"trunk": trunk, "tls_ca": str(ca) if ca else None}, "media": {"srtp": srtp}}
    )


async def call_out(config: Settings) -> str:
    ep = SipEndpoint(EndpointConfig(listen=[("udp", "127.0.0.1", 0)]))
    media = MediaEngine(MediaSettings())
    await ep.start()
    try:
        install_trunk(ep, config)
        result = await asyncio.wait_for(dial(ep, media, config, "5551234"), WAIT + 5)
        return result.outcome
    finally:
        await ep.close()
        await media.stop()


async def test_a_tls_trunk_whose_certificate_verifies_gets_the_invite_over_tls_with_srtp(
    trunk: TlsTrunk, certs: dict[str, tuple[Path, Path]]
) -> None:
    config = settings({"uri": f"127.0.0.1:{trunk.port}", "transport": "tls"}, ca=certs["trunk"][0])
    assert await call_out(config) == "busy"
    (invite,) = trunk.invites
    assert invite.uri == f"sip:5551234@127.0.0.1:{trunk.port};transport=tls"
    assert (invite.headers.get("Via") or "").startswith("SIP/2.0/TLS ")
    assert parse_name_addr(invite.headers.get("Contact") or "").parsed_uri().transport == "tls"
    body = invite.body.decode()
    assert "m=audio" in body and " RTP/SAVP " in body and "a=crypto:" in body  # keys over TLS only


async def test_a_sips_trunk_uri_means_tls_and_a_sips_contact(
    trunk: TlsTrunk, certs: dict[str, tuple[Path, Path]]
) -> None:
    config = settings({"uri": f"sips:127.0.0.1:{trunk.port}"}, ca=certs["trunk"][0])
    assert number_uri(config, "5551234") == f"sips:5551234@127.0.0.1:{trunk.port}"
    assert await call_out(config) == "busy"
    (invite,) = trunk.invites
    assert invite.uri == f"sips:5551234@127.0.0.1:{trunk.port}"
    assert parse_name_addr(invite.headers.get("Contact") or "").uri.startswith("sips:")


@pytest.mark.parametrize("ca", ["stranger", None], ids=["other-ca", "system-cas"])
async def test_a_trunk_whose_certificate_does_not_verify_is_never_sent_the_invite(
    trunk: TlsTrunk, certs: dict[str, tuple[Path, Path]], ca: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    config = settings({"uri": f"127.0.0.1:{trunk.port}", "transport": "tls"}, ca=certs[ca][0] if ca else None)
    assert await call_out(config) == "failed"
    assert trunk.invites == []  # the handshake failed: not one byte of SIP (or SRTP keys) left
    (refused,) = [r for r in caplog.records if r.getMessage() == "trunk_tls_failed"]
    fields = refused.__dict__["cc_fields"]  # log_event's structured fields
    assert refused.levelname == "WARNING" and fields["verified"] and "sip.tls_ca" in fields["hint"]
    assert fields["error"].startswith("certificate verify failed")


async def test_the_trunk_certificate_must_name_the_trunk_host(certs: dict[str, tuple[Path, Path]]) -> None:
    misnamed = await TlsTrunk(certs["misnamed"]).start()  # trusted, but issued to another name
    try:
        config = settings({"uri": f"127.0.0.1:{misnamed.port}", "transport": "tls"}, ca=certs["misnamed"][0])
        assert await call_out(config) == "failed"
        assert misnamed.invites == []
    finally:
        await misnamed.close()


async def test_tls_verify_false_encrypts_without_checking_the_certificate(
    trunk: TlsTrunk, certs: dict[str, tuple[Path, Path]]
) -> None:
    config = settings(
        {"uri": f"127.0.0.1:{trunk.port}", "transport": "tls", "tls_verify": False}, ca=certs["stranger"][0]
    )
    assert await call_out(config) == "busy"
    assert len(trunk.invites) == 1


async def test_media_srtp_off_offers_plain_rtp_even_over_tls(
    trunk: TlsTrunk, certs: dict[str, tuple[Path, Path]]
) -> None:
    trunk_config = {"uri": f"127.0.0.1:{trunk.port}", "transport": "tls"}
    config = settings(trunk_config, ca=certs["trunk"][0], srtp="off")
    assert await call_out(config) == "busy"
    (invite,) = trunk.invites
    assert " RTP/AVP " in invite.body.decode() and "a=crypto" not in invite.body.decode()


def test_an_unreadable_trunk_ca_is_a_config_error_at_start_up(tmp_path: Path) -> None:
    config = settings({"uri": "127.0.0.1:5061", "transport": "tls"}, ca=tmp_path / "missing.pem")
    ep = SipEndpoint(EndpointConfig(listen=[("udp", "127.0.0.1", 0)]))
    with pytest.raises(ConfigError, match="tls_ca"):
        install_trunk(ep, config)
