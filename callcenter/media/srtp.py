"""SRTP keyed by SDES (RFC 4568): the a=crypto attribute, our answer to it, and the packet protector.

The cryptography itself is libsrtp's, through ``pylibsrtp``; nothing here touches a cipher. This module
only reads and writes the SDP attribute and builds one libsrtp context per direction of a call leg:

* the *outbound* context uses the key **we** put in our SDP (RFC 4568 §6.1: each side sends with the
  key it announced), the *inbound* one the key the peer announced;
* ``SrtpProtector`` is what ``RtpSession`` applies at its socket boundary (protect before ``sendto``,
  unprotect after receive); a packet failing authentication or replay checks raises ``SrtpError``.

Supported suites: AES_CM_128_HMAC_SHA1_80 and AES_CM_128_HMAC_SHA1_32 (RFC 4568 §6.2.1; SRTCP keeps
its 80-bit tag with both, which is what libsrtp's profile does). Key parameters with an MKI, several
keys in one line, or session parameters that change the packet format (UNENCRYPTED_SRTP, FEC_ORDER, …)
make a line unusable: it is skipped, as §6.3/§7.1.1 allow an answerer to do.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import pylibsrtp

from callcenter.core.errors import CallcenterError


class CryptoParseError(CallcenterError):
    """An a=crypto value that does not follow RFC 4568 §9.1 (or that we cannot use)."""


class SrtpError(CallcenterError):
    """A packet that failed SRTP/SRTCP authentication, replay checks or processing."""


# suite → libsrtp profile. Both: AES-128 counter mode, 112-bit salt: 30 bytes of key||salt.
SUITES: Final[dict[str, int]] = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
DEFAULT_SUITES: Final[tuple[str, ...]] = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
KEY_SALT_LEN: Final = 30
# Session parameters that do not change what goes on the wire for us (§6.3): the window size hint
# and a key derivation rate of 0 (= derive once, libsrtp's behaviour).
_HARMLESS_SESSION_PARAMS: Final = ("WSH=", "KDR=0")

# RFC 4568 §9.1:
#   a=crypto:<tag> <crypto-suite> <key-params> [<session-params>]
#   tag = 1*9DIGIT ; key-params = key-param *(";" key-param) ; key-param = key-method ":" key-info
#   key-info (inline) = key-salt ["|" lifetime] ["|" mki ":" mki-length]
#   lifetime = ["2^"] 1*(DIGIT)
_CRYPTO: Final = re.compile(r"([0-9]{1,9})[ \t]+([A-Za-z0-9_]+)[ \t]+(\S+)(?:[ \t]+(.*))?\Z")
_LIFETIME: Final = re.compile(r"(?:2\^)?[0-9]{1,20}\Z")


@dataclass(frozen=True, slots=True)
class CryptoAttribute:
    """One a=crypto line, parsed: tag, suite and the inline master key||salt (30 bytes)."""

    tag: int
    suite: str
    key: bytes
    lifetime: str | None = None
    session_params: tuple[str, ...] = ()

    def value(self) -> str:
        """The attribute value (after ``a=crypto:``)."""
        inline = "inline:" + base64.b64encode(self.key).decode("ascii")
        if self.lifetime:
            inline += f"|{self.lifetime}"
        return " ".join([str(self.tag), self.suite, inline, *self.session_params])

    @property
    def usable(self) -> bool:
        """A suite we support, without session parameters that change the packet format."""
        harmless = all(p.startswith(_HARMLESS_SESSION_PARAMS) for p in self.session_params)
        return self.suite in SUITES and harmless


def parse_crypto(value: str) -> CryptoAttribute:
    """Parse an a=crypto value; raises ``CryptoParseError`` for malformed or unusable key params
    (MKI, several keys, a wrong key length). An unknown *suite* parses: ``usable`` says False."""
    m = _CRYPTO.match(value.strip())
    if m is None:
        raise CryptoParseError(f"bad crypto attribute {value!r}")
    tag, suite, key_params, session = m.groups()
    if ";" in key_params.rstrip(";"):
        raise CryptoParseError("several master keys in one crypto line are not supported")
    method, _, info = key_params.rstrip(";").partition(":")
    if method.lower() != "inline" or not info:
        raise CryptoParseError(f"unsupported key method {method!r}")
    parts = info.split("|")
    if len(parts) > 3:
        raise CryptoParseError(f"bad key info {info!r}")
    lifetime: str | None = None
    for extra in parts[1:]:
        if ":" in extra:
            raise CryptoParseError("keys with an MKI are not supported")
        if not _LIFETIME.match(extra) or lifetime is not None:
            raise CryptoParseError(f"bad key lifetime {extra!r}")
        lifetime = extra
    try:
        key = base64.b64decode(parts[0], validate=True)
    except (binascii.Error, ValueError):
        raise CryptoParseError("the inline key is not base64") from None
    if suite in SUITES and len(key) != KEY_SALT_LEN:
        raise CryptoParseError(f"{suite} needs a {KEY_SALT_LEN}-byte key||salt, got {len(key)}")
    params = tuple(session.split()) if session else ()
    return CryptoAttribute(int(tag), suite, key, lifetime, params)


def offered_cryptos(values: Iterable[str]) -> list[CryptoAttribute]:
    """The usable crypto lines among ``values`` (a=crypto values), in the offerer's order of
    preference; malformed and unsupported ones are skipped (RFC 4568 §7.1.1)."""
    out: list[CryptoAttribute] = []
    for v in values:
        try:
            c = parse_crypto(v)
        except CryptoParseError:
            continue
        if c.usable:
            out.append(c)
    return out


def new_key() -> bytes:
    """A fresh master key||salt from the OS's CSPRNG."""
    return os.urandom(KEY_SALT_LEN)


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    """What one leg agreed: the suite, the key we send with, the key the peer sends with."""

    suite: str
    local_key: bytes
    remote_key: bytes


def answer_crypto(
    offered: Iterable[str], local_key: bytes, suites: Iterable[str] = DEFAULT_SUITES
) -> tuple[CryptoAttribute, SrtpKeys] | None:
    """RFC 4568 §7.1.2 (answerer): the first usable offered line whose suite we accept, answered with
    the same tag and suite and **our** key; ``None`` when no line is acceptable."""
    accepted = set(suites)
    for c in offered_cryptos(offered):
        if c.suite in accepted:
            ours = CryptoAttribute(c.tag, c.suite, local_key)
            return ours, SrtpKeys(c.suite, local_key, c.key)
    return None


def offer_cryptos(local_key: bytes, suites: Iterable[str] = DEFAULT_SUITES) -> list[CryptoAttribute]:
    """Our offer's crypto lines: tags 1.. in preference order, one key for all (§6.1 allows it,
    only one line will be chosen)."""
    return [CryptoAttribute(i, s, local_key) for i, s in enumerate(suites, start=1)]


def accept_answer_crypto(offer: Iterable[CryptoAttribute], answered: Iterable[str]) -> SrtpKeys | None:
    """RFC 4568 §7.1.3 (offerer): the answer's crypto line must carry a tag and suite we offered."""
    ours = {c.tag: c for c in offer}
    for c in offered_cryptos(answered):
        mine = ours.get(c.tag)
        if mine is not None and mine.suite == c.suite:
            return SrtpKeys(c.suite, mine.key, c.key)
    return None


class SrtpProtector:
    """Two libsrtp contexts of one leg: outbound keyed with ours, inbound with the peer's."""

    def __init__(self, keys: SrtpKeys) -> None:
        profile = SUITES[keys.suite]
        self.keys = keys
        tx = pylibsrtp.Policy(
            key=keys.local_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
        )
        rx = pylibsrtp.Policy(
            key=keys.remote_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile
        )
        # A relayed stream may restart its SSRC's sequence; a larger replay window tolerates
        # reordering on a bad network (libsrtp's default is 128).
        rx.window_size = 1024
        self._tx = pylibsrtp.Session(tx)
        self._rx = pylibsrtp.Session(rx)

    def protect_rtp(self, packet: bytes) -> bytes:
        try:
            return self._tx.protect(packet)
        except (pylibsrtp.Error, ValueError) as exc:
            raise SrtpError(f"SRTP protect failed: {exc}") from None

    def protect_rtcp(self, packet: bytes) -> bytes:
        try:
            return self._tx.protect_rtcp(packet)
        except (pylibsrtp.Error, ValueError) as exc:
            raise SrtpError(f"SRTCP protect failed: {exc}") from None

    def unprotect_rtp(self, packet: bytes) -> bytes:
        try:
            return self._rx.unprotect(packet)
        except (pylibsrtp.Error, ValueError) as exc:
            raise SrtpError(f"SRTP unprotect failed: {exc}") from None

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        try:
            return self._rx.unprotect_rtcp(packet)
        except (pylibsrtp.Error, ValueError) as exc:
            raise SrtpError(f"SRTCP unprotect failed: {exc}") from None
