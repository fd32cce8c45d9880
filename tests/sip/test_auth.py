"""Digest authentication (RFC 2617, RFC 7616, RFC 8760) against independently computed responses."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callcenter.sip.auth import (
    AuthParseError,
    AuthStatus,
    DigestAuthenticator,
    DigestCredentials,
    compute_ha1,
    parse_auth_params,
)

REALM = "callcenter"
URI = "sip:callcenter.example"
USERS = {"alice": "s3cret", "bob": "hunter2"}
HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def h(algorithm: str, text: str) -> str:
    return HASHES[algorithm](text.encode()).hexdigest()


def lookup(username: str) -> tuple[str, str] | None:
    password = USERS.get(username)
    if password is None:
        return None
    return h("MD5", f"{username}:{REALM}:{password}"), h("SHA-256", f"{username}:{REALM}:{password}")


def authorization(
    nonce: str,
    *,
    username: str = "alice",
    password: str = "s3cret",
    realm: str = REALM,
    method: str = "REGISTER",
    uri: str = URI,
    algorithm: str = "MD5",
    qop: bool = True,
    nc: int = 1,
    cnonce: str = "0a4f113b",
) -> str:
    """A UAC's Authorization value, computed here with hashlib alone (RFC 2617 §3.2.2)."""
    ha1 = h(algorithm, f"{username}:{realm}:{password}")
    ha2 = h(algorithm, f"{method}:{uri}")
    base = (
        f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", algorithm={algorithm}'
    )
    if not qop:
        return base + f', response="{h(algorithm, f"{ha1}:{nonce}:{ha2}")}"'
    response = h(algorithm, f"{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}")
    return base + f', qop=auth, nc={nc:08x}, cnonce="{cnonce}", response="{response}"'


def nonce_of(auth: DigestAuthenticator, now: float) -> str:
    return parse_auth_params(auth.challenge_headers(now)[0])[1]["nonce"]


@pytest.fixture
def auth() -> DigestAuthenticator:
    return DigestAuthenticator(REALM, secret=b"k" * 32, nonce_ttl_s=300)


# -- HA1 and published vectors ------------------------------------------------------------------------


def test_compute_ha1_matches_the_definition() -> None:
    assert compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life", "MD5") == h(
        "MD5", "Mufasa:testrealm@host.com:Circle Of Life"
    )
    assert compute_ha1("Mufasa", "http-auth@example.org", "Circle of Life", "sha-256") == h(
        "SHA-256", "Mufasa:http-auth@example.org:Circle of Life"
    )
    with pytest.raises(ValueError):
        compute_ha1("a", "b", "c", "SHA-512")


# A correct digest for a nonce we never issued is "stale" (RFC 2617 §3.2.1): these published requests
# therefore come back STALE with the right password and FAILED with any other.
VECTORS = [
    # RFC 2617 §3.5
    (
        "testrealm@host.com",
        "Circle Of Life",
        "GET",
        'Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", '
        'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"',
    ),
    # RFC 7616 §3.9.1, SHA-256 then MD5
    (
        "http-auth@example.org",
        "Circle of Life",
        "GET",
        'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", '
        'algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, '
        'cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, '
        'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"',
    ),
    (
        "http-auth@example.org",
        "Circle of Life",
        "GET",
        'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=MD5, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, '
        'cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, '
        'response="8ca523f5e9506fed4657c9700eebdbec", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"',
    ),
    # curl's test 2061: SHA-256 without qop (the RFC 2069 form)
    (
        "testrealm",
        "testpass",
        "GET",
        'Digest username="testuser", realm="testrealm", nonce="1053604145", uri="/2061", '
        'response="9dc55255f1a2537b838311674b621d45346b862a81631bb20e4ce356ef25062d", algorithm="SHA-256"',
    ),
]


@pytest.mark.parametrize(("realm", "password", "method", "header"), VECTORS)
def test_published_vectors(realm: str, password: str, method: str, header: str) -> None:
    auth = DigestAuthenticator(realm)
    user = parse_auth_params(header)[1]["username"]
    uri = parse_auth_params(header)[1]["uri"]

    def ha1s(pw: str) -> tuple[str, str]:
        return compute_ha1(user, realm, pw, "MD5"), compute_ha1(user, realm, pw, "SHA-256")

    right = auth.check(method, uri, header, 0.0, lambda name: ha1s(password) if name == user else None)
    assert right.status is AuthStatus.STALE and right.username == user
    wrong = auth.check(method, uri, header, 0.0, lambda name: ha1s(password + "x"))
    assert wrong.status is AuthStatus.FAILED
    other_method = auth.check("POST", uri, header, 0.0, lambda name: ha1s(password))
    assert other_method.status is AuthStatus.FAILED


# -- the full exchange --------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
@pytest.mark.parametrize("qop", [True, False])
def test_challenge_then_response_is_accepted(auth: DigestAuthenticator, algorithm: str, qop: bool) -> None:
    nonce = nonce_of(auth, 1000.0)
    header = authorization(nonce, algorithm=algorithm, qop=qop)
    result = auth.check("REGISTER", URI, header, 1001.0, lookup)
    assert result.status is AuthStatus.OK and result.ok
    assert result.username == "alice"


def test_challenges_sha256_first_then_md5(auth: DigestAuthenticator) -> None:
    values = auth.challenge_headers(1000.0)
    parsed = [parse_auth_params(v) for v in values]
    assert [p[0] for p in parsed] == ["Digest", "Digest"]
    assert [p[1]["algorithm"] for p in parsed] == ["SHA-256", "MD5"]
    for _, params in parsed:
        assert params["realm"] == REALM and params["qop"] == "auth" and "stale" not in params
    assert all(parse_auth_params(v)[1]["stale"] == "true" for v in auth.challenge_headers(1000.0, stale=True))
    # A fresh nonce per challenge.
    assert nonce_of(auth, 1000.0) != nonce_of(auth, 1000.0)


def test_algorithm_preference_is_configurable() -> None:
    auth = DigestAuthenticator(REALM, algorithms=["md5"])
    values = auth.challenge_headers(0.0)
    assert len(values) == 1 and parse_auth_params(values[0])[1]["algorithm"] == "MD5"
    # A response with an algorithm that was not offered gets a new challenge.
    header = authorization(nonce_of(auth, 0.0), algorithm="SHA-256")
    assert auth.check("REGISTER", URI, header, 0.0, lookup).status is AuthStatus.CHALLENGE


def test_realm_is_quoted_in_challenges() -> None:
    auth = DigestAuthenticator('odd "realm" \\ here')
    assert parse_auth_params(auth.challenge_headers(0.0)[0])[1]["realm"] == 'odd "realm" \\ here'


def test_two_step_api_lets_the_lookup_happen_elsewhere(auth: DigestAuthenticator) -> None:
    header = authorization(nonce_of(auth, 1000.0), username="bob", password="hunter2")
    step = auth.inspect("REGISTER", URI, [header], 1000.5)
    assert isinstance(step, DigestCredentials) and step.username == "bob"
    ha1s = lookup(step.username)  # in the real server: a worker thread
    assert auth.verify(step, ha1s, 1001.0).ok


def test_each_algorithm_checks_its_own_ha1(auth: DigestAuthenticator) -> None:
    good_md5 = h("MD5", f"alice:{REALM}:s3cret")
    nonce = nonce_of(auth, 0.0)
    md5 = auth.check("REGISTER", URI, authorization(nonce, algorithm="MD5"), 0.0, lambda u: (good_md5, "00"))
    sha = auth.check(
        "REGISTER", URI, authorization(nonce, algorithm="SHA-256"), 0.0, lambda u: (good_md5, "00")
    )
    assert md5.ok and sha.status is AuthStatus.FAILED


# -- nonces -------------------------------------------------------------------------------------------


def test_nonce_expires_after_ttl_and_is_reported_stale(auth: DigestAuthenticator) -> None:
    nonce = nonce_of(auth, 1000.0)
    assert auth.check("REGISTER", URI, authorization(nonce, nc=1), 1299.0, lookup).ok
    late = auth.check("REGISTER", URI, authorization(nonce, nc=2), 1301.0, lookup)
    assert late.status is AuthStatus.STALE and late.username == "alice"
    # ... but an expired nonce with a wrong password is a failure, not a hint to retry.
    wrong = auth.check("REGISTER", URI, authorization(nonce, nc=3, password="nope"), 1301.0, lookup)
    assert wrong.status is AuthStatus.FAILED


def test_nonce_from_another_secret_is_not_accepted(auth: DigestAuthenticator) -> None:
    other = DigestAuthenticator(REALM, secret=b"x" * 32)
    forged = nonce_of(other, 1000.0)
    assert other.check("REGISTER", URI, authorization(forged), 1000.0, lookup).ok  # sanity: valid there
    attacker = auth.check("REGISTER", URI, authorization(forged, password="guess"), 1000.0, lookup)
    assert attacker.status is AuthStatus.FAILED
    # The right password on a nonce from before a restart: stale, so the phone retries without prompting.
    restarted = auth.check("REGISTER", URI, authorization(forged, nc=2), 1000.0, lookup)
    assert restarted.status is AuthStatus.STALE


def test_nonce_is_bound_to_the_realm() -> None:
    a = DigestAuthenticator("a", secret=b"s" * 32)
    b = DigestAuthenticator("b", secret=b"s" * 32)
    nonce = nonce_of(a, 0.0)
    header = authorization(nonce, realm="b")

    def ha1s(user: str) -> tuple[str, str]:
        return h("MD5", f"{user}:b:s3cret"), h("SHA-256", f"{user}:b:s3cret")

    assert b.check("REGISTER", URI, header, 0.0, ha1s).status is AuthStatus.STALE


def test_tampered_nonce_is_not_valid(auth: DigestAuthenticator) -> None:
    nonce = nonce_of(auth, 1000.0)
    tampered = nonce[:3] + ("A" if nonce[3] != "A" else "B") + nonce[4:]
    assert auth.check("REGISTER", URI, authorization(tampered), 1000.0, lookup).status is AuthStatus.STALE


# -- nonce counts -------------------------------------------------------------------------------------


def test_replayed_or_decreasing_nc_is_refused(auth: DigestAuthenticator) -> None:
    nonce = nonce_of(auth, 0.0)
    first = authorization(nonce, nc=1)
    assert auth.check("REGISTER", URI, first, 1.0, lookup).ok
    assert auth.check("REGISTER", URI, first, 2.0, lookup).status is AuthStatus.STALE
    assert auth.check("REGISTER", URI, authorization(nonce, nc=5), 3.0, lookup).ok
    assert auth.check("REGISTER", URI, authorization(nonce, nc=4), 4.0, lookup).status is AuthStatus.STALE
    assert auth.check("REGISTER", URI, authorization(nonce, nc=6), 5.0, lookup).ok
    # Another cnonce on the same nonce counts on its own.
    assert auth.check("REGISTER", URI, authorization(nonce, nc=1, cnonce="other"), 6.0, lookup).ok


def test_replay_protection_survives_a_full_nc_table() -> None:
    auth = DigestAuthenticator(REALM, nc_cache_size=2)
    headers = [authorization(nonce_of(auth, float(t)), nc=1) for t in range(5)]
    for t, header in enumerate(headers):
        assert auth.check("REGISTER", URI, header, 10.0 + t, lookup).ok
    # The oldest entries were evicted to keep the table bounded; their replays must still fail.
    for header in headers:
        assert not auth.check("REGISTER", URI, header, 20.0, lookup).ok
    # A nonce issued after the evictions works as usual.
    assert auth.check("REGISTER", URI, authorization(nonce_of(auth, 30.0)), 30.0, lookup).ok


def test_failed_attempts_do_not_consume_nonce_counts(auth: DigestAuthenticator) -> None:
    nonce = nonce_of(auth, 0.0)
    assert not auth.check("REGISTER", URI, authorization(nonce, nc=1, password="bad"), 0.0, lookup).ok
    assert auth.check("REGISTER", URI, authorization(nonce, nc=1), 0.0, lookup).ok


# -- what reaches the authenticator -------------------------------------------------------------------


def test_wrong_password_and_unknown_user_look_the_same(auth: DigestAuthenticator) -> None:
    nonce = nonce_of(auth, 0.0)
    wrong = auth.check("REGISTER", URI, authorization(nonce, password="nope"), 0.0, lookup)
    unknown = auth.check("REGISTER", URI, authorization(nonce, username="mallory"), 0.0, lookup)
    assert wrong.status is unknown.status is AuthStatus.FAILED
    assert wrong.reason == unknown.reason


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_unknown_user_cannot_pass_with_a_guessable_placeholder_hash(
    auth: DigestAuthenticator, algorithm: str
) -> None:
    nonce = nonce_of(auth, 0.0)
    for placeholder in ("0" * 32, "0" * 64, ""):
        ha2 = h(algorithm, f"REGISTER:{URI}")
        response = h(algorithm, f"{placeholder}:{nonce}:00000001:c:auth:{ha2}")
        header = (
            f'Digest username="mallory", realm="{REALM}", nonce="{nonce}", uri="{URI}", '
            f'algorithm={algorithm}, qop=auth, nc=00000001, cnonce="c", response="{response}"'
        )
        assert auth.check("REGISTER", URI, header, 0.0, lookup).status is AuthStatus.FAILED
        # An agent whose stored hash is empty for this algorithm cannot log in with it either.
        empty = auth.check("REGISTER", URI, header.replace("mallory", "alice"), 0.0, lambda u: ("", ""))
        assert empty.status is AuthStatus.FAILED


@pytest.mark.parametrize(
    "headers",
    [
        None,
        [],
        ["Basic YWxpY2U6czNjcmV0"],
        ['Digest username="alice", realm="elsewhere", nonce="n"'],
        ['Digest username="alice", nonce="n"'],
    ],
)
def test_no_credentials_for_our_realm_means_challenge(
    auth: DigestAuthenticator, headers: list[str] | None
) -> None:
    assert auth.check("REGISTER", URI, headers, 0.0, lookup).status is AuthStatus.CHALLENGE


def test_credentials_for_our_realm_are_found_among_several(auth: DigestAuthenticator) -> None:
    ours = authorization(nonce_of(auth, 0.0))
    others = [
        'Digest username="x", realm="proxy.example", nonce="n", uri="sip:x", response="00"',
        "Basic Zm9v",
    ]
    assert auth.check("REGISTER", URI, [*others, ours], 0.0, lookup).ok


@pytest.mark.parametrize(
    "request_uri",
    ["sip:callcenter.example", "sip:CallCenter.Example:5060", "<sip:callcenter.example;transport=tcp>"],
)
def test_uri_matches_the_request_uri_loosely(auth: DigestAuthenticator, request_uri: str) -> None:
    header = authorization(nonce_of(auth, 0.0))
    assert auth.check("REGISTER", request_uri, header, 0.0, lookup).ok


def test_uri_for_another_target_is_refused(auth: DigestAuthenticator) -> None:
    header = authorization(nonce_of(auth, 0.0), uri="sip:other.example")
    result = auth.check("REGISTER", URI, header, 0.0, lookup)
    assert result.status is AuthStatus.FAILED and "uri" in result.reason


def test_method_is_part_of_the_digest(auth: DigestAuthenticator) -> None:
    header = authorization(nonce_of(auth, 0.0), method="REGISTER")
    assert auth.check("INVITE", URI, header, 0.0, lookup).status is AuthStatus.FAILED


@pytest.mark.parametrize(
    "header",
    [
        'Digest username="alice", realm="callcenter", nonce="n", uri="sip:callcenter.example"',  # no response
        'Digest realm="callcenter", nonce="n", uri="sip:callcenter.example", response="00"',  # no username
        'Digest username="alice", realm="callcenter", nonce="n", uri="sip:callcenter.example", '
        'response="zz", algorithm=MD5',  # response not hex
        'Digest username="alice", realm="callcenter", nonce="n", uri="sip:callcenter.example", qop=auth, '
        'response="0123456789abcdef0123456789abcdef"',  # qop without nc/cnonce
        'Digest username="alice", realm="callcenter", nonce="n", uri="sip:callcenter.example", qop=auth-int, '
        'nc=00000001, cnonce="c", response="0123456789abcdef0123456789abcdef"',  # qop not offered
        'Digest username="alice", realm="callcenter", nonce="n", uri="sip:callcenter.example", qop=auth, '
        'nc=1, cnonce="c", response="0123456789abcdef0123456789abcdef"',  # nc not 8 hex digits
        'Digest username="alice", realm="callcenter" nonce="n"',  # missing comma
    ],
)
def test_malformed_credentials_fail(auth: DigestAuthenticator, header: str) -> None:
    calls: list[str] = []

    def counting_lookup(user: str) -> tuple[str, str] | None:
        calls.append(user)
        return lookup(user)

    assert auth.check("REGISTER", URI, header, 0.0, counting_lookup).status is AuthStatus.FAILED
    assert calls == []  # refused before any database lookup


@pytest.mark.parametrize("field", ["username", "cnonce", "uri"])
def test_bytes_that_are_not_utf8_fail_instead_of_crashing(auth: DigestAuthenticator, field: str) -> None:
    """The parser keeps foreign header bytes as surrogates (a flood sent some): the digest is computed
    over the bytes sent, so such credentials are just wrong, never an exception."""
    nonce = nonce_of(auth, 0.0)
    odd = b"al\xffice".decode("utf-8", "surrogateescape")
    header = authorization(nonce)
    if field == "username":
        header = header.replace('username="alice"', f'username="{odd}"')
    elif field == "cnonce":
        header = header.replace('cnonce="0a4f113b"', f'cnonce="{odd}"')
    else:
        header = header.replace(f'uri="{URI}"', f'uri="{URI};x={odd}"')
    result = auth.check("REGISTER", URI, header, 0.0, lookup)
    assert result.status is AuthStatus.FAILED


def test_a_response_that_is_not_utf8_fails_instead_of_crashing(auth: DigestAuthenticator) -> None:
    nonce = nonce_of(auth, 0.0)
    good = authorization(nonce)
    response = parse_auth_params(good)[1]["response"]
    odd = response[:-1] + b"\xff".decode("utf-8", "surrogateescape")
    assert auth.check("REGISTER", URI, good.replace(response, odd), 0.0, lookup).status is AuthStatus.FAILED
    assert auth.check("REGISTER", URI, good, 0.0, lookup).status is AuthStatus.OK


# -- header parsing -----------------------------------------------------------------------------------


def test_parse_quoted_commas_escapes_and_case() -> None:
    scheme, params = parse_auth_params(
        'digest UserName="a, b", REALM=r, Nonce="say \\"hi\\" \\\\ bye", uri="sip:x;y=z", nc=00000001'
    )
    assert scheme == "digest"
    assert params == {
        "username": "a, b",
        "realm": "r",
        "nonce": 'say "hi" \\ bye',
        "uri": "sip:x;y=z",
        "nc": "00000001",
    }


def test_parse_tolerates_whitespace_folding_and_empty_elements() -> None:
    value = 'Digest\r\n  username = "alice" ,\r\n\t realm="r",, ,nonce="x\r\n y"  ,'
    assert parse_auth_params(value) == ("Digest", {"username": "alice", "realm": "r", "nonce": "x y"})


def test_parse_scheme_alone_and_unquoted_values() -> None:
    assert parse_auth_params("Digest") == ("Digest", {})
    assert parse_auth_params("  Digest  ") == ("Digest", {})
    assert parse_auth_params("Digest uri=sip:host:5060, nonce=abc==")[1] == {
        "uri": "sip:host:5060",
        "nonce": "abc==",
    }
    assert parse_auth_params('Digest opaque=""')[1] == {"opaque": ""}
    assert parse_auth_params('Digest username="Jürgen"')[1] == {"username": "Jürgen"}


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        ",Digest",
        "Digest username",
        'Digest username="unterminated',
        'Digest username="a" realm="b"',
        "Digest a=1 b=2",
        "Digest a=1, A=2",
        'Digest a="x"\r\nb=2',
        "Digest a=1\n",
        "=x",
        "Digest =x",
        'Digest a="\x01"',
        'Digest a="\\\r\n"',
        "Digest a=",
        "Digest a=,b=2",
        'Digest a=x"y',
        "Digest\x00 a=1",
        "Digest\u00a0a=1",
    ],
)
def test_parse_rejects_garbage(value: str) -> None:
    with pytest.raises(AuthParseError):
        parse_auth_params(value)


def test_parse_error_is_a_value_error() -> None:
    assert issubclass(AuthParseError, ValueError)
    with pytest.raises(AuthParseError):
        parse_auth_params(b"Digest a=1")  # type: ignore[arg-type]


@given(st.text())
def test_parse_any_text_returns_or_raises_its_own_error(value: str) -> None:
    try:
        scheme, params = parse_auth_params(value)
    except AuthParseError:
        return
    assert scheme and all(name == name.lower() for name in params)


_TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
_names = st.text(alphabet=_TOKEN_CHARS, min_size=1, max_size=12)
_values = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)


@given(st.dictionaries(_names.map(str.lower), _values, max_size=8), st.sampled_from([",", ", ", " ,\r\n "]))
def test_parse_round_trips_quoted_params(params: dict[str, str], separator: str) -> None:
    def quote(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

    value = "Digest " + separator.join(f"{k}={quote(v)}" for k, v in params.items())
    assert parse_auth_params(value) == ("Digest", params)


@given(st.text(), st.floats(min_value=0, max_value=1e9))
def test_authenticator_never_raises_on_any_header(value: str, now: float) -> None:
    auth = DigestAuthenticator(REALM, secret=b"k" * 32)
    result = auth.check("REGISTER", URI, ["Digest " + value, value], now, lookup)
    assert result.status in (AuthStatus.CHALLENGE, AuthStatus.FAILED, AuthStatus.STALE)
