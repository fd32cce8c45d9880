"""The registrar's binding table (RFC 3261 §10.3), pure: no I/O, no clock reads, no message objects.

The caller authenticates the REGISTER, checks the To user against the authenticated user, extracts the
Contact values and passes plain values here; ``RegisterResult`` says which response to send.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from callcenter.sip.message import SipParseError
from callcenter.sip.uri import parse_name_addr, parse_uri

__all__ = [
    "Binding",
    "ContactRequest",
    "RegisterResult",
    "Registrar",
    "contact_key",
    "path_received",
    "normalize_aor",
]

# RFC 3261 §10.3 step 7: 423 only for intervals "smaller than one hour".
_ONE_HOUR = 3600


def normalize_aor(aor: str) -> str:
    """``<SIP:Alice@Example.COM;transport=tcp>`` -> ``Alice@example.com``.

    Drops angle brackets, the ``sip:`` scheme, URI parameters and headers; lower-cases the host (the
    user part stays case-sensitive, RFC 3261 §19.1.4). ``sips:`` is kept: it is a different AOR.
    """
    text = aor.strip().strip("<>").strip()
    if text[:4].lower() == "sip:":
        text = text[4:]
    elif text[:5].lower() == "sips:":
        text = "sips:" + text[5:]
    user, at, host = text.rpartition("@")
    for sep in ";?":
        host = host.split(sep, 1)[0]
    return f"{user}{at}{host.lower()}"


def contact_key(uri: str, params: Mapping[str, str | None] | None = None) -> str:
    """Identity of a binding: RFC 5626 ``+sip.instance`` (+ ``reg-id``) when present, else the URI.

    The URI form is a simplified RFC 3261 §19.1.4 comparison: user part case-sensitive, the rest
    case-insensitive, URI parameters in any order.
    """
    if params:
        lowered = {k.lower(): v for k, v in params.items()}
        instance = (lowered.get("+sip.instance") or "").strip('"<>')
        if instance:
            return f"instance:{instance}:{lowered.get('reg-id') or ''}"
    text = uri.strip().strip("<>").strip()
    headers = ""
    if "?" in text.rpartition("@")[2]:
        text, _, headers = text.rpartition("?")
    scheme, _, rest = text.partition(":")
    user, at, hostpart = rest.rpartition("@")
    host, *uri_params = hostpart.split(";")
    sorted_params = ";".join(sorted(p.strip().lower() for p in uri_params if p.strip()))
    return f"uri:{scheme.lower()}:{user}{at}{host.lower()};{sorted_params}?{headers.lower()}"


def path_received(path: Sequence[str], *, fallback: str | None = None) -> tuple[str, str, int] | None:
    """(transport, host, port) the phone sent a REGISTER from, as the Path proxy nearest to it says: the
    ``received`` parameter of the last Path entry (RFC 3327 §4; Kamailio's add_path_received(),
    percent-escaped), else ``fallback`` (a URI, e.g. the Contact); None when neither can be read."""
    if not path:
        return None
    try:
        last = parse_name_addr(path[-1])
        hop = parse_uri(last.uri)
        received = hop.params.get("received") or last.params.get("received")
        if received:
            uri = parse_uri(unquote(received.strip('"')))
        elif fallback is not None:
            uri = parse_uri(fallback)
        else:
            return None
    except SipParseError:
        return None
    return uri.transport, uri.host_for_socket, uri.port or 5060


@dataclass(frozen=True, slots=True)
class ContactRequest:
    """One Contact value of a REGISTER, as extracted by the caller."""

    uri: str  # the URI inside <...>, as received
    expires: int | None = None  # the Contact's expires parameter
    q: float | None = None
    params: Mapping[str, str | None] = field(default_factory=dict)  # raw header params (not URI params)


@dataclass(frozen=True, slots=True)
class Binding:
    aor: str
    contact: str  # URI to send requests to (before NAT handling)
    key: str  # contact_key(): identity inside the AOR
    expires_at: float
    q: float | None
    params: Mapping[str, str | None]
    call_id: str
    cseq: int
    source: tuple[str, int]  # where the REGISTER came from: send there to cross the NAT (RFC 5626 §5.3)
    transport: str  # "udp" / "tcp" / ...: the transport it came over
    registered_at: float  # last (re)registration
    # RFC 3327 Path values of the REGISTER, in order (proxies between us and the phone, e.g. Kamailio in
    # front of a cluster). Requests to this contact take them as a pre-loaded route set (§5.3).
    path: tuple[str, ...] = ()

    def remaining(self, now: float) -> int:
        """Whole seconds left, rounded up (0 once expired)."""
        return max(0, math.ceil(self.expires_at - now))

    def first_hop(self) -> tuple[str, str, int] | None:
        """(transport, host, port) of the first Path entry: where requests to this contact go (RFC 3327
        §5.3, RFC 3261 §8.1.2 with a pre-loaded route set); None without a (readable) Path."""
        if not self.path:
            return None
        try:
            uri = parse_uri(parse_name_addr(self.path[0]).uri)
        except SipParseError:
            return None
        return uri.transport, uri.host_for_socket, uri.port or 5060

    def origin(self) -> tuple[str, str, int]:
        """(transport, host, port) the phone itself sent its REGISTER from. Through a Path proxy the
        packet's source is the proxy: then the proxy's ``received`` parameter on its Path entry
        (Kamailio's add_path_received(), percent-escaped), else the Contact's own address."""
        if not self.path:
            return self.transport, self.source[0], self.source[1]
        found = path_received(self.path, fallback=self.contact)
        return found if found is not None else (self.transport, self.source[0], self.source[1])

    def contact_header(self, now: float) -> str:
        """A Contact value for the 200 OK: ``<uri>;params;q=..;expires=N`` (RFC 3261 §10.3 step 8)."""
        parts = [f"<{self.contact}>"]
        for name, value in self.params.items():
            if name.lower() in ("expires", "q"):
                continue
            parts.append(name if value is None else f"{name}={value}")
        if self.q is not None:
            parts.append(f"q={self.q:g}")
        parts.append(f"expires={self.remaining(now)}")
        return ";".join(parts)


@dataclass(frozen=True, slots=True)
class RegisterResult:
    status: int  # 200, 400, 403, 423 or 500
    reason: str
    aor: str
    bindings: tuple[Binding, ...] = ()  # all current bindings of the AOR after the request (200 only)
    min_expires: int | None = None  # for the 423's Min-Expires header
    added: tuple[Binding, ...] = ()  # contacts that were not bound before
    removed: tuple[Binding, ...] = ()  # bindings this request removed (Expires 0, '*', eviction)
    now: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == 200

    def contact_headers(self) -> list[str]:
        """Contact values for the 200 OK, each with the expires the registrar granted."""
        return [b.contact_header(self.now) for b in self.bindings]


class Registrar:
    """Bindings per AOR with expiry. ``expire(now)``/``next_expiry()`` drive the caller's timer."""

    def __init__(
        self,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 3600,
        *,
        max_contacts_per_aor: int = 10,
    ) -> None:
        if not 1 <= min_expires <= max_expires:
            raise ValueError(f"expected 1 <= min_expires <= max_expires, got {min_expires}, {max_expires}")
        if not min_expires <= default_expires <= max_expires:
            raise ValueError(f"default_expires {default_expires} outside [{min_expires}, {max_expires}]")
        if max_contacts_per_aor < 1:
            raise ValueError("max_contacts_per_aor must be at least 1")
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.max_contacts_per_aor = max_contacts_per_aor
        self._table: dict[str, dict[str, Binding]] = {}
        # (expires_at, aor, key); entries whose binding changed or vanished are skipped lazily.
        self._heap: list[tuple[float, str, str]] = []
        self._since_compaction = 0

    # -- queries --

    def lookup(self, aor: str, now: float) -> list[Binding]:
        """Unexpired bindings, highest q first (no q counts as 1.0), then most recently registered."""
        bindings = self._table.get(normalize_aor(aor), {})
        return list(self._sorted(b for b in bindings.values() if b.expires_at > now))

    def aors(self) -> list[str]:
        return list(self._table)

    def __len__(self) -> int:
        return sum(len(b) for b in self._table.values())

    def next_expiry(self) -> float | None:
        """When the earliest binding expires (for the caller's timer), or None."""
        heap = self._heap
        while heap:
            expires_at, aor, key = heap[0]
            binding = self._table.get(aor, {}).get(key)
            if binding is not None and binding.expires_at == expires_at:
                return expires_at
            heapq.heappop(heap)
        return None

    def expire(self, now: float) -> list[tuple[str, Binding]]:
        """Remove and return bindings whose time is up (expires_at <= now)."""
        out: list[tuple[str, Binding]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            expires_at, aor, key = heapq.heappop(heap)
            bindings = self._table.get(aor, {})
            binding = bindings.get(key)
            if binding is None or binding.expires_at != expires_at:
                continue  # refreshed or removed since
            del bindings[key]
            if not bindings:
                del self._table[aor]
            out.append((aor, binding))
        return out

    def remove(self, aor: str) -> list[Binding]:
        """Drop every binding of ``aor`` (an account deleted); returns them. Heap entries go lazily."""
        return list(self._table.pop(normalize_aor(aor), {}).values())

    # -- REGISTER --

    def register(
        self,
        aor: str,
        contacts: Sequence[ContactRequest],
        wildcard: bool,
        header_expires: int | None,
        call_id: str,
        cseq: int,
        now: float,
        source: tuple[str, int],
        transport: str,
        *,
        reject_brief: bool = True,
        path: Sequence[str] = (),
    ) -> RegisterResult:
        """Apply one REGISTER (RFC 3261 §10.3 steps 6-8); all or nothing.

        ``reject_brief=False`` raises too-short intervals to min_expires instead of answering 423
        (for a caller retrying after the peer ignored Min-Expires). ``path`` is the request's Path
        header values (RFC 3327 §5.3: stored with each contact it binds).
        """
        aor = normalize_aor(aor)
        current = {k: b for k, b in self._table.get(aor, {}).items() if b.expires_at > now}

        def result(
            status: int,
            reason: str,
            bindings: Iterable[Binding] = (),
            min_expires: int | None = None,
            added: Iterable[Binding] = (),
            removed: Iterable[Binding] = (),
        ) -> RegisterResult:
            return RegisterResult(
                status, reason, aor, self._sorted(bindings), min_expires, tuple(added), tuple(removed), now
            )

        if header_expires is not None and header_expires < 0:
            return result(400, "Invalid Expires")

        # Step 6: "Contact: *" only alone and with Expires: 0.
        if wildcard:
            if contacts or header_expires != 0:
                return result(400, "Wildcard Contact needs Expires: 0 and no other Contact")
            if any(b.call_id == call_id and cseq <= b.cseq for b in current.values()):
                return result(500, "Out of order CSeq")
            return result(200, "OK", removed=self._table.pop(aor, {}).values())

        if not contacts:  # a query: list the current bindings
            return result(200, "OK", bindings=current.values())

        # Step 7, first pass: validate everything before changing anything. A contact listed twice
        # counts once, with its last expiry.
        plan: dict[str, tuple[ContactRequest, int]] = {}
        for contact in contacts:
            expires = contact.expires if contact.expires is not None else header_expires
            if expires is None:
                expires = self.default_expires
            if expires < 0:
                return result(400, "Invalid expires parameter")
            if 0 < expires < self.min_expires and expires < _ONE_HOUR:
                if reject_brief:
                    return result(423, "Interval Too Brief", min_expires=self.min_expires)
                expires = self.min_expires
            key = contact_key(contact.uri, contact.params)
            existing = current.get(key)
            if existing is not None and existing.call_id == call_id and cseq <= existing.cseq:
                return result(500, "Out of order CSeq")
            plan[key] = (contact, min(expires, self.max_expires))
        if sum(1 for _, expires in plan.values() if expires) > self.max_contacts_per_aor:
            return result(403, "Too many contacts")

        # Second pass: apply. Expired bindings not yet swept stay for expire() to report, unless this
        # request replaces them, in which case they are reported as removed here.
        bindings = self._table.setdefault(aor, {})
        added: list[Binding] = []
        removed: list[Binding] = []
        for key, (contact, expires) in plan.items():
            old = bindings.pop(key, None)
            if old is not None and (old.expires_at <= now or expires == 0):
                removed.append(old)
            if expires == 0:
                continue
            binding = Binding(
                aor=aor,
                contact=contact.uri.strip().strip("<>").strip(),
                key=key,
                expires_at=now + expires,
                q=contact.q,
                params=dict(contact.params),
                call_id=call_id,
                cseq=cseq,
                source=source,
                transport=transport.lower(),
                registered_at=now,
                path=tuple(path),
            )
            bindings[key] = binding
            heapq.heappush(self._heap, (binding.expires_at, aor, key))
            if old is None or old.expires_at <= now:
                added.append(binding)
        # Phones that reboot without unregistering leave bindings behind: evict the oldest.
        live = [b for b in bindings.values() if b.expires_at > now]
        while len(live) > self.max_contacts_per_aor:
            oldest = min(live, key=lambda b: b.registered_at)
            live.remove(oldest)
            del bindings[oldest.key]
            if oldest in added:
                added.remove(oldest)
            else:
                removed.append(oldest)
        if not bindings:
            del self._table[aor]
        self._compact_heap()
        return result(200, "OK", bindings=live, added=added, removed=removed)

    # -- internals --

    @staticmethod
    def _sorted(bindings: Iterable[Binding]) -> tuple[Binding, ...]:
        return tuple(sorted(bindings, key=lambda b: (-(1.0 if b.q is None else b.q), -b.registered_at)))

    def _compact_heap(self) -> None:
        """Refreshes leave stale heap entries behind; rebuild when they dominate, so memory stays O(n).

        Checked every ~len(heap)/2 registrations, so the O(n) count and rebuild are amortised O(1).
        """
        self._since_compaction += 1
        if self._since_compaction < max(1024, len(self._heap) // 2):
            return
        self._since_compaction = 0
        if len(self._heap) > 2 * len(self):
            self._heap = [(b.expires_at, aor, k) for aor, bs in self._table.items() for k, b in bs.items()]
            heapq.heapify(self._heap)
