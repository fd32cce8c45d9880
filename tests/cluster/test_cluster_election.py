"""The election state machine, stepped by hand (no Redis, no clock), and its scripts on a real Redis."""

from __future__ import annotations

from redis.asyncio import Redis

from callcenter.cluster.election import ACQUIRE_LUA, RELEASE_LUA, RENEW_LUA, Election, lock_value


def test_acquire_makes_leader_and_lease_counts_from_send_time() -> None:
    e = Election("a", ttl_s=6.0, retry_s=1.0, drift=0.0)
    req = e.poll(10.0)
    assert req is not None and req.kind == "acquire"
    e.on_acquire(req, 7, now=12.0)  # the answer came 2 s late: the lease still starts at 10
    assert e.is_leader(12.0) and e.token == 7 and e.value == "a:7"
    assert e.lease_until == 16.0
    assert not e.is_leader(16.0)  # never renewed: steps down by itself at the lease end


def test_refused_acquire_retries_later() -> None:
    e = Election("a", ttl_s=6.0, retry_s=1.0)
    req = e.poll(0.0)
    assert req is not None
    e.on_acquire(req, None, 0.1)
    assert not e.is_leader(0.1)
    assert e.poll(0.5) is None  # not before retry_s
    assert e.poll(1.1) is not None


def test_renewals_keep_the_lease_and_refusal_steps_down() -> None:
    e = Election("a", ttl_s=6.0, retry_s=1.0, drift=0.0)
    req = e.poll(0.0)
    assert req is not None
    e.on_acquire(req, 1, 0.0)
    assert e.poll(1.0) is None  # renewals every ttl/3
    renew = e.poll(2.0)
    assert renew is not None and renew.kind == "renew"
    e.on_renew(renew, True, 2.1)
    assert e.lease_until == 8.0 and e.is_leader(7.9)
    renew = e.poll(4.0)
    assert renew is not None
    e.on_renew(renew, False, 4.0)  # someone else holds the lock now
    assert not e.is_leader(4.0)


def test_lost_redis_keeps_the_lease_only_until_it_runs_out() -> None:
    e = Election("a", ttl_s=6.0, retry_s=1.0, drift=0.0)
    req = e.poll(0.0)
    assert req is not None
    e.on_acquire(req, 1, 0.0)
    renew = e.poll(2.0)
    assert renew is not None
    e.on_error(renew, 3.0)
    assert e.is_leader(5.9)
    again = e.poll(5.0)
    assert again is not None and again.kind == "renew"
    assert not e.is_leader(6.0)  # still no answer: not leader any more, whatever Redis would say
    e.on_renew(again, True, 6.5)  # a late yes to a leader that has stepped down changes nothing
    assert not e.is_leader(6.5)


def test_stale_answer_is_ignored() -> None:
    e = Election("a", ttl_s=6.0, retry_s=1.0)
    first = e.poll(0.0)
    assert first is not None
    e.on_error(first, 0.5)
    second = e.poll(2.0)
    assert second is not None
    e.on_acquire(first, 5, 2.1)  # the answer to the abandoned request
    assert not e.is_leader(2.1)
    e.on_acquire(second, 6, 2.2)
    assert e.is_leader(2.2) and e.token == 6


def test_timer_names_the_next_thing_to_do() -> None:
    e = Election("a", ttl_s=6.0, retry_s=1.0, drift=0.0)
    assert e.get_timer() == 0.0
    req = e.poll(0.0)
    assert req is not None
    assert e.get_timer() is None  # waiting for the answer, not leader: nothing timed
    e.on_acquire(req, 1, 0.0)
    assert e.get_timer() == 2.0


async def test_scripts_give_one_lock_and_increasing_tokens(redis: Redis) -> None:
    acquire, renew, release = (redis.register_script(s) for s in (ACQUIRE_LUA, RENEW_LUA, RELEASE_LUA))
    t1 = await acquire(keys=["lock", "epoch"], args=["a", 60000])
    assert t1 == 1
    assert await acquire(keys=["lock", "epoch"], args=["b", 60000]) is None
    assert await renew(keys=["lock"], args=[lock_value("b", 1), 60000]) == 0
    assert await renew(keys=["lock"], args=[lock_value("a", 1), 60000]) == 1
    assert await release(keys=["lock"], args=[lock_value("b", 1)]) == 0
    assert await release(keys=["lock"], args=[lock_value("a", 1)]) == 1
    t2 = await acquire(keys=["lock", "epoch"], args=["b", 60000])
    assert t2 == 2  # a later leadership always has a larger fencing token
