"""Two real servers (`callcenter serve`) with ``redis_url`` on one Redis: one leads, SIGKILL hands the
lead to the other. (Calls across nodes through Kamailio are the cluster harness's e2e.)"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from redis.asyncio import Redis

from callcenter.testing.server import ServerProcess

WAIT = 20.0


async def _until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    async def poll() -> None:
        while not await predicate():
            await asyncio.sleep(0.1)

    try:
        await asyncio.wait_for(poll(), WAIT)
    except TimeoutError:
        raise AssertionError(f"never: {what}") from None


async def test_two_servers_elect_one_leader_and_fail_over(
    tmp_path: Path, redis_url: str, redis: Redis
) -> None:
    servers = [
        ServerProcess(tmp_path / name, env={"CALLCENTER_REDIS_URL": redis_url, "CALLCENTER_NODE_ID": name})
        for name in ("n1", "n2")
    ]
    try:
        for server in servers:
            await asyncio.to_thread(server.start)

        async def both_alive() -> bool:
            return bool(await redis.exists("cc:alive:n1") == 1 and await redis.exists("cc:alive:n2") == 1)

        async def leader() -> str | None:
            value = await redis.get("cc:leader")
            text = value.decode() if isinstance(value, bytes) else value
            return text.split(":")[0] if text else None

        async def has_leader() -> bool:
            return await leader() is not None and await redis.exists("cc:snapshot") == 1

        await _until(both_alive, "both nodes heartbeat")
        await _until(has_leader, "a leader wrote the wallboard")
        first = await leader()
        assert first in ("n1", "n2")
        victim = servers[0] if first == "n1" else servers[1]
        assert victim.proc is not None
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(timeout=10)
        other = "n2" if first == "n1" else "n1"

        async def other_leads() -> bool:
            return await leader() == other

        await _until(other_leads, f"{other} took over")
        assert int(await redis.get("cc:epoch") or 0) >= 2  # a new fencing token
    finally:
        for server in servers:
            if server.proc is not None and server.proc.poll() is None:
                server.stop()
