"""SipGuard: scanners dropped, per-source request and REGISTER rates, bans after failed digest
attempts, call caps with Retry-After, trusted networks, bounded memory. Time is passed in."""

from __future__ import annotations

from callcenter.sip.guard import GuardSettings, SipGuard, Verdict

ADMIT, DROP = Verdict.ADMIT, Verdict.DROP
HOST = "198.51.100.7"


def guard(**kw: object) -> SipGuard:
    kw.setdefault("trusted", ())
    return SipGuard(GuardSettings(**kw))  # type: ignore[arg-type]


def test_scanners_are_dropped_whatever_their_address_and_case() -> None:
    g = guard(trusted=("127.0.0.0/8",))
    assert g.check(HOST, "OPTIONS", "friendly-scanner", 0.0) is DROP
    assert g.check("127.0.0.1", "REGISTER", "SIPVicious 0.3.4", 0.0) is DROP
    assert g.check(HOST, "OPTIONS", "Linphone/5.2 (belle-sip)", 0.0) is ADMIT
    assert g.check(HOST, "OPTIONS", None, 0.0) is ADMIT
    assert g.stats["scanners"] == 2


def test_a_source_beyond_its_burst_is_dropped_until_its_bucket_refills() -> None:
    g = guard(requests_per_s=10.0, request_burst=5)
    assert [g.check(HOST, "INVITE", None, 0.0) for _ in range(7)] == [ADMIT] * 5 + [DROP] * 2
    assert g.check("203.0.113.9", "INVITE", None, 0.0) is ADMIT  # another source has its own bucket
    assert g.check(HOST, "INVITE", None, 0.05) is DROP  # half a token back
    assert g.check(HOST, "INVITE", None, 0.1) is ADMIT  # one token back
    assert g.check(HOST, "INVITE", None, 10.0) is ADMIT
    assert g.stats["rate_limited"] == 3


def test_acks_are_never_rate_limited() -> None:
    g = guard(requests_per_s=1.0, request_burst=1)
    assert g.check(HOST, "INVITE", None, 0.0) is ADMIT
    assert g.check(HOST, "INVITE", None, 0.0) is DROP
    assert g.check(HOST, "ACK", None, 0.0) is ADMIT


def test_registers_have_their_own_stricter_rate() -> None:
    g = guard(registers_per_s=1.0, register_burst=2, requests_per_s=100.0, request_burst=100)
    assert [g.check(HOST, "REGISTER", None, 0.0) for _ in range(3)] == [ADMIT, ADMIT, DROP]
    assert g.check(HOST, "OPTIONS", None, 0.0) is ADMIT  # other methods still pass
    assert g.check(HOST, "REGISTER", None, 1.0) is ADMIT


def test_five_failed_attempts_within_the_window_ban_the_source_until_the_ban_ends() -> None:
    g = guard(auth_failures=5, auth_window_s=60.0, ban_s=600.0)
    assert [g.auth_failed(HOST, float(t), username="al") for t in range(5)] == [False] * 4 + [True]
    assert g.banned(HOST, 5.0)
    assert g.check(HOST, "REGISTER", None, 5.0) is DROP
    assert g.check(HOST, "REGISTER", None, 603.9) is DROP
    assert g.check(HOST, "REGISTER", None, 604.0) is ADMIT
    assert g.stats["bans"] == 1 and g.stats["banned_dropped"] == 2


def test_failures_spread_wider_than_the_window_do_not_ban() -> None:
    g = guard(auth_failures=3, auth_window_s=60.0)
    assert not any(g.auth_failed(HOST, t) for t in (0.0, 40.0, 80.0, 120.0, 160.0))
    assert not g.banned(HOST, 160.0)


def test_trusted_networks_are_never_rate_limited_or_banned() -> None:
    g = guard(trusted=("10.0.0.0/8", "2001:db8::/32"), requests_per_s=1.0, request_burst=1, auth_failures=1)
    assert all(g.check("10.1.2.3", "INVITE", None, 0.0) is ADMIT for _ in range(50))
    assert not g.auth_failed("2001:db8::5", 0.0)
    assert g.check("2001:db8::5", "INVITE", None, 0.0) is ADMIT
    assert g.auth_failed(HOST, 0.0)  # the others still are


def test_loopback_is_trusted_by_default() -> None:
    g = SipGuard(GuardSettings(requests_per_s=1.0, request_burst=1))
    assert all(g.check("127.0.0.1", "INVITE", None, 0.0) is ADMIT for _ in range(10))
    assert all(g.check("::1", "INVITE", None, 0.0) is ADMIT for _ in range(10))


def test_calls_beyond_a_cap_get_retry_after() -> None:
    g = guard(max_calls_per_source=2, max_calls=10, retry_after_s=17, trusted=("10.0.0.0/8",))
    assert g.call_refused(HOST, from_source=1, total=5) is None
    assert g.call_refused(HOST, from_source=2, total=5) == 17
    assert g.call_refused("10.0.0.1", from_source=9, total=9) is None  # trusted: no per-source cap
    assert g.call_refused("10.0.0.1", from_source=0, total=10) == 17  # but the total applies to all
    assert g.stats["calls_refused"] == 2


def test_zero_caps_mean_no_cap_and_disabled_means_no_checks() -> None:
    assert guard(max_calls_per_source=0, max_calls=0).call_refused(HOST, 10_000, 10_000) is None
    off = guard(enabled=False, requests_per_s=1.0, request_burst=1, auth_failures=1)
    assert all(off.check(HOST, "INVITE", "friendly-scanner", 0.0) is ADMIT for _ in range(5))
    assert not off.auth_failed(HOST, 0.0)


def test_a_flood_of_spoofed_sources_keeps_memory_bounded_and_bans_in_place() -> None:
    g = guard(max_tracked=100, auth_failures=1, ban_s=1000.0)
    g.auth_failed(HOST, 0.0)
    for i in range(5000):
        g.check(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", "INVITE", None, 1.0)
    assert len(list(g.tracked())) <= 100
    assert g.check(HOST, "INVITE", None, 2.0) is DROP  # the banned source was not forgotten
