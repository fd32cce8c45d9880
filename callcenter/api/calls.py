"""``GET /api/calls/{call_id}``: one call, live (what the agent's screen-pop link shows while it rings:
caller, IVR path, queue, transcript so far) or from its record once it ended.

Call details include what the caller said, so the route needs the admin token until users and roles
(agents seeing their own calls) arrive with issue 8.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException

from callcenter.api.auth import require_admin_token
from callcenter.store import Store, call_public

__all__ = ["create_calls_router"]

LiveView = Callable[[str], dict[str, Any] | None]


def create_calls_router(live: LiveView, store: Store, admin_token: str | None) -> APIRouter:
    router = APIRouter(prefix="/api/calls", tags=["calls"])

    @router.get("/{call_id}", dependencies=[Depends(require_admin_token(admin_token))])
    async def get_call(call_id: str) -> dict[str, Any]:
        view = live(call_id)
        if view is not None:
            return view
        record = await asyncio.to_thread(store.get_call, call_id)
        if record is None:
            raise HTTPException(404, f"no call {call_id!r}")
        return {**call_public(record), "live": False}

    return router
