"""Who may talk to our SIP port, and how much: the first thing every request meets (sans-I/O).

* **Scanners** (``User-Agent`` of friendly-scanner, sipvicious, sipcli, …) are dropped without an answer:
  an answer only confirms to the scanner that a SIP server lives here.
* **Rates**: a token bucket per source address for all requests, and a stricter one for REGISTER.
  Requests beyond it are dropped silently (answering a flood doubles its traffic; the sender's
  transaction layer retransmits, so a legitimate burst recovers once the bucket refills) — the same
  choice as Kamailio's pike module. The first excess of a source is logged once per minute.
* **Brute force**: ``auth_failures`` failed digest attempts (wrong password, wrong user) within
  ``auth_window_s`` ban the source for ``ban_s``: everything it sends is dropped until then.
* **Number scans**: an unknown source dialling numbers that are not public (calls/admission.py) is
  refused with 404 by the call manager, which tells the guard: ``number_scan_failures`` distinct such
  numbers within ``auth_window_s`` ban the source as failed digests do. Each source's refusals are
  logged once a minute at most (``unknown_source_refused``), so a scan does not flood the log.
* **Concurrent calls**: beyond ``max_calls_per_source`` from one address, or ``max_calls`` in total, a new
  INVITE gets 503 with Retry-After (RFC 3261 §21.5.4) — fast and cheap, so an overload never becomes a
  retransmission storm.
* ``trusted`` networks (the trunk, a Kamailio in front) skip rates, bans and the per-source cap.

Memory stays bounded: at most ``max_tracked`` sources are remembered (idle ones swept first).
"""

from __future__ import annotations

import enum
import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from callcenter.core.logging import log_event

__all__ = ["DEFAULT_SCANNERS", "LOOPBACK", "GuardSettings", "SipGuard", "Verdict"]

log = logging.getLogger("callcenter.sip.guard")

# Substrings (lower case) of User-Agent values that SIP scanners send; real phones never do.
DEFAULT_SCANNERS: tuple[str, ...] = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipscan",
    "sundayddr",
    "iwar",
    "vaxsipuseragent",
    "pplsip",
    "smap",
    "sipptk",
)


LOOPBACK: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


class Verdict(enum.Enum):
    ADMIT = "admit"
    DROP = "drop"  # no answer at all


@dataclass(frozen=True, slots=True)
class GuardSettings:
    enabled: bool = True
    requests_per_s: float = 50.0  # per source address, every method
    request_burst: int = 100
    registers_per_s: float = 2.0  # REGISTERs per source address (phones refresh every few minutes)
    register_burst: int = 20
    auth_failures: int = 5  # failed digest attempts in auth_window_s that ban the source
    auth_window_s: float = 60.0
    ban_s: float = 600.0
    number_scan_failures: int = 10  # distinct non-public numbers in auth_window_s that ban the source
    max_calls_per_source: int = 50  # 0 = no per-source cap
    max_calls: int = 500  # 0 = no cap in total
    retry_after_s: int = 30
    scanner_user_agents: tuple[str, ...] = DEFAULT_SCANNERS
    # Networks (CIDR or address) exempt from rates, bans and the per-source cap: loopback by default
    # (a proxy or test tool on this machine); add the trunk's and a Kamailio's addresses.
    trusted: tuple[str, ...] = LOOPBACK
    max_tracked: int = 100_000


@dataclass(slots=True)
class _Source:
    tokens: float
    register_tokens: float
    seen: float
    failures: list[float] = field(default_factory=list)
    banned_until: float = 0.0
    warned_at: float = float("-inf")
    scans: dict[str, float] = field(default_factory=dict)  # non-public number dialled → when (last)
    refused_logged_at: float = float("-inf")
    refused_unlogged: int = 0  # refusals since the last unknown_source_refused line


class SipGuard:
    def __init__(self, settings: GuardSettings | None = None) -> None:
        self.settings = settings or GuardSettings()
        self._trusted = tuple(ipaddress.ip_network(net, strict=False) for net in self.settings.trusted)
        self._scanners = tuple(s.lower() for s in self.settings.scanner_user_agents)
        self._sources: OrderedDict[str, _Source] = OrderedDict()  # least recently seen first
        self.stats = {
            "scanners": 0,
            "rate_limited": 0,
            "banned_dropped": 0,
            "bans": 0,
            "calls_refused": 0,
            "numbers_refused": 0,
        }

    # -- requests ---------------------------------------------------------------------------------
    def check(self, host: str, method: str, user_agent: str | None, now: float) -> Verdict:
        """Whether a request from ``host`` goes on. Responses are never checked (they answer us)."""
        s = self.settings
        if not s.enabled:
            return Verdict.ADMIT
        if user_agent and self._scanners:
            ua = user_agent.lower()
            if any(name in ua for name in self._scanners):
                self.stats["scanners"] += 1
                return Verdict.DROP
        if self.is_trusted(host):
            return Verdict.ADMIT
        src = self._source(host, now)
        if src.banned_until > now:
            self.stats["banned_dropped"] += 1
            return Verdict.DROP
        elapsed = max(0.0, now - src.seen)
        src.seen = now
        src.tokens = min(float(s.request_burst), src.tokens + elapsed * s.requests_per_s)
        src.register_tokens = min(float(s.register_burst), src.register_tokens + elapsed * s.registers_per_s)
        if method == "ACK":
            return Verdict.ADMIT  # completes a transaction already admitted; costs no state
        if src.tokens < 1.0 or (method == "REGISTER" and src.register_tokens < 1.0):
            self.stats["rate_limited"] += 1
            if now - src.warned_at >= 60.0:
                src.warned_at = now
                log_event(log, "sip_rate_limited", level=logging.WARNING, source=host, method=method)
            return Verdict.DROP
        src.tokens -= 1.0
        if method == "REGISTER":
            src.register_tokens -= 1.0
        return Verdict.ADMIT

    # -- authentication ---------------------------------------------------------------------------
    def auth_failed(self, host: str, now: float, *, username: str | None = None) -> bool:
        """Count one failed digest attempt; True when it banned the source."""
        s = self.settings
        if not s.enabled or s.auth_failures <= 0 or self.is_trusted(host):
            return False
        src = self._source(host, now)
        src.failures = [t for t in src.failures if now - t < s.auth_window_s]
        src.failures.append(now)
        if len(src.failures) < s.auth_failures:
            return False
        src.failures.clear()
        self._ban(src, host, now, reason="auth_failures", username=username, failures=s.auth_failures)
        return True

    # -- number scans -----------------------------------------------------------------------------
    def number_refused(self, host: str, number: str, now: float) -> bool:
        """An unknown source dialled ``number``, which is not public, and was refused: logged (at most
        once a minute per source, with the count left unlogged since) and counted toward a scan ban.
        A redial of the same number is not a scan: only distinct numbers count. True when it banned."""
        s = self.settings
        self.stats["numbers_refused"] += 1
        src = self._source(host, now)
        if now - src.refused_logged_at >= 60.0:
            log_event(
                log,
                "unknown_source_refused",
                level=logging.WARNING,
                source=host,
                number=number[:64],
                unlogged=src.refused_unlogged,
            )
            src.refused_logged_at, src.refused_unlogged = now, 0
        else:
            src.refused_unlogged += 1
        if not s.enabled or s.number_scan_failures <= 0 or self.is_trusted(host):
            return False
        scans = {n: t for n, t in src.scans.items() if now - t < s.auth_window_s}
        scans[number[:64]] = now
        src.scans = scans
        if len(scans) < s.number_scan_failures:
            return False
        scans.clear()
        self._ban(src, host, now, reason="number_scan", numbers=s.number_scan_failures)
        return True

    def _ban(self, src: _Source, host: str, now: float, **fields: Any) -> None:
        src.banned_until = now + self.settings.ban_s
        self.stats["bans"] += 1
        log_event(
            log, "sip_source_banned", level=logging.WARNING, source=host, ban_s=self.settings.ban_s, **fields
        )

    def banned(self, host: str, now: float) -> bool:
        src = self._sources.get(host)
        return src is not None and src.banned_until > now

    def unban(self, host: str) -> None:
        src = self._sources.get(host)
        if src is not None:
            src.banned_until = 0.0
            src.failures.clear()
            src.scans.clear()

    # -- concurrent calls -------------------------------------------------------------------------
    def call_refused(self, host: str, from_source: int, total: int) -> int | None:
        """Retry-After seconds when a new call from ``host`` would exceed a cap (``from_source`` and
        ``total`` count the calls already up), else None."""
        s = self.settings
        if not s.enabled:
            return None
        over_total = s.max_calls > 0 and total >= s.max_calls
        over_source = s.max_calls_per_source > 0 and from_source >= s.max_calls_per_source
        if over_total or (over_source and not self.is_trusted(host)):
            self.stats["calls_refused"] += 1
            return s.retry_after_s
        return None

    # -- helpers ----------------------------------------------------------------------------------
    def is_trusted(self, host: str) -> bool:
        if not self._trusted:
            return False
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(address in net for net in self._trusted)

    def _source(self, host: str, now: float) -> _Source:
        src = self._sources.get(host)
        if src is None:
            s = self.settings
            if len(self._sources) >= s.max_tracked:
                self._evict(now)
            src = _Source(float(s.request_burst), float(s.register_burst), now)
            self._sources[host] = src
        else:
            self._sources.move_to_end(host)
        return src

    def _evict(self, now: float) -> None:
        """Forget the least recently seen sources that are not banned (a flood of spoofed addresses
        must not grow memory, nor push real bans out)."""
        drop = max(1, len(self._sources) // 10)
        for host in list(self._sources):
            if drop == 0:
                break
            if self._sources[host].banned_until <= now:
                del self._sources[host]
                drop -= 1
        while len(self._sources) >= self.settings.max_tracked:  # every one banned: oldest ban goes
            self._sources.popitem(last=False)

    def tracked(self) -> Iterable[str]:
        return self._sources.keys()
