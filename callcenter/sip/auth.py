"""SIP digest authentication, server side (RFC 2617, RFC 7616, RFC 8760), sans-I/O.

Works on header *strings* and plain values; the SIP endpoint glues it to messages.

Nonces are stateless: ``base64url(issued_ms | salt | HMAC-SHA256(secret, realm | issued_ms | salt)[:16])``,
so any process holding the secret can verify them without shared state. The only state kept is a bounded
LRU of the highest nonce-count seen per (nonce, cnonce), to refuse replays (RFC 7616 §3.3, §5.4).

``now`` is whatever clock the caller uses consistently (monotonic seconds within one process; the same
wall clock on every node when several nodes share one secret).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import itertools
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "ALGORITHMS",
    "AuthParseError",
    "AuthResult",
    "AuthStatus",
    "DigestAuthenticator",
    "DigestCredentials",
    "HA1Pair",
    "NonceState",
    "compute_ha1",
    "parse_auth_params",
]

# Algorithm name (as on the wire, RFC 7616 §3.3 / RFC 8760 §2.1) -> hashlib name.
ALGORITHMS: dict[str, str] = {"MD5": "md5", "SHA-256": "sha256"}
_HEX_LEN = {"MD5": 32, "SHA-256": 64}

HA1Pair = tuple[str, str]
"""``(ha1_md5, ha1_sha256)`` as stored for an agent (hex strings)."""


class AuthParseError(ValueError):
    """An authentication header value does not follow the auth-param grammar."""


def _canonical_algorithm(algorithm: str) -> str:
    for name in ALGORITHMS:
        if name.lower() == algorithm.lower():
            return name
    raise ValueError(f"unsupported digest algorithm {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")


def _h(algorithm: str, data: str) -> str:
    # surrogateescape: header bytes that were not UTF-8 reach us as surrogates (sip/parser.py); the
    # digest is over the bytes the peer sent, so they go back to those bytes instead of raising.
    return hashlib.new(ALGORITHMS[algorithm], data.encode("utf-8", "surrogateescape")).hexdigest()


def compute_ha1(username: str, realm: str, password: str, algorithm: str) -> str:
    """HA1 = H(username ":" realm ":" password) in lower-case hex (RFC 2617 §3.2.2.2, RFC 7616 §3.4.2)."""
    return _h(_canonical_algorithm(algorithm), f"{username}:{realm}:{password}")


# -- header parsing ------------------------------------------------------------------------------------
#
# RFC 3261 §25.1 / RFC 2617 §1.2:
#   auth-param     = auth-param-name EQUAL ( token / quoted-string )
#   token          = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
#   quoted-string  = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
#   qdtext         = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
#   quoted-pair    = "\" (%x00-09 / %x0B-0C / %x0E-7F)
#   LWS            = [*WSP CRLF] 1*WSP   ; line folding
# Unquoted values are accepted slightly more liberally than `token` (any visible ASCII except '"' and ','),
# because some user agents send e.g. uri=sip:host or base64 nonces unquoted.

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_SCHEME_RE = re.compile(r"[ \t]*(" + _TOKEN + r")")
_ITEM_RE = re.compile(
    r"(" + _TOKEN + r")[ \t]*=[ \t]*"
    r'(?:"((?:[^\x00-\x08\x0a-\x1f"\\\x7f]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*)"'
    r"|([\x21\x23-\x2b\x2d-\x7e]+))"
    r"[ \t]*"
)
_SEPARATORS_RE = re.compile(r"[ \t,]*")
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """``'Digest username="bob", nc=00000001'`` -> ``('Digest', {'username': 'bob', 'nc': '00000001'})``.

    The scheme is returned as written (compare it case-insensitively); parameter names are lower-cased;
    quoted values are unquoted and unescaped. Empty list elements (``a=1,,b=2``) are tolerated, a
    repeated parameter is not. Anything else raises :class:`AuthParseError`.
    """
    if not isinstance(value, str):
        raise AuthParseError("authentication header value must be text")
    text = _FOLD_RE.sub("", value)
    if "\r" in text or "\n" in text:
        raise AuthParseError("line break that is not a continuation line")
    match = _SCHEME_RE.match(text)
    if match is None:
        raise AuthParseError("missing authentication scheme")
    scheme = match.group(1)
    pos, end = match.end(), len(text)
    params: dict[str, str] = {}
    if pos < end and text[pos] not in " \t":
        raise AuthParseError(f"unexpected {text[pos]!r} after the scheme")
    pos = _SEPARATORS_RE.match(text, pos).end()  # type: ignore[union-attr]  # always matches
    while pos < end:
        item = _ITEM_RE.match(text, pos)
        if item is None:
            raise AuthParseError(f"malformed auth-param at offset {pos}")
        name = item.group(1).lower()
        quoted = item.group(2)
        if quoted is not None:
            param = _ESCAPE_RE.sub(r"\1", quoted) if "\\" in quoted else quoted
        else:
            param = item.group(3)
        if name in params:
            raise AuthParseError(f"parameter {name!r} given twice")
        params[name] = param
        pos = item.end()
        if pos < end and text[pos] != ",":
            raise AuthParseError(f"expected ',' at offset {pos}")
        pos = _SEPARATORS_RE.match(text, pos).end()  # type: ignore[union-attr]
    return scheme, params


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _scheme_of(value: str) -> str:
    match = _SCHEME_RE.match(value)
    return match.group(1).lower() if match else ""


_URI_DEFAULT_PORT_RE = re.compile(r"^(sip:[^;?]*?):5060(?=$|[;?])|^(sips:[^;?]*?):5061(?=$|[;?])")


def _uri_key(uri: str) -> str:
    """Loose Request-URI form for the digest ``uri`` check (RFC 2617 §3.2.2.5).

    Ignores surrounding whitespace and angle brackets, case, URI parameters/headers and the default
    port: the point is that credentials computed for one target are not accepted for another one.
    """
    key = uri.strip().strip("<>").strip().lower()
    key = _URI_DEFAULT_PORT_RE.sub(lambda m: m.group(1) or m.group(2), key)
    for sep in ";?":
        key = key.split(sep, 1)[0]
    return key


# -- results -------------------------------------------------------------------------------------------


class AuthStatus(enum.Enum):
    OK = "ok"
    CHALLENGE = "challenge"  # no usable credentials for our realm: answer 401 with challenge_headers()
    STALE = "stale"  # right password, nonce expired/unknown/replayed: 401 with challenge_headers(stale=True)
    FAILED = "failed"  # wrong or malformed credentials: 403 (or a fresh 401, at the caller's choice)


@dataclass(frozen=True, slots=True)
class AuthResult:
    status: AuthStatus
    username: str | None = None  # set for OK (and for STALE/FAILED when the header named one)
    reason: str = ""  # short, for logs; never sent to the peer verbatim for FAILED

    @property
    def ok(self) -> bool:
        return self.status is AuthStatus.OK


_CHALLENGE = AuthResult(AuthStatus.CHALLENGE, reason="no credentials for this realm")


class NonceState(enum.Enum):
    VALID = "valid"
    EXPIRED = "expired"
    UNKNOWN = "unknown"  # not issued with our secret (forged, or issued before a restart)


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """Credentials parsed and checked as far as possible without the user's HA1 (step one of two)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str  # lower-case hex
    algorithm: str  # "MD5" | "SHA-256"
    method: str
    qop: str | None  # "auth", or None for the RFC 2069 form
    nc: str | None
    cnonce: str | None
    nonce_state: NonceState
    nonce_issued_ms: int | None


# -- the authenticator ---------------------------------------------------------------------------------

_NONCE_TS = 8
_NONCE_SALT = 4
_NONCE_MAC = 16
_NONCE_RAW = _NONCE_TS + _NONCE_SALT + _NONCE_MAC
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{" + str((_NONCE_RAW * 8 + 5) // 6) + "}")
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")
_HEX_RE = re.compile(r"[0-9a-f]+")
_MAX_CNONCE = 256


class DigestAuthenticator:
    """Server-side digest authentication for one realm.

    The credentials lookup (a database read) must not run on the event loop, so the work is split:

    1. ``inspect(method, request_uri, header_values, now)`` — pure CPU, on the loop. Returns an
       :class:`AuthResult` when the answer is known without the user's secrets (no credentials for this
       realm, malformed header, unsupported algorithm, uri mismatch), else :class:`DigestCredentials`.
    2. The caller fetches ``(ha1_md5, ha1_sha256)`` for ``creds.username`` however it likes, e.g.
       ``await loop.run_in_executor(None, store.get_agent_credentials, creds.username)``.
    3. ``verify(creds, ha1s, now)`` — back on the loop (it updates the nonce-count table, which is not
       thread-safe) — returns the final :class:`AuthResult`.

    ``check(...)`` does all three with a synchronous lookup, for callers with an in-memory cache.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes | None = None,
        nonce_ttl_s: float = 300.0,
        *,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        nc_cache_size: int = 50_000,
    ) -> None:
        if not realm or "\r" in realm or "\n" in realm:
            raise ValueError("realm must be a non-empty single line")
        if nonce_ttl_s <= 0:
            raise ValueError("nonce_ttl_s must be positive")
        if nc_cache_size < 1:
            raise ValueError("nc_cache_size must be at least 1")
        self.realm = realm
        self.nonce_ttl_s = nonce_ttl_s
        # RFC 8760 §2.4: one challenge per algorithm, the preferred one first.
        self.algorithms = tuple(dict.fromkeys(_canonical_algorithm(a) for a in algorithms))
        if not self.algorithms:
            raise ValueError("at least one digest algorithm is needed")
        self._secret = secret if secret is not None else os.urandom(32)
        self._realm_bytes = realm.encode("utf-8") + b"\0"
        self._salt = itertools.count(int.from_bytes(os.urandom(4), "big"))
        self._nc_cache_size = nc_cache_size
        # (nonce, cnonce) -> (highest nc accepted, nonce issue time in ms), least recently used first.
        self._nc_seen: OrderedDict[tuple[str, str], tuple[int, int]] = OrderedDict()
        # Nonces issued at or before this time whose (nonce, cnonce) entry may have been evicted: a
        # first use of such a pair is answered "stale", so eviction never opens a replay window.
        self._nc_forgotten_ms: int | None = None

    # -- nonces --

    def _mac(self, body: bytes) -> bytes:
        return hmac.digest(self._secret, self._realm_bytes + body, "sha256")[:_NONCE_MAC]

    def make_nonce(self, now: float) -> str:
        issued = int(now * 1000).to_bytes(_NONCE_TS, "big", signed=True)
        body = issued + (next(self._salt) & 0xFFFFFFFF).to_bytes(_NONCE_SALT, "big")
        return base64.urlsafe_b64encode(body + self._mac(body)).rstrip(b"=").decode("ascii")

    def _check_nonce(self, nonce: str, now: float) -> tuple[NonceState, int | None]:
        if not _NONCE_RE.fullmatch(nonce):
            return NonceState.UNKNOWN, None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return NonceState.UNKNOWN, None
        if len(raw) != _NONCE_RAW:
            return NonceState.UNKNOWN, None
        body, mac = raw[: _NONCE_TS + _NONCE_SALT], raw[_NONCE_TS + _NONCE_SALT :]
        if not hmac.compare_digest(mac, self._mac(body)):
            return NonceState.UNKNOWN, None
        issued_ms = int.from_bytes(body[:_NONCE_TS], "big", signed=True)
        # A nonce from the "future" can come from another node whose clock runs ahead.
        if abs(now * 1000 - issued_ms) > self.nonce_ttl_s * 1000:
            return NonceState.EXPIRED, issued_ms
        return NonceState.VALID, issued_ms

    # -- challenges --

    def challenge_headers(self, now: float, stale: bool = False) -> list[str]:
        """WWW-Authenticate (or Proxy-Authenticate) values, one per algorithm, preferred first."""
        nonce = self.make_nonce(now)
        tail = ', qop="auth"' + (", stale=true" if stale else "")
        realm = _quote(self.realm)
        return [f'Digest realm={realm}, nonce="{nonce}", algorithm={alg}{tail}' for alg in self.algorithms]

    # -- verification --

    def inspect(
        self, method: str, request_uri: str, header_values: str | Iterable[str] | None, now: float
    ) -> AuthResult | DigestCredentials:
        """Step one: parse the Authorization / Proxy-Authorization values of a request (all of them)."""
        if header_values is None:
            return _CHALLENGE
        if isinstance(header_values, str):
            header_values = (header_values,)
        params: dict[str, str] | None = None
        malformed = False
        for value in header_values:
            if _scheme_of(value) != "digest":
                continue  # another scheme (RFC 3261 §22.3: look for credentials we can use)
            try:
                _, candidate = parse_auth_params(value)
            except AuthParseError:
                malformed = True
                continue
            if candidate.get("realm") == self.realm:
                params = candidate
                break
        if params is None:
            if malformed:
                return AuthResult(AuthStatus.FAILED, reason="malformed Authorization header")
            return _CHALLENGE
        return self._inspect_params(method, request_uri, params, now)

    def _inspect_params(
        self, method: str, request_uri: str, params: dict[str, str], now: float
    ) -> AuthResult | DigestCredentials:
        username = params.get("username")
        if not username:
            return AuthResult(AuthStatus.FAILED, reason="credentials without a username")

        def failed(reason: str) -> AuthResult:
            return AuthResult(AuthStatus.FAILED, username=username, reason=reason)

        try:
            algorithm = _canonical_algorithm(params.get("algorithm", "MD5"))  # RFC 2617 §3.2.1 default
        except ValueError:
            algorithm = ""
        if algorithm not in self.algorithms:
            return AuthResult(AuthStatus.CHALLENGE, username=username, reason="algorithm not offered")
        nonce, uri, response = params.get("nonce"), params.get("uri"), params.get("response")
        if not nonce or uri is None or response is None:
            return failed("credentials missing nonce, uri or response")
        response = response.lower()
        if len(response) != _HEX_LEN[algorithm] or not _HEX_RE.fullmatch(response):
            return failed("response is not a digest")
        if _uri_key(uri) != _uri_key(request_uri):
            return failed("digest uri does not match the Request-URI")
        qop = params.get("qop")
        nc = cnonce = None
        if qop is not None:
            if qop.lower() != "auth":
                return failed(f"qop {qop!r} not offered")
            qop, nc, cnonce = "auth", params.get("nc"), params.get("cnonce")
            if nc is None or not _NC_RE.fullmatch(nc) or not cnonce or len(cnonce) > _MAX_CNONCE:
                return failed("qop=auth without a valid nc and cnonce")
        state, issued_ms = self._check_nonce(nonce, now)
        return DigestCredentials(
            username=username,
            realm=params["realm"],
            nonce=nonce,
            uri=uri,
            response=response,
            algorithm=algorithm,
            method=method,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            nonce_state=state,
            nonce_issued_ms=issued_ms,
        )

    def verify(self, creds: DigestCredentials, ha1s: HA1Pair | None, now: float) -> AuthResult:
        """Step two: check the response against the user's stored HA1s (None = unknown user)."""
        username = creds.username
        ha1 = None
        if ha1s is not None:
            ha1 = (ha1s[0] if creds.algorithm == "MD5" else ha1s[1]) or None
        known = ha1 is not None
        # Unknown users cost the same hashing as known ones and get the same answer.
        expected = self._expected_response(creds, ha1.lower() if ha1 else "0" * _HEX_LEN[creds.algorithm])
        sent = creds.response.encode("utf-8", "surrogateescape")
        if not (hmac.compare_digest(expected.encode("ascii"), sent) and known):
            return AuthResult(AuthStatus.FAILED, username=username, reason="wrong credentials")
        # The digest is right, so the peer knows the password: a bad nonce is "stale" (RFC 2617 §3.2.1).
        if creds.nonce_state is not NonceState.VALID:
            return AuthResult(AuthStatus.STALE, username=username, reason=f"nonce {creds.nonce_state.value}")
        if creds.qop is not None and not self._accept_nc(creds):
            return AuthResult(AuthStatus.STALE, username=username, reason="nonce count not increasing")
        return AuthResult(AuthStatus.OK, username=username)

    def check(
        self,
        method: str,
        request_uri: str,
        header_values: str | Iterable[str] | None,
        now: float,
        ha1_lookup: Callable[[str], HA1Pair | None],
    ) -> AuthResult:
        """inspect + lookup + verify in one call; ``ha1_lookup`` runs right here, so it must be fast."""
        step = self.inspect(method, request_uri, header_values, now)
        if isinstance(step, AuthResult):
            return step
        return self.verify(step, ha1_lookup(step.username), now)

    def _expected_response(self, creds: DigestCredentials, ha1: str) -> str:
        alg = creds.algorithm
        ha2 = _h(alg, f"{creds.method}:{creds.uri}")
        if creds.qop is None:  # RFC 2069 compatibility form (RFC 2617 §3.2.2.1)
            return _h(alg, f"{ha1}:{creds.nonce}:{ha2}")
        return _h(alg, f"{ha1}:{creds.nonce}:{creds.nc}:{creds.cnonce}:{creds.qop}:{ha2}")

    def _accept_nc(self, creds: DigestCredentials) -> bool:
        """Record nc for (nonce, cnonce) if it is higher than any seen before (RFC 7616 §3.4.6)."""
        assert creds.nc is not None and creds.cnonce is not None and creds.nonce_issued_ms is not None
        key = (creds.nonce, creds.cnonce)
        nc = int(creds.nc, 16)
        seen = self._nc_seen.get(key)
        if seen is not None:
            if nc <= seen[0]:
                return False
            self._nc_seen.move_to_end(key)
        elif self._nc_forgotten_ms is not None and creds.nonce_issued_ms <= self._nc_forgotten_ms:
            return False
        self._nc_seen[key] = (nc, creds.nonce_issued_ms)
        while len(self._nc_seen) > self._nc_cache_size:
            _, (_, issued_ms) = self._nc_seen.popitem(last=False)
            if self._nc_forgotten_ms is None or issued_ms > self._nc_forgotten_ms:
                self._nc_forgotten_ms = issued_ms
        return True
