"""The HTTP app: ``/healthz`` and the demo CRM for now; the composition root mounts the rest."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse

from callcenter import __version__
from callcenter.api.demo_crm import router as demo_crm_router

__all__ = ["create_http_app"]


def create_http_app(health: Callable[[], dict[str, Any]], routers: Sequence[APIRouter] = ()) -> FastAPI:
    """A FastAPI app whose ``GET /healthz`` reports ``{sip, http, db, version}``.

    ``health()`` returns at least ``sip`` and ``db`` states ("up" / "down" / ...). It runs in the
    thread pool (the endpoint is a plain ``def``), so it may do a blocking database ping. The answer is
    200 when no component is "down", else 503 with the same body (what load balancers expect); 503
    too when ``health()`` raises.
    """
    app = FastAPI(title="callcenter", version=__version__)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        failed = False
        try:
            states = dict(health())
        except Exception:  # a broken probe is itself a failure to report, not a 500
            failed, states = True, {"sip": "unknown", "db": "unknown", "error": "health check failed"}
        body: dict[str, Any] = {
            "sip": states.pop("sip", "unknown"),
            "http": "up",
            "db": states.pop("db", "unknown"),
            "version": __version__,
            **states,
        }
        down = failed or any(body[k] == "down" for k in ("sip", "db"))
        return JSONResponse(body, status_code=503 if down else 200)

    app.include_router(demo_crm_router)
    for router in routers:
        app.include_router(router)
    return app
