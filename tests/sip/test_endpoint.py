"""SipEndpoint over real loopback sockets, driven by a tiny raw-socket client.

Every wait is bounded by asyncio.wait_for. Timers are never waited for: the tests fire the
transaction layer's timers by hand at a chosen time (``fire``), which is what the endpoint's
loop timer would do later.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from callcenter.sip.endpoint import EndpointConfig, SipEndpoint
from callcenter.sip.invite import IncomingCall
from callcenter.sip.message import SipMessage, SipRequest, SipResponse, split_list
from callcenter.sip.parser import StreamFramer, parse_message
from callcenter.sip.transaction import Addr, State
from callcenter.sip.uri import parse_name_addr, parse_uri, parse_via

WAIT = 5.0
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
_ids = itertools.count(1)


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_port(host: str) -> int:
    """A port free for both UDP and TCP on `host` (bind port 0 first, then check TCP)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = int(u.getsockname()[1])
            with socket.socket(family, socket.SOCK_STREAM) as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


# --- the server under test --------------------------------------------------------------------


@dataclass
class Server:
    ep: SipEndpoint
    host: str
    port: int
    calls: list[IncomingCall] = field(default_factory=list)
    vclock: float = 0.0

    def fire(self, dt: float) -> None:
        """Run the transaction timers as if `dt` more seconds had passed (cumulative)."""
        self.vclock += dt
        self.ep.layer.handle_timer(self.ep.now + self.vclock)
        self.ep._process()


async def start_server(host: str) -> Server:
    port = free_port(host)
    ep = SipEndpoint(EndpointConfig(listen=[("udp", host, port), ("tcp", host, port)]))
    server = Server(ep, host, port)

    def on_invite(call: IncomingCall) -> None:
        server.calls.append(call)
        user = parse_uri(call.invite.uri).user
        if user == "ring":  # leave it ringing so the test can CANCEL it
            call.ring()
        else:
            call.answer(SDP)

    ep.on_invite = on_invite
    await ep.start()
    return server


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = await start_server("127.0.0.1")
    try:
        yield s
    finally:
        await s.ep.close()


# --- a raw client -----------------------------------------------------------------------------


class Client:
    transport = "UDP"

    def __init__(self, server: Server) -> None:
        self.server = server
        self.local: tuple[str, int] = ("", 0)

    @property
    def sent_by(self) -> str:
        host = self.local[0]
        return f"[{host}]:{self.local[1]}" if ":" in host else f"{host}:{self.local[1]}"

    def request(
        self,
        method: str,
        *,
        branch: str | None = None,
        call_id: str = "call-1",
        from_tag: str = "caller-tag",
        to_tag: str | None = None,
        cseq: int = 1,
        cseq_method: str | None = None,
        user: str = "service",
        headers: list[tuple[str, str]] | None = None,
        omit: tuple[str, ...] = (),
        body: bytes = b"",
        version: str = "SIP/2.0",
        rport: bool = False,
        max_forwards: str = "70",
    ) -> bytes:
        branch = branch or f"z9hG4bK-test-{next(_ids)}"
        host = self.server.host
        target = f"[{host}]" if ":" in host else host
        lines = [f"{method} sip:{user}@{target}:{self.server.port} {version}"]
        hdrs = [
            # branch "none": an RFC 2543 peer, whose Via has no branch at all.
            (
                "Via",
                f"SIP/2.0/{self.transport} {self.sent_by}"
                + ("" if branch == "none" else f";branch={branch}")
                + (";rport" if rport else ""),
            ),
            ("Max-Forwards", max_forwards),
            ("From", f"<sip:caller@{self.sent_by}>;tag={from_tag}"),
            ("To", f"<sip:{user}@{target}>" + (f";tag={to_tag}" if to_tag else "")),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {cseq_method or method}"),
            ("Contact", f"<sip:caller@{self.sent_by};transport={self.transport.lower()}>"),
            *(headers or []),
        ]
        if body:
            hdrs.append(("Content-Type", "application/sdp"))
        hdrs.append(("Content-Length", str(len(body))))
        lines += [f"{n}: {v}" for n, v in hdrs if n not in omit]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def recv(self) -> SipMessage:
        raise NotImplementedError

    async def response(self, match: Callable[[SipResponse], bool] = lambda r: True) -> SipResponse:
        """The next response that matches (responses that do not are skipped, at most 20)."""
        for _ in range(20):
            msg = await self.recv()
            if isinstance(msg, SipResponse) and match(msg):
                return msg
        raise AssertionError("no matching response")

    async def next_response(self) -> SipResponse:
        msg = await self.recv()
        assert isinstance(msg, SipResponse), msg
        return msg

    async def probe(self) -> list[SipMessage]:
        """Send an OPTIONS and return everything received before its 200 (loopback keeps order)."""
        call_id = f"probe-{next(_ids)}"
        await self.send(self.request("OPTIONS", call_id=call_id))
        before: list[SipMessage] = []
        for _ in range(50):
            msg = await self.recv()
            if isinstance(msg, SipResponse) and msg.call_id == call_id:
                assert msg.status == 200
                return before
            before.append(msg)
        raise AssertionError("probe unanswered")


class UdpClient(Client):
    def __init__(self, server: Server) -> None:
        super().__init__(server)
        family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((server.host, 0))
        self.sock.setblocking(False)
        self.local = self.sock.getsockname()[:2]

    async def send(self, data: bytes) -> None:
        self.sock.sendto(data, (self.server.host, self.server.port))

    async def recv(self) -> SipMessage:
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), WAIT)
        return parse_message(data)

    def close(self) -> None:
        self.sock.close()


class TcpClient(Client):
    transport = "TCP"

    def __init__(self, server: Server) -> None:
        super().__init__(server)
        self.framer = StreamFramer()
        self.pending: list[SipMessage] = []

    async def connect(self) -> TcpClient:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.server.host, self.server.port), WAIT
        )
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.local = self.writer.get_extra_info("sockname")[:2]
        return self

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self) -> SipMessage:
        while not self.pending:
            chunk = await asyncio.wait_for(self.reader.read(65536), WAIT)
            assert chunk, "connection closed by the server"
            self.pending.extend(self.framer.feed(chunk))
        return self.pending.pop(0)

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def udp(server: Server) -> AsyncIterator[UdpClient]:
    c = UdpClient(server)
    yield c
    c.close()


@pytest.fixture
async def tcp(server: Server) -> AsyncIterator[TcpClient]:
    c = await TcpClient(server).connect()
    yield c
    c.close()


def to_tag(msg: SipMessage) -> str | None:
    return parse_name_addr(msg.headers.get("To") or "").tag


async def establish(
    client: Client, server: Server, call_id: str = "call-1", headers: list[tuple[str, str]] | None = None
) -> tuple[IncomingCall, SipResponse]:
    """INVITE → 100, 200; returns the call and the 200 (not yet acknowledged)."""
    await client.send(client.request("INVITE", call_id=call_id, body=SDP, headers=headers))
    trying = await client.next_response()
    assert trying.status == 100
    ok = await client.next_response()
    assert ok.status == 200 and ok.cseq() == (1, "INVITE")
    call = server.calls[-1]
    assert call.call_id == call_id
    return call, ok


async def ack(client: Client, ok: SipResponse, call_id: str = "call-1", cseq: int = 1) -> None:
    await client.send(client.request("ACK", call_id=call_id, to_tag=to_tag(ok), cseq=cseq))


# --- OPTIONS, unknown methods, checks of §8.2 -------------------------------------------------


async def test_options_gets_200_with_capabilities(server: Server, udp: UdpClient) -> None:
    await udp.send(udp.request("OPTIONS"))
    resp = await udp.next_response()
    assert resp.status == 200
    assert resp.cseq() == (1, "OPTIONS")
    allow = {m.strip() for m in resp.headers.get_all("Allow")}
    assert {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"} <= allow
    assert "application/sdp" in resp.headers.get_all("Accept")
    assert "Supported" in resp.headers
    assert to_tag(resp)  # §8.2.6.2


async def test_unknown_method_gets_501(server: Server, udp: UdpClient) -> None:
    await udp.send(udp.request("FOO"))
    resp = await udp.next_response()
    assert resp.status == 501 and resp.cseq() == (1, "FOO")
    assert "Allow" in resp.headers


async def test_missing_call_id_gets_400(server: Server, udp: UdpClient) -> None:
    await udp.send(udp.request("OPTIONS", omit=("Call-ID",)))
    resp = await udp.next_response()
    assert resp.status == 400


async def test_unparseable_start_line_with_readable_headers_gets_400(server: Server, udp: UdpClient) -> None:
    data = udp.request("OPTIONS").replace(b" SIP/2.0\r\n", b" SIP/2.0 trailing-junk\r\n", 1)
    await udp.send(data)
    resp = await udp.next_response()
    assert resp.status == 400 and resp.cseq() == (1, "OPTIONS")


async def test_garbage_gets_no_reply_and_the_server_keeps_answering(server: Server, udp: UdpClient) -> None:
    for junk in (b"\x00\xff\xfe garbage", b"hello\r\n\r\n", b"SIP/2.0 200\r\n\r\n", b"\r\n\r\n", b"INVITE"):
        await udp.send(junk)
    assert await udp.probe() == []


async def test_max_forwards_zero_invite_gets_483(server: Server, udp: UdpClient) -> None:
    await udp.send(udp.request("INVITE", max_forwards="0", body=SDP))
    resp = await udp.next_response()
    assert resp.status == 483
    assert server.calls == []


async def test_unsupported_require_gets_420_with_unsupported(server: Server, udp: UdpClient) -> None:
    await udp.send(udp.request("INVITE", headers=[("Require", "foo, path")], body=SDP))
    resp = await udp.next_response()
    assert resp.status == 420
    assert resp.headers.get_all("Unsupported") == ["foo"]
    assert server.calls == []


async def test_other_sip_version_gets_505(server: Server, udp: UdpClient) -> None:
    await udp.send(udp.request("OPTIONS", version="SIP/3.0"))
    resp = await udp.next_response()
    assert resp.status == 505


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Max-Forwards", "\u00b2"),
        ("CSeq", "\u00b2 OPTIONS"),
        ("Via", "SIP/2.0/UDP 127.0.0.1:\u00b2;branch=z9hG4bKx"),
    ],
)
async def test_non_ascii_digits_get_400_not_a_crash(
    server: Server, udp: UdpClient, header: str, value: str
) -> None:
    # "²".isdigit() is True, int("²") raises ValueError: it must not escape as a non-SIP error.
    msg = parse_message(udp.request("OPTIONS"))
    assert isinstance(msg, SipRequest)
    msg.headers.set(header, value)
    await udp.send(msg.serialize())
    resp = await udp.next_response()
    assert resp.status == 400


async def test_non_ascii_content_length_gets_400(server: Server, udp: UdpClient) -> None:
    data = udp.request("OPTIONS").replace(b"Content-Length: 0", "Content-Length: \u00b2".encode())
    await udp.send(data)
    resp = await udp.next_response()
    assert resp.status == 400


async def test_rport_and_received_are_filled_in(server: Server, udp: UdpClient) -> None:
    await udp.send(udp.request("OPTIONS", rport=True))
    resp = await udp.next_response()
    top = parse_via(resp.headers.get_all("Via")[0])
    assert top.params["rport"] == str(udp.local[1])
    assert top.params["received"] == "127.0.0.1"
    assert top.branch and top.branch.startswith("z9hG4bK-test-")


# --- INVITE sessions --------------------------------------------------------------------------


async def test_invite_gets_100_then_200_with_tag_contact_and_sdp(server: Server, udp: UdpClient) -> None:
    call, ok = await establish(udp, server)
    assert to_tag(ok) == call.local_tag
    contact = parse_name_addr(ok.headers.get_all("Contact")[0]).parsed_uri()
    assert (contact.host, contact.port) == ("127.0.0.1", server.port)
    assert ok.headers.get("Content-Type") == "application/sdp"
    assert ok.body == SDP
    assert call.state == "confirmed"
    assert len(server.calls) == 1


async def test_retransmitted_invite_does_not_make_a_second_call(server: Server, udp: UdpClient) -> None:
    invite = udp.request("INVITE", user="ring", body=SDP)
    await udp.send(invite)
    assert (await udp.next_response()).status == 100
    ringing = await udp.next_response()
    assert ringing.status == 180
    await udp.send(invite)  # retransmission: the last provisional again, no new call
    again = await udp.next_response()
    assert again.status == 180 and to_tag(again) == to_tag(ringing)
    assert len(server.calls) == 1


async def test_retransmitted_invite_after_200_makes_no_second_call(server: Server, udp: UdpClient) -> None:
    invite = udp.request("INVITE", body=SDP)
    await udp.send(invite)
    await udp.response(lambda r: r.status == 200)
    await udp.send(invite)
    assert [m for m in await udp.probe() if isinstance(m, SipResponse) and m.status != 200] == []
    assert len(server.calls) == 1


async def test_merged_invite_on_another_branch_gets_482(server: Server, udp: UdpClient) -> None:
    await udp.send(udp.request("INVITE", user="ring", body=SDP))
    await udp.response(lambda r: r.status == 180)
    await udp.send(udp.request("INVITE", user="ring", body=SDP))  # same Call-ID/tag/CSeq, new branch
    resp = await udp.response(lambda r: r.status >= 200)
    assert resp.status == 482
    assert len(server.calls) == 1


async def test_200_is_retransmitted_until_ack(server: Server, udp: UdpClient) -> None:
    call, ok = await establish(udp, server)
    server.fire(0.6)
    again = await udp.next_response()
    assert again.status == 200 and again.cseq() == (1, "INVITE") and again.body == SDP
    await ack(udp, ok)
    await udp.probe()  # the ACK has been processed once the probe is answered
    assert call.acked.is_set()
    server.fire(10)  # without the ACK, 200s would go out at 1.5, 3.5, 7.5 s...
    assert await udp.probe() == []
    server.fire(40)  # timer L
    assert call.txn.state == State.TERMINATED
    assert not call.ended.done()  # an acknowledged call goes on
    assert await udp.probe() == []


async def test_no_ack_ends_the_call_with_bye(server: Server, udp: UdpClient) -> None:
    rr = [("Record-Route", f"<sip:127.0.0.1:{udp.local[1]};lr>, <sip:proxy.invalid;lr>")]
    call, ok = await establish(udp, server, headers=rr)
    assert ok.headers.get_all("Record-Route") == [
        f"<sip:127.0.0.1:{udp.local[1]};lr>",
        "<sip:proxy.invalid;lr>",
    ]
    server.fire(33)
    assert await asyncio.wait_for(call.ended, WAIT) == "no-ack"
    for _ in range(20):  # skip 200 retransmissions the loop's own timer may have sent meanwhile
        bye = await udp.recv()
        if isinstance(bye, SipRequest):
            break
    assert isinstance(bye, SipRequest) and bye.method == "BYE"
    assert bye.headers.get_all("Route") == [f"<sip:127.0.0.1:{udp.local[1]};lr>", "<sip:proxy.invalid;lr>"]
    assert bye.call_id == "call-1"
    assert parse_name_addr(bye.headers.get("From") or "").tag == to_tag(ok)
    assert to_tag(bye) == "caller-tag"
    assert bye.uri == f"sip:caller@{udp.sent_by};transport=udp"  # our Contact
    # Answer the BYE so the endpoint's client transaction completes.
    reply = SipResponse(200, "OK")
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in bye.headers.get_all(name) if name == "Via" else [bye.headers.get(name) or ""]:
            reply.headers.add(name, value)
    await udp.send(reply.serialize())
    # The BYE's client transaction got its final response: the background task ends.
    await asyncio.wait_for(asyncio.gather(*server.ep._tasks), WAIT)


async def test_rfc2543_peer_without_branch_can_ack_the_200(server: Server, udp: UdpClient) -> None:
    # Without a branch, ACK and INVITE share a transaction key; in Accepted the ACK must still
    # reach the call (RFC 6026 §7.1), or the 200 is resent for 32 s and the call torn down.
    await udp.send(udp.request("INVITE", branch="none", call_id="old", body=SDP))
    ok = await udp.response(lambda r: r.status == 200)
    await udp.send(udp.request("ACK", branch="none", call_id="old", to_tag=to_tag(ok)))
    await udp.probe()
    call = server.calls[0]
    assert call.acked.is_set()
    server.fire(40)
    assert not call.ended.done()
    assert [m for m in await udp.probe() if isinstance(m, SipRequest)] == []  # no BYE


def answer_to(request: SipRequest, status: int = 200) -> bytes:
    reply = SipResponse(status, "OK")
    for value in request.headers.get_all("Via"):
        reply.headers.add("Via", value)
    for name in ("From", "To", "Call-ID", "CSeq"):
        reply.headers.add(name, request.headers.get(name) or "")
    return reply.serialize()


async def test_server_hangs_up_with_bye(server: Server, udp: UdpClient) -> None:
    call, ok = await establish(udp, server)
    await ack(udp, ok)
    await udp.probe()

    async def peer() -> SipRequest:
        for _ in range(20):
            msg = await udp.recv()
            if isinstance(msg, SipRequest):
                await udp.send(answer_to(msg))
                return msg
        raise AssertionError("no BYE")

    _, bye = await asyncio.wait_for(asyncio.gather(call.hangup("done"), peer()), WAIT)
    assert bye.method == "BYE" and bye.call_id == "call-1"
    assert parse_name_addr(bye.headers.get("From") or "").tag == call.local_tag
    assert to_tag(bye) == "caller-tag"
    assert bye.cseq()[1] == "BYE"
    assert await asyncio.wait_for(call.ended, WAIT) == "local"
    assert call.hangup_by == "server"
    assert server.ep.dialogs == {}


async def test_server_hangs_up_before_answer_with_480(server: Server, udp: UdpClient) -> None:
    await udp.send(udp.request("INVITE", user="ring", body=SDP))
    await udp.response(lambda r: r.status == 180)
    call = server.calls[0]
    await asyncio.wait_for(call.hangup(), WAIT)
    resp = await udp.response(lambda r: r.status >= 200)
    assert resp.status == 480 and to_tag(resp) == call.local_tag
    assert call.ended.result() == "local"


async def test_bye_gets_200_and_ends_the_call(server: Server, udp: UdpClient) -> None:
    call, ok = await establish(udp, server)
    await ack(udp, ok)
    await udp.send(udp.request("BYE", to_tag=to_tag(ok), cseq=2))
    resp = await udp.response(lambda r: r.cseq()[1] == "BYE")
    assert resp.status == 200
    assert await asyncio.wait_for(call.ended, WAIT) == "bye"
    assert call.hangup_by == "caller"
    assert server.ep.dialogs == {} and server.ep.calls == {}


async def test_reinvite_for_unknown_dialog_gets_481(server: Server, udp: UdpClient) -> None:
    await udp.send(udp.request("INVITE", to_tag="nosuchtag", call_id="nosuchcall", body=SDP))
    resp = await udp.response(lambda r: r.status >= 200)
    assert resp.status == 481
    assert server.calls == []


async def test_invite_with_a_foreign_body_type_gets_415(server: Server, udp: UdpClient) -> None:
    msg = parse_message(udp.request("INVITE", body=b"<xml/>"))
    msg.headers.set("Content-Type", "application/xml")
    await udp.send(msg.serialize())
    resp = await udp.response(lambda r: r.status >= 200)
    assert resp.status == 415
    assert "application/sdp" in resp.headers.get_all("Accept")
    assert server.calls == []


async def test_bye_for_unknown_dialog_gets_481(server: Server, udp: UdpClient) -> None:
    await udp.send(udp.request("BYE", to_tag="nosuchtag", call_id="nosuchcall"))
    resp = await udp.next_response()
    assert resp.status == 481



async def test_out_of_order_cseq_in_dialog_gets_500(server: Server, udp: UdpClient) -> None:
    call, ok = await establish(udp, server, call_id="cseq")
    await ack(udp, ok, call_id="cseq")
    await udp.send(udp.request("BYE", call_id="cseq", to_tag=to_tag(ok), cseq=0))  # INVITE had 1
    resp = await udp.response(lambda r: r.cseq()[1] == "BYE")
    assert resp.status == 500
    assert not call.ended.done()


async def test_cancel_before_answer(server: Server, udp: UdpClient) -> None:
    branch = "z9hG4bK-cancel-me"
    await udp.send(udp.request("INVITE", user="ring", branch=branch, body=SDP))
    ringing = await udp.response(lambda r: r.status == 180)
    await udp.send(udp.request("CANCEL", user="ring", branch=branch))
    cancel_ok = await udp.response(lambda r: r.cseq()[1] == "CANCEL")
    assert cancel_ok.status == 200
    terminated = await udp.response(lambda r: r.cseq()[1] == "INVITE")
    assert terminated.status == 487
    assert to_tag(terminated) == to_tag(ringing)
    call = server.calls[0]
    assert await asyncio.wait_for(call.ended, WAIT) == "cancel"
    assert call.answer(SDP) is False  # too late: nothing is sent
    # The ACK for the 487 completes the INVITE transaction: no more 487s.
    await udp.send(udp.request("ACK", user="ring", branch=branch, to_tag=to_tag(terminated)))
    await udp.probe()
    assert call.txn.state == State.CONFIRMED
    server.fire(10)
    assert await udp.probe() == []



async def test_bye_on_an_early_dialog_ends_the_ringing_call(server: Server, udp: UdpClient) -> None:
    # §15: a caller MAY send BYE on an early dialog (our 180 carried the To tag); §15.1.2: 200 to
    # the BYE, and the pending INVITE is RECOMMENDED to get a 487.
    await udp.send(udp.request("INVITE", user="ring", body=SDP))
    ringing = await udp.response(lambda r: r.status == 180)
    await udp.send(udp.request("BYE", user="ring", to_tag=to_tag(ringing), cseq=2))
    resp = await udp.response(lambda r: r.cseq()[1] == "BYE")
    assert resp.status == 200
    final = await udp.response(lambda r: r.cseq()[1] == "INVITE" and r.status >= 200)
    assert final.status == 487
    assert server.calls[0].ended.done()


async def test_cancel_after_answer_gets_200_and_changes_nothing(server: Server, udp: UdpClient) -> None:
    branch = "z9hG4bK-too-late"
    await udp.send(udp.request("INVITE", branch=branch, body=SDP))
    ok = await udp.response(lambda r: r.status == 200)
    await udp.send(udp.request("CANCEL", branch=branch))
    resp = await udp.response(lambda r: r.cseq()[1] == "CANCEL")
    assert resp.status == 200
    await ack(udp, ok)
    assert [m for m in await udp.probe() if isinstance(m, SipResponse) and m.status == 487] == []
    assert not server.calls[0].ended.done()


async def test_cancel_for_unknown_invite_gets_481(server: Server, udp: UdpClient) -> None:
    await udp.send(udp.request("CANCEL", branch="z9hG4bK-never-seen"))
    resp = await udp.next_response()
    assert resp.status == 481


async def test_reinvite_is_answered_and_acked(server: Server, udp: UdpClient) -> None:
    call, ok = await establish(udp, server)
    await ack(udp, ok)
    await udp.send(udp.request("INVITE", to_tag=to_tag(ok), cseq=2, body=SDP))
    reok = await udp.response(lambda r: r.cseq() == (2, "INVITE") and r.status >= 200)
    assert reok.status == 200 and reok.body == SDP and to_tag(reok) == to_tag(ok)
    await ack(udp, reok, cseq=2)
    await udp.probe()
    server.fire(40)
    assert not call.ended.done()  # both 200s were acknowledged: no BYE
    assert [m for m in await udp.probe() if isinstance(m, SipRequest)] == []



async def test_contact_names_the_bound_port_when_listening_on_port_zero() -> None:
    ep = SipEndpoint(EndpointConfig(listen=[("udp", "127.0.0.1", 0)]))
    await ep.start()
    try:
        udp_transport = ep.udp[socket.AF_INET].transport
        assert udp_transport is not None
        real_port = udp_transport.get_extra_info("sockname")[1]
        contact = ep.contact_for(Addr("udp", "127.0.0.1", 5060))
        assert contact == f"<sip:callcenter@127.0.0.1:{real_port}>"
    finally:
        await ep.close()


# --- TCP --------------------------------------------------------------------------------------


async def test_tcp_two_requests_in_one_write(server: Server, tcp: TcpClient) -> None:
    await tcp.send(tcp.request("OPTIONS", call_id="a") + tcp.request("FOO", call_id="b"))
    first, second = await tcp.next_response(), await tcp.next_response()
    assert {(first.call_id, first.status), (second.call_id, second.status)} == {("a", 200), ("b", 501)}


async def test_tcp_request_split_byte_by_byte(server: Server, tcp: TcpClient) -> None:
    for byte in tcp.request("OPTIONS", call_id="slow", body=b"x=1"):
        await tcp.send(bytes([byte]))
    resp = await tcp.next_response()
    assert (resp.call_id, resp.status) == ("slow", 200)


async def test_tcp_invite_call(server: Server, tcp: TcpClient) -> None:
    call, ok = await establish(tcp, server)
    contact = parse_name_addr(ok.headers.get_all("Contact")[0]).parsed_uri()
    assert contact.transport == "tcp" and contact.port == server.port
    await ack(tcp, ok)
    await tcp.send(tcp.request("BYE", to_tag=to_tag(ok), cseq=2))
    resp = await tcp.response(lambda r: r.cseq()[1] == "BYE")
    assert resp.status == 200
    assert await asyncio.wait_for(call.ended, WAIT) == "bye"


async def test_tcp_bad_request_keeps_the_connection(server: Server, tcp: TcpClient) -> None:
    bad = tcp.request("OPTIONS", call_id="bad").replace(b" SIP/2.0\r\n", b" SIP/2.0 junk\r\n", 1)
    await tcp.send(bad + tcp.request("OPTIONS", call_id="good"))
    first, second = await tcp.next_response(), await tcp.next_response()
    assert [(first.call_id, first.status), (second.call_id, second.status)] == [("bad", 400), ("good", 200)]


async def test_tcp_keepalive_gets_a_pong(server: Server, tcp: TcpClient) -> None:
    await tcp.send(b"\r\n\r\n")
    assert await asyncio.wait_for(tcp.reader.readexactly(2), WAIT) == b"\r\n"  # RFC 5626 §3.5.1


async def test_tcp_oversized_message_closes_the_connection(server: Server, tcp: TcpClient) -> None:
    big = tcp.request("OPTIONS", call_id="big", body=b"x" * 70000)
    tcp.writer.write(big)
    try:  # closed without an answer (a reset when our bytes were still unread)
        data = await asyncio.wait_for(tcp.reader.read(), WAIT)
    except ConnectionResetError:
        data = b""
    assert data == b""
    again = await TcpClient(server).connect()
    try:
        await again.send(again.request("OPTIONS", call_id="after"))
        resp = await again.next_response()
        assert (resp.call_id, resp.status) == ("after", 200)
    finally:
        again.close()


# --- IPv6 -------------------------------------------------------------------------------------


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
async def test_ipv6_udp_and_tcp() -> None:
    server6 = await start_server("::1")
    udp6 = UdpClient(server6)
    tcp6 = await TcpClient(server6).connect()
    try:
        await udp6.send(udp6.request("OPTIONS", rport=True))
        resp = await udp6.next_response()
        assert resp.status == 200
        top = parse_via(split_list(resp.headers.get("Via") or "")[0])
        assert top.params["received"] == "::1" and top.params["rport"] == str(udp6.local[1])
        call, ok = await establish(udp6, server6)
        contact = parse_name_addr(ok.headers.get_all("Contact")[0]).parsed_uri()
        assert contact.host == "[::1]" and contact.port == server6.port
        await ack(udp6, ok)
        await tcp6.send(tcp6.request("OPTIONS", call_id="v6tcp"))
        resp = await tcp6.next_response()
        assert (resp.call_id, resp.status) == ("v6tcp", 200)
    finally:
        udp6.close()
        tcp6.close()
        await server6.ep.close()


# --- the production event loop ----------------------------------------------------------------


def test_udp_and_tcp_on_uvloop() -> None:
    # The server runs on uvloop, whose transports are not asyncio.Transport/DatagramTransport
    # subclasses: the transports must not depend on that.
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        server = await start_server("127.0.0.1")
        udp = UdpClient(server)
        tcp = await TcpClient(server).connect()
        try:
            await udp.send(udp.request("OPTIONS", call_id="uv-udp"))
            resp = await udp.next_response()
            assert (resp.call_id, resp.status) == ("uv-udp", 200)
            call, ok = await establish(tcp, server, call_id="uv-tcp")
            await ack(tcp, ok, call_id="uv-tcp")
            await tcp.send(tcp.request("BYE", call_id="uv-tcp", to_tag=to_tag(ok), cseq=2))
            bye_ok = await tcp.response(lambda r: r.cseq()[1] == "BYE")
            assert bye_ok.status == 200
            assert await asyncio.wait_for(call.ended, WAIT) == "bye"
        finally:
            udp.close()
            tcp.close()
            await server.ep.close()

    uvloop.run(asyncio.wait_for(scenario(), 30))


# --- the guard in front (callcenter/sip/guard.py) ------------------------------------------------


async def test_a_scanner_gets_no_answer_at_all(server: Server, udp: UdpClient) -> None:
    await udp.send(udp.request("OPTIONS", call_id="scan-1", headers=[("User-Agent", "friendly-scanner")]))
    await udp.send(udp.request("INVITE", call_id="scan-2", headers=[("User-Agent", "sipvicious")], body=SDP))
    assert await udp.probe() == []  # nothing came back before the probe's own 200
    assert server.calls == [] and server.ep.stats["dropped"] == 2


async def test_requests_beyond_a_sources_rate_are_dropped_silently(server: Server, udp: UdpClient) -> None:
    from callcenter.sip.guard import GuardSettings, SipGuard

    guard = server.ep.guard = SipGuard(GuardSettings(requests_per_s=0.001, request_burst=3, trusted=()))
    for i in range(5):
        await udp.send(udp.request("OPTIONS", call_id=f"flood-{i}"))
    for _ in range(int(WAIT / 0.01)):  # until the server has read all five
        if guard.stats["rate_limited"] == 2:
            break
        await asyncio.sleep(0.01)
    server.ep.guard = SipGuard(GuardSettings())  # loopback trusted again, so the probe passes
    answered = [m.call_id for m in await udp.probe()]
    assert answered == ["flood-0", "flood-1", "flood-2"]


async def test_a_call_beyond_the_call_cap_gets_503_with_retry_after(server: Server, udp: UdpClient) -> None:
    from callcenter.sip.guard import GuardSettings, SipGuard

    server.ep.guard = SipGuard(GuardSettings(max_calls=1, retry_after_s=12))
    await establish(udp, server)
    await udp.send(udp.request("INVITE", call_id="call-2", body=SDP))
    refused = await udp.response(lambda r: r.call_id == "call-2")
    assert refused.status == 503 and refused.headers.get("Retry-After") == "12"
    assert len(server.calls) == 1
