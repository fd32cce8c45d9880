"""Which numbers a new call may reach: an unknown source only the hotline's public numbers (issue 11).

Toll-fraud and scanner protection as PBXs draw it (Asterisk's ``allowguest`` and anonymous context,
FreeSWITCH's ``public`` context for anyone vs ``default`` for authenticated phones):

* A **known source** is a phone whose address lies in ``sip.protection.trusted`` (the trunk, a
  Kamailio, loopback), or a registered agent's phone (served by calls/agent_calls.py, with digest
  auth). The address is the packet's source, or the ``X-Callcenter-Source`` a trusted proxy stated
  (``proxied_source``): behind Kamailio every packet comes from the trusted proxy, but the phone it
  names is what counts, so a customer calling through Kamailio is *unknown*.
* **Public numbers** are the keys of ``ivr.numbers``, compared with the Request-URI user part exactly
  (as the flow lookup does: ``1-00`` does not start the flow of ``100``), and
  ``sip.protection.public_numbers``: exact numbers, or prefixes ending in ``*``, compared after the
  visual separators ``-.()`` (RFC 3966 §3) are dropped from both sides, as ``AgentCalls.target`` does.
* ``sip.protection.unknown_sources``: ``public`` (the default) refuses an unknown source's call to any
  other number with 404 before the IVR, a media port or the default flow is touched; ``any`` lets it
  reach every number (the behaviour before).

Pure: no clock, no I/O. The CallManager asks, answers the INVITE, and tells the SIP guard of each
refusal (a number scan bans the source, sip/guard.py).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from callcenter.calls.agent_calls import Network, proxied_source
from callcenter.core.config import Settings
from callcenter.sip.message import SipParseError, SipRequest
from callcenter.sip.transaction import Addr
from callcenter.sip.uri import parse_uri

__all__ = ["Admission", "Decision", "PublicNumbers", "Verdict", "dialled_number", "normalise"]

_SEPARATORS = re.compile(r"[\-.()]")  # RFC 3966 §3: visual-separator = "-" / "." / "(" / ")"


def normalise(number: str) -> str:
    """``number`` without visual separators: ``+49(30)123-45`` → ``+493012345``."""
    return _SEPARATORS.sub("", number)


def dialled_number(request_uri: str) -> str:
    """The Request-URI's user part (what the flow lookup keys on); "" when there is none or it cannot
    be read (which no public number matches)."""
    try:
        return parse_uri(request_uri).user or ""
    except (ValueError, SipParseError):
        return ""


class PublicNumbers:
    """The numbers anyone may call: ``ivr`` (exact) and ``listed`` (normalised; ``*`` at the end = prefix)."""

    def __init__(self, ivr: Iterable[str], listed: Iterable[str]) -> None:
        self.ivr = frozenset(ivr)
        exact: set[str] = set()
        prefixes: list[str] = []
        for entry in listed:
            if entry.endswith("*"):
                prefixes.append(normalise(entry[:-1]))
            else:
                exact.add(normalise(entry))
        self.exact = frozenset(exact)
        self.prefixes = tuple(sorted(set(prefixes)))

    def __contains__(self, number: object) -> bool:
        if not isinstance(number, str) or not number:
            return False
        if number in self.ivr:
            return True
        digits = normalise(number)
        return digits in self.exact or any(digits.startswith(p) for p in self.prefixes)


class Verdict(enum.Enum):
    KNOWN = "known"  # trusted network or an agent's phone: any number
    PUBLIC = "public"  # unknown source, public number (or unknown_sources: any)
    NOT_FOUND = "not_found"  # unknown source, not a public number: 404


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    origin: Addr  # the phone's address (behind a trusted proxy: the one it stated)
    number: str  # the Request-URI user part

    @property
    def admitted(self) -> bool:
        return self.verdict is not Verdict.NOT_FOUND


class Admission:
    """The settings' answer for each new INVITE; built once (networks and numbers parsed up front)."""

    def __init__(self, settings: Settings) -> None:
        p = settings.sip.protection
        self.policy = p.unknown_sources
        self.trusted: tuple[Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in p.trusted)
        self.public = PublicNumbers(settings.ivr.numbers, p.public_numbers)

    def origin(self, invite: SipRequest, source: Addr) -> Addr:
        """The phone's address: the packet's ``source``, or what a trusted proxy says it was."""
        return proxied_source(invite, source, self.trusted)

    def is_trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False  # a name, not an address: never trusted
        return any(address in net for net in self.trusted)

    def decide(self, origin: Addr, number: str, *, agent_phone: bool) -> Decision:
        """Whether a new call from ``origin`` to ``number`` goes on; ``agent_phone``: a registered
        agent's phone sent it (AgentCalls claims it)."""
        if agent_phone or self.is_trusted(origin.host):
            return Decision(Verdict.KNOWN, origin, number)
        if self.policy == "any" or number in self.public:
            return Decision(Verdict.PUBLIC, origin, number)
        return Decision(Verdict.NOT_FOUND, origin, number)
