"""``/api/flows``: read the live IVR flows and their history; check, publish and roll back versions.

Reading is open; checking, publishing and rolling back need ``Authorization: Bearer <admin token>``
until accounts arrive (issue 8). Without a token configured those routes answer 403. Bodies are
bounded (``max_body_bytes``, 413 beyond). Flow errors come back as JSON with file, line and column.

``flows_router(registry, admin_token=...)`` builds the router; the composition root includes it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from callcenter.api.auth import require_admin_token
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
    author: str = Field("api", min_length=1, max_length=128)
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
    registry: FlowRegistry, *, admin_token: str | None, max_body_bytes: int = MAX_FLOW_BYTES
) -> APIRouter:
    """The ``/api/flows`` routes over ``registry``; ``admin_token`` None disables the mutating ones."""
    router = APIRouter(prefix="/api/flows", tags=["flows"])
    admin_only = [Depends(require_admin_token(admin_token))]  # runs before the body is read

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

    @router.get("")
    async def list_flows() -> list[dict[str, Any]]:
        """Every live flow: id, language, live version, its author and time."""
        return [_live_json(lf) for lf in registry.live_flows()]

    @router.get("/{flow_id}")
    async def get_flow(flow_id: str) -> dict[str, Any]:
        """The live version of a flow, with its YAML."""
        return _live_json(live_or_404(flow_id), text=True)

    @router.get("/{flow_id}/versions")
    async def list_versions(flow_id: str) -> list[dict[str, Any]]:
        """Every stored version, oldest first (without texts)."""
        try:
            rows = await registry.history(flow_id)
        except FlowNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        return [flow_version_public(r) for r in rows]

    @router.get("/{flow_id}/versions/{version}")
    async def get_version(flow_id: str, version: int) -> dict[str, Any]:
        """One stored version with its YAML and its diff against the version before."""
        try:
            row = await registry.version(flow_id, version)
        except FlowNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        return flow_version_public(row, text=True)

    @router.post("/{flow_id}/check", dependencies=admin_only)
    async def check_flow(flow_id: str, request: Request) -> dict[str, Any]:
        """Check a YAML text as ``flow_id`` would be published, without publishing it."""
        text = await body_text(request)
        try:
            errors = await registry.check(flow_id, text)
        except InvalidPublishError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"ok": not errors, "errors": [error_json(e) for e in errors]}

    @router.put("/{flow_id}", dependencies=admin_only)
    async def publish_flow(
        flow_id: str,
        request: Request,
        author: Annotated[str, Query(min_length=1, max_length=128)] = "api",
        message: Annotated[str | None, Query(max_length=2000)] = None,
    ) -> JSONResponse:
        """Publish the YAML body as the new live version (422 with the errors when it is not valid)."""
        text = await body_text(request)
        existed = registry.live(flow_id) is not None
        try:
            result = await registry.publish(flow_id, text, author=author, source="api", message=message)
        except InvalidPublishError as exc:
            raise HTTPException(422, str(exc)) from None
        return _result(result, created=result.changed and not existed)

    @router.post("/{flow_id}/rollback", dependencies=admin_only)
    async def rollback_flow(flow_id: str, request: Request) -> JSONResponse:
        """Publish an earlier version again (as a new version): ``{"version": N, "author": ...}``."""
        try:
            body = RollbackRequest.model_validate_json(await body_text(request))
        except ValidationError as exc:
            raise HTTPException(422, exc.errors(include_url=False, include_context=False)) from None
        try:
            result = await registry.rollback(flow_id, body.version, author=body.author, message=body.message)
        except FlowNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        except InvalidPublishError as exc:
            raise HTTPException(422, str(exc)) from None
        return _result(result)

    return router
