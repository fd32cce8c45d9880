"""One node's part in the cluster, on the event loop: heartbeat, election, sending its commands to the
leader, receiving the leader's notices for its callers, and — while elected — running the
:class:`~callcenter.cluster.leader.LeaderState` over everyone's commands.

Redis keys (``prefix`` default ``cc:``):

- ``leader`` (lock, ``node:token``), ``epoch`` (INCR: fencing tokens) — :mod:`.election`;
- ``alive:<node>`` — heartbeat, expires after ``ttl_s`` without renewal (SIGKILL → gone);
- ``nodes`` — hash, per node seen: its last heartbeat (wall clock), calls held then, start time, ttl
  (``callcenter cluster status`` / ``GET /api/cluster``, :mod:`.status`); the leader forgets a node
  silent for ``FORGET_AFTER_TTLS`` ttls;
- ``cmd`` — stream of :class:`Command` from every node to the leader;
- ``node:<node>`` — stream of :class:`Notice` from the leader to that node;
- ``agents``, ``waiting``, ``stats``, ``recent``, ``chats``, ``chat_lines`` — the mirror (:mod:`.leader`,
  :mod:`.chats`),
  ``applied`` — the last ``cmd`` entry it reflects, ``snapshot`` — the router's wallboard snapshot as
  JSON for every node's API,
  ``positions:<node>`` — that node's waiting callers' places and estimated waits (announcements).

Every leader write (mirror, ``applied``, notices, snapshot) is one call of :data:`FENCED_LUA`, which
does nothing unless the lock still holds this leader's value: a deposed leader neither corrupts the
mirror nor makes offers. Mirror and ``applied`` change together, so a successor resumes reading
``cmd`` exactly after the last command the mirror reflects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, cast

from redis.asyncio import Redis

from callcenter.cluster.election import ACQUIRE_LUA, RELEASE_LUA, RENEW_LUA, Election
from callcenter.cluster.leader import LeaderState, Output
from callcenter.cluster.messages import (
    Command,
    CommandOp,
    MessageError,
    Notice,
    decode_command,
    decode_notice,
    encode,
)
from callcenter.cluster.status import forgotten
from callcenter.routing.queues import QueueConfig

__all__ = ["ClusterNode", "FENCED_LUA"]

log = logging.getLogger("callcenter.cluster.node")

# KEYS: lock. ARGV: our lock value, then groups of four: op, key, a, b.
# ops: hset key field value | hdel key field - | set key value - | xadd key json maxlen.
# Touches keys not listed in KEYS: fine on one Redis (or a primary with replicas), not Redis Cluster.
FENCED_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local i = 2
while i <= #ARGV do
  local op, key, a, b = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if op == 'hset' then redis.call('HSET', key, a, b)
  elseif op == 'hdel' then redis.call('HDEL', key, a)
  elseif op == 'set' then redis.call('SET', key, a)
  elseif op == 'xadd' then redis.call('XADD', key, 'MAXLEN', '~', b, '*', 'm', a)
  end
  i = i + 4
end
return 1
"""

_STREAM_MAX = "100000"  # entries kept per stream (approximate trimming)


class ClusterNode:
    def __init__(
        self,
        redis: Redis,
        node_id: str,
        queues: Mapping[str, QueueConfig],
        *,
        on_notice: Callable[[Notice], None] | None = None,
        max_missed: int = 3,
        auto_available: bool = True,
        default_max_chats: int = 3,
        timezone: str | None = None,
        prefix: str = "cc:",
        ttl_s: float = 6.0,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.node_id = node_id
        self.queues = dict(queues)
        self.on_notice = on_notice
        self.router_args: dict[str, Any] = {
            "max_missed": max_missed,
            "auto_available": auto_available,
            "default_max_chats": default_max_chats,
            "timezone": timezone,  # whose midnight ends the per-day talk times (None: the system's)
        }
        self.prefix = prefix
        self.clock = clock
        self.wall = wall
        self.election = Election(node_id, ttl_s=ttl_s, retry_s=retry_s)
        self.leader: LeaderState | None = None  # while this node leads
        self._acquire = redis.register_script(ACQUIRE_LUA)
        self._renew = redis.register_script(RENEW_LUA)
        self._release = redis.register_script(RELEASE_LUA)
        self._fenced = redis.register_script(FENCED_LUA)
        self._outbox: deque[Command] = deque()
        self._out_ready = asyncio.Event()
        self._wake_election = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._leading: asyncio.Task[None] | None = None
        self._max_token = 0
        self._written_id: Any = None
        self.became_leader = asyncio.Event()  # set while leading (tests and the admin page wait on it)
        self.calls_held: Callable[[], int] | None = None  # reported with each heartbeat (app: live calls)
        self.started_wall = 0.0
        self._position_nodes: set[str] = set()  # nodes whose positions key we last wrote non-empty
        self._stopping = False  # set by stop() / kill(): every loop ends at its next turn

    def key(self, name: str) -> str:
        return self.prefix + name

    # -- life cycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        # Read our notices from the stream's current end: older ones were for calls of a previous run.
        last = await self.redis.xrevrange(self.key(f"node:{self.node_id}"), count=1)
        notices_from = last[0][0] if last else "0-0"
        self._stopping = False
        self.started_wall = self.wall()
        await self._heartbeat()
        self.send("hello")  # first in our stream: the leader drops what a previous run of ours held
        self._tasks = [
            asyncio.create_task(self._elect(), name=f"cluster-elect-{self.node_id}"),
            asyncio.create_task(self._send_commands(), name=f"cluster-out-{self.node_id}"),
            asyncio.create_task(self._read_notices(notices_from), name=f"cluster-in-{self.node_id}"),
        ]

    async def stop(self) -> None:
        """Orderly: flush commands, give up the lock (a successor takes over at once) and the heartbeat."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._flush(), 2.0)
        await self._cancel()
        value = self.election.value if self.election.role == "leader" else None
        self.election.resign(self.clock())
        with contextlib.suppress(Exception):
            if value is not None:
                await self._release(keys=[self.key("leader")], args=[value])
            await self.redis.delete(self.key(f"alive:{self.node_id}"))

    async def kill(self) -> None:
        """As SIGKILL would leave it: tasks gone, lock and heartbeat left to expire (tests)."""
        await self._cancel()

    async def _cancel(self) -> None:
        """Every task ends, bounded: redis-py may turn the cancellation of a blocking read into a
        TimeoutError that a loop's ``except Exception`` takes for a Redis hiccup, so the loops also stop
        on ``_stopping`` and each task is cancelled again while it has not ended."""
        self._stopping = True
        self._wake_election.set()
        self._out_ready.set()
        tasks: list[asyncio.Task[None]] = []
        for _ in range(3):
            tasks = [t for t in [*tasks, *self._tasks, self._leading] if t is not None]
            pending = [t for t in tasks if not t.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=2.0)
        for task in tasks:
            if not task.done():
                log.warning("cluster: task %s did not stop", task.get_name())
            elif not task.cancelled() and task.exception() is not None:
                log.warning("cluster: task %s ended with %r", task.get_name(), task.exception())
        self._tasks, self._leading, self.leader = [], None, None
        self.became_leader.clear()

    def _stopped(self) -> bool:
        """Whether this loop must end now: stop() / kill() ran, or our task is being cancelled (an
        exception other than CancelledError may carry a cancellation, see :meth:`_cancel`)."""
        task = asyncio.current_task()
        return self._stopping or (task is not None and task.cancelling() > 0)

    # -- commands to the leader -----------------------------------------------------------------------

    def send(
        self, op: CommandOp, *, call_id: str | None = None, agent: str | None = None, **args: Any
    ) -> None:
        """Queue a command for the leader (never blocks; sent in order by one task)."""
        self._outbox.append(Command(op, self.node_id, call_id, agent, self.wall(), args))
        self._out_ready.set()

    async def _flush(self) -> None:
        while self._outbox:
            self._out_ready.set()
            await asyncio.sleep(0.01)

    async def _send_commands(self) -> None:
        while not self._stopping:
            await self._out_ready.wait()
            self._out_ready.clear()
            while self._outbox and not self._stopping:
                batch = list(self._outbox)
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for cmd in batch:
                            pipe.xadd(
                                self.key("cmd"),
                                cast(Any, encode(cmd)),
                                maxlen=int(_STREAM_MAX),
                                approximate=True,
                            )
                        await pipe.execute()
                except Exception as exc:  # noqa: BLE001 - Redis away: keep the commands and retry
                    if self._stopped():
                        return
                    log.warning("cluster: sending commands failed (%r); retrying", exc)
                    await asyncio.sleep(0.5)
                    continue
                for _ in batch:
                    self._outbox.popleft()

    # -- notices from the leader ----------------------------------------------------------------------

    async def _read_notices(self, last_id: Any) -> None:
        stream = self.key(f"node:{self.node_id}")
        while not self._stopping:
            try:
                entries: Any = await self.redis.xread({stream: last_id}, count=100, block=1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                if self._stopped():
                    return
                log.warning("cluster: reading notices failed (%r); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            for _, items in entries or ():
                for entry_id, fields in items:
                    last_id = entry_id
                    try:
                        notice = decode_notice(fields)
                    except MessageError as exc:
                        log.warning("cluster: bad notice skipped: %r", exc)
                        continue
                    if notice.token < self._max_token:
                        continue  # from a leader already replaced
                    self._max_token = notice.token
                    if self.on_notice is not None:
                        try:
                            self.on_notice(notice)
                        except Exception:  # noqa: BLE001
                            log.exception("cluster: notice handler failed")

    # -- heartbeat and election -----------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        calls = 0
        if self.calls_held is not None:
            with contextlib.suppress(Exception):
                calls = int(self.calls_held())
        seen = {"at": self.wall(), "calls": calls, "started": self.started_wall, "ttl": self.election.ttl_s}
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.key(f"alive:{self.node_id}"), "1", px=self.election.ttl_ms)
            pipe.hset(self.key("nodes"), self.node_id, json.dumps(seen))
            await pipe.execute()

    async def alive_nodes(self, nodes: set[str]) -> set[str]:
        if not nodes:
            return set()
        names = sorted(nodes)
        async with self.redis.pipeline(transaction=False) as pipe:
            for n in names:
                pipe.exists(self.key(f"alive:{n}"))
            flags = await pipe.execute()
        return {n for n, f in zip(names, flags, strict=True) if f}

    async def _elect(self) -> None:
        e = self.election
        next_beat = 0.0
        while not self._stopping:
            now = self.clock()
            try:
                if now >= next_beat:
                    await self._heartbeat()
                    next_beat = now + e.ttl_s / 3
                req = e.poll(now)
                if req is not None:
                    try:
                        if req.kind == "acquire":
                            token = await asyncio.wait_for(
                                self._acquire(
                                    keys=[self.key("leader"), self.key("epoch")],
                                    args=[self.node_id, e.ttl_ms],
                                ),
                                e.ttl_s / 3,
                            )
                            e.on_acquire(req, None if token is None else int(token), self.clock())
                        else:
                            ok = await asyncio.wait_for(
                                self._renew(keys=[self.key("leader")], args=[e.value or "", e.ttl_ms]),
                                e.ttl_s / 3,
                            )
                            e.on_renew(req, bool(ok), self.clock())
                    except (TimeoutError, OSError, ConnectionError) as exc:
                        log.warning("cluster: election request failed: %r", exc)
                        e.on_error(req, self.clock())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis errors: the lease rules decide
                if self._stopped():
                    return
                log.warning("cluster: heartbeat/election failed: %r", exc)
            leading = e.is_leader(self.clock())
            if leading and self._leading is None and not self._stopped():
                self._leading = asyncio.create_task(self._lead(), name=f"cluster-lead-{self.node_id}")
            timer = e.get_timer()
            wait = 0.05 if timer is None else min(max(0.0, timer - self.clock()), next_beat - self.clock())
            self._wake_election.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_election.wait(), max(0.01, wait))

    # -- leading --------------------------------------------------------------------------------------

    async def _lead(self) -> None:
        e = self.election
        token = e.token
        assert token is not None
        try:
            state, last_id = await self._rebuild(token)
            self._written_id = None
            self.leader = state
            log.info(
                "cluster: %s leads (token %d), %d caller(s) dropped with dead nodes, %d callback(s) adopted",
                self.node_id,
                token,
                len(state.dropped),
                len(state.adopted),
            )
            if not await self._write(state.step(self.clock(), self.wall()), last_id, state):
                return
            self.became_leader.set()
            next_sweep = self.clock() + 1.0
            next_prune = self.clock()
            while e.is_leader(self.clock()) and e.token == token and not self._stopping:
                now = self.clock()
                timer = state.get_timer()
                block = 500 if timer is None else int(min(0.5, max(0.0, timer - now)) * 1000)
                entries: Any = await self.redis.xread(
                    {self.key("cmd"): last_id}, count=500, block=max(1, block)
                )
                now, wall = self.clock(), self.wall()
                for _, items in entries or ():
                    for entry_id, fields in items:
                        last_id = entry_id
                        try:
                            state.apply(decode_command(fields), now, wall)
                        except MessageError as exc:
                            log.warning("cluster: bad command skipped: %r", exc)
                fresh = False
                if now >= next_sweep:  # once a second: dead nodes, and the wallboard's running clocks
                    next_sweep, fresh = now + 1.0, True
                    used = state.nodes_in_use()
                    for gone in used - await self.alive_nodes(used):
                        log.warning("cluster: node %s is gone: its callers and calls are dropped", gone)
                        state.node_gone(gone, now)
                if now >= next_prune:
                    next_prune = now + self.election.ttl_s
                    await self._prune_nodes(wall)
                if not await self._write(state.step(now, wall), last_id, state, snapshot=fresh):
                    return
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - step down; the election loop may pick us again
            if not self._stopped():  # else a cancelled read: stop() hands the lock back itself
                log.exception("cluster: leader loop failed")
                e.resign(self.clock())
        finally:
            self.leader = None
            self._leading = None
            self.became_leader.clear()
            self._wake_election.set()

    async def _prune_nodes(self, wall: float) -> None:
        """Nodes silent for ``FORGET_AFTER_TTLS`` heartbeat lifetimes leave the ``nodes`` hash (the
        status lists them as dead until then), by a fenced write: only the leader prunes."""
        seen = await self.redis.hgetall(self.key("nodes"))
        old = [_s(name) for name, raw in seen.items() if _s(name) != self.node_id and forgotten(raw, wall)]
        if not old:
            return
        alive = await self.alive_nodes(set(old))
        args: list[Any] = [self.election.value]
        for name in sorted(set(old) - alive):
            args += ["hdel", self.key("nodes"), name, ""]
            log.info("cluster: node %s forgotten (no heartbeat for a long time)", name)
        if len(args) > 1:
            await self._fenced(keys=[self.key("leader")], args=args)

    async def _rebuild(self, token: int) -> tuple[LeaderState, Any]:
        agents_raw, waiting_raw, queues_raw, stats_raw, recent_raw, applied = await asyncio.gather(
            self.redis.hgetall(self.key("agents")),
            self.redis.hgetall(self.key("waiting")),
            self.redis.hgetall(self.key("queues")),
            self.redis.hgetall(self.key("stats")),
            self.redis.hgetall(self.key("recent")),
            self.redis.get(self.key("applied")),
        )
        agents = {_s(k): json.loads(v) for k, v in agents_raw.items()}
        waiting = {_s(k): json.loads(v) for k, v in waiting_raw.items()}
        nodes = {str(r.get("node")) for r in [*agents.values(), *waiting.values()] if r.get("node")}
        nodes |= {str(r["wrap"]["node"]) for r in agents.values() if (r.get("wrap") or {}).get("node")}
        alive = await self.alive_nodes(nodes | {self.node_id})
        state = LeaderState(self.queues, token, home=self.node_id, **self.router_args)
        queues = {_s(k): json.loads(v) for k, v in queues_raw.items()}
        stats = {_s(k): json.loads(v) for k, v in stats_raw.items()}
        recent = {_s(k): json.loads(v) for k, v in recent_raw.items()}
        state.restore(agents, waiting, alive, self.clock(), self.wall(), queues, stats, recent)
        await self._restore_chats(state)
        return state, _s(applied) if applied else "0-0"

    async def _restore_chats(self, state: LeaderState) -> None:
        """The chat ACD's mirror (``chats`` hash, cluster/chats.py)."""
        raw = await self.redis.hgetall(self.key("chats"))
        records = {_s(k): json.loads(v) for k, v in raw.items()}
        nodes = {str(r.get("node")) for r in records.values() if r.get("node")}
        alive = await self.alive_nodes(nodes | {self.node_id})
        state.chats.restore(records, alive, self.clock(), self.wall())

    async def _write(self, out: Output, last_id: Any, state: LeaderState, *, snapshot: bool = False) -> bool:
        """One fenced script call; False (and step down) when the lock is not ours any more."""
        snapshot = snapshot or bool(out.writes or out.notices) or self._written_id is None
        if not snapshot and last_id == self._written_id:
            return self.election.is_leader(self.clock())
        args: list[Any] = [self.election.value]
        for w in out.writes:
            if w.value is None:
                args += ["hdel", self.key(w.key), w.field, ""]
            else:
                args += ["hset", self.key(w.key), w.field, w.value]
        for node, notice in out.notices:
            args += ["xadd", self.key(f"node:{node}"), encode(notice)["m"], _STREAM_MAX]
        args += ["set", self.key("applied"), _s(last_id), ""]
        if snapshot:
            snap = state.router.snapshot(self.clock())
            args += ["set", self.key("snapshot"), json.dumps(snap, separators=(",", ":"), default=str), ""]
            positions = state.positions(self.clock())
            for node in sorted(self._position_nodes | set(positions)):  # emptied ones too
                args += ["set", self.key(f"positions:{node}"), json.dumps(positions.get(node, {})), ""]
            self._position_nodes = set(positions)
        ok = await self._fenced(keys=[self.key("leader")], args=args)
        if not ok:
            log.warning("cluster: %s is no longer the leader (fenced write refused)", self.node_id)
            self.election.resign(self.clock())
        else:
            self._written_id = last_id
        return bool(ok)

    async def positions(self) -> dict[str, list[Any]]:
        """This node's waiting callers as the leader last wrote them: call id → [position, wait_s]."""
        raw = await self.redis.get(self.key(f"positions:{self.node_id}"))
        data = json.loads(raw) if raw else {}
        return data if isinstance(data, dict) else {}

    async def snapshot(self) -> dict[str, Any]:
        """The leader's last wallboard snapshot (empty before there was a leader)."""
        raw = await self.redis.get(self.key("snapshot"))
        return json.loads(raw) if raw else {"queues": {}, "agents": {}}


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
