"""What ``callcenter cluster status`` and ``GET /api/cluster`` show: the nodes Redis has seen.

Read from the keys :mod:`.node` maintains (prefix ``cc:``): ``nodes`` (each node's last heartbeat,
calls held then, start time), ``alive:<node>`` (present while its heartbeat is fresh) and ``leader``
(``node:token``, the lock whose token fences the leader's writes). A node that stopped or was killed
stays listed, as not alive, with its last heartbeat — until it has been silent for
:data:`FORGET_AFTER_TTLS` heartbeat lifetimes (its own ``ttl``): then it is left out, and the leader
removes it from ``nodes`` (a node that comes back is listed again at its first heartbeat). Without
``redis_url`` there is one node and nothing to read (:func:`single_node`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the single-node server imports this module without needing Redis
    from redis.asyncio import Redis

__all__ = [
    "FORGET_AFTER_TTLS",
    "ClusterStatus",
    "NodeStatus",
    "forgotten",
    "format_status",
    "read_status",
    "single_node",
]

FORGET_AFTER_TTLS = 10.0  # a node silent this many heartbeat lifetimes is no longer listed
_DEFAULT_TTL_S = 6.0  # heartbeats written before they carried their ttl


@dataclass(frozen=True)
class NodeStatus:
    node: str
    alive: bool  # heartbeat fresh (within the election's ttl)
    last_heartbeat: float | None  # wall-clock seconds
    calls: int | None  # calls the node held at that heartbeat
    started: float | None  # wall-clock seconds the node (re)joined
    leader: bool
    token: int | None  # the fencing token of its leadership (the leader only)


@dataclass(frozen=True)
class ClusterStatus:
    mode: Literal["single", "cluster"]
    node: str  # the node that answered
    nodes: tuple[NodeStatus, ...] = ()
    leader: str | None = None
    token: int | None = None
    epoch: int | None = None  # the last token handed out (tokens before it belonged to older leaders)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["nodes"] = [{**asdict(n), "last_heartbeat": _iso(n.last_heartbeat), "started": _iso(n.started)}
                        for n in self.nodes]  # fmt: skip
        return out


def single_node(node_id: str) -> ClusterStatus:
    return ClusterStatus("single", node_id)


def forgotten(raw: Any, now_wall: float) -> bool:
    """Whether a ``nodes`` entry is older than :data:`FORGET_AFTER_TTLS` of its node's heartbeat ttl."""
    seen = _load(raw)
    at = _num(seen.get("at"))
    if at is None:
        return False
    ttl = _num(seen.get("ttl")) or _DEFAULT_TTL_S
    return now_wall - at > FORGET_AFTER_TTLS * ttl


async def read_status(
    redis: Redis, node_id: str, *, prefix: str = "cc:", now_wall: float | None = None
) -> ClusterStatus:
    """Every node in the ``nodes`` hash not yet forgotten, alive ones first, then by name."""
    seen_raw, lock, epoch = await _gather(redis, prefix)
    wall = time.time() if now_wall is None else now_wall
    leader, token = _parse_lock(lock)
    beats = {_s(k): _load(v) for k, v in seen_raw.items() if _s(k) == leader or not forgotten(v, wall)}
    names = sorted(set(beats) | ({leader} if leader else set()))
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.exists(prefix + f"alive:{name}")
        flags = await pipe.execute() if names else []
    nodes = []
    for name, alive in zip(names, flags, strict=True):
        seen = beats.get(name, {})
        nodes.append(
            NodeStatus(
                name,
                bool(alive),
                _num(seen.get("at")),
                None if seen.get("calls") is None else int(seen["calls"]),
                _num(seen.get("started")),
                name == leader,
                token if name == leader else None,
            )
        )
    nodes.sort(key=lambda n: (not n.alive, n.node))
    return ClusterStatus(
        "cluster", node_id, tuple(nodes), leader, token, int(epoch) if epoch is not None else None
    )


def format_status(status: ClusterStatus, now_wall: float) -> str:
    """The table ``callcenter cluster status`` prints."""
    if status.mode == "single":
        return f"single node ({status.node}): no redis_url, routing runs in this process"
    lines = [
        f"leader: {status.leader or '(none)'}"
        + (f" (fencing token {status.token})" if status.token is not None else "")
    ]
    rows = [("NODE", "ALIVE", "LAST HEARTBEAT", "CALLS", "LEADER", "TOKEN")]
    for n in status.nodes:
        beat = "-" if n.last_heartbeat is None else f"{max(0.0, now_wall - n.last_heartbeat):.1f} s ago"
        rows.append(
            (
                n.node,
                "yes" if n.alive else "no",
                beat,
                "-" if n.calls is None else str(n.calls),
                "yes" if n.leader else "",
                "" if n.token is None else str(n.token),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if len(rows) == 1:
        lines.append("(no node has sent a heartbeat)")
    return "\n".join(lines)


# -- internals ----------------------------------------------------------------------------------------


async def _gather(redis: Redis, prefix: str) -> tuple[dict[Any, Any], Any, Any]:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(prefix + "nodes")
        pipe.get(prefix + "leader")
        pipe.get(prefix + "epoch")
        seen, lock, epoch = await pipe.execute()
    return dict(seen or {}), lock, epoch


def _parse_lock(value: Any) -> tuple[str | None, int | None]:
    """``node:token`` (see :func:`callcenter.cluster.election.lock_value`); node ids may hold ':'."""
    if value is None:
        return None, None
    node, _, token = _s(value).rpartition(":")
    try:
        return node or None, int(token)
    except ValueError:
        return None, None


def _load(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        data = json.loads(_s(raw))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value else None


def _iso(wall: float | None) -> str | None:
    return None if wall is None else datetime.fromtimestamp(wall, UTC).isoformat()


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
