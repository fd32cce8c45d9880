"""Fuzz targets: each takes arbitrary bytes and may only fail in the documented way.

A target raising anything else — or hanging, or crashing the interpreter — is a bug in the server's
handling of bad input. Used by ``scripts/fuzz/run.py`` (atheris, coverage-guided) and, briefly, by
``tests/fuzz``. Each target has a seed corpus (real messages and flows from the repository).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

Target = Callable[[bytes], None]


def sip_parser(data: bytes) -> None:
    """Datagram and stream framing of SIP: SipParseError only."""
    from callcenter.sip.message import SipParseError
    from callcenter.sip.parser import StreamFramer, parse_message

    with contextlib.suppress(SipParseError):
        parse_message(data, 65536)
    # A stream in two pieces: after an error with framing_ok the stream goes on (feed(b"")).
    framer = StreamFramer(65536)
    cut = len(data) // 3
    for piece in (data[:cut], data[cut:], b""):
        try:
            framer.feed(piece)
        except SipParseError:
            if framer.failed:
                return


class _Endpoint:
    """One SipEndpoint without sockets (answers go nowhere), renewed now and then so the timers
    its transactions schedule on the idle loop do not pile up."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.count = 0
        self.ep = self._new()

    def _new(self) -> object:
        from callcenter.sip.endpoint import EndpointConfig, SipEndpoint

        ep = SipEndpoint(EndpointConfig(listen=[]))
        ep._loop = self.loop  # noqa: SLF001 - run only while a datagram is handled
        return ep

    def feed(self, data: bytes) -> None:
        from callcenter.sip.transaction import Addr

        self.count += 1
        if self.count % 2000 == 0:
            self.loop.close()
            self.loop = asyncio.new_event_loop()
            self.ep = self._new()
        ep: Any = self.ep

        async def feed() -> None:  # on the loop, as the UDP transport calls it
            ep.receive_datagram(data, Addr("udp", "192.0.2.10", 5060))

        self.loop.run_until_complete(feed())


_endpoint: _Endpoint | None = None


def sip_endpoint(data: bytes) -> None:
    """The whole inbound path of a datagram: parse, §8.2 checks, the guard, transactions, dialogs,
    responses. Nothing may raise."""
    global _endpoint
    if _endpoint is None:
        _endpoint = _Endpoint()
    _endpoint.feed(data)


def sdp(data: bytes) -> None:
    """SDP parsing and the answer to an offer: SdpParseError / SdpNegotiationError only."""
    from callcenter.media.sdp import SdpNegotiationError, SdpParseError, negotiate_answer, parse

    try:
        offer = parse(data)
    except SdpParseError:
        return
    with contextlib.suppress(SdpParseError, SdpNegotiationError):
        negotiate_answer(offer, "192.0.2.1", 40000, session_id=1, version=1)


def rtp_rtcp(data: bytes) -> None:
    """RTP packets and RTCP compounds: RtpParseError / RtcpParseError only; DTMF events too."""
    from callcenter.media import rtcp, rtp

    with contextlib.suppress(rtp.RtpParseError):
        rtp.parse(data)
    with contextlib.suppress(rtcp.RtcpParseError):
        rtcp.parse_compound(data)


def ivr_yaml(data: bytes) -> None:
    """The IVR flow loader on arbitrary text: a list of FlowErrors, never an exception."""
    from callcenter.ivr.loader import check_flow_text

    text = data.decode("utf-8", "replace")
    errors = check_flow_text(text, source="fuzz.yaml")
    for error in errors:
        assert error.message, "every error says something"


def _xml_char(c: str) -> bool:
    """XML 1.0 §2.2 Char."""
    return c in "\t\n\r" or " " <= c <= "\ud7ff" or "\ue000" <= c <= "\ufffd" or c >= "\U00010000"


def wechat_xml(data: bytes) -> None:
    """A WeChat callback body: defusedxml then the message parser — BadXml only; and any text put in a
    reply comes back out of it unchanged (CDATA split safely, characters XML cannot hold dropped)."""
    from datetime import UTC, datetime

    from callcenter.chat.wechat.messages import parse
    from callcenter.chat.wechat.xmlsafe import BadXml, build_xml, parse_fields

    try:
        fields, _ = parse_fields(data)
        parse(data.decode("utf-8", "replace"), fields, "default", datetime.now(UTC))
    except BadXml:
        pass
    text = data.decode("utf-8", "replace")
    back, _ = parse_fields(build_xml([("Content", text)]))
    kept = "".join(c for c in text if _xml_char(c))
    assert back["Content"] == kept.replace("\r\n", "\n").replace("\r", "\n"), (text, back)


TARGETS: dict[str, Target] = {
    "sip_parser": sip_parser,
    "sip_endpoint": sip_endpoint,
    "sdp": sdp,
    "rtp_rtcp": rtp_rtcp,
    "ivr_yaml": ivr_yaml,
    "wechat_xml": wechat_xml,
}


def seeds(name: str) -> Iterator[bytes]:
    """The seed corpus of a target: real inputs from the repository."""
    if name.startswith("sip"):
        for path in sorted((ROOT / "tests" / "sip" / "messages").rglob("*.dat")):
            yield path.read_bytes()
    elif name == "sdp":
        for path in sorted((ROOT / "tests" / "sip" / "messages").rglob("*.dat")):
            body = path.read_bytes().partition(b"\r\n\r\n")[2]
            if body.startswith(b"v=0"):
                yield body
    elif name == "rtp_rtcp":
        yield bytes([0x80, 0x00, 0x00, 0x01]) + bytes(8) + bytes(160)
        yield bytes([0x80, 0x65, 0x00, 0x02]) + bytes(8) + bytes([1, 0x0A, 0x00, 0xA0])
        yield bytes([0x81, 200, 0x00, 0x0C]) + bytes(48)
    elif name == "wechat_xml":
        from callcenter.testing.wechat_standin import message_xml

        for kind in ("text", "image", "voice", "location", "link", "event"):
            try:
                yield message_xml(kind, "o-fuzz").encode()
            except Exception:  # noqa: BLE001 - a kind the helper does not build: skip its seed
                continue
    elif name == "ivr_yaml":
        for folder in (ROOT / "ivr_flows", ROOT / "tests" / "ivr" / "bad", ROOT / "tests" / "ivr" / "flows"):
            for path in sorted(folder.glob("*.yaml")):
                yield path.read_bytes()
