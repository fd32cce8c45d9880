"""The TCP/TLS connection table: caps, handshake / first-message / stalled-message / idle timeouts, and
connections a phone's binding keeps — all on a hand-stepped clock."""

from __future__ import annotations

import logging

import pytest

from callcenter.core.clock import FakeClock
from callcenter.sip.transport.limits import ConnectionLimits, ConnectionTable, Expiry

PHONE = "192.0.2.10"
OTHER = "192.0.2.20"


def table(**overrides: object) -> ConnectionTable:
    settings: dict[str, object] = {
        "max_total": 0,
        "max_per_source": 0,
        "handshake_timeout_s": 5.0,
        "first_message_timeout_s": 10.0,
        "idle_timeout_s": 600.0,
        "trusted": (),
    }
    settings.update(overrides)
    return ConnectionTable(ConnectionLimits(**settings))  # type: ignore[arg-type]


def due(t: ConnectionTable, clock: FakeClock) -> list[tuple[int, Expiry]]:
    return t.handle_timer(clock.now())


# -- caps ----------------------------------------------------------------------------------------


def test_the_connection_beyond_the_per_source_cap_is_refused_and_others_still_come_in() -> None:
    clock = FakeClock()
    t = table(max_per_source=3)
    ids = [t.admit(PHONE, clock.now()) for _ in range(3)]
    assert None not in ids
    assert t.admit(PHONE, clock.now()) is None
    assert t.admit(OTHER, clock.now()) is not None
    assert t.from_source(PHONE) == 3
    assert t.stats["refused_source"] == 1

    first = ids[0]
    assert first is not None
    t.closed(first)
    assert t.admit(PHONE, clock.now()) is not None  # room again once one closed


def test_the_total_cap_counts_every_source() -> None:
    clock = FakeClock()
    t = table(max_total=3)
    for i in range(3):
        assert t.admit(f"198.51.100.{i}", clock.now()) is not None
    assert t.admit("198.51.100.99", clock.now()) is None
    assert t.stats["refused_total"] == 1
    assert t.inbound == 3


def test_trusted_sources_are_never_refused() -> None:
    clock = FakeClock()
    t = table(max_total=2, max_per_source=1, trusted=("10.0.0.0/8",))
    assert t.admit(PHONE, clock.now()) is not None
    assert t.admit(PHONE, clock.now()) is None
    for _ in range(5):  # a Kamailio in front carries everybody's connections
        assert t.admit("10.1.2.3", clock.now()) is not None
    assert t.admit(OTHER, clock.now()) is None  # the total is full: untrusted ones wait


def test_connections_we_open_are_never_refused_and_leave_the_inbound_caps_alone() -> None:
    clock = FakeClock()
    t = table(max_total=1, max_per_source=1)
    t.add_outbound(PHONE, clock.now())
    t.add_outbound(PHONE, clock.now())
    assert len(t) == 2
    assert t.inbound == 0
    assert t.admit(PHONE, clock.now()) is not None


def test_zero_means_no_cap() -> None:
    clock = FakeClock()
    t = table(max_total=0, max_per_source=0)
    assert all(t.admit(PHONE, clock.now()) is not None for _ in range(500))


def test_refusals_warn_once_per_source_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    t = table(max_per_source=1, warn_interval_s=60.0)
    t.admit(PHONE, clock.now())
    caplog.set_level(logging.WARNING, "callcenter.sip.connections")
    for _ in range(5):
        assert t.admit(PHONE, clock.now()) is None
    assert t.admit(OTHER, clock.now()) is not None
    t.admit(OTHER, clock.now())
    events = [(r.getMessage(), r.__dict__["cc_fields"]) for r in caplog.records]
    assert len(events) == 2  # one per source
    assert [(e, f["source"], f["limit"]) for e, f in events] == [
        ("sip_connection_refused", PHONE, "max_per_source"),
        ("sip_connection_refused", OTHER, "max_per_source"),
    ]

    caplog.clear()
    clock.advance(61)
    assert t.admit(PHONE, clock.now()) is None
    (fields,) = [r.__dict__["cc_fields"] for r in caplog.records]
    assert fields["source"] == PHONE and fields["muted"] == 4  # the four refusals not logged before


# -- timeouts ------------------------------------------------------------------------------------


def test_a_tls_connection_that_does_not_finish_its_handshake_is_due() -> None:
    clock = FakeClock()
    t = table(handshake_timeout_s=5.0)
    stuck = t.admit(PHONE, clock.now(), handshake=True)
    done = t.admit(OTHER, clock.now(), handshake=True)
    assert stuck is not None and done is not None
    clock.advance(1)
    t.established(done, clock.now())
    t.received(done, clock.now(), messages=1, partial=False)
    clock.advance(3.9)
    assert due(t, clock) == []
    clock.advance(0.2)
    assert due(t, clock) == [(stuck, Expiry.HANDSHAKE)]


def test_a_silent_connection_is_due_after_the_first_message_timeout_and_pings_do_not_help() -> None:
    clock = FakeClock()
    t = table(first_message_timeout_s=10.0)
    silent = t.admit(PHONE, clock.now())
    pinging = t.admit(PHONE, clock.now())
    talking = t.admit(PHONE, clock.now())
    assert silent is not None and pinging is not None and talking is not None
    for _ in range(4):
        clock.advance(2)
        t.received(pinging, clock.now(), messages=0, partial=False)  # CRLF CRLF only
    t.received(talking, clock.now(), messages=1, partial=False)
    assert t.get_timer() == pytest.approx(1010.0)
    clock.advance(2.5)  # 10.5 s after the accept
    assert sorted(due(t, clock)) == [(silent, Expiry.FIRST_MESSAGE), (pinging, Expiry.FIRST_MESSAGE)]


def test_a_message_trickling_in_is_due_once_it_has_taken_longer_than_the_timeout() -> None:
    clock = FakeClock()
    t = table(first_message_timeout_s=10.0)
    cid = t.admit(PHONE, clock.now())
    assert cid is not None
    t.received(cid, clock.now(), messages=1, partial=False)
    clock.advance(100)
    t.received(cid, clock.now(), messages=0, partial=True)  # "INVITE sip:..." and then a byte a second
    for _ in range(9):
        clock.advance(1)
        t.received(cid, clock.now(), messages=0, partial=True)
        assert due(t, clock) == []
    clock.advance(1.1)
    assert due(t, clock) == [(cid, Expiry.STALLED)]


def test_a_message_that_completes_in_time_clears_the_stall_deadline() -> None:
    clock = FakeClock()
    t = table(first_message_timeout_s=10.0, idle_timeout_s=600.0)
    cid = t.admit(PHONE, clock.now())
    assert cid is not None
    for _ in range(50):  # messages split across reads, each completed by the next read
        t.received(cid, clock.now(), messages=0, partial=True)
        clock.advance(6)
        t.received(cid, clock.now(), messages=1, partial=False)
        assert due(t, clock) == []
    assert cid in t


def test_a_connection_without_traffic_is_due_after_the_idle_timeout_and_keep_alives_count() -> None:
    clock = FakeClock()
    t = table(idle_timeout_s=600.0)
    quiet = t.admit(PHONE, clock.now())
    alive = t.admit(PHONE, clock.now())
    sending = t.add_outbound(OTHER, clock.now())
    assert quiet is not None and alive is not None
    for cid in (quiet, alive):
        t.received(cid, clock.now(), messages=1, partial=False)

    def hundred_seconds_later() -> list[tuple[int, Expiry]]:
        clock.advance(100)
        t.received(alive, clock.now(), messages=0, partial=False)  # RFC 5626 CRLF CRLF every 100 s
        t.sent(sending, clock.now())  # we keep sending over ours
        return due(t, clock)

    for _ in range(5):
        assert hundred_seconds_later() == []
    assert hundred_seconds_later() == [(quiet, Expiry.IDLE)]  # 600 s after its last byte
    for _ in range(10):
        assert hundred_seconds_later() == []


def test_idle_expiry_is_reported_once_and_the_counts_drop_when_closed() -> None:
    clock = FakeClock()
    t = table(idle_timeout_s=60.0)
    cid = t.admit(PHONE, clock.now())
    assert cid is not None
    t.received(cid, clock.now(), messages=1, partial=False)
    clock.advance(61)
    assert due(t, clock) == [(cid, Expiry.IDLE)]
    clock.advance(120)
    assert due(t, clock) == []  # being closed: not reported again
    assert t.from_source(PHONE) == 1  # still open until the transport says it closed
    t.closed(cid)
    assert t.from_source(PHONE) == 0 and len(t) == 0
    t.closed(cid)  # twice is harmless
    assert t.inbound == 0


def test_a_connection_still_needed_survives_the_idle_timeout_until_it_is_not() -> None:
    clock = FakeClock()
    t = table(idle_timeout_s=600.0)
    bound = t.admit(PHONE, clock.now())
    assert bound is not None
    t.received(bound, clock.now(), messages=1, partial=False)  # the REGISTER
    registered = {bound}
    asked: list[int] = []

    def needed(cid: int) -> bool:
        asked.append(cid)
        return cid in registered

    for _ in range(30):  # an hour of silence while the binding lasts
        clock.advance(120)
        assert t.handle_timer(clock.now(), needed) == []
    assert 1 <= len(asked) <= 7  # asked once per idle period, not every tick
    registered.clear()  # the binding expired
    clock.advance(600)
    assert t.handle_timer(clock.now(), needed) == [(bound, Expiry.IDLE)]


def test_a_needed_connection_that_stalls_mid_message_is_still_closed() -> None:
    clock = FakeClock()
    t = table(first_message_timeout_s=10.0)
    cid = t.admit(PHONE, clock.now())
    assert cid is not None
    t.received(cid, clock.now(), messages=1, partial=True)
    clock.advance(11)
    assert t.handle_timer(clock.now(), lambda _: True) == [(cid, Expiry.STALLED)]


def test_zero_turns_the_timeouts_off() -> None:
    clock = FakeClock()
    t = table(handshake_timeout_s=0, first_message_timeout_s=0, idle_timeout_s=0)
    t.admit(PHONE, clock.now(), handshake=True)
    t.admit(PHONE, clock.now())
    assert t.get_timer() is None
    clock.advance(10**6)
    assert due(t, clock) == []


def test_the_tick_follows_the_shortest_timeout() -> None:
    assert ConnectionLimits().tick_s == 1.0
    assert ConnectionLimits(handshake_timeout_s=0.3, first_message_timeout_s=0.4).tick_s == pytest.approx(
        0.15
    )
    assert ConnectionLimits(handshake_timeout_s=0, first_message_timeout_s=0, idle_timeout_s=0).tick_s == 1.0
