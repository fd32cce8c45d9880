"""The SIP trunk side of callbacks: numbers become trunk URIs, and our INVITE answers a digest
challenge the way a server checks it (RFC 3261 §22.2; the server half is callcenter/sip/auth.py)."""

from __future__ import annotations

import pytest

from callcenter.calls.outbound import number_uri
from callcenter.core.config import Settings, TrunkSettings
from callcenter.core.errors import CallcenterError
from callcenter.sip.auth import AuthStatus, DigestAuthenticator, compute_ha1
from callcenter.sip.client_auth import ClientCredentials, authorize, pick_challenge
from callcenter.sip.message import Headers, SipRequest, SipResponse

URI = "sip:5551234@192.0.2.7:5080"


def invite() -> SipRequest:
    h = Headers()
    h.add("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKfirst;rport")
    h.add("From", "<sip:callcenter@127.0.0.1>;tag=abc")
    h.add("To", f"<{URI}>")
    h.add("Call-ID", "call-1@127.0.0.1")
    h.add("CSeq", "1 INVITE")
    return SipRequest("INVITE", URI, h, b"v=0\r\n")


def challenge(status: int, values: list[str]) -> SipResponse:
    h = Headers()
    for v in values:
        h.add("WWW-Authenticate" if status == 401 else "Proxy-Authenticate", v)
    return SipResponse(status, "Unauthorized", h)


def ha1s(user: str, realm: str, password: str) -> tuple[str, str]:
    return compute_ha1(user, realm, password, "MD5"), compute_ha1(user, realm, password, "SHA-256")


@pytest.mark.parametrize("algorithms", [("MD5",), ("SHA-256", "MD5")])
def test_our_answer_to_a_challenge_is_accepted_by_a_digest_server(algorithms: tuple[str, ...]) -> None:
    server = DigestAuthenticator("trunk.example", algorithms=algorithms)
    response = challenge(401, server.challenge_headers(10.0))
    picked = pick_challenge(response)
    assert picked is not None and picked.algorithm == algorithms[0]  # the strongest offered
    retry = authorize(invite(), picked, ClientCredentials("acme", "s3cret"), branch="z9hG4bKsecond")
    result = server.check(
        method="INVITE", request_uri=retry.uri, header_values=retry.headers.get_all("Authorization"),
        now=11.0, ha1_lookup=lambda user: ha1s(user, "trunk.example", "s3cret") if user == "acme" else None,
    )
    assert result.status is AuthStatus.OK and result.username == "acme"


def test_a_wrong_password_is_refused_by_the_server() -> None:
    server = DigestAuthenticator("trunk.example", algorithms=("MD5",))
    picked = pick_challenge(challenge(401, server.challenge_headers(10.0)))
    assert picked is not None
    retry = authorize(invite(), picked, ClientCredentials("acme", "wrong"), branch="z9hG4bKsecond")
    result = server.check(
        method="INVITE", request_uri=retry.uri, header_values=retry.headers.get_all("Authorization"),
        now=11.0, ha1_lookup=lambda user: ha1s(user, "trunk.example", "s3cret"),
    )
    assert result.status is AuthStatus.FAILED


def test_the_retried_invite_is_the_same_call_with_the_next_cseq_and_a_new_branch() -> None:
    picked = pick_challenge(challenge(407, ['Digest realm="p", nonce="n1", qop="auth"']))
    assert picked is not None and picked.header == "Proxy-Authorization"
    retry = authorize(invite(), picked, ClientCredentials("acme", "pw"), branch="z9hG4bKsecond", cnonce="c")
    h = retry.headers
    assert h.get("CSeq") == "2 INVITE" and h.get("Call-ID") == "call-1@127.0.0.1"
    assert h.get("From") == "<sip:callcenter@127.0.0.1>;tag=abc" and retry.uri == URI
    assert h.get("Via") == "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsecond;rport"
    assert h.get("Proxy-Authorization", "").startswith('Digest username="acme", realm="p"')
    assert retry.body == b"v=0\r\n"


def test_challenges_we_cannot_answer_are_skipped() -> None:
    response = challenge(401, ['Basic realm="x"', 'Digest realm="x", nonce="n", algorithm=MD5-sess'])
    assert pick_challenge(response) is None
    only_other_realm = challenge(401, ['Digest realm="other", nonce="n"'])
    assert pick_challenge(only_other_realm, realm="trunk") is None


def settings(**trunk: object) -> Settings:
    return Settings(sip={"trunk": TrunkSettings.model_validate(trunk)})  # type: ignore[arg-type]


def test_numbers_become_uris_at_the_trunk_with_prefix_rules() -> None:
    s = settings(uri="192.0.2.7:5080", prefixes=[{"match": "00", "strip": 2, "prepend": "+"},
                                                 {"match": "0", "strip": 1, "prepend": "+44"}])
    assert number_uri(s, "0044 20 7946 0000") == "sip:+442079460000@192.0.2.7:5080"
    assert number_uri(s, "020-7946-0000") == "sip:+442079460000@192.0.2.7:5080"
    assert number_uri(s, "5551234") == "sip:5551234@192.0.2.7:5080"
    tcp = settings(uri="sip:trunk.example.net", transport="tcp")
    assert number_uri(tcp, "5551234") == "sip:5551234@trunk.example.net;transport=tcp"


def test_no_trunk_or_no_number_is_a_clear_error() -> None:
    with pytest.raises(CallcenterError, match="no SIP trunk is configured"):
        number_uri(Settings(), "5551234")
    with pytest.raises(CallcenterError, match="not a phone number"):
        number_uri(settings(uri="192.0.2.7"), "sip:evil@elsewhere")
