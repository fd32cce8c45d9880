"""The browser pages: ``/`` (login), ``/agent``, ``/wallboard``, ``/admin`` and their static files.

Pages are plain HTML/CSS/JS from ``callcenter/web/`` (no build step, nothing fetched from a CDN); they
talk to the REST routes and the ``/api/live`` WebSocket with the session cookie. A page's role check
happens here, before any HTML is sent: no session, a session of another role or a one-time password
still to change → 303 to the login page with ``?next=`` (the page the user wanted). The API routes
check roles again on every call, so the pages hide nothing the API would give away.

``GET /api/live-calls`` (supervisors and admins) lists the calls up now — the wallboard's "live
calls" — when the composition root hands a ``live_calls`` callable in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from callcenter.api.access import ADMIN, STAFF, SUPERVISORS, Access

__all__ = ["WEB_DIR", "create_pages_router"]

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

# page path → (HTML file, roles admitted)
PAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "/agent": ("agent.html", STAFF),
    "/wallboard": ("wallboard.html", SUPERVISORS),
    "/admin": ("admin.html", ADMIN),
}

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}

# Pages load only our own scripts and styles and talk only to this origin (incl. its WebSocket).
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",  # revalidate: a new release's pages are seen at once
}

LiveCalls = Callable[[], list[dict[str, Any]]]


def _file(name: str) -> FileResponse:
    path = WEB_DIR / name
    media_type = _TYPES.get(path.suffix, "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers=_HEADERS)


def create_pages_router(access: Access, live_calls: LiveCalls | None = None) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    static = {p.name for p in WEB_DIR.iterdir() if p.is_file() and p.suffix in _TYPES}

    @router.get("/")
    def login_page() -> FileResponse:
        return _file("login.html")

    def page(html: str, roles: tuple[str, ...]) -> Callable[[Request], Response]:
        def serve(request: Request) -> Response:
            # identify() raises only for cross-site writes; a GET never does
            principal = access.identify(request, request.headers.get("authorization"))
            if principal is None or principal.must_change_password or principal.role not in roles:
                why = "login" if principal is None or principal.must_change_password else "role"
                wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                target = f"/?next={quote(wanted, safe='/')}&why={why}"
                return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
            return _file(html)

        return serve

    for path, (html, roles) in PAGES.items():
        router.add_api_route(path, page(html, roles), methods=["GET"])

    @router.get("/static/{name}")
    def static_file(name: str) -> FileResponse:
        # A fixed set of names read once at start-up: no path from the request reaches the file system.
        if name not in static:
            raise HTTPException(404, "no such file")
        return _file(name)

    supervisors = Depends(access.require(*SUPERVISORS))

    @router.get("/api/live-calls", dependencies=[supervisors], include_in_schema=True, tags=["calls"])
    def list_live_calls() -> list[dict[str, Any]]:
        """The calls up now (caller, flow, IVR path, queue, agent), without their transcripts."""
        if live_calls is None:
            raise HTTPException(404, "live call list not available")
        return [{k: v for k, v in c.items() if k != "transcript"} for c in live_calls()]

    return router
