"""Load-aware admission of new calls (sans-I/O): shed new INVITEs before the event loop saturates.

Why new INVITEs only: RFC 6357 §4-5 shows that a SIP server which keeps accepting work beyond its
capacity loses responses and ACKs in its input queue; callers retransmit (RFC 3261 §17.1.1.2), which
adds load, and "goodput" collapses. Rejecting *new* sessions early and cheaply (503 + Retry-After,
RFC 3261 §21.5.4) keeps the work already admitted — ACKs, BYEs, CANCELs, in-dialog requests — flowing,
so completed calls stay at the ceiling. RFC 7339 §5.10 likewise orders what to shed: new dialogs
first, in-dialog requests last.

The signals are local (no peer support needed, unlike RFC 7339's Via parameters): every ``interval_s``
the endpoint reports the bytes waiting in its UDP sockets' receive queues (Linux ``SO_MEMINFO``) and
the bytes it read, so the guard knows how long a request now waits before the loop reads it; the CPU
seconds its event-loop thread used; and how late the sample itself fired (loop lag). A queue delay
beyond ``delay_high_s`` is the symptom that matters — past T1 (500 ms) every caller retransmits —
and the only one that shows when the CPU is shared with other processes; a thread busy beyond
``busy_high`` or a lag beyond ``lag_high_s`` warn earlier. The controller is rate-based (RFC 7415's model,
computed locally): on overload the admitted INVITE rate is cut (in proportion to the overshoot for
CPU, by a fixed step for a queue or lag), at most once per ``hold_s`` and not before the queue seen
at the last cut has drained (the loop needs that long to show the effect); while calm it grows by
``increase`` per sample, and it is dropped once far above what callers offer. Admission against the
limit is a token bucket, so rejections spread evenly instead of in bursts.

``drain()`` (SIGTERM) refuses every new call from then on; the endpoint also answers OPTIONS 503, so a
dispatcher in front (Kamailio) stops sending calls here.
"""

from __future__ import annotations

import logging
import zlib
from collections import OrderedDict
from dataclasses import dataclass

from callcenter.core.logging import log_event

__all__ = [
    "OVERLOAD_TAG_PREFIX",
    "OverloadGuard",
    "OverloadSettings",
    "RawInvite",
    "is_ack_of_refusal",
    "overload_tag",
    "peek_new_invite",
    "refusal_503",
]


log = logging.getLogger("callcenter.sip.overload")


@dataclass(frozen=True, slots=True)
class OverloadSettings:
    enabled: bool = True
    interval_s: float = 0.1  # how often the endpoint samples the loop
    busy_high: float = 0.95  # share of wall time the loop thread computes that counts as overload
    # A request waiting this long in the socket's queue, or a sample firing this late, is overload:
    # half of T1, so answers still leave before callers retransmit (RFC 3261 §17.1.1.2).
    lag_high_s: float = 0.25
    delay_high_s: float = 0.25
    hold_s: float = 0.5  # at most one cut per hold_s
    increase: float = 0.02  # growth of the limit per calm sample
    min_rate: float = 10.0  # new calls/s admitted however loaded (the server must stay reachable)
    max_invites_per_s: float = 0.0  # a fixed ceiling on new calls/s; 0 = none
    retry_after_s: int = 5  # Retry-After on a 503 for overload
    # A refused INVITE stays refused for the caller's whole retransmission window (Timer B = 64*T1,
    # RFC 3261 §17.1.1.2): admitting a retransmission after the caller already took our 503 would
    # make a call it never ACKs. At most ``remember`` refusals are kept.
    remember_s: float = 32.0
    remember: int = 200_000
    drain_retry_after_s: int = 30  # ... and while shutting down


class OverloadGuard:
    def __init__(self, settings: OverloadSettings | None = None) -> None:
        self.settings = settings or OverloadSettings()
        s = self.settings
        self.limit: float | None = s.max_invites_per_s or None  # new calls/s admitted; None = no limit
        self.draining = False
        self.busy = 0.0  # smoothed share of the loop thread's time spent computing
        self.lag_s = 0.0  # lateness of the last sample
        self.offered_rate = 0.0  # smoothed new INVITEs/s seen (admitted or not)
        self._tokens = 0.0
        self._bucket_at: float | None = None
        self.queue_delay_s = 0.0  # how long a datagram now waits in the receive queue (estimate)
        self._last: tuple[float, float, int] | None = None  # (now, cpu, bytes read) at the last sample
        self._cut_at = float("-inf")
        self._delay_at_cut = 0.0
        self._admitted = 0
        self.admitted_rate = 0.0  # smoothed new calls/s admitted
        self._shed_from = 0
        self._offered = 0
        self._refused: OrderedDict[tuple[str, str], float] = OrderedDict()  # key → refused at
        self.stats = {"admitted": 0, "rejected": 0, "cuts": 0}

    @property
    def limiting(self) -> bool:
        """Whether new INVITEs must be checked at all (the cheap test the endpoint makes first)."""
        return self.draining or (self.settings.enabled and self.limit is not None)

    # -- the endpoint's periodic report -----------------------------------------------------------
    def sample(
        self, now: float, cpu_s: float, lag_s: float, queued_bytes: int = 0, read_bytes: int = 0
    ) -> None:
        """One report: ``cpu_s`` is the loop thread's CPU time so far, ``lag_s`` how late this sample
        ran after its due time, ``queued_bytes`` what waits in the receive queues now and
        ``read_bytes`` what the endpoint has read from them so far (both in the kernel's accounting)."""
        s = self.settings
        self._forget(now)  # also when no INVITE comes any more: the memory goes back
        last, self._last = self._last, (now, cpu_s, read_bytes)
        if last is None or now <= last[0]:
            return
        dt = now - last[0]
        busy = min(1.0, max(0.0, (cpu_s - last[1]) / dt))
        self.busy += 0.5 * (busy - self.busy)
        self.lag_s = lag_s
        drain_rate = (read_bytes - last[2]) / dt  # bytes/s the loop takes off the queue
        if queued_bytes <= 0:
            self.queue_delay_s = 0.0
        else:
            self.queue_delay_s = queued_bytes / drain_rate if drain_rate > 0 else dt
        self.offered_rate += 0.3 * (self._offered / dt - self.offered_rate)
        self.admitted_rate += 0.3 * (self._admitted / dt - self.admitted_rate)
        self._offered = self._admitted = 0
        if not s.enabled:
            return
        late = lag_s >= s.lag_high_s or self.queue_delay_s >= s.delay_high_s
        overloaded = late or self.busy >= s.busy_high
        if overloaded:
            # A cut shows once the queue present at that moment has drained: wait that long (at least
            # hold_s), and cut no more while the queue shrinks.
            since = now - self._cut_at
            if since < max(s.hold_s, self._delay_at_cut):
                return
            if self.limit is not None and late and self.queue_delay_s < 0.7 * self._delay_at_cut:
                self._delay_at_cut = self.queue_delay_s
                return
            self._cut_at = now
            self._delay_at_cut = self.queue_delay_s
            self.stats["cuts"] += 1
            current = max(s.min_rate, self.admitted_rate)
            if self.limit is not None:
                current = min(current, self.limit)
            # Cut in proportion to the overshoot (aim a little under the threshold); a queue or a late
            # loop (the CPU taken by others) says nothing about the ratio: a fixed cut, so it drains.
            factor = 0.7 if late else (s.busy_high * 0.9) / max(self.busy, s.busy_high)
            if self.limit is None:
                self._shed_from = self.stats["rejected"]
                log_event(
                    log,
                    "sip_overload",
                    level=logging.WARNING,
                    busy=round(self.busy, 2),
                    lag_ms=round(lag_s * 1000),
                    queue_ms=round(self.queue_delay_s * 1000),
                    offered_per_s=round(self.offered_rate),
                )
            self.limit = max(s.min_rate, current * factor)
            log_event(
                log,
                "sip_overload_cut",
                level=logging.DEBUG,
                limit=round(self.limit),
                busy=round(self.busy, 2),
                lag_ms=round(lag_s * 1000),
                queue_ms=round(self.queue_delay_s * 1000),
            )
        elif self.limit is not None:
            self.limit *= 1.0 + s.increase
            ceiling = s.max_invites_per_s
            if ceiling and self.limit >= ceiling:
                self.limit = ceiling
            elif not ceiling and self.limit > 2.0 * self.offered_rate + s.min_rate:
                self.limit = None  # callers offer far less than we would take: no limit
                log_event(
                    log,
                    "sip_overload_over",
                    level=logging.WARNING,
                    refused=self.stats["rejected"] - self._shed_from,
                    cuts=self.stats["cuts"],
                )

    # -- admission --------------------------------------------------------------------------------
    def admit_invite(self, now: float, key: tuple[str, str] | None = None) -> int | None:
        """Called for each new INVITE (not a re-INVITE, not a retransmission of one admitted): None to
        admit it, else the Retry-After seconds of the 503 that refuses it. ``key`` (Call-ID, From tag)
        makes a retransmission of an INVITE refused earlier refused again."""
        s = self.settings
        refused = self._refused
        self._forget(now)
        if key is not None and key in refused:
            self.stats["rejected"] += 1
            return s.drain_retry_after_s if self.draining else s.retry_after_s
        self._offered += 1
        if self.draining:
            self.stats["rejected"] += 1
            return s.drain_retry_after_s
        limit = self.limit
        if not s.enabled or limit is None:
            self.stats["admitted"] += 1
            self._admitted += 1
            return None
        burst = max(1.0, limit * 0.05)
        if self._bucket_at is None:
            self._tokens = burst
        else:
            self._tokens = min(burst, self._tokens + max(0.0, now - self._bucket_at) * limit)
        self._bucket_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.stats["admitted"] += 1
            self._admitted += 1
            return None
        self.stats["rejected"] += 1
        if key is not None:
            refused[key] = now
        return s.retry_after_s

    def _forget(self, now: float) -> None:
        """Drop refusals older than the retransmission window (or beyond ``remember`` of them)."""
        refused, s = self._refused, self.settings
        while refused:
            oldest_key, at = next(iter(refused.items()))
            if now - at < s.remember_s and len(refused) <= s.remember:
                break
            del refused[oldest_key]

    def drain(self) -> None:
        """Shutting down: refuse every new call from now on."""
        self.draining = True


# -- the cheap path: refusing a new INVITE from its raw bytes -------------------------------------------
#
# Under overload, parsing is what the loop spends its time on (a full parse costs several times what
# the few header lookups below do). A datagram refused here is never parsed: the 503 copies Via, From,
# To, Call-ID and CSeq byte for byte (§8.2.6.2), with a To tag derived from Call-ID and From, so a
# retransmission gets the same answer (§8.2.7) and its ACK is recognised by that tag and dropped.
# Anything unusual (folded lines, missing headers, a To tag) falls back to the full path.

OVERLOAD_TAG_PREFIX = "x503-"
_COPIED = {
    b"via": b"Via",
    b"v": b"Via",
    b"from": b"From",
    b"f": b"From",
    b"to": b"To",
    b"t": b"To",
    b"call-id": b"Call-ID",
    b"i": b"Call-ID",
    b"cseq": b"CSeq",
}
_TAG_BYTES = b";tag=" + OVERLOAD_TAG_PREFIX.encode()


def overload_tag(call_id: str, from_value: str) -> str:
    """The To tag of a stateless 503: the same for every retransmission of one INVITE."""
    seed = (call_id + "\x00" + from_value).encode("utf-8", "surrogateescape")  # wire bytes kept as is
    return f"{OVERLOAD_TAG_PREFIX}{zlib.crc32(seed):08x}"


@dataclass(frozen=True, slots=True)
class RawInvite:
    """The few fields of a new INVITE the cheap path needs, and its head's copied lines."""

    call_id: str
    from_value: str
    from_tag: str
    lines: list[tuple[bytes, bytes]]  # (canonical name, value) in order, for the 503


def peek_new_invite(data: bytes) -> RawInvite | None:
    """A datagram that is an INVITE outside any dialog, read just enough to refuse it; None when it is
    anything else or unusual (the full parser then decides)."""
    if not data.startswith(b"INVITE "):
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines: list[tuple[bytes, bytes]] = []
    call_id = from_value = None
    for line in data[:end].split(b"\r\n")[1:]:
        if line[:1] in (b" ", b"\t"):
            return None  # folded header: leave it to the parser
        name, sep, value = line.partition(b":")
        if not sep:
            return None
        canonical = _COPIED.get(name.strip().lower())
        if canonical is None:
            continue
        value = value.strip()
        if canonical == b"To" and b";tag=" in value.lower():
            return None  # a re-INVITE within a dialog always passes
        if canonical == b"Call-ID":
            if call_id is not None:
                return None  # repeated: the parser answers 400
            call_id = value
        elif canonical == b"From":
            if from_value is not None:
                return None
            from_value = value
        elif canonical == b"To" and any(n == b"To" for n, _ in lines):
            return None
        lines.append((canonical, value))
    if call_id is None or from_value is None or len({n for n, _ in lines}) < 5:
        return None
    try:
        call_id_text, from_text = call_id.decode(), from_value.decode()
    except UnicodeDecodeError:
        return None
    at = from_text.lower().find(";tag=")
    from_tag = from_text[at + 5 :].split(";")[0].strip() if at >= 0 else ""
    return RawInvite(call_id_text, from_text, from_tag, lines)


def refusal_503(invite: RawInvite, source_host: str, retry_after_s: int, server: str) -> bytes:
    """The stateless 503 + Retry-After for ``invite`` (``received`` added to the top Via, §18.2.1)."""
    out = [b"SIP/2.0 503 Service Unavailable"]
    first_via = True
    for name, value in invite.lines:
        if name == b"Via" and first_via:
            first_via = False
            if b";received=" not in value.lower():
                top, comma, rest = value.partition(b",")
                value = top.rstrip() + b";received=" + source_host.encode() + comma + rest
        out.append(name + b": " + value)
    tag = overload_tag(invite.call_id, invite.from_value).encode()
    out = [line + b";tag=" + tag if line.startswith(b"To: ") else line for line in out]
    out.append(b"Retry-After: " + str(retry_after_s).encode())
    if server:
        out.append(b"Server: " + server.encode())
    out.append(b"Content-Length: 0")
    return b"\r\n".join(out) + b"\r\n\r\n"


def is_ack_of_refusal(data: bytes) -> bool:
    """An ACK for one of our stateless 503s (its To carries our tag): nothing to do with it."""
    if not data.startswith(b"ACK ") or _TAG_BYTES not in data:
        return False
    end = data.find(b"\r\n\r\n")
    for line in data[: end if end >= 0 else len(data)].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"to", b"t"):
            return _TAG_BYTES in value
    return False
