"""Agents' registrations shared by every node through Redis (issue 10), so a node rings — and recognises
the calls of — an agent whose phone registered through another node.

Redis layout (``prefix`` default ``cc:``):

- ``reg:<aor>`` hash, one field per binding: ``<node>|<contact key>`` → JSON record (contact, key,
  path, transport, source, q, params, Call-ID, CSeq, registered / expires on Redis's clock, node);
- ``reg:exp`` sorted set: ``<aor>\\n<field>`` scored by its expiry on Redis's clock;
- ``reg:changed`` channel: the AOR whose hash changed (each node re-reads it into its mirror).

Who writes: the node whose registrar bound or unbound the contact (:meth:`SharedBindings.bind` /
:meth:`~SharedBindings.unbind`, in order, one writer task). Expiry: each binding is removed from Redis
once, by whoever gets there first — normally the node that took it (its registrar's sweep unbinds it),
or, when that node is dead, any node's sweep of ``reg:exp`` (:data:`SWEEP_LUA`). The scripts are
atomic, so exactly one node sees an AOR go from no live binding to one (it raises LOGIN) or from one to
none (LOGOUT): presence is raised once cluster-wide, whichever node the phones registered through.

Each node keeps a mirror of every AOR's bindings in memory (loaded at start, refreshed on each
``reg:changed`` message and every ``resync_s``), so ringing and recognising agents never wait on Redis.

The shared clock: records and sweeps use Redis's own clock (its TIME), not the nodes' wall clocks, so
a node whose clock is off by minutes neither expires other nodes' bindings early nor keeps them late.
Each node measures Redis's time against its monotonic clock (at start, then every ``clock_sync_s``;
the round trip's midpoint, so it is off by at most half a round trip plus the monotonic clock's drift
since: milliseconds) and converts with that offset (:meth:`SharedBindings.shared_now`). The scripts
take that time as an argument rather than calling TIME themselves, so the conversion of a record into a
binding on this node's monotonic clock agrees with the expiry the sweep applies.

A node restarted under the same ``node_id`` keeps its previous run's bindings in Redis (the phones are
still registered through Kamailio): they ring like any other node's until they expire or are refreshed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from callcenter.sip.registrar import Binding

if TYPE_CHECKING:
    from callcenter.sip.registration import RegistrationService

__all__ = [
    "BIND_LUA",
    "SWEEP_LUA",
    "UNBIND_LUA",
    "SharedBindings",
    "decode_binding",
    "encode_binding",
    "merge_bindings",
]

log = logging.getLogger("callcenter.cluster.bindings")

_LIVE = """
local function live_count(h, now)
  local n = 0
  local vals = redis.call('HVALS', h)
  for i = 1, #vals do
    if tonumber(cjson.decode(vals[i]).x) > now then n = n + 1 end
  end
  return n
end
"""

# KEYS: hash, zset. ARGV: field, record, expires, now (both on the shared clock), aor, channel, contact key.
# Returns how many live bindings the AOR had before (0: this REGISTER logs the agent in).
BIND_LUA = (
    _LIVE
    + """
local now = tonumber(ARGV[4])
local before = live_count(KEYS[1], now)
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  -- the same contact bound through another node before (its node died, Kamailio moved it): replaced
  if all[i] ~= ARGV[1] and cjson.decode(all[i + 1]).k == ARGV[7] then
    redis.call('HDEL', KEYS[1], all[i])
    redis.call('ZREM', KEYS[2], ARGV[5] .. '\\n' .. all[i])
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5] .. '\\n' .. ARGV[1])
redis.call('PUBLISH', ARGV[6], ARGV[5])
return before
"""
)

# KEYS: hash, zset. ARGV: field, now (the shared clock), aor, channel.
# Returns -1 when the binding was not there (someone else removed it), else the live bindings left.
UNBIND_LUA = (
    _LIVE
    + """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return -1 end
redis.call('ZREM', KEYS[2], ARGV[3] .. '\\n' .. ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[3])
return live_count(KEYS[1], tonumber(ARGV[2]))
"""
)

# KEYS: zset. ARGV: now (the shared clock), limit, hash prefix, channel.
# Returns flat groups of four for each binding it removed: aor, field, record, live bindings left.
SWEEP_LUA = (
    _LIVE
    + """
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  local sep = string.find(m, '\\n', 1, true)
  if sep then
    local aor, f = string.sub(m, 1, sep - 1), string.sub(m, sep + 1)
    local h = ARGV[3] .. aor
    local rec = redis.call('HGET', h, f)
    if rec and tonumber(cjson.decode(rec).x) <= now then
      redis.call('HDEL', h, f)
      redis.call('PUBLISH', ARGV[4], aor)
      table.insert(out, aor)
      table.insert(out, f)
      table.insert(out, rec)
      table.insert(out, live_count(h, now))
    end
  end
end
return out
"""
)

Origin = tuple[str, str, int]  # (transport, host, port): Binding.origin()


# -- records (pure) -----------------------------------------------------------------------------------


def encode_binding(binding: Binding, node: str, now: float, wall: float) -> str:
    """The JSON record of ``binding`` (monotonic times turned into ``wall``: the shared clock, Redis's)."""
    return json.dumps(
        {
            "c": binding.contact,
            "k": binding.key,
            "x": round(wall + (binding.expires_at - now), 3),
            "r": round(wall + (binding.registered_at - now), 3),
            "q": binding.q,
            "p": dict(binding.params),
            "ci": binding.call_id,
            "cs": binding.cseq,
            "s": [binding.source[0], binding.source[1]],
            "t": binding.transport,
            "pa": list(binding.path),
            "n": node,
        },
        separators=(",", ":"),
    )


def decode_binding(aor: str, record: Mapping[str, Any], now: float, wall: float) -> Binding:
    """A record back as a :class:`Binding` on this node's monotonic clock. Raises KeyError/TypeError/
    ValueError on a malformed record."""
    source = record["s"]
    return Binding(
        aor=aor,
        contact=str(record["c"]),
        key=str(record["k"]),
        expires_at=now + (float(record["x"]) - wall),
        q=None if record.get("q") is None else float(record["q"]),
        params=dict(record.get("p") or {}),
        call_id=str(record.get("ci") or ""),
        cseq=int(record.get("cs") or 0),
        source=(str(source[0]), int(source[1])),
        transport=str(record.get("t") or "udp"),
        registered_at=now + (float(record.get("r") or wall) - wall),
        path=tuple(str(p) for p in record.get("pa") or ()),
    )


def merge_bindings(local: Iterable[Binding], remote: Iterable[Binding], now: float) -> list[Binding]:
    """One list for ringing: unexpired, one binding per contact key (the one expiring last — a phone
    that re-registered through another node), highest q first, then most recently registered (as
    :meth:`Registrar.lookup` orders them)."""
    best: dict[str, Binding] = {}
    for b in [*local, *remote]:
        if b.expires_at <= now:
            continue
        seen = best.get(b.key)
        if seen is None or b.expires_at > seen.expires_at:
            best[b.key] = b
    return sorted(best.values(), key=lambda b: (-(1.0 if b.q is None else b.q), -b.registered_at))


@dataclass(frozen=True, slots=True)
class _Entry:
    node: str
    field: str
    record: Mapping[str, Any]
    origin: Origin | None


@dataclass(frozen=True, slots=True)
class _Write:
    username: str
    binding: Binding
    bind: bool


# -- the driver ---------------------------------------------------------------------------------------


class SharedBindings:
    """This node's side of the shared registration view (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        node_id: str,
        *,
        prefix: str = "cc:",
        sweep_s: float = 1.0,
        resync_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        redis_time: Callable[[], Awaitable[float]] | None = None,
        clock_sync_s: float = 300.0,
    ) -> None:
        self.redis = redis
        self.node_id = node_id
        self.prefix = prefix
        self.sweep_s = sweep_s
        self.resync_s = resync_s
        self.clock = clock
        self.wall = wall  # only until the first measurement of Redis's clock
        # Reads the shared clock (default: Redis TIME); tests give every node one fake clock.
        self.redis_time: Callable[[], Awaitable[float]] = redis_time or self._redis_time
        self.clock_sync_s = clock_sync_s
        self._offset: float | None = None  # Redis's clock − our monotonic clock
        self._next_sync = 0.0
        self.registration: RegistrationService | None = None
        self._bind = redis.register_script(BIND_LUA)
        self._unbind = redis.register_script(UNBIND_LUA)
        self._sweep_script = redis.register_script(SWEEP_LUA)
        self._mirror: dict[str, dict[str, _Entry]] = {}  # aor → field → entry
        self._origins: dict[Origin, dict[str, int]] = {}  # phone address → aor → bindings from there
        self._outbox: deque[_Write] = deque()
        self._out_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.ready = asyncio.Event()  # set once the mirror was loaded (tests wait on it)

    @property
    def channel(self) -> str:
        return self.prefix + "reg:changed"

    def hash_key(self, aor: str) -> str:
        return f"{self.prefix}reg:{aor}"

    @property
    def zset_key(self) -> str:
        return self.prefix + "reg:exp"

    def attach(self, registration: RegistrationService) -> None:
        """Make ``registration`` write its bindings here, merge them into its lookups, and raise its
        presence listeners only when Redis says an AOR's first / last binding came or went."""
        self.registration = registration
        registration.shared = self

    # -- life cycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._closing = False
        await self.sync_clock()
        await self.resync()
        self.ready.set()
        self._tasks = [
            asyncio.create_task(self._write_loop(), name=f"bindings-out-{self.node_id}"),
            asyncio.create_task(self._listen(), name=f"bindings-in-{self.node_id}"),
            asyncio.create_task(self._sweep_loop(), name=f"bindings-sweep-{self.node_id}"),
        ]

    async def stop(self) -> None:
        """Writes still queued are flushed (bounded); the bindings stay in Redis: the phones are still
        registered (through Kamailio) and ring from the other nodes until they expire."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 2.0)
        await self.kill()

    async def kill(self) -> None:
        """As SIGKILL would leave it (tests): tasks gone, nothing written."""
        # The loops also stop on the flag: redis-py can turn a cancellation that meets its own read
        # timeout into a TimeoutError, which a loop would take for a Redis hiccup and carry on.
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        self._tasks = []

    # -- the shared clock --------------------------------------------------------------------------------

    async def _redis_time(self) -> float:
        seconds, micros = await self.redis.time()
        return float(seconds) + float(micros) / 1e6

    async def sync_clock(self) -> None:
        """Measure Redis's clock against our monotonic clock (at the round trip's midpoint)."""
        before = self.clock()
        shared = await self.redis_time()
        after = self.clock()
        self._offset = shared - (before + after) / 2
        self._next_sync = after + self.clock_sync_s

    def shared_now(self, now: float) -> float:
        """Redis's clock at our monotonic ``now`` (our wall clock until the first measurement)."""
        if self._offset is None:
            return self.wall() + (now - self.clock())
        return now + self._offset

    async def flush(self) -> None:
        """Until every queued write reached Redis (tests, orderly stop)."""
        while self._outbox:
            self._out_ready.set()
            await asyncio.sleep(0.01)

    # -- what RegistrationService calls (never blocks) -------------------------------------------------

    def bind(self, username: str, binding: Binding) -> None:
        """A binding added or refreshed by this node's registrar."""
        self._outbox.append(_Write(username, binding, True))
        self._out_ready.set()

    def unbind(self, username: str, binding: Binding) -> None:
        """A binding this node's registrar removed (unregistered, expired, account deleted)."""
        self._outbox.append(_Write(username, binding, False))
        self._out_ready.set()

    def lookup(self, aor: str, local: Sequence[Binding], now: float) -> list[Binding]:
        """``local`` (this node's registrar) merged with the other nodes' bindings of ``aor``."""
        return merge_bindings(local, self.remote(aor, now), now)

    def remote(self, aor: str, now: float) -> list[Binding]:
        """The mirror's bindings of ``aor`` (every node's, this one's included: a restarted node's
        previous run left them), unexpired."""
        wall = self.shared_now(now)
        out: list[Binding] = []
        for entry in self._mirror.get(aor, {}).values():
            try:
                b = decode_binding(aor, entry.record, now, wall)
            except (KeyError, TypeError, ValueError, IndexError):
                continue
            if b.expires_at > now:
                out.append(b)
        return out

    def agents_at(self, origin: Origin) -> set[str]:
        """AORs with a binding whose phone sent its REGISTER from ``origin`` (any node)."""
        return set(self._origins.get(origin, {}))

    # -- writing ----------------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while not self._closing:
            await self._out_ready.wait()
            self._out_ready.clear()
            while self._outbox and not self._closing:
                w = self._outbox[0]
                try:
                    await self._apply(w)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - Redis away: keep the write and retry
                    log.warning("cluster: writing binding of %s failed (%r); retrying", w.username, exc)
                    await asyncio.sleep(0.5)
                    continue
                self._outbox.popleft()

    async def _apply(self, w: _Write) -> None:
        b = w.binding
        aor = b.aor
        field = f"{self.node_id}|{b.key}"
        now = self.clock()
        wall = self.shared_now(now)
        keys = [self.hash_key(aor), self.zset_key]
        if w.bind:
            record = encode_binding(b, self.node_id, now, wall)
            expires = wall + (b.expires_at - now)
            args = [field, record, f"{expires:.3f}", f"{wall:.3f}", aor, self.channel, b.key]
            before = int(await self._bind(keys=keys, args=args))
            if before == 0:
                self._announce(w.username, b, True)
        else:
            left = int(await self._unbind(keys=keys, args=[field, f"{wall:.3f}", aor, self.channel]))
            if left == 0:
                self._announce(w.username, b, False)

    def _announce(self, username: str, binding: Binding, registered: bool) -> None:
        # Redis already holds the change; the mirror must show it before the listeners look it up.
        self._apply_hash_local(binding.aor, registered, binding)
        if self.registration is not None:
            self.registration.announce(username, binding, registered)

    def _apply_hash_local(self, aor: str, registered: bool, binding: Binding) -> None:
        """Ahead of the pub/sub echo: drop every mirror entry of ``aor`` on the last unbind (Redis said
        none is live), so the presence listener's lookup agrees."""
        if not registered:
            self._set_aor(aor, {})

    # -- reading ----------------------------------------------------------------------------------------

    async def resync(self) -> None:
        """Reload the whole mirror from Redis."""
        members = await self.redis.zrange(self.zset_key, 0, -1)
        aors = sorted({_s(m).split("\n", 1)[0] for m in members})
        fresh: dict[str, dict[bytes | str, bytes | str]] = {}
        if aors:
            async with self.redis.pipeline(transaction=False) as pipe:
                for aor in aors:
                    pipe.hgetall(self.hash_key(aor))
                rows = await pipe.execute()
            fresh = dict(zip(aors, rows, strict=True))
        for aor in [a for a in self._mirror if a not in fresh]:
            self._set_aor(aor, {})
        for aor, raw in fresh.items():
            self._set_aor(aor, raw)

    async def refresh(self, aor: str) -> None:
        self._set_aor(aor, await self.redis.hgetall(self.hash_key(aor)))

    def _set_aor(self, aor: str, raw: Mapping[Any, Any]) -> None:
        for entry in self._mirror.pop(aor, {}).values():
            self._index(aor, entry, -1)
        entries: dict[str, _Entry] = {}
        for f, value in raw.items():
            field = _s(f)
            try:
                record = json.loads(value)
                origin = decode_binding(aor, record, 0.0, 0.0).origin()
            except (KeyError, TypeError, ValueError, IndexError):
                log.warning("cluster: bad binding record %s of %s skipped", field, aor)
                continue
            entries[field] = _Entry(str(record.get("n") or field.split("|", 1)[0]), field, record, origin)
        if entries:
            self._mirror[aor] = entries
            for entry in entries.values():
                self._index(aor, entry, 1)

    def _index(self, aor: str, entry: _Entry, delta: int) -> None:
        if entry.origin is None:
            return
        users = self._origins.setdefault(entry.origin, {})
        users[aor] = users.get(aor, 0) + delta
        if users[aor] <= 0:
            del users[aor]
        if not users:
            del self._origins[entry.origin]

    async def _listen(self) -> None:
        next_resync = self.clock() + self.resync_s
        while not self._closing:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                await self.resync()  # whatever changed while we were not subscribed
                while not self._closing:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        await self.refresh(_s(msg["data"]))
                    if self.clock() >= next_resync:
                        next_resync = self.clock() + self.resync_s
                        await self.resync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis away: resubscribe, then reload everything
                log.warning("cluster: binding updates interrupted (%r); resubscribing", exc)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    # -- expiry of bindings whose node is gone -----------------------------------------------------------

    async def sweep(self, limit: int = 200) -> int:
        """Remove bindings expired by Redis's clock (any node's); each AOR left without a live binding
        is announced unregistered here, once. Returns how many were removed."""
        if self._offset is None or self.clock() >= self._next_sync:
            await self.sync_clock()
        now = self.clock()
        wall = self.shared_now(now)
        out: list[Any] = await self._sweep_script(
            keys=[self.zset_key], args=[f"{wall:.3f}", limit, self.prefix + "reg:", self.channel]
        )
        gone: dict[str, Binding] = {}
        for i in range(0, len(out) - 3, 4):
            aor, record, left = _s(out[i]), _s(out[i + 2]), int(out[i + 3])
            if left != 0:
                continue
            with contextlib.suppress(KeyError, TypeError, ValueError, IndexError):
                gone[aor] = decode_binding(aor, json.loads(record), now, wall)
        for aor, binding in gone.items():
            log.info("cluster: %s's last binding expired (%s)", aor, binding.contact)
            self._announce(aor, binding, False)
        return len(out) // 4

    async def _sweep_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.sweep_s)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis away: next round
                log.warning("cluster: sweeping bindings failed (%r)", exc)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
