"""Overload control: the sans-I/O guard with hand-fed load samples, and the endpoint's use of it over
loopback (new INVITEs refused 503 + Retry-After statelessly; calls already admitted unaffected)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_endpoint import (  # tests/sip is on sys.path
    SDP,
    Server,
    TcpClient,
    UdpClient,
    ack,
    establish,
    start_server,
    to_tag,
)

from callcenter.sip.message import SipResponse
from callcenter.sip.overload import (
    OverloadGuard,
    OverloadSettings,
    is_ack_of_refusal,
    peek_new_invite,
    refusal_503,
)
from callcenter.sip.parser import parse_message

# --- the guard -------------------------------------------------------------------------------


def run(
    guard: OverloadGuard,
    t0: float,
    seconds: float,
    offered_per_s: int,
    busy: float,
    lag: float = 0.0,
    queue_s: float = 0.0,
) -> tuple[int, int, float]:
    """Offer `offered_per_s` INVITEs/s for `seconds` while the loop reports `busy`, `lag` and a receive
    queue `queue_s` long (1 MB/s read); every 0.1 s a sample. Returns (admitted, refused, end time)."""
    admitted = refused = 0
    t, cpu, read = t0, t0 * busy, int(t0 * 1_000_000)
    per_tick = offered_per_s // 10
    for _ in range(round(seconds * 10)):
        for i in range(per_tick):
            if guard.admit_invite(t + i * 0.1 / per_tick) is None:
                admitted += 1
            else:
                refused += 1
        t += 0.1
        cpu += 0.1 * busy
        read += 100_000
        guard.sample(t, cpu, lag, int(queue_s * 1_000_000), read)
    return admitted, refused, t


def test_a_calm_loop_admits_everything() -> None:
    g = OverloadGuard()
    admitted, refused, _ = run(g, 0.0, 5.0, 2000, busy=0.5)
    assert (admitted, refused) == (10_000, 0)
    assert not g.limiting


def test_a_saturated_loop_sheds_new_calls_with_retry_after() -> None:
    g = OverloadGuard(OverloadSettings(retry_after_s=7))
    run(g, 0.0, 1.0, 2000, busy=0.5)
    admitted, refused, t = run(g, 1.0, 3.0, 2000, busy=1.0)
    assert g.limiting and g.limit is not None and g.limit < 2000
    assert refused > 0 and admitted > 0
    # once limited, the admitted rate follows the limit, not the offer
    limit = g.limit
    a, r, _ = run(g, t, 0.5, 2000, busy=0.8)  # calm enough to stop cutting, the limit grows slowly
    assert a < 2000 * 0.5 and r > 0
    assert a <= limit * 1.2 * 0.5 + 100
    assert g.admit_invite(t + 0.5) in (None, 7)


def test_cuts_are_spaced_so_the_loop_can_show_their_effect() -> None:
    g = OverloadGuard(OverloadSettings(hold_s=0.5))
    run(g, 0.0, 1.0, 1000, busy=0.5)
    run(g, 1.0, 1.0, 1000, busy=1.0)  # ten samples, but at most two cuts in one second
    assert 1 <= g.stats["cuts"] <= 2


def test_a_long_receive_queue_cuts_new_calls_even_when_the_cpu_looks_idle() -> None:
    # The CPU is taken by other processes: the loop thread looks idle, but requests wait in the queue.
    g = OverloadGuard(OverloadSettings(delay_high_s=0.25, retry_after_s=5))
    run(g, 0.0, 1.0, 800, busy=0.3, queue_s=0.1)
    assert not g.limiting
    admitted, refused, t = run(g, 1.0, 2.0, 800, busy=0.3, queue_s=0.4)
    assert g.limiting and refused > 0
    assert g.queue_delay_s == pytest.approx(0.4)
    assert g.admit_invite(t) in (None, 5)


def test_cuts_wait_for_the_queue_to_drain_and_a_floor_keeps_the_server_reachable() -> None:
    g = OverloadGuard(OverloadSettings(min_rate=20.0, hold_s=0.5))
    run(g, 0.0, 1.0, 1000, busy=0.3)
    run(g, 1.0, 0.1, 1000, busy=0.3, lag=0.4)  # a late loop: first cut, 0.7 of what was admitted
    first = g.limit
    assert first is not None and 500 < first < 1000
    run(g, 1.1, 0.3, 1000, busy=0.3, lag=0.4)  # within hold_s: no second cut yet
    assert g.limit == first
    run(g, 1.4, 0.3, 1000, busy=0.3, lag=0.4)
    assert g.limit is not None and g.limit < first
    # a queue that shrinks after a cut is left to drain: no further cut
    g2 = OverloadGuard(OverloadSettings(hold_s=0.1))
    run(g2, 0.0, 1.0, 1000, busy=0.3)
    run(g2, 1.0, 0.1, 1000, busy=0.3, queue_s=2.0)
    cut = g2.limit
    run(g2, 1.1, 2.0, 1000, busy=0.3, queue_s=1.0)  # halved: draining
    assert g2.limit == cut
    run(g, 1.7, 20.0, 1000, busy=0.3, lag=0.4)
    assert g.limit == 20.0
    admitted, _, _ = run(g, 21.7, 1.0, 1000, busy=0.3, lag=0.4)
    assert admitted >= 15  # about min_rate per second still gets in


def test_a_retransmission_of_a_refused_invite_stays_refused() -> None:
    g = OverloadGuard(OverloadSettings(max_invites_per_s=1.0, remember_s=32.0))
    assert g.admit_invite(0.0, ("a", "t")) is None
    assert g.admit_invite(0.01, ("b", "t")) == 5
    # a second later a token is back, but b's retransmission must not become a call b never ACKs
    assert g.admit_invite(1.5, ("b", "t")) == 5
    assert g.admit_invite(1.6, ("c", "t")) is None
    assert g.admit_invite(40.0, ("b", "t")) is None  # past Timer B it is a new attempt


def test_the_limit_goes_away_once_the_load_has() -> None:
    g = OverloadGuard()
    run(g, 0.0, 1.0, 2000, busy=0.5)
    _, _, t = run(g, 1.0, 2.0, 2000, busy=1.0)
    assert g.limiting
    _, _, t = run(g, t, 30.0, 100, busy=0.2)
    assert not g.limiting
    assert run(g, t, 1.0, 500, busy=0.2)[1] == 0


def test_a_fixed_ceiling_caps_new_calls_per_second() -> None:
    g = OverloadGuard(OverloadSettings(max_invites_per_s=100.0))
    admitted, refused, _ = run(g, 0.0, 5.0, 1000, busy=0.1)
    assert 450 <= admitted <= 520 and refused == 5000 - admitted
    assert g.limit == 100.0  # calm samples never lift a configured ceiling


def test_disabled_guard_admits_everything_but_draining_refuses_all() -> None:
    g = OverloadGuard(OverloadSettings(enabled=False, drain_retry_after_s=30))
    assert run(g, 0.0, 2.0, 2000, busy=1.0, lag=1.0)[1] == 0
    g.drain()
    assert g.limiting
    assert g.admit_invite(3.0) == 30


# --- the cheap path: a 503 from raw bytes ---------------------------------------------------------

RAW_INVITE = (
    b"INVITE sip:100@10.0.0.1 SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 10.0.0.9:5062;branch=z9hG4bK-1, SIP/2.0/UDP 10.0.0.8;branch=z9hG4bK-0\r\n"
    b"f: Alice <sip:alice@example.com>;TAG=abc;x=1\r\n"
    b"t: <sip:100@10.0.0.1>\r\n"
    b"i: c1@host\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_a_refusal_is_built_from_the_raw_invite_and_reads_as_a_proper_503() -> None:
    invite = peek_new_invite(RAW_INVITE)
    assert invite is not None and (invite.call_id, invite.from_tag) == ("c1@host", "abc")
    reply = parse_message(refusal_503(invite, "192.0.2.7", 5, "callcenter"))
    assert isinstance(reply, SipResponse) and reply.status == 503
    h = reply.headers
    assert h.get("Retry-After") == "5" and h.get("Call-ID") == "c1@host" and h.get("CSeq") == "7 INVITE"
    vias = h.get_all("Via")
    assert "received=192.0.2.7" in vias[0] and "10.0.0.8" in ",".join(vias)
    to = h.get("To") or ""
    assert ";tag=x503-" in to
    again = parse_message(refusal_503(peek_new_invite(RAW_INVITE) or invite, "192.0.2.7", 5, ""))
    assert again.headers.get("To") == to  # a retransmission gets the same tag (RFC 3261 §8.2.7)
    ack = b"ACK sip:100@10.0.0.1 SIP/2.0\r\nTo: " + to.encode() + b"\r\nCall-ID: c1@host\r\n\r\n"
    assert is_ack_of_refusal(ack)
    assert not is_ack_of_refusal(ack.replace(b"x503-", b"x504-"))


def test_the_cheap_path_leaves_anything_unusual_to_the_parser() -> None:
    assert (
        peek_new_invite(RAW_INVITE.replace(b"t: <sip:100@10.0.0.1>", b"t: <sip:100@10.0.0.1>;tag=9")) is None
    )
    assert peek_new_invite(RAW_INVITE.replace(b"i: c1@host\r\n", b"")) is None
    assert peek_new_invite(RAW_INVITE.replace(b"CSeq: 7", b"CSeq:\r\n 7")) is None  # folded
    assert peek_new_invite(RAW_INVITE.replace(b"INVITE sip", b"OPTIONS sip")) is None
    assert peek_new_invite(RAW_INVITE.split(b"\r\n\r\n")[0]) is None  # no end of head


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"f: a;tag=\x80", b"From: b", b"i: \xff", b"To: x", b"v: y", b"CSeq: 1"])
        | st.binary(max_size=40),
        max_size=12,
    )
)
def test_the_cheap_path_never_raises_on_malformed_input(lines: list[bytes]) -> None:
    data = b"INVITE sip:x SIP/2.0\r\n" + b"\r\n".join(lines) + b"\r\n\r\n"
    invite = peek_new_invite(data)
    if invite is not None:
        assert refusal_503(invite, "192.0.2.1", 5, "cc").startswith(b"SIP/2.0 503 ")
    is_ack_of_refusal(b"ACK " + data[7:])


# --- the endpoint ----------------------------------------------------------------------------


@pytest.fixture
async def limited() -> AsyncIterator[Server]:
    """A server whose guard admits one new call per 100 s: the second INVITE in a row is refused."""
    s = await start_server("127.0.0.1")
    s.ep.overload = OverloadGuard(OverloadSettings(max_invites_per_s=0.01, min_rate=0.01, retry_after_s=9))
    try:
        yield s
    finally:
        await s.ep.close()


@pytest.fixture
async def client(limited: Server) -> AsyncIterator[UdpClient]:
    c = UdpClient(limited)
    yield c
    c.close()


async def test_new_invites_beyond_the_limit_get_503_with_retry_after(
    limited: Server, client: UdpClient
) -> None:
    call, ok = await establish(client, limited, call_id="admitted")
    await ack(client, ok, call_id="admitted")
    refused = client.request("INVITE", call_id="refused", from_tag="other", body=SDP)
    await client.send(refused)
    r = await client.next_response()
    assert r.status == 503 and r.headers.get("Retry-After") == "9"
    assert r.call_id == "refused" and to_tag(r)
    assert [c.call_id for c in limited.calls] == ["admitted"]  # no call object for the refused one
    # stateless: nothing waits for its ACK, and a retransmission gets the same answer, same tag
    assert "refused" not in {k[0] for k in limited.ep.calls}
    await client.send(refused)
    again = await client.next_response()
    assert again.status == 503 and to_tag(again) == to_tag(r)


async def test_calls_already_admitted_carry_on_while_new_ones_are_refused(
    limited: Server, client: UdpClient
) -> None:
    call, ok = await establish(client, limited, call_id="live")
    invite = client.request("INVITE", call_id="other", from_tag="t2", body=SDP)
    await client.send(invite)
    assert (await client.next_response()).status == 503
    await ack(client, ok, call_id="live")
    # a re-INVITE and a BYE inside the admitted call pass the guard
    reinvite = client.request("INVITE", call_id="live", to_tag=to_tag(ok), cseq=2, body=SDP)
    await client.send(reinvite)
    assert (await client.response(lambda r: r.cseq()[1] == "INVITE")).status == 200
    await client.send(client.request("BYE", call_id="live", to_tag=to_tag(ok), cseq=3))
    bye_ok = await client.response(lambda r: r.cseq()[1] == "BYE")
    assert bye_ok.status == 200


async def test_a_retransmitted_invite_of_an_admitted_call_is_not_refused(
    limited: Server, client: UdpClient
) -> None:
    first = client.request("INVITE", call_id="first", body=SDP, branch="z9hG4bK-first")
    await client.send(first)
    assert (await client.next_response()).status == 100
    assert (await client.next_response()).status == 200
    await client.send(first)  # the caller missed our 200: it must get the 200 again, not a 503
    assert (await client.next_response()).status == 200
    assert len(limited.calls) == 1


async def test_draining_refuses_calls_and_says_so_to_options(limited: Server, client: UdpClient) -> None:
    server, udp = limited, client
    server.ep.overload.drain()
    await udp.send(udp.request("OPTIONS", call_id="ping"))
    r = await udp.next_response()
    assert r.status == 503 and r.headers.get("Retry-After") == "30"
    await udp.send(udp.request("INVITE", call_id="late", body=SDP))
    r = await udp.next_response()
    assert r.status == 503 and r.headers.get("Retry-After") == "30"
    assert server.calls == []


async def test_over_tcp_the_parsed_path_refuses_the_same_way(limited: Server) -> None:
    tcp = await TcpClient(limited).connect()
    try:
        call, ok = await establish(tcp, limited, call_id="first")
        await tcp.send(tcp.request("INVITE", call_id="second", from_tag="t2", body=SDP))
        r = await tcp.response(lambda m: m.call_id == "second")
        assert r.status == 503 and r.headers.get("Retry-After") == "9"
        assert [c.call_id for c in limited.calls] == ["first"]
    finally:
        tcp.close()
