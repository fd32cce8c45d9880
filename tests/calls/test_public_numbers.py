"""Unknown SIP sources reach only public numbers: the admission decision, the scan ban it feeds in the
SIP guard, and the call manager answering INVITEs with it (404 before any IVR or media port)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from callcenter.calls import manager as manager_module
from callcenter.calls.admission import Admission, PublicNumbers, Verdict, dialled_number
from callcenter.calls.manager import CallManager
from callcenter.calls.session import CallDeps
from callcenter.core.config import Settings, load_settings
from callcenter.sip.guard import GuardSettings, SipGuard
from callcenter.sip.message import Headers, SipRequest
from callcenter.sip.transaction import Addr

CUSTOMER = Addr("udp", "198.51.100.7", 5060)
LOOPBACK = Addr("udp", "127.0.0.1", 5062)
KAMAILIO = Addr("udp", "10.0.0.5", 5060)


def settings(**protection: Any) -> Settings:
    return load_settings(config_path=None, overrides={"sip": {"protection": protection}}, env={})


def invite(number: str, *headers: tuple[str, str], uri: str | None = None) -> SipRequest:
    h = Headers([("From", "<sip:c@example.com>;tag=f1"), ("To", f"<sip:{number}@us>"), *headers])
    return SipRequest("INVITE", uri or f"sip:{number}@192.0.2.1:5060", h)


# -- the decision ----------------------------------------------------------------------------------


def test_an_unknown_source_reaches_the_ivr_numbers_and_nothing_else() -> None:
    a = Admission(settings())  # the shipped defaults: ivr.numbers 100 and 200, loopback trusted
    assert a.decide(CUSTOMER, "100", agent_phone=False).verdict is Verdict.PUBLIC
    assert a.decide(CUSTOMER, "200", agent_phone=False).admitted
    for number in ("300", "+4930123456", "1-00", "", "sales"):
        assert a.decide(CUSTOMER, number, agent_phone=False).verdict is Verdict.NOT_FOUND, number


def test_trusted_networks_and_agents_phones_reach_any_number() -> None:
    a = Admission(settings())
    assert a.decide(LOOPBACK, "300", agent_phone=False).verdict is Verdict.KNOWN
    assert a.decide(Addr("udp", "::1", 5060), "300", agent_phone=False).verdict is Verdict.KNOWN
    assert a.decide(CUSTOMER, "+4930123456", agent_phone=True).verdict is Verdict.KNOWN


def test_with_no_trusted_networks_loopback_is_unknown_too() -> None:
    a = Admission(settings(trusted=[]))
    assert a.decide(LOOPBACK, "300", agent_phone=False).verdict is Verdict.NOT_FOUND
    assert a.decide(LOOPBACK, "100", agent_phone=False).verdict is Verdict.PUBLIC


def test_public_numbers_are_exact_or_prefixes_without_visual_separators() -> None:
    a = Admission(settings(public_numbers=["+49(30)123-45", "0800*", "*98"]))
    admitted = {
        n: a.decide(CUSTOMER, n, agent_phone=False).admitted
        for n in (
            "+493012345",
            "+49-30-123.45",
            "+4930123456",
            "0800",
            "08001234",
            "0-800-99",
            "0801",
            "*98",
            "*981",
        )
    }
    assert admitted == {
        "+493012345": True,
        "+49-30-123.45": True,
        "+4930123456": False,
        "0800": True,
        "08001234": True,
        "0-800-99": True,
        "0801": False,
        "*98": True,
        "*981": False,  # a leading star is a digit; only a trailing one makes a prefix
    }


def test_any_lets_unknown_sources_reach_every_number() -> None:
    a = Admission(settings(unknown_sources="any"))
    assert a.decide(CUSTOMER, "300", agent_phone=False).verdict is Verdict.PUBLIC


def test_behind_a_trusted_proxy_the_phone_it_names_decides() -> None:
    a = Admission(settings(trusted=["10.0.0.0/8"]))
    stated = ("X-Callcenter-Source", "sip:203.0.113.9:5060")
    origin = a.origin(invite("300", stated), KAMAILIO)
    assert origin == Addr("udp", "203.0.113.9", 5060)
    assert a.decide(origin, "300", agent_phone=False).verdict is Verdict.NOT_FOUND
    # a phone on the proxy's own trusted network, stated by it, is known
    inside = a.origin(invite("300", ("X-Callcenter-Source", "sip:10.1.2.3:5060")), KAMAILIO)
    assert a.decide(inside, "300", agent_phone=False).verdict is Verdict.KNOWN
    # a phone cannot vouch for itself: the header counts only from a trusted network
    assert a.origin(invite("300", ("X-Callcenter-Source", "sip:10.1.2.3:5060")), CUSTOMER) == CUSTOMER


def test_the_dialled_number_is_the_request_uri_user_part() -> None:
    assert dialled_number("sip:100@192.0.2.1;user=phone") == "100"
    assert dialled_number("sip:192.0.2.1") == ""
    assert dialled_number("not a uri") == ""
    assert "" not in PublicNumbers(["100"], ["*"])  # nothing dialled is never public


# -- the scan ban ----------------------------------------------------------------------------------


def guard(**kw: Any) -> SipGuard:
    kw.setdefault("trusted", ())
    return SipGuard(GuardSettings(**kw))


def test_n_distinct_refused_numbers_within_the_window_ban_the_source() -> None:
    g = guard(number_scan_failures=3, auth_window_s=60.0, ban_s=600.0)
    assert [g.number_refused(CUSTOMER.host, n, t) for t, n in enumerate(["301", "302", "303"])] == [
        False,
        False,
        True,
    ]
    assert g.banned(CUSTOMER.host, 3.0) and not g.banned(CUSTOMER.host, 602.0)
    assert not g.banned("203.0.113.9", 3.0)  # per source
    assert g.stats["numbers_refused"] == 3 and g.stats["bans"] == 1


def test_redialling_one_number_or_scanning_slower_than_the_window_does_not_ban() -> None:
    g = guard(number_scan_failures=3, auth_window_s=60.0)
    assert not any(g.number_refused(CUSTOMER.host, "300", float(t)) for t in range(20))
    assert not any(g.number_refused("203.0.113.9", f"30{i}", i * 40.0) for i in range(10))
    assert not g.banned(CUSTOMER.host, 20.0) and not g.banned("203.0.113.9", 400.0)


def test_zero_disables_the_scan_ban_and_trusted_sources_are_never_banned() -> None:
    g = guard(number_scan_failures=0)
    assert not any(g.number_refused(CUSTOMER.host, str(n), 0.0) for n in range(100))
    t = guard(number_scan_failures=2, trusted=("127.0.0.0/8",))
    assert not any(t.number_refused("127.0.0.1", str(n), 0.0) for n in range(10))
    assert not g.banned(CUSTOMER.host, 0.0) and not t.banned("127.0.0.1", 0.0)


def test_refusals_are_logged_once_a_minute_per_source(caplog: pytest.LogCaptureFixture) -> None:
    g = guard(number_scan_failures=0)
    with caplog.at_level(logging.WARNING, logger="callcenter.sip.guard"):
        for t in range(50):
            g.number_refused(CUSTOMER.host, f"9{t}", t * 0.5)
        g.number_refused("203.0.113.9", "555", 1.0)
        g.number_refused(CUSTOMER.host, "777", 61.0)
    refused = [r.__dict__["cc_fields"] for r in caplog.records if r.getMessage() == "unknown_source_refused"]
    assert refused == [
        {"source": CUSTOMER.host, "number": "90", "unlogged": 0},
        {"source": "203.0.113.9", "number": "555", "unlogged": 0},
        {"source": CUSTOMER.host, "number": "777", "unlogged": 49},  # the minute's other 49 refusals
    ]


# -- the call manager ------------------------------------------------------------------------------


class FakeEndpoint:
    def __init__(self, g: SipGuard) -> None:
        self.guard = g
        self.now = 100.0


class FakeCall:
    def __init__(self, number: str, source: Addr, *headers: tuple[str, str]) -> None:
        self.invite = invite(number, *headers)
        self.source = source
        self.call_id = f"{number}@{source.host}"
        self.remote_tag = "f1"
        self.rejected: int | None = None

    def reject(self, status: int, reason: str | None = None, extra: Any = None) -> None:
        self.rejected = status


class FakeAgents:
    """AgentCalls as the manager sees it: which calls come from an agent's phone."""

    def __init__(self, phones: set[str]) -> None:
        self.phones = phones
        self.served: list[str] = []

    def claims(self, call: Any) -> bool:
        return bool(call.source.host in self.phones)

    def session(self, call: Any, deps: Any) -> Any:
        self.served.append(call.call_id)
        return StubSession(call, deps)


class StubSession:
    """Stands in for CallSession: records that the call was served (IVR, media) at all."""

    served: list[str] = []

    def __init__(self, call: Any, deps: Any) -> None:
        self.call_id = call.call_id
        StubSession.served.append(call.call_id)

    async def run(self) -> None:
        return None


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    StubSession.served = []
    monkeypatch.setattr(manager_module, "CallSession", StubSession)
    return StubSession.served


def make_manager(
    s: Settings, phones: frozenset[str] = frozenset()
) -> tuple[CallManager, FakeAgents, SipGuard]:
    p = s.sip.protection
    g = guard(number_scan_failures=p.number_scan_failures, trusted=tuple(p.trusted))
    deps = CallDeps(settings=s, media=None, writer=None, endpoint=FakeEndpoint(g))  # type: ignore[arg-type]
    m = CallManager(deps)
    agents = FakeAgents(set(phones))
    m.agent_calls = agents  # type: ignore[assignment]
    return m, agents, g


async def test_an_unknown_source_dialling_a_non_public_number_gets_404_and_no_call(served: list[str]) -> None:
    m, _, g = make_manager(settings())
    call = FakeCall("300", CUSTOMER)
    m.on_invite(call)  # type: ignore[arg-type]
    assert call.rejected == 404 and served == [] and m.active == 0
    assert g.stats["numbers_refused"] == 1


async def test_public_numbers_trusted_sources_and_agents_phones_are_served(served: list[str]) -> None:
    m, agents, g = make_manager(settings(public_numbers=["0800*"]), phones=frozenset({"192.0.2.50"}))
    calls = [
        FakeCall("100", CUSTOMER),  # an IVR number
        FakeCall("0800-1234", CUSTOMER),  # a listed prefix
        FakeCall("300", LOOPBACK),  # trusted
        FakeCall("+4930123456", Addr("udp", "192.0.2.50", 5060)),  # an agent's phone (AgentCalls)
    ]
    for call in calls:
        m.on_invite(call)  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the sessions' tasks run (and end)
    assert [c.rejected for c in calls] == [None] * 4
    assert served == ["100@198.51.100.7", "0800-1234@198.51.100.7", "300@127.0.0.1", "+4930123456@192.0.2.50"]
    assert agents.served == ["+4930123456@192.0.2.50"]
    assert g.stats["numbers_refused"] == 0


async def test_a_number_scan_is_banned_and_behind_a_proxy_the_banned_phone_gets_403(
    served: list[str],
) -> None:
    m, _, g = make_manager(settings(trusted=["10.0.0.0/8"], number_scan_failures=3))
    phone = ("X-Callcenter-Source", "sip:203.0.113.9:5060")
    scan = [FakeCall(f"90{i}", KAMAILIO, phone) for i in range(3)]
    for call in scan:
        m.on_invite(call)  # type: ignore[arg-type]
    assert [c.rejected for c in scan] == [404] * 3
    assert g.banned("203.0.113.9", 100.0) and not g.banned(KAMAILIO.host, 100.0)
    # the scanner, banned, is refused even a public number; other phones behind the proxy are not
    again = FakeCall("100", KAMAILIO, phone)
    other = FakeCall("100", KAMAILIO, ("X-Callcenter-Source", "sip:203.0.113.10:5060"))
    m.on_invite(again)  # type: ignore[arg-type]
    m.on_invite(other)  # type: ignore[arg-type]
    assert (again.rejected, other.rejected) == (403, None)
    assert served == [other.call_id]


async def test_any_keeps_the_old_behaviour(served: list[str]) -> None:
    m, _, g = make_manager(settings(unknown_sources="any"))
    call = FakeCall("300", CUSTOMER)
    m.on_invite(call)  # type: ignore[arg-type]
    assert call.rejected is None and served == [call.call_id]
