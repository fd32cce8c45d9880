"""A TLS trunk without SRTP (``media.srtp: optional``): our RTP/SAVP offer refused with 488 is re-offered
once as plain RTP/AVP in the same call (CSeq + 1, same Call-ID and From tag), the trunk is remembered
and later calls offer plain RTP at once; ``required`` never retries. The trunk is a small asyncio TLS
responder (Debian's SIPp has no TLS) scripted per test; waits are bounded by asyncio.wait_for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from callcenter.calls.agent_leg import close_leg
from callcenter.calls.outbound import DialResult, PlainRtpPeers, dial, install_trunk, retry_plain
from callcenter.core.config import MediaSettings, Settings
from callcenter.media.engine import MediaEngine
from callcenter.sip.auth import AuthStatus, DigestAuthenticator, compute_ha1
from callcenter.sip.endpoint import EndpointConfig, SipEndpoint
from callcenter.sip.message import SipRequest, SipResponse, make_response
from callcenter.sip.parser import StreamFramer
from callcenter.sip.transaction import Addr
from callcenter.sip.transport.tls import make_self_signed, server_context
from callcenter.sip.uri import parse_name_addr

WAIT = 10.0

PLAIN_ANSWER = (
    b"v=0\r\no=trunk 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=sendrecv\r\n"
)

# What the trunk does with an INVITE: (status, SDP body) — or a full response.
Policy = Callable[[SipRequest], "tuple[int, bytes] | SipResponse"]


def savp(invite: SipRequest) -> bool:
    return b" RTP/SAVP " in invite.body


def refuses_srtp(invite: SipRequest) -> tuple[int, bytes]:
    """A trunk without SRTP that says so properly."""
    return (488, b"") if savp(invite) else (200, PLAIN_ANSWER)


def answers_plain(invite: SipRequest) -> tuple[int, bytes]:
    """A gateway answering RTP/AVP whatever it was offered (RFC 3264 §6 says it must not)."""
    return 200, PLAIN_ANSWER


def refuses_everything(invite: SipRequest) -> tuple[int, bytes]:
    """488 for codecs, not SRTP: a plain offer does not help either."""
    return 488, b""


class ScriptedTrunk:
    """A TLS SIP peer answering INVITEs by ``policy``, BYE with 200; keeps every INVITE in order."""

    def __init__(self, cert: tuple[Path, Path], policy: Policy) -> None:
        self.context = server_context(*cert)
        self.policy = policy
        self.invites: list[SipRequest] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> ScriptedTrunk:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def _answer(self, request: SipRequest) -> SipResponse | None:
        if request.method == "INVITE":
            self.invites.append(request)
            verdict = self.policy(request)
            if isinstance(verdict, SipResponse):
                return verdict
            status, body = verdict
            extra = [("Contact", f"<sip:trunk@127.0.0.1:{self.port};transport=tls>")]
            if body:
                extra.append(("Content-Type", "application/sdp"))
            return make_response(request, status, to_tag="trunk", extra=extra, body=body)
        if request.method == "ACK":
            return None
        return make_response(request, 200)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = StreamFramer()
        try:
            while chunk := await reader.read(65536):
                for message in framer.feed(chunk):
                    if isinstance(message, SipRequest) and (response := self._answer(message)) is not None:
                        writer.write(response.serialize())
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed(tmp_path_factory.mktemp("trunk"), ["127.0.0.1"])


def settings(port: int, cert: tuple[Path, Path], srtp: str = "optional", **trunk: Any) -> Settings:
    return Settings.model_validate(
        {
            "sip": {
                "trunk": {"uri": f"127.0.0.1:{port}", "transport": "tls", "ring_timeout_s": 300, **trunk},
                "tls_ca": str(cert[0]),
            },
            "media": {"srtp": srtp},
        }
    )


@asynccontextmanager
async def trunk_and_server(
    cert: tuple[Path, Path], policy: Policy, srtp: str = "optional", **trunk: Any
) -> AsyncIterator[tuple[ScriptedTrunk, Callable[[], Any]]]:
    """The scripted trunk and a ``call()`` dialling it from one server endpoint (answered calls are hung
    up before the next)."""
    peer = await ScriptedTrunk(cert, policy).start()
    config = settings(peer.port, cert, srtp, **trunk)
    ep = SipEndpoint(EndpointConfig(listen=[("udp", "127.0.0.1", 0)]))
    media = MediaEngine(MediaSettings())
    await ep.start()
    install_trunk(ep, config)

    async def call() -> DialResult:
        result = await asyncio.wait_for(dial(ep, media, config, "5551234"), WAIT)
        if result.outcome == "answered":
            assert result.rtp is not None
            result.__dict__["plain"] = result.rtp.protector is None  # what the media really runs
            await asyncio.wait_for(close_leg(result.leg, result.rtp, "test over"), WAIT)
        return result

    try:
        yield peer, call
    finally:
        await ep.close()
        await media.stop()
        await peer.close()


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == name]


def from_tag(request: SipRequest) -> str | None:
    return parse_name_addr(request.headers.get("From") or "").tag


# --- the decision and the memory --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "offered_srtp", "status", "retried", "expected"),
    [
        ("optional", True, 488, False, True),
        ("optional", True, 606, False, True),
        ("optional", True, 415, False, True),
        ("optional", True, 488, True, False),  # once per call: a second 488 ends it
        ("optional", False, 488, False, False),  # a plain offer refused: nothing plainer to offer
        ("optional", True, 486, False, False),  # busy is not about the offer
        ("optional", True, 403, False, False),
        ("required", True, 488, False, False),
        ("off", False, 488, False, False),
    ],
)
def test_the_retry_decision(
    mode: Any, offered_srtp: bool, status: int, retried: bool, expected: bool
) -> None:
    assert retry_plain(mode, offered_srtp, status, retried) is expected


def test_a_refusal_is_remembered_for_its_time_and_logged_once() -> None:
    peers, trunk, other = PlainRtpPeers(), Addr("tls", "192.0.2.7", 5061), Addr("tls", "192.0.2.8", 5061)
    assert not peers.plain(trunk, 0.0)
    assert peers.refused(trunk, 0.0, 600.0) is True
    assert peers.refused(trunk, 10.0, 600.0) is False  # already known: no second log line
    assert peers.plain(trunk, 609.0) and not peers.plain(other, 10.0)
    assert not peers.plain(trunk, 610.0)  # 600 s after the last refusal: SRTP is tried again
    assert peers.refused(trunk, 700.0, None) is True
    assert peers.plain(trunk, 10.0**9)  # null: until restart


# --- against the TLS trunk -----------------------------------------------------------------------------


async def test_a_488_to_srtp_is_retried_with_plain_rtp_and_the_next_call_offers_plain_at_once(
    cert: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    async with trunk_and_server(cert, refuses_srtp) as (peer, call):
        first = await call()
        second = await call()
    assert first.outcome == "answered" and first.__dict__["plain"]
    assert second.outcome == "answered" and second.__dict__["plain"]
    offered, retried, later = peer.invites
    assert savp(offered) and b"a=crypto:" in offered.body
    assert b" RTP/AVP " in retried.body and b"a=crypto" not in retried.body
    # the retry is a new transaction of the same call attempt (RFC 3261 §8.1.3.5)
    assert retried.call_id == offered.call_id and from_tag(retried) == from_tag(offered)
    assert retried.cseq() == (offered.cseq()[0] + 1, "INVITE")
    assert retried.headers.get("Via") != offered.headers.get("Via")
    assert "tag=" not in (retried.headers.get("To") or "")
    # the next call does not ask again
    assert later.call_id != offered.call_id and not savp(later)
    (refused,) = events(caplog, "trunk_srtp_refused")
    assert refused.levelname == "WARNING"
    assert refused.__dict__["cc_fields"]["refusal"].startswith("488")


async def test_a_gateway_answering_plain_rtp_to_srtp_is_taken_and_remembered(
    cert: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    async with trunk_and_server(cert, answers_plain) as (peer, call):
        first = await call()
        second = await call()
    assert first.outcome == "answered" and first.__dict__["plain"]
    assert second.outcome == "answered"
    assert [savp(i) for i in peer.invites] == [True, False]
    (refused,) = events(caplog, "trunk_srtp_refused")
    assert "RTP/AVP" in refused.__dict__["cc_fields"]["refusal"]


async def test_srtp_required_never_retries_and_says_why(
    cert: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    async with trunk_and_server(cert, refuses_srtp, srtp="required") as (peer, call):
        result = await call()
    assert result.outcome == "failed" and "SRTP" in result.detail
    (invite,) = peer.invites
    assert savp(invite)
    (refused,) = events(caplog, "trunk_srtp_refused")
    assert refused.levelname == "ERROR" and "media.srtp" in refused.__dict__["cc_fields"]["hint"]


async def test_a_488_that_is_not_about_srtp_fails_the_call_and_is_not_remembered(
    cert: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    async with trunk_and_server(cert, refuses_everything) as (peer, call):
        assert (await call()).outcome == "failed"
        assert (await call()).outcome == "failed"
    assert [savp(i) for i in peer.invites] == [True, False, True, False]  # one retry per call, no more
    assert events(caplog, "trunk_srtp_refused") == []


async def test_the_plain_retry_carries_our_credentials_to_a_digest_trunk(
    cert: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    auth = DigestAuthenticator("trunk.example", algorithms=("MD5",))
    ha1 = compute_ha1("acme", "trunk.example", "s3cret", "MD5")
    clock = iter(range(1000))

    def digest_trunk(invite: SipRequest) -> tuple[int, bytes] | SipResponse:
        now = float(next(clock))
        values = invite.headers.get_all("Authorization")
        result = auth.check(
            method="INVITE",
            request_uri=invite.uri,
            header_values=values,
            now=now,
            ha1_lookup=lambda user: (ha1, ha1) if user == "acme" else None,
        )
        if result.status is not AuthStatus.OK:
            challenge = [("WWW-Authenticate", v) for v in auth.challenge_headers(now)]
            return make_response(invite, 401, to_tag="trunk", extra=challenge)
        return refuses_srtp(invite)

    async with trunk_and_server(cert, digest_trunk, username="acme", password="s3cret") as (peer, call):
        result = await call()
    assert result.outcome == "answered" and result.__dict__["plain"]
    assert events(caplog, "trunk_auth_failed") == []
    # challenged once; the plain re-offer goes with fresh credentials, not a second challenge round
    assert [(savp(i), bool(i.headers.get("Authorization"))) for i in peer.invites] == [
        (True, False),
        (True, True),
        (False, True),
    ]
    assert len({i.call_id for i in peer.invites}) == 1
