"""A small model of the cluster leader's Redis for the sans-I/O LeaderState tests: a mirror of the
hashes its writes update, and builders for the commands nodes send it.

Not a conftest: the tests import it as a sibling module (``from leader_model import ...``; pytest puts
this folder on sys.path, as tests/web does for ``inprocess``). A test file whose model differs (its own
queues, clock origin, time zone, what a successor restores) subclasses :class:`Mirror` and sets the
class attributes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from callcenter.cluster.leader import LeaderState, Output
from callcenter.cluster.messages import Command, Notice
from callcenter.routing.queues import QueueConfig

WALL0 = 1_700_000_000.0  # the wall clock at monotonic 0 unless a Mirror subclass says otherwise


class Mirror:
    """What Redis would hold: the hashes the leader's writes update (``agents``, ``waiting``, ``stats``,
    ``queues``, ``recent`` from the start; any other, e.g. ``chats``, once written)."""

    queues: ClassVar[Mapping[str, QueueConfig]] = {}  # a successor's configured queues
    wall0: ClassVar[float] = WALL0  # run() and successor() step at wall0 + now
    timezone: ClassVar[str | None] = None  # a successor's zone (None: the system's)
    restored: ClassVar[tuple[str, ...]] = ("stats", "recent")  # hashes a successor restores besides
    # agents and waiting

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Any]] = {
            name: {} for name in ("agents", "waiting", "stats", "queues", "recent")
        }

    def take(self, out: Output) -> Output:
        for w in out.writes:
            table = self.tables.setdefault(w.key, {})
            if w.value is None:
                table.pop(w.field, None)
            else:
                table[w.field] = json.loads(w.value)
        return out

    def get(self, key: str) -> dict[str, Any]:
        return self.tables.get(key, {})

    @property
    def agents(self) -> dict[str, Any]:
        return self.tables["agents"]

    @property
    def waiting(self) -> dict[str, Any]:
        return self.tables["waiting"]

    def successor(self, now: float, alive: set[str], **kw: Any) -> LeaderState:
        """The next leader (token 2), rebuilt from this mirror at ``now``; ``kw`` goes to LeaderState."""
        kw.setdefault("timezone", self.timezone)
        t = LeaderState(self.queues, token=2, **kw)
        t.restore(
            self.get("agents"), self.get("waiting"), alive, now, self.wall0 + now,
            **{name: self.get(name) for name in self.restored},
        )  # fmt: skip
        return t


def cmd(
    op: str,
    node: str,
    *,
    at: float = 0.0,
    call_id: str | None = None,
    agent: str | None = None,
    **args: Any,
) -> Command:
    """A node's command; ``at`` is its wall time at the sender (0: unknown, the leader's clock counts)."""
    return Command(op, node, call_id, agent, at, args)  # type: ignore[arg-type]


def run(s: LeaderState, m: Mirror, now: float, *cmds: Command) -> Output:
    """Apply ``cmds`` at ``now``, then step: the output, its writes taken into ``m``."""
    for c in cmds:
        s.apply(c, now, m.wall0 + now)
    return m.take(s.step(now, m.wall0 + now))


def agent_up(s: LeaderState, m: Mirror, name: str, now: float = 0.0) -> None:
    """Agent ``name`` (skill sales 1) defined and logged in on node b, stepped into ``m``."""
    run(s, m, now, cmd("define", "b", agent=name, skills={"sales": 1}),
        cmd("presence", "b", agent=name, event="login"))  # fmt: skip


def apply_agent_up(
    s: LeaderState,
    name: str,
    node: str,
    now: float,
    skills: dict[str, int] | None = None,
    *,
    wall0: float = WALL0,
) -> None:
    """Agent ``name`` defined (skills default sales 2) and logged in on ``node``: applied, not stepped."""
    s.apply(cmd("define", node, at=wall0, agent=name, skills=skills or {"sales": 2}), now, wall0 + now)
    s.apply(cmd("presence", node, at=wall0, agent=name, event="login"), now, wall0 + now)


def notices(out: Output, op: str) -> list[tuple[str, Notice]]:
    """The ``op`` notices in ``out``, each with the node it goes to."""
    return [(node, n) for node, n in out.notices if n.op == op]


def offers(out: Output) -> list[tuple[str, tuple[str, ...]]]:
    """The offers in ``out`` as (call id, agents)."""
    return [(n.call_id, n.agents) for _, n in notices(out, "offer")]


def node_offers(out: Output) -> list[tuple[str, str, tuple[str, ...]]]:
    """The offers in ``out`` as (node holding the caller, call id, agents)."""
    return [(node, n.call_id, n.agents) for node, n in notices(out, "offer")]
