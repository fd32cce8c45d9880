"""HTTP routes: ``GET``/``POST`` ``/wechat`` (the default account) and ``/wechat/{name}``."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response

from callcenter.chat.wechat.gateway import Reply, WechatGateway
from callcenter.core.logging import log_event

__all__ = ["create_wechat_router"]

log = logging.getLogger("callcenter.chat.wechat")


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``limit`` (never buffering more)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _response(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, media_type=reply.media_type)


def create_wechat_router(gateway: WechatGateway) -> APIRouter:
    router = APIRouter(tags=["wechat"])

    async def verify(request: Request, name: str | None) -> Response:
        return _response(gateway.verify_url(name, dict(request.query_params)))

    async def callback(request: Request, name: str | None) -> Response:
        body = await _read_capped(request, gateway.settings.max_body_bytes)
        if body is None:
            log_event(
                log,
                "wechat_body_too_large",
                level=logging.WARNING,
                account=name,
                limit=gateway.settings.max_body_bytes,
            )
            return Response("too large", status_code=413, media_type="text/plain")
        return _response(await gateway.handle_post(name, dict(request.query_params), body))

    @router.get("/wechat", include_in_schema=False)
    async def verify_default(request: Request) -> Response:
        return await verify(request, None)

    @router.get("/wechat/{name}", include_in_schema=False)
    async def verify_named(request: Request, name: str) -> Response:
        return await verify(request, name)

    @router.post("/wechat", include_in_schema=False)
    async def callback_default(request: Request) -> Response:
        return await callback(request, None)

    @router.post("/wechat/{name}", include_in_schema=False)
    async def callback_named(request: Request, name: str) -> Response:
        return await callback(request, name)

    return router
