"""Leader election over one Redis lock, as a sans-I/O state machine plus the Redis scripts it drives.

One node at a time runs the dispatcher. The lock is ``SET lock "<node>:<token>" NX PX ttl``, where the
token comes from ``INCR epoch`` in the same script, so every leadership has a larger token than the
one before (the *fencing token*). Every write the leader makes goes through a script that first
checks that the lock still holds its own value: a deposed leader that wakes up after a pause (GC, a
stopped VM, a SIGSTOP) cannot overwrite its successor's state or send offers in its name. (Kleppmann,
"How to do distributed locking", 2016: a lease alone is not enough without a check at the storage;
here the storage is Redis itself, so the check is exact rather than "token ≥ last seen".)

Lease arithmetic. Redis starts the key's PX countdown when it runs the command, which is never
*before* we sent it; so a lease granted by a request sent at ``t`` is safe to rely on until
``t + ttl``, minus a margin for clock-rate drift between the two machines. The leader counts its
lease from the *send* time of its last successful acquire/renew, and steps down by itself when that
runs out, even if Redis never answers again (it cannot tell "slow" from "gone").

The :class:`Election` never reads the clock or touches a socket: :meth:`poll` says what to send and
the driver reports answers back with the time the request was sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ACQUIRE_LUA",
    "Election",
    "Request",
    "RELEASE_LUA",
    "RENEW_LUA",
    "lock_value",
]

Role = Literal["follower", "leader"]

# KEYS: lock, epoch. ARGV: node id, ttl ms. Returns the new token, or false when someone holds it.
ACQUIRE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
return token
"""

# KEYS: lock. ARGV: our lock value, ttl ms. 1 when still ours (and extended), else 0.
RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lock. ARGV: our lock value. Only our own lock is deleted.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lock_value(node_id: str, token: int) -> str:
    return f"{node_id}:{token}"


@dataclass(frozen=True)
class Request:
    """Send this now; report the answer with ``sent_at`` (the same ``now`` given to :meth:`poll`)."""

    kind: Literal["acquire", "renew"]
    sent_at: float


class Election:
    """Follower ⇄ leader for one node.

    - A follower tries to acquire every ``retry_s`` (a new leader within ``ttl_s + retry_s`` of the old
      one's last renewal).
    - A leader renews every ``ttl_s / 3``; a renewal refused (someone else holds the lock) or not
      confirmed before the lease runs out makes it a follower again.
    - One request in flight at a time: a late answer to an older request is ignored.
    """

    def __init__(
        self, node_id: str, *, ttl_s: float = 6.0, retry_s: float = 1.0, drift: float = 0.01
    ) -> None:
        if ttl_s <= 0 or retry_s <= 0:
            raise ValueError("ttl_s and retry_s must be > 0")
        self.node_id = node_id
        self.ttl_s = ttl_s
        self.retry_s = retry_s
        self.drift = drift  # fraction of the ttl given up for clock-rate differences
        self.role: Role = "follower"
        self.token: int | None = None  # fencing token of our current (or last) leadership
        self.lease_until: float | None = None  # safe end of our lease (leader only)
        self._next_at = 0.0  # when the next request is due
        self._in_flight: Request | None = None
        self.terms = 0  # how many times this node became leader

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl_s * 1000)

    @property
    def value(self) -> str | None:
        """What the lock holds while we lead (the fencing check compares with it)."""
        return lock_value(self.node_id, self.token) if self.token is not None else None

    def is_leader(self, now: float) -> bool:
        """Leader with a lease still safe at ``now`` (steps down when it is not)."""
        self._expire(now)
        return self.role == "leader"

    def get_timer(self) -> float | None:
        """When :meth:`poll` has something to do next (a request, or the lease end)."""
        times = [self._next_at] if self._in_flight is None else []
        if self.role == "leader" and self.lease_until is not None:
            times.append(self.lease_until)
        return min(times) if times else None

    def poll(self, now: float) -> Request | None:
        """The request to send now, if one is due."""
        self._expire(now)
        if self._in_flight is not None or now < self._next_at:
            return None
        self._in_flight = Request("renew" if self.role == "leader" else "acquire", now)
        return self._in_flight

    def on_acquire(self, request: Request, token: int | None, now: float) -> None:
        """The acquire script's answer: the new token, or None (someone else leads)."""
        if request is not self._in_flight:
            return
        self._in_flight = None
        if token is None:
            self._next_at = now + self.retry_s
            return
        self.role, self.token = "leader", token
        self.terms += 1
        self._granted(request, now)

    def on_renew(self, request: Request, ok: bool, now: float) -> None:
        """The renew script's answer: True when the lock was still ours."""
        if request is not self._in_flight:
            return
        self._in_flight = None
        if ok and self.role == "leader":
            self._granted(request, now)
        else:
            self._step_down(now)

    def on_error(self, request: Request, now: float) -> None:
        """Redis did not answer (timeout, connection lost): try again after ``retry_s``; a leader keeps
        its lease until it runs out and no longer."""
        if request is not self._in_flight:
            return
        self._in_flight = None
        self._next_at = now + min(self.retry_s, self.ttl_s / 6)
        self._expire(now)

    def resign(self, now: float) -> None:
        """Stop leading (shutdown); the driver deletes the lock with RELEASE_LUA."""
        self._step_down(now)

    # -- internals ------------------------------------------------------------------------------------

    def _granted(self, request: Request, now: float) -> None:
        # Counted from the send time: Redis's countdown started no earlier than that (module docstring).
        self.lease_until = request.sent_at + self.ttl_s * (1 - self.drift)
        self._next_at = request.sent_at + self.ttl_s / 3

    def _expire(self, now: float) -> None:
        if self.role == "leader" and self.lease_until is not None and now >= self.lease_until:
            self._step_down(now)

    def _step_down(self, now: float) -> None:
        self.role = "follower"
        self.lease_until = None
        self._next_at = now + self.retry_s
