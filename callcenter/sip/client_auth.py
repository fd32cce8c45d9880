"""SIP digest authentication, client side (RFC 3261 §22.2, RFC 2617 §3.2.2, RFC 7616, RFC 8760), sans-I/O.

When a server or proxy answers our request with 401 (``WWW-Authenticate``) or 407
(``Proxy-Authenticate``), the UAC re-sends the request with the same Call-ID, From tag and To, a new
branch and CSeq + 1 (§22.2, §8.1.3.5), carrying ``Authorization`` / ``Proxy-Authorization``. A second
challenge for credentials we already sent means they were refused — unless the server says
``stale=true`` (the nonce expired; the password was right, RFC 2617 §3.2.1), which earns one more try.

Pure functions on header strings: the caller supplies the ``cnonce`` (random) so tests are exact.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from callcenter.sip.auth import AuthParseError, parse_auth_params
from callcenter.sip.message import SipRequest, SipResponse

__all__ = [
    "Challenge",
    "ClientCredentials",
    "authorization_value",
    "authorize",
    "pick_challenge",
]

_HASHES = {"MD5": "md5", "SHA-256": "sha256"}
# Preference when a server offers several challenges (RFC 8760 §2.4: the strongest we support).
_PREFERENCE = ("SHA-256", "MD5")


@dataclass(frozen=True)
class ClientCredentials:
    """Who we are towards a peer (e.g. the SIP trunk). ``realm`` None answers any realm.
    ``on_rejected(status, realm)`` hears of credentials refused (logging a clear line is its job)."""

    username: str
    password: str
    realm: str | None = None
    on_rejected: Callable[[int, str], None] | None = None


@dataclass(frozen=True)
class Challenge:
    header: str  # the header that answers it: Authorization (401) or Proxy-Authorization (407)
    realm: str
    nonce: str
    algorithm: str  # "MD5" | "SHA-256"
    qop: str | None  # "auth" when offered, None for the RFC 2069 form
    opaque: str | None
    stale: bool


def pick_challenge(response: SipResponse, realm: str | None = None) -> Challenge | None:
    """The challenge of a 401/407 we can answer (Digest, a supported algorithm, qop auth or none,
    ``realm`` when given); the strongest algorithm first. None when there is none."""
    if response.status == 401:
        name, answer = "WWW-Authenticate", "Authorization"
    elif response.status == 407:
        name, answer = "Proxy-Authenticate", "Proxy-Authorization"
    else:
        return None
    usable: list[Challenge] = []
    for value in response.headers.get_all(name):
        try:
            scheme, params = parse_auth_params(value)
        except AuthParseError:
            continue
        if scheme.lower() != "digest" or "nonce" not in params:
            continue
        algorithm = next((a for a in _HASHES if a.lower() == params.get("algorithm", "MD5").lower()), None)
        qops = [q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()]
        if algorithm is None or (qops and "auth" not in qops):
            continue  # -sess variants and auth-int are not offered by the peers we talk to
        if realm is not None and params.get("realm", "") != realm:
            continue
        usable.append(
            Challenge(
                answer,
                params.get("realm", ""),
                params["nonce"],
                algorithm,
                "auth" if qops else None,
                params.get("opaque"),
                params.get("stale", "").lower() == "true",
            )
        )
    usable.sort(key=lambda c: _PREFERENCE.index(c.algorithm))
    return usable[0] if usable else None


def _h(algorithm: str, text: str) -> str:
    return hashlib.new(_HASHES[algorithm], text.encode("utf-8")).hexdigest()


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization_value(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int = 1,
) -> str:
    """The Authorization / Proxy-Authorization value answering ``challenge`` (RFC 2617 §3.2.2):
    response = H(HA1 ":" nonce ":" nc ":" cnonce ":" qop ":" HA2) with qop, else H(HA1 ":" nonce ":" HA2);
    HA1 = H(username ":" realm ":" password), HA2 = H(method ":" digest-uri)."""
    alg = challenge.algorithm
    ha1 = _h(alg, f"{username}:{challenge.realm}:{password}")
    ha2 = _h(alg, f"{method}:{uri}")
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"uri={_quote(uri)}",
    ]
    if challenge.qop is not None:
        nc_text = f"{nc:08x}"
        response = _h(alg, f"{ha1}:{challenge.nonce}:{nc_text}:{cnonce}:{challenge.qop}:{ha2}")
        parts += [f"response={_quote(response)}", f"qop={challenge.qop}", f"nc={nc_text}",
                  f"cnonce={_quote(cnonce)}"]
    else:
        parts.append(f"response={_quote(_h(alg, f'{ha1}:{challenge.nonce}:{ha2}'))}")
    parts.append(f"algorithm={alg}")
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    return "Digest " + ", ".join(parts)


def authorize(
    request: SipRequest,
    challenge: Challenge,
    credentials: ClientCredentials,
    *,
    branch: str,
    cnonce: str | None = None,
) -> SipRequest:
    """``request`` again with the credentials (§22.2): same Call-ID, From (tag), To and Request-URI,
    CSeq + 1, a new Via branch, earlier credentials for the same header replaced."""
    number, method = request.cseq()
    via = request.headers.get_all("Via")
    top = via[0] if via else ""
    if ";branch=" in top:
        head, _, rest = top.partition(";branch=")
        tail = rest.partition(";")
        top = f"{head};branch={branch}" + (f";{tail[2]}" if tail[1] else "")
    value = authorization_value(
        challenge,
        method=method,
        uri=request.uri,
        username=credentials.username,
        password=credentials.password,
        cnonce=cnonce or secrets.token_hex(8),
    )
    out = SipRequest(request.method, request.uri, type(request.headers)(), request.body)
    replaced_via = False
    for name, header_value in request.headers:
        if name == "Via" and not replaced_via:
            out.headers.add(name, top)
            replaced_via = True
        elif name == "CSeq":
            out.headers.add(name, f"{number + 1} {method}")
        elif name.lower() == challenge.header.lower():
            continue
        else:
            out.headers.add(name, header_value)
    out.headers.add(challenge.header, value)
    return out
