"""Caps and timeouts for SIP over TCP/TLS connections: the bookkeeping, sans-I/O (``now`` passed in).

A stream socket is a file descriptor held until someone closes it, so a peer that opens many, or opens
one and never speaks (slowloris), exhausts the server where UDP would cost nothing. The same defences
as Kamailio (``tcp_max_connections``, ``tcp_connection_lifetime``, ``tcp_msg_data_timeout``, TLS
handshake timeouts) and Asterisk (``tcpauthlimit``, ``tcpauthtimeout``):

* **Caps**, checked when a connection is accepted, before any TLS work: ``max_total`` inbound
  connections, ``max_per_source`` from one address (``trusted`` sources — a Kamailio in front, the
  trunk — are never refused). Beyond them the new connection is closed at once, with one warning per
  source per ``warn_interval_s``. Connections we open ourselves are counted but never refused.
* **Handshake**: a TLS connection must finish its handshake within ``handshake_timeout_s``.
* **First message**: an inbound connection must deliver one complete SIP message within
  ``first_message_timeout_s`` of its accept (CRLF keep-alives do not count); a message whose first
  bytes arrived must be complete within the same time, however slowly the rest trickles in.
* **Idle**: no bytes either way for ``idle_timeout_s`` closes the connection — CRLF keep-alives
  (RFC 5626 §4.4.1) are traffic — *unless* the transport's ``needed`` predicate says the connection is
  still in use: RFC 3261 §18.2.2 / RFC 5626 §5.3 send responses and requests to a phone behind NAT
  over the connection it opened, so a connection carrying a live registration binding or dialog is
  kept (and asked again after another idle period).

Deadlines sit in a heap with one live item per connection; an item found early (the connection saw
traffic since) is pushed back at its new deadline, so traffic costs a few attribute writes, not a heap
operation. A deadline that moves *earlier* (a partial message starts) pushes a second item; the stale
one is skipped when popped.
"""

from __future__ import annotations

import enum
import heapq
import ipaddress
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from callcenter.core.logging import log_event

__all__ = ["LOOPBACK", "ConnectionLimits", "ConnectionTable", "Expiry"]

log = logging.getLogger("callcenter.sip.connections")

LOOPBACK: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
_WARNED_MAX = 10_000  # sources remembered for rate-limiting warnings


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """0 turns a cap or a timeout off."""

    max_total: int = 2000  # inbound connections open at once, every source together
    max_per_source: int = 20  # inbound connections from one address
    handshake_timeout_s: float = 5.0
    first_message_timeout_s: float = 10.0
    # 10 minutes: well past RFC 5626's 95-120 s keep-alive interval (§4.4.1) and the 5-10 minute
    # re-REGISTER or OPTIONS pings of phones that skip RFC 5626, so only a connection nobody uses is
    # closed; registered phones and dialogs are kept by `needed` whatever this says.
    idle_timeout_s: float = 600.0
    trusted: tuple[str, ...] = LOOPBACK  # networks never refused (sip.protection.trusted)
    warn_interval_s: float = 60.0

    @property
    def tick_s(self) -> float:
        """How often a transport should look at the table at the least: half the shortest timeout
        (at most 1 s), so a deadline set while it slept is late by no more than that."""
        timeouts = [
            t for t in (self.handshake_timeout_s, self.first_message_timeout_s, self.idle_timeout_s) if t > 0
        ]
        return min([1.0, *(t / 2 for t in timeouts)])


class Expiry(enum.Enum):
    """Why a connection is to be closed."""

    HANDSHAKE = "handshake_timeout"
    FIRST_MESSAGE = "first_message_timeout"
    STALLED = "partial_message_timeout"
    IDLE = "idle_timeout"


@dataclass(slots=True)
class _Conn:
    host: str
    inbound: bool
    opened: float
    handshaking: bool
    got_message: bool
    partial_since: float | None
    last_traffic: float
    queued: float  # time of this connection's live heap item (math.inf: none)
    closing: bool = False


class ConnectionTable:
    """Every TCP (or TLS) connection of one transport, by an integer id the table hands out."""

    def __init__(self, limits: ConnectionLimits | None = None, name: str = "tcp") -> None:
        self.limits = limits or ConnectionLimits()
        self.name = name
        self._trusted = tuple(ipaddress.ip_network(n, strict=False) for n in self.limits.trusted)
        self._conns: dict[int, _Conn] = {}
        self._per_source: dict[str, int] = {}  # inbound connections by source address
        self._inbound = 0
        self._next_id = 1
        self._heap: list[tuple[float, int]] = []  # (deadline, id)
        self._warned: dict[tuple[str, str], tuple[float, int]] = {}  # (source, event) → (when, muted)
        self.stats = {
            "refused_total": 0,
            "refused_source": 0,
            "refused_banned": 0,  # counted by the transport (the SIP guard's ban, not a cap)
            **{e.value: 0 for e in Expiry},
        }

    # -- queries ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._conns)

    def __contains__(self, cid: int) -> bool:
        return cid in self._conns

    @property
    def inbound(self) -> int:
        return self._inbound

    def from_source(self, host: str) -> int:
        return self._per_source.get(host, 0)

    def is_trusted(self, host: str) -> bool:
        if not self._trusted:
            return False
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        return any(address in net for net in self._trusted)

    # -- opening ----------------------------------------------------------------------------------
    def admit(self, host: str, now: float, *, handshake: bool = False) -> int | None:
        """An inbound connection from ``host`` was accepted: its id, or None when a cap refuses it
        (close it at once; a warning was logged unless one was for this source lately)."""
        lim = self.limits
        over_total = lim.max_total > 0 and self._inbound >= lim.max_total
        over_source = lim.max_per_source > 0 and self._per_source.get(host, 0) >= lim.max_per_source
        if (over_total or over_source) and not self.is_trusted(host):
            limit = "max_per_source" if over_source else "max_total"
            self.stats["refused_source" if over_source else "refused_total"] += 1
            from_source = self._per_source.get(host, 0)
            self._warn(
                host,
                "sip_connection_refused",
                now,
                limit=limit,
                open_from_source=from_source,
                open_total=self._inbound,
            )
            return None
        self._inbound += 1
        self._per_source[host] = self._per_source.get(host, 0) + 1
        return self._add(host, now, inbound=True, handshake=handshake)

    def add_outbound(self, host: str, now: float) -> int:
        """A connection we opened (already connected): counted, never refused, no first-message
        timeout (the peer answers what we send)."""
        return self._add(host, now, inbound=False, handshake=False)

    def _add(self, host: str, now: float, *, inbound: bool, handshake: bool) -> int:
        cid = self._next_id
        self._next_id += 1
        conn = _Conn(host, inbound, now, handshake, False, None, now, math.inf)
        self._conns[cid] = conn
        self._requeue(cid, conn)
        return cid

    def established(self, cid: int, now: float) -> None:
        """The TLS handshake finished (or the TCP connection is ready)."""
        conn = self._conns.get(cid)
        if conn is not None and conn.handshaking:
            conn.handshaking = False
            conn.last_traffic = now

    # -- traffic ----------------------------------------------------------------------------------
    def received(self, cid: int, now: float, *, messages: int, partial: bool) -> None:
        """Bytes arrived: ``messages`` complete SIP messages were framed from them, and ``partial``
        says whether part of a next message is still buffered (CR/LF keep-alive bytes are not)."""
        conn = self._conns.get(cid)
        if conn is None:
            return
        conn.last_traffic = now
        if messages:
            conn.got_message = True
            conn.partial_since = None
        if partial:
            if conn.partial_since is None:
                conn.partial_since = now
                # The only way a deadline moves earlier: queue an item for it.
                if self.limits.first_message_timeout_s > 0:
                    deadline = now + self.limits.first_message_timeout_s
                    if deadline < conn.queued:
                        conn.queued = deadline
                        self._push(deadline, cid)
        else:
            conn.partial_since = None

    def sent(self, cid: int, now: float) -> None:
        conn = self._conns.get(cid)
        if conn is not None:
            conn.last_traffic = now

    def closed(self, cid: int) -> None:
        """The connection is gone (whoever closed it). Unknown ids are ignored."""
        conn = self._conns.pop(cid, None)
        if conn is None or not conn.inbound:
            return
        self._inbound -= 1
        left = self._per_source.get(conn.host, 0) - 1
        if left > 0:
            self._per_source[conn.host] = left
        else:
            self._per_source.pop(conn.host, None)

    # -- timers -----------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """The earliest time something may be due (possibly a stale item: harmless), or None."""
        return self._heap[0][0] if self._heap else None

    def handle_timer(
        self, now: float, needed: Callable[[int], bool] | None = None
    ) -> list[tuple[int, Expiry]]:
        """The connections to close now, and why. Each is reported once (it stays counted until
        :meth:`closed`). ``needed(id)`` is asked before an idle one is reported: True keeps it for
        another idle period."""
        out: list[tuple[int, Expiry]] = []
        while self._heap and self._heap[0][0] <= now:  # (_push may rebuild the heap: no alias)
            at, cid = heapq.heappop(self._heap)
            conn = self._conns.get(cid)
            if conn is None or conn.closing or conn.queued != at:
                continue  # closed, already reported, or superseded by an earlier item
            conn.queued = math.inf
            deadline, why = self._deadline(conn)
            if deadline > now:
                self._requeue(cid, conn)
                continue
            if why is Expiry.IDLE and needed is not None and needed(cid):
                conn.last_traffic = now  # in use: look again after another idle period
                self._requeue(cid, conn)
                continue
            assert why is not None
            conn.closing = True
            self.stats[why.value] += 1
            out.append((cid, why))
            if why is Expiry.IDLE:
                log_event(
                    log,
                    "sip_connection_idle_closed",
                    level=logging.DEBUG,
                    transport=self.name,
                    source=conn.host,
                )
            else:
                self._warn(conn.host, "sip_connection_timeout", now, reason=why.value)
        return out

    def _deadline(self, conn: _Conn) -> tuple[float, Expiry | None]:
        lim = self.limits
        if conn.handshaking and lim.handshake_timeout_s > 0:
            return conn.opened + lim.handshake_timeout_s, Expiry.HANDSHAKE
        best, why = math.inf, None
        if lim.first_message_timeout_s > 0:
            if conn.inbound and not conn.got_message:
                best, why = conn.opened + lim.first_message_timeout_s, Expiry.FIRST_MESSAGE
            if conn.partial_since is not None and conn.partial_since + lim.first_message_timeout_s < best:
                best, why = conn.partial_since + lim.first_message_timeout_s, Expiry.STALLED
        if lim.idle_timeout_s > 0 and conn.last_traffic + lim.idle_timeout_s < best:
            best, why = conn.last_traffic + lim.idle_timeout_s, Expiry.IDLE
        return best, why

    def _requeue(self, cid: int, conn: _Conn) -> None:
        deadline, _ = self._deadline(conn)
        if deadline < conn.queued:
            conn.queued = deadline
            self._push(deadline, cid)

    def _push(self, deadline: float, cid: int) -> None:
        heapq.heappush(self._heap, (deadline, cid))
        if len(self._heap) > 4 * len(self._conns) + 1024:
            # Mostly superseded items (busy connections whose messages span reads): keep the live ones.
            self._heap = [(c.queued, i) for i, c in self._conns.items() if c.queued != math.inf]
            heapq.heapify(self._heap)

    # -- logging ----------------------------------------------------------------------------------
    def _warn(self, host: str, event: str, now: float, **fields: Any) -> None:
        """One warning per (source, event) per ``warn_interval_s``; the next says how many were muted."""
        key = (host, event)
        last = self._warned.get(key)
        if last is not None and now - last[0] < self.limits.warn_interval_s:
            self._warned[key] = (last[0], last[1] + 1)
            return
        if len(self._warned) >= _WARNED_MAX:
            horizon = now - self.limits.warn_interval_s
            self._warned = {k: v for k, v in self._warned.items() if v[0] > horizon}
            if len(self._warned) >= _WARNED_MAX:
                self._warned.clear()
        self._warned[key] = (now, 0)
        log_event(
            log,
            event,
            level=logging.WARNING,
            transport=self.name,
            source=host,
            muted=last[1] if last is not None else 0,
            **fields,
        )
