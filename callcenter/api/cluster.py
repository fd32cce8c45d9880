"""``GET /api/cluster`` (supervisors and admins): the nodes Redis has seen — alive or not, last
heartbeat, calls held, which one leads and its fencing token; ``{"mode": "single", ...}`` on a server
without ``redis_url``. See :mod:`callcenter.cluster.status`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException

from callcenter.api.access import SUPERVISORS, Access
from callcenter.cluster.status import ClusterStatus

__all__ = ["create_cluster_router"]


def create_cluster_router(read: Callable[[], Awaitable[ClusterStatus]], access: Access) -> APIRouter:
    """``read``: the app's (Redis, or the single node's answer)."""
    router = APIRouter(prefix="/api", tags=["cluster"])

    @router.get("/cluster", dependencies=[Depends(access.require(*SUPERVISORS))])
    async def cluster() -> dict[str, Any]:
        try:
            status = await read()
        except Exception as exc:  # noqa: BLE001 - Redis down or slow: say so, the server is fine
            raise HTTPException(503, f"cluster status unavailable: {exc!r}") from None
        return status.as_json()

    return router
