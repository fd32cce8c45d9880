"""The registrar's binding table (RFC 3261 §10.3) with a hand-stepped clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callcenter.sip.registrar import ContactRequest, RegisterResult, Registrar, normalize_aor

AOR = "sip:alice@example.com"
SRC = ("203.0.113.7", 40000)


def reg(
    registrar: Registrar,
    *contacts: ContactRequest | str,
    expires: int | None = None,
    call_id: str = "call-1",
    cseq: int = 1,
    now: float = 1000.0,
    wildcard: bool = False,
    aor: str = AOR,
    source: tuple[str, int] = SRC,
    transport: str = "UDP",
) -> RegisterResult:
    requests = [ContactRequest(c) if isinstance(c, str) else c for c in contacts]
    return registrar.register(aor, requests, wildcard, expires, call_id, cseq, now, source, transport)


@pytest.fixture
def registrar() -> Registrar:
    return Registrar(min_expires=60, max_expires=3600, default_expires=1800)


# -- expiry choice ------------------------------------------------------------------------------------


def test_contact_expires_beats_header_beats_default(registrar: Registrar) -> None:
    result = reg(
        registrar,
        ContactRequest("sip:a@10.0.0.1", expires=120),
        ContactRequest("sip:a@10.0.0.2"),
        expires=300,
    )
    assert result.status == 200
    granted = {b.contact: b.remaining(1000.0) for b in result.bindings}
    assert granted == {"sip:a@10.0.0.1": 120, "sip:a@10.0.0.2": 300}
    default = reg(registrar, "sip:a@10.0.0.3", cseq=2)
    assert {b.contact: b.remaining(1000.0) for b in default.bindings}["sip:a@10.0.0.3"] == 1800


def test_expiry_is_capped_at_max(registrar: Registrar) -> None:
    result = reg(registrar, "sip:a@10.0.0.1", expires=86400)
    assert result.contact_headers() == ["<sip:a@10.0.0.1>;expires=3600"]


def test_too_brief_is_423_with_min_expires_and_changes_nothing(registrar: Registrar) -> None:
    reg(registrar, "sip:a@10.0.0.1", expires=600)
    result = reg(registrar, "sip:a@10.0.0.2", ContactRequest("sip:a@10.0.0.3", expires=30), cseq=2)
    assert (result.status, result.reason, result.min_expires) == (423, "Interval Too Brief", 60)
    assert [b.contact for b in registrar.lookup(AOR, 1000.0)] == ["sip:a@10.0.0.1"]


def test_too_brief_can_be_raised_to_the_minimum_instead(registrar: Registrar) -> None:
    result = registrar.register(
        AOR, [ContactRequest("sip:a@h")], False, 10, "c", 1, 0.0, SRC, "udp", reject_brief=False
    )
    assert result.status == 200 and result.bindings[0].remaining(0.0) == 60


def test_no_423_for_an_hour_or_more_even_below_a_larger_minimum() -> None:
    # RFC 3261 §10.3 step 7: 423 only if the interval is "smaller than one hour".
    registrar = Registrar(min_expires=7200, max_expires=86400, default_expires=7200)
    assert reg(registrar, "sip:a@h", expires=3600).status == 200
    assert reg(registrar, "sip:a@h", expires=3599, cseq=2).status == 423


def test_expires_zero_removes_only_that_contact(registrar: Registrar) -> None:
    reg(registrar, "sip:a@10.0.0.1", "sip:a@10.0.0.2")
    result = reg(registrar, ContactRequest("sip:a@10.0.0.1", expires=0), cseq=2, now=1010.0)
    assert [b.contact for b in result.removed] == ["sip:a@10.0.0.1"]
    assert [b.contact for b in result.bindings] == ["sip:a@10.0.0.2"]
    # Removing a contact that is not bound is fine and removes nothing.
    again = reg(registrar, "sip:a@10.0.0.9", expires=0, cseq=3, now=1011.0)
    assert again.status == 200 and again.removed == ()
    assert [b.contact for b in again.bindings] == ["sip:a@10.0.0.2"]


def test_negative_expires_is_a_bad_request(registrar: Registrar) -> None:
    assert reg(registrar, "sip:a@h", expires=-1).status == 400
    assert reg(registrar, ContactRequest("sip:a@h", expires=-5)).status == 400


def test_inconsistent_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        Registrar(min_expires=600, max_expires=60, default_expires=60)
    with pytest.raises(ValueError):
        Registrar(min_expires=60, max_expires=600, default_expires=3600)


# -- wildcard -----------------------------------------------------------------------------------------


def test_wildcard_with_expires_zero_removes_everything(registrar: Registrar) -> None:
    reg(registrar, "sip:a@10.0.0.1", "sip:a@10.0.0.2")
    result = reg(registrar, wildcard=True, expires=0, cseq=2)
    assert result.status == 200
    assert sorted(b.contact for b in result.removed) == ["sip:a@10.0.0.1", "sip:a@10.0.0.2"]
    assert result.bindings == () and registrar.lookup(AOR, 1000.0) == []
    assert registrar.next_expiry() is None


@pytest.mark.parametrize(("expires", "others"), [(None, ()), (60, ()), (0, ("sip:a@10.0.0.3",))])
def test_wildcard_rules_are_enforced(registrar: Registrar, expires: int | None, others: tuple[str]) -> None:
    reg(registrar, "sip:a@10.0.0.1")
    result = reg(registrar, *others, wildcard=True, expires=expires, cseq=2)
    assert result.status == 400
    assert len(registrar.lookup(AOR, 1000.0)) == 1


def test_wildcard_respects_cseq_order(registrar: Registrar) -> None:
    reg(registrar, "sip:a@10.0.0.1", cseq=5)
    assert reg(registrar, wildcard=True, expires=0, cseq=5).status == 500
    assert len(registrar.lookup(AOR, 1000.0)) == 1
    # Another Call-ID (another device) may clear everything regardless of CSeq.
    assert reg(registrar, wildcard=True, expires=0, cseq=1, call_id="call-2").status == 200


# -- Call-ID / CSeq ordering --------------------------------------------------------------------------


@pytest.mark.parametrize("cseq", [4, 5])
def test_same_call_id_needs_a_higher_cseq(registrar: Registrar, cseq: int) -> None:
    reg(registrar, "sip:a@10.0.0.1", cseq=5, expires=300)
    late = reg(registrar, "sip:a@10.0.0.1", cseq=cseq, expires=900, now=1010.0)
    assert late.status == 500
    assert registrar.lookup(AOR, 1010.0)[0].remaining(1010.0) == 290  # unchanged
    ok = reg(registrar, "sip:a@10.0.0.1", cseq=6, expires=900, now=1010.0)
    assert ok.status == 200 and ok.bindings[0].remaining(1010.0) == 900


def test_other_call_id_may_use_any_cseq(registrar: Registrar) -> None:
    reg(registrar, "sip:a@10.0.0.1", cseq=50)
    assert reg(registrar, "sip:a@10.0.0.1", cseq=1, call_id="rebooted").status == 200


def test_out_of_order_request_changes_nothing(registrar: Registrar) -> None:
    reg(registrar, "sip:a@10.0.0.1", cseq=5)
    result = reg(registrar, "sip:a@10.0.0.2", "sip:a@10.0.0.1", cseq=3)
    assert result.status == 500
    assert [b.contact for b in registrar.lookup(AOR, 1000.0)] == ["sip:a@10.0.0.1"]


# -- bindings -----------------------------------------------------------------------------------------


def test_several_contacts_per_aor_and_query(registrar: Registrar) -> None:
    first = reg(registrar, "sip:a@10.0.0.1", call_id="desk", now=1000.0)
    second = reg(registrar, "sip:a@10.0.0.2", call_id="mobile", now=1005.0, source=("198.51.100.1", 5062))
    assert [b.contact for b in first.added] == ["sip:a@10.0.0.1"]
    assert [b.contact for b in second.added] == ["sip:a@10.0.0.2"]
    assert {b.contact for b in second.bindings} == {"sip:a@10.0.0.1", "sip:a@10.0.0.2"}
    # A REGISTER without Contact lists the bindings and changes nothing.
    query = reg(registrar, call_id="query", now=1010.0)
    assert query.status == 200 and query.added == query.removed == ()
    assert sorted(query.contact_headers()) == [
        "<sip:a@10.0.0.1>;expires=1790",
        "<sip:a@10.0.0.2>;expires=1795",
    ]


def test_refresh_is_not_a_new_binding_and_keeps_one_entry(registrar: Registrar) -> None:
    reg(registrar, "sip:a@10.0.0.1", cseq=1, now=1000.0)
    refresh = reg(registrar, "<sip:a@10.0.0.1>", cseq=2, now=1500.0)
    assert refresh.added == () and refresh.removed == ()
    assert len(refresh.bindings) == 1 and refresh.bindings[0].remaining(1500.0) == 1800


def test_contact_identity_follows_uri_equality(registrar: Registrar) -> None:
    reg(registrar, "sip:a@Host.Example;transport=tcp;ob", cseq=1)
    same = reg(registrar, "sip:a@host.example;OB;Transport=TCP", cseq=2)
    assert len(same.bindings) == 1 and same.added == ()
    other_user = reg(registrar, "sip:A@host.example;ob;transport=tcp", cseq=3)
    assert len(other_user.bindings) == 2  # the user part is case-sensitive


def test_instance_id_replaces_the_binding_after_a_nat_rebind(registrar: Registrar) -> None:
    params = {"+sip.instance": '"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"', "reg-id": "1"}
    reg(registrar, ContactRequest("sip:a@192.0.2.1:5060", params=params), source=("192.0.2.1", 5060))
    moved = reg(
        registrar, ContactRequest("sip:a@192.0.2.1:6000", params=params), cseq=2, source=("192.0.2.1", 6000)
    )
    assert [b.contact for b in moved.bindings] == ["sip:a@192.0.2.1:6000"]
    assert moved.bindings[0].source == ("192.0.2.1", 6000)
    assert moved.contact_headers() == [
        '<sip:a@192.0.2.1:6000>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000a95a0e128>";reg-id=1;expires=1800'
    ]


def test_binding_remembers_source_transport_and_request(registrar: Registrar) -> None:
    reg(registrar, "sip:a@10.0.0.1:5070", source=("203.0.113.9", 61000), transport="TCP", call_id="x", cseq=7)
    (binding,) = registrar.lookup(AOR, 1000.0)
    assert (binding.source, binding.transport, binding.call_id, binding.cseq) == (
        ("203.0.113.9", 61000),
        "tcp",
        "x",
        7,
    )
    assert binding.aor == "alice@example.com"


def test_contact_headers_keep_params_and_q(registrar: Registrar) -> None:
    result = reg(
        registrar,
        ContactRequest(
            "sip:a@h", q=0.5, expires=120, params={"expires": "120", "q": "0.5", "+sip.ice": None}
        ),
    )
    assert result.contact_headers() == ["<sip:a@h>;+sip.ice;q=0.5;expires=120"]


def test_aors_are_normalised(registrar: Registrar) -> None:
    reg(registrar, "sip:a@h", aor="<SIP:alice@EXAMPLE.com;transport=tcp>")
    assert len(registrar.lookup("alice@example.com", 1000.0)) == 1
    assert len(registrar.lookup("sip:alice@Example.Com", 1000.0)) == 1
    assert registrar.lookup("sip:ALICE@example.com", 1000.0) == []  # user part is case-sensitive
    assert normalize_aor("sip:bob@Example.COM:5060;x=y?h=v") == "bob@example.com:5060"
    assert normalize_aor("sips:bob@example.com") == "sips:bob@example.com"


def test_too_many_contacts_evicts_the_oldest() -> None:
    registrar = Registrar(60, 3600, 3600, max_contacts_per_aor=2)
    reg(registrar, "sip:a@1", call_id="c1", now=1.0)
    reg(registrar, "sip:a@2", call_id="c2", now=2.0)
    result = reg(registrar, "sip:a@3", call_id="c3", now=3.0)
    assert [b.contact for b in result.removed] == ["sip:a@1"]
    assert {b.contact for b in registrar.lookup(AOR, 3.0)} == {"sip:a@2", "sip:a@3"}
    # One request with more contacts than allowed is refused as a whole.
    assert reg(registrar, "sip:a@4", "sip:a@5", "sip:a@6", call_id="c4", now=4.0).status == 403


# -- lookup and expiry --------------------------------------------------------------------------------


def test_lookup_orders_by_q_then_most_recent(registrar: Registrar) -> None:
    reg(registrar, ContactRequest("sip:a@low", q=0.1), call_id="1", now=1000.0)
    reg(registrar, ContactRequest("sip:a@old"), call_id="2", now=1001.0)
    reg(registrar, ContactRequest("sip:a@high", q=1.0), call_id="3", now=1002.0)
    reg(registrar, ContactRequest("sip:a@mid", q=0.5), call_id="4", now=1003.0)
    reg(registrar, ContactRequest("sip:a@new"), call_id="5", now=1004.0)
    order = [b.contact for b in registrar.lookup(AOR, 1005.0)]
    assert order == ["sip:a@new", "sip:a@high", "sip:a@old", "sip:a@mid", "sip:a@low"]
    # Refreshing moves a binding ahead of its equals.
    reg(registrar, ContactRequest("sip:a@old"), call_id="2", cseq=2, now=1006.0)
    assert [b.contact for b in registrar.lookup(AOR, 1006.0)][:2] == ["sip:a@old", "sip:a@new"]


def test_expire_sweeps_due_bindings_and_drives_the_timer(registrar: Registrar) -> None:
    assert registrar.next_expiry() is None
    reg(registrar, "sip:a@1", expires=100, call_id="1", now=0.0)
    reg(registrar, "sip:b@1", expires=200, call_id="2", now=0.0, aor="sip:bob@example.com")
    assert registrar.next_expiry() == 100.0
    assert registrar.expire(99.0) == []
    assert len(registrar.lookup(AOR, 99.9)) == 1
    assert registrar.lookup(AOR, 100.0) == []  # expired, even before the sweep
    swept = registrar.expire(100.0)
    assert [(aor, b.contact) for aor, b in swept] == [("alice@example.com", "sip:a@1")]
    assert registrar.expire(100.0) == []  # reported once
    assert registrar.next_expiry() == 200.0
    assert [b.contact for _, b in registrar.expire(1000.0)] == ["sip:b@1"]
    assert registrar.next_expiry() is None and len(registrar) == 0


def test_refresh_moves_the_expiry(registrar: Registrar) -> None:
    reg(registrar, "sip:a@1", expires=100, cseq=1, now=0.0)
    reg(registrar, "sip:a@1", expires=100, cseq=2, now=90.0)
    assert registrar.next_expiry() == 190.0
    assert registrar.expire(150.0) == []
    assert len(registrar.expire(190.0)) == 1


def test_expired_binding_replaced_before_the_sweep_is_reported_removed(registrar: Registrar) -> None:
    reg(registrar, "sip:a@1", expires=100, cseq=1, now=0.0)
    # Same Call-ID, lower CSeq: the old binding has expired, so it no longer blocks the request.
    later = reg(registrar, "sip:a@1", expires=100, cseq=1, now=150.0)
    assert later.status == 200
    assert [b.contact for b in later.removed] == ["sip:a@1"]
    assert [b.contact for b in later.added] == ["sip:a@1"]
    assert registrar.expire(200.0) == []


def test_many_refreshes_keep_the_timer_right(registrar: Registrar) -> None:
    for i in range(5000):
        reg(registrar, "sip:a@1", expires=600, cseq=i + 1, now=float(i))
    assert registrar.next_expiry() == 4999.0 + 600
    assert registrar.expire(5598.0) == []
    assert len(registrar.expire(5599.0)) == 1


# Every binding that appears is reported exactly once as gone: removed by a request or swept by expire().
# The server turns these reports into "agent online/offline" events, so none may be lost or doubled.
_ops = st.lists(
    st.tuples(
        st.sampled_from(["alice", "bob"]),
        st.lists(
            st.tuples(st.sampled_from(["sip:x@1", "sip:x@2", "sip:x@3"]), st.sampled_from([None, 0, 60, 90]))
        ),
        st.sampled_from([None, 0, 30, 60, 120]),
        st.booleans(),  # wildcard
        st.sampled_from(["c1", "c2"]),
        st.integers(0, 200),  # seconds since the previous operation
        st.booleans(),  # sweep before this operation
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_every_binding_is_reported_gone_exactly_once(ops: list[tuple]) -> None:
    registrar = Registrar(60, 3600, 90, max_contacts_per_aor=2)
    now, cseq = 0.0, 0
    alive: dict[tuple[str, str], int] = {}

    def gone(aor: str, key: str) -> None:
        assert alive.pop((aor, key)) == 1

    for user, contacts, header_expires, wildcard, call_id, step, sweep in ops:
        now += step
        cseq += 1
        if sweep:
            for aor, binding in registrar.expire(now):
                assert binding.expires_at <= now
                gone(aor, binding.key)
        requests = [ContactRequest(uri, expires=e) for uri, e in contacts]
        result = registrar.register(
            f"{user}@example.com", requests, wildcard, header_expires, call_id, cseq, now, SRC, "udp"
        )
        for binding in result.removed:
            gone(result.aor, binding.key)
        for binding in result.added:
            assert (result.aor, binding.key) not in alive
            alive[(result.aor, binding.key)] = 1
        if result.ok:
            assert all(b.expires_at > now for b in result.bindings)
            assert len(result.bindings) <= 2
        for aor in ("alice@example.com", "bob@example.com"):
            assert all(b.expires_at > now for b in registrar.lookup(aor, now))
    for aor, binding in registrar.expire(now + 10_000):
        gone(aor, binding.key)
    assert alive == {} and len(registrar) == 0 and registrar.next_expiry() is None
