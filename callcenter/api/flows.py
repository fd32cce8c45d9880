"""``/api/flows``: read the live IVR flows and their history; check, publish and roll back versions.

Reading needs a supervisor or admin; checking, publishing and rolling back an admin (a session or a
bearer token, see api/access.py). A user publishes under their own name; publishes and rollbacks are
audited. Bodies are bounded (``max_body_bytes``, 413 beyond). Flow errors come back as JSON with
file, line and column.

``flows_router(registry, access=...)`` builds the router; the composition root includes it.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from callcenter.api.access import ADMIN, SUPERVISORS, Access
from callcenter.auth.service import Principal
from callcenter.ivr.registry import FlowRegistry
from callcenter.ivr.versions import (
    MAX_FLOW_BYTES,
    FlowNotFoundError,
    InvalidPublishError,
    LiveFlow,
    PublishResult,
    error_json,
)
from callcenter.store.flow_versions import flow_version_public

__all__ = ["flows_router"]


class RollbackRequest(BaseModel):
    version: int = Field(ge=1)
    author: str | None = Field(None, min_length=1, max_length=128, description="only with the admin token")
    message: str | None = Field(None, max_length=2000)


def _live_json(live: LiveFlow, *, text: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": live.flow_id,
        "language": live.flow.language,
        "description": live.flow.description,
        "version": live.version,
        "author": live.author,
        "created_at": live.created_at.isoformat(),
        "source": live.source,
        "sha256": live.sha256,
    }
    if text:
        out["yaml"] = live.text
    return out


def _result(result: PublishResult, created: bool = False) -> JSONResponse:
    if not result.ok:
        body = {
            "detail": f"flow {result.flow_id!r} not published: {len(result.errors)} error(s); "
            f"version {result.version} stays live"
            if result.version is not None
            else f"flow {result.flow_id!r} not published: {len(result.errors)} error(s)",
            "live_version": result.version,
            "errors": [error_json(e) for e in result.errors],
        }
        return JSONResponse(body, status_code=422)
    body = {"id": result.flow_id, "version": result.version, "changed": result.changed}
    return JSONResponse(body, status_code=201 if created else 200)


def flows_router(
    registry: FlowRegistry, *, access: Access, max_body_bytes: int = MAX_FLOW_BYTES
) -> APIRouter:
    """The ``/api/flows`` routes over ``registry``: reading for supervisors and admins, checking,
    publishing and rolling back for admins (audited)."""
    router = APIRouter(prefix="/api/flows", tags=["flows"])
    readers = Depends(access.require(*SUPERVISORS))
    admin = Depends(access.require(*ADMIN))  # runs before the body is read

    async def body_text(request: Request) -> str:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body_bytes:
            raise HTTPException(413, f"body larger than {max_body_bytes} bytes")
        data = bytearray()
        async for chunk in request.stream():  # a missing or lying Content-Length is bounded too
            data += chunk
            if len(data) > max_body_bytes:
                raise HTTPException(413, f"body larger than {max_body_bytes} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPException(400, "body: expected UTF-8 text") from None

    def live_or_404(flow_id: str) -> LiveFlow:
        live = registry.live(flow_id)
        if live is None:
            raise HTTPException(404, f"no flow {flow_id!r}")
        return live

    @router.get("", dependencies=[readers])
    async def list_flows() -> list[dict[str, Any]]:
        """Every live flow: id, language, live version, its author and time."""
        return [_live_json(lf) for lf in registry.live_flows()]

    @router.get("/{flow_id}", dependencies=[readers])
    async def get_flow(flow_id: str) -> dict[str, Any]:
        """The live version of a flow, with its YAML."""
        return _live_json(live_or_404(flow_id), text=True)

    @router.get("/{flow_id}/versions", dependencies=[readers])
    async def list_versions(flow_id: str) -> list[dict[str, Any]]:
        """Every stored version, oldest first (without texts)."""
        try:
            rows = await registry.history(flow_id)
        except FlowNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        return [flow_version_public(r) for r in rows]

    @router.get("/{flow_id}/versions/{version}", dependencies=[readers])
    async def get_version(flow_id: str, version: int) -> dict[str, Any]:
        """One stored version with its YAML and its diff against the version before."""
        try:
            row = await registry.version(flow_id, version)
        except FlowNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        return flow_version_public(row, text=True)

    @router.post("/{flow_id}/check", dependencies=[admin])
    async def check_flow(flow_id: str, request: Request) -> dict[str, Any]:
        """Check a YAML text as ``flow_id`` would be published, without publishing it."""
        text = await body_text(request)
        try:
            errors = await registry.check(flow_id, text)
        except InvalidPublishError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"ok": not errors, "errors": [error_json(e) for e in errors]}

    async def audit(principal: Principal, action: str, flow_id: str, request: Request, **detail: Any) -> None:
        client = request.client.host if request.client is not None else None
        if access.users is not None:
            await asyncio.to_thread(
                access.users.audit, principal.username, action, flow_id, source=client, detail=detail
            )

    def author_of(principal: Principal, given: str | None) -> str:
        # A user publishes as themselves; only the shared admin token (scripts) may name an author.
        return (given or "api") if principal.via == "admin-token" else principal.username

    @router.put("/{flow_id}")
    async def publish_flow(
        flow_id: str,
        request: Request,
        author: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
        message: Annotated[str | None, Query(max_length=2000)] = None,
        principal: Principal = admin,
    ) -> JSONResponse:
        """Publish the YAML body as the new live version (422 with the errors when it is not valid)."""
        text = await body_text(request)
        existed = registry.live(flow_id) is not None
        who = author_of(principal, author)
        try:
            result = await registry.publish(flow_id, text, author=who, source="api", message=message)
        except InvalidPublishError as exc:
            raise HTTPException(422, str(exc)) from None
        if result.ok and result.changed:
            await audit(principal, "flow_published", flow_id, request, version=result.version)
        return _result(result, created=result.changed and not existed)

    @router.post("/{flow_id}/rollback")
    async def rollback_flow(flow_id: str, request: Request, principal: Principal = admin) -> JSONResponse:
        """Publish an earlier version again (as a new version): ``{"version": N, "author": ...}``."""
        try:
            body = RollbackRequest.model_validate_json(await body_text(request))
        except ValidationError as exc:
            raise HTTPException(422, exc.errors(include_url=False, include_context=False)) from None
        who = author_of(principal, body.author)
        try:
            result = await registry.rollback(flow_id, body.version, author=who, message=body.message)
        except FlowNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        except InvalidPublishError as exc:
            raise HTTPException(422, str(exc)) from None
        if result.ok:
            await audit(
                principal,
                "flow_rolled_back",
                flow_id,
                request,
                to_version=body.version,
                version=result.version,
            )
        return _result(result)

    return router
