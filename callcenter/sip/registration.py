"""REGISTER handling: digest authentication against the agents' HA1s, then the binding table.

Agents' HA1s are cached in memory; a cache miss (or a failure against an old entry, after a password
change) is looked up in a worker thread so the event loop never waits for the database. The AOR is the
agent's SIP username: one domain per server, whatever host the phone put in its To URI.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from callcenter.core.config import SipSettings
from callcenter.core.logging import log_event
from callcenter.sip.auth import AuthResult, AuthStatus, DigestAuthenticator, DigestCredentials
from callcenter.sip.message import SipParseError, SipRequest, make_response
from callcenter.sip.registrar import Binding, ContactRequest, Registrar, normalize_aor, path_received
from callcenter.sip.transaction import Addr, ServerTransaction, State
from callcenter.sip.uri import parse_name_addr, parse_uri

log = logging.getLogger("callcenter.sip.register")

HA1Pair = tuple[str, str]
_CACHE_TTL_S = 60.0  # a cached HA1 older than this is re-read before a wrong-password verdict
_NEGATIVE_TTL_S = 5.0  # unknown users are asked for again after this
_CACHE_MAX = 100_000


class CredentialSource(Protocol):
    def get_agent_credentials(self, username: str) -> HA1Pair | None: ...


class SipResponder(Protocol):
    def respond(self, txn: ServerTransaction, response: Any) -> None: ...


BindingListener = Callable[[str, Binding, bool], None]  # (username, binding, registered?)


class SharedRegistrations(Protocol):
    """Bindings shared with other nodes (callcenter/cluster/bindings.py, with ``redis_url``): this node's
    changes are written there, lookups merge every node's, and the presence listeners are raised by it
    (through :meth:`RegistrationService.announce`) when an AOR's first or last binding cluster-wide
    comes or goes — once, on whichever node saw it."""

    def bind(self, username: str, binding: Binding) -> None: ...

    def unbind(self, username: str, binding: Binding) -> None: ...

    def lookup(self, aor: str, local: Sequence[Binding], now: float) -> list[Binding]: ...

    def agents_at(self, origin: tuple[str, str, int]) -> set[str]: ...


class RegistrationService:
    def __init__(
        self,
        settings: SipSettings,
        endpoint: SipResponder,
        store: CredentialSource,
        *,
        secret: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.store = store
        self.clock = clock
        # (source address, username) of each failed digest attempt: the SIP guard bans brute force.
        self.on_auth_failed: Callable[[str, str | None], object] | None = None
        # Whether the SIP guard bans an address (set by the app): a banned phone behind a trusted proxy
        # gets 403 here, since the guard cannot drop the proxy's packets.
        self.banned: Callable[[str], bool] | None = None
        self._trusted = tuple(ipaddress.ip_network(n, strict=False) for n in settings.protection.trusted)
        self.auth = DigestAuthenticator(
            settings.realm, secret, settings.nonce_ttl_s, algorithms=tuple(settings.digest_algorithms)
        )
        self.registrar = Registrar(
            settings.register_min_expires, settings.register_max_expires, settings.register_default_expires
        )
        self.listeners: list[BindingListener] = []
        self.shared: SharedRegistrations | None = None  # a cluster's shared view (None: this node only)
        # (transport, host, port) a REGISTER came from → the agents bound from there: an INVITE from
        # that address is an agent calling through us (calls/agent_calls.py)
        self._sources: dict[tuple[str, str, int], dict[str, int]] = {}
        self._cache: dict[str, tuple[HA1Pair | None, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.stats = {"ok": 0, "challenged": 0, "failed": 0}

    async def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    # --- the REGISTER path ---------------------------------------------------------------------
    def origin(self, request: SipRequest, source: Addr) -> str:
        """The address the phone sent the REGISTER from: behind a trusted proxy (Kamailio) the one its
        Path entry names (``received``, RFC 3327), else the packet's source. Failed digests count
        against it, so one phone guessing passwords through Kamailio is banned, not Kamailio."""
        try:
            sender = ipaddress.ip_address(source.host.strip("[]"))
        except ValueError:
            return source.host
        if not any(sender in net for net in self._trusted):
            return source.host
        found = path_received(request.headers.get_all("Path"))
        return found[1] if found is not None else source.host

    def on_register(self, txn: ServerTransaction, request: SipRequest, source: Addr) -> None:
        now = self.clock()
        origin = self.origin(request, source)
        if origin != source.host and self.banned is not None and self.banned(origin):
            self._reply(txn, request, 403, "Forbidden")
            return
        try:
            to_uri = parse_uri(parse_name_addr(request.headers.get("To") or "").uri)
        except SipParseError:
            self._reply(txn, request, 400, "Bad To")
            return
        if not to_uri.user:
            self._reply(txn, request, 404, "Not Found")
            return
        step = self.auth.inspect(request.method, request.uri, request.headers.get_all("Authorization"), now)
        if isinstance(step, AuthResult):
            self._auth_failed(txn, request, step, source)
            return
        if step.username != to_uri.user:
            # An agent's credentials register only that agent's own AOR.
            self._reply(txn, request, 403, "Forbidden")
            self.stats["failed"] += 1
            if self.on_auth_failed is not None:
                self.on_auth_failed(origin, step.username)
            return
        cached = self._cache.get(step.username)
        if cached is not None and (cached[0] is not None or now - cached[1] < _NEGATIVE_TTL_S):
            result = self.auth.verify(step, cached[0], now)
            if result.status is not AuthStatus.FAILED or now - cached[1] < _CACHE_TTL_S:
                self._after_auth(txn, request, source, step, result)
                return
        self._spawn(self._lookup_then_verify(txn, request, source, step))

    async def _lookup_then_verify(
        self, txn: ServerTransaction, request: SipRequest, source: Addr, creds: DigestCredentials
    ) -> None:
        try:
            ha1s = await asyncio.to_thread(self.store.get_agent_credentials, creds.username)
        except Exception as exc:  # noqa: BLE001 - a database hiccup must answer, not hang the phone
            log_event(log, "register_db_error", level=logging.ERROR, error=repr(exc))
            self._reply(txn, request, 500, "Server Internal Error", [("Retry-After", "5")])
            return
        now = self.clock()
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[creds.username] = (ha1s, now)
        if txn.state != State.TRYING:
            return  # the phone gave up meanwhile (timer J fired or a final was already sent)
        self._after_auth(txn, request, source, creds, self.auth.verify(creds, ha1s, now))

    def _after_auth(
        self,
        txn: ServerTransaction,
        request: SipRequest,
        source: Addr,
        creds: DigestCredentials,
        result: AuthResult,
    ) -> None:
        if result.status is AuthStatus.OK:
            self._bind(txn, request, source, creds.username)
        else:
            self._auth_failed(txn, request, result, source)

    def _auth_failed(
        self, txn: ServerTransaction, request: SipRequest, result: AuthResult, source: Addr
    ) -> None:
        now = self.clock()
        if result.status is AuthStatus.FAILED:
            self.stats["failed"] += 1
            log_event(
                log,
                "register_auth_failed",
                call_id=request.call_id,
                username=result.username,
                source=f"{source.transport}:{source.host}:{source.port}",
                reason=result.reason,
            )
            self._reply(txn, request, 403, "Forbidden")
            if self.on_auth_failed is not None:
                self.on_auth_failed(self.origin(request, source), result.username)
            return
        self.stats["challenged"] += 1
        stale = result.status is AuthStatus.STALE
        extra = [("WWW-Authenticate", value) for value in self.auth.challenge_headers(now, stale=stale)]
        self._reply(txn, request, 401, "Unauthorized", extra)

    def _bind(self, txn: ServerTransaction, request: SipRequest, source: Addr, username: str) -> None:
        h = request.headers
        wildcard = False
        contacts: list[ContactRequest] = []
        try:
            for value in h.get_all("Contact"):
                if value.strip() == "*":
                    wildcard = True
                    continue
                addr = parse_name_addr(value)
                expires = addr.params.get("expires")
                q = addr.params.get("q")
                contacts.append(
                    ContactRequest(
                        uri=addr.uri,
                        expires=int(expires) if expires is not None else None,
                        q=float(q) if q is not None else None,
                        params={k: v for k, v in addr.params.items() if k not in ("expires", "q")},
                    )
                )
            header_expires_text = h.get("Expires")
            header_expires = int(header_expires_text) if header_expires_text is not None else None
            cseq = request.cseq()[0]
        except (SipParseError, ValueError):
            self._reply(txn, request, 400, "Bad Contact or Expires")
            return
        now = self.clock()
        result = self.registrar.register(
            username,
            contacts,
            wildcard,
            header_expires,
            request.call_id,
            cseq,
            now,
            (source.host, source.port),
            source.transport,
            path=h.get_all("Path"),
        )
        if result.status == 423:
            self._reply(txn, request, 423, result.reason, [("Min-Expires", str(result.min_expires))])
            return
        if not result.ok:
            self._reply(txn, request, result.status, result.reason)
            return
        self.stats["ok"] += 1
        extra = [("Contact", value) for value in result.contact_headers()]
        extra.append(("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())))
        # RFC 3327 §5.3: the Path we stored goes back in the 200 only to a UA that said it supports it
        # (Kamailio's registrar does the same with path_mode 1); it is stored either way.
        if any(o.strip().lower() == "path" for o in h.get_all("Supported")):
            for path in h.get_all("Path"):
                extra.append(("Path", path))
        self._reply(txn, request, 200, "OK", extra)
        if self.shared is not None:  # added and refreshed (new expiry), before the removals
            for binding in result.bindings:
                self.shared.bind(username, binding)
        for binding in result.added:
            self._notify(username, binding, True)
            log_event(
                log,
                "agent_registered",
                username=username,
                contact=binding.contact,
                source=f"{source.transport}:{source.host}:{source.port}",
            )
        for binding in result.removed:
            self._notify(username, binding, False)
            log_event(log, "agent_unregistered", username=username, contact=binding.contact)

    def _reply(
        self,
        txn: ServerTransaction,
        request: SipRequest,
        status: int,
        reason: str,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        to_tag = f"r{abs(hash(request.call_id)) % 10**10}"  # stable per registration dialog-less request
        self.endpoint.respond(txn, make_response(request, status, reason, to_tag=to_tag, extra=extra or ()))

    def _notify(self, username: str, binding: Binding, registered: bool) -> None:
        # The phone's own address, not a Path proxy's: behind Kamailio every REGISTER and every
        # customer's INVITE comes from Kamailio, and customers' calls must not look like agents'.
        key = binding.origin()
        users = self._sources.setdefault(key, {})
        users[username] = users.get(username, 0) + (1 if registered else -1)
        if users[username] <= 0:
            del users[username]
        if not users:
            del self._sources[key]
        if self.shared is not None:
            # Presence is the shared view's to raise (announce), when Redis says it changed cluster-wide.
            if not registered:
                self.shared.unbind(username, binding)
            return
        self.announce(username, binding, registered)

    def announce(self, username: str, binding: Binding, registered: bool) -> None:
        """Tell the presence listeners (the ACD) that ``username`` got its first binding or lost its
        last one; here or, in a cluster, wherever the shared view decided it."""
        for listener in self.listeners:
            listener(username, binding, registered)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep(self) -> None:
        """Expire bindings whose time ran out (phones that vanished without unregistering)."""
        while True:
            await asyncio.sleep(1.0)
            for aor, binding in self.registrar.expire(self.clock()):
                self._notify(aor, binding, False)
                log_event(log, "agent_registration_expired", username=aor, contact=binding.contact)

    def lookup(self, username: str) -> list[Binding]:
        """The phones to ring for ``username``: this node's bindings, and other nodes' in a cluster."""
        now = self.clock()
        local = self.registrar.lookup(username, now)
        return local if self.shared is None else self.shared.lookup(normalize_aor(username), local, now)

    def forget(self, username: str, *, unbind: bool = False) -> None:
        """The account changed (new password) or is gone: its cached HA1 is dropped, so the next request
        is checked against the store; ``unbind`` also removes its phones' bindings (listeners are told)."""
        self._cache.pop(username, None)
        if unbind:
            for binding in self.registrar.remove(username):
                self._notify(username, binding, False)

    # --- agents calling through us (INVITE from a registered contact) --------------------------
    def agents_at(self, source: Addr) -> list[str]:
        """The agents whose phone registered from ``source`` (same transport, address and port)."""
        key = (source.transport, source.host, source.port)
        local = self._sources.get(key, {})
        if self.shared is None:
            return sorted(local)
        return sorted({*local, *self.shared.agents_at(key)})

    def has_binding_from(self, source: Addr) -> bool:
        """Whether a live binding on this node was registered from ``source``: the connection to keep
        open while it lasts, the only way to reach a phone behind NAT (RFC 5626 §5.3)."""
        return (source.transport, source.host, source.port) in self._sources

    def proxy_challenge(self, *, stale: bool = False) -> list[tuple[str, str]]:
        """Proxy-Authenticate headers for a 407 (RFC 3261 §22.3), one per digest algorithm."""
        now = self.clock()
        return [("Proxy-Authenticate", v) for v in self.auth.challenge_headers(now, stale=stale)]

    async def authenticate(self, request: SipRequest) -> AuthResult:
        """Check a request's Proxy-Authorization (RFC 3261 §22.3) against the agents' HA1s: OK with the
        username; CHALLENGE / STALE (answer 407 with :meth:`proxy_challenge`); FAILED (answer 403).
        The HA1 comes from the cache or, on a miss, from the store in a worker thread."""
        now = self.clock()
        step = self.auth.inspect(
            request.method, request.uri, request.headers.get_all("Proxy-Authorization"), now
        )
        if isinstance(step, AuthResult):
            return step
        cached = self._cache.get(step.username)
        if cached is not None and (cached[0] is not None or now - cached[1] < _NEGATIVE_TTL_S):
            result = self.auth.verify(step, cached[0], now)
            if result.status is not AuthStatus.FAILED or now - cached[1] < _CACHE_TTL_S:
                return result
        ha1s = await asyncio.to_thread(self.store.get_agent_credentials, step.username)
        now = self.clock()
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[step.username] = (ha1s, now)
        return self.auth.verify(step, ha1s, now)
