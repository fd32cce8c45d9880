"""``GET /api/recordings/{call_id}``: a call's recording as a WAV download.

Roles: admins and supervisors any call; an agent only a call they talked on (403 otherwise). 404:
no such call, no recording, or the file is gone; 409 while the call is still going (the WAV header is
written when it ends).

Path traversal is impossible by construction: the URL's ``call_id`` is only a database key; the file
is the path the server stored on the record, and it is served only if it resolves (symlinks
followed) inside the recordings directory.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse

from callcenter.api.access import STAFF, SUPERVISORS, Access
from callcenter.auth.service import Principal
from callcenter.core.logging import log_event
from callcenter.store import Store, call_public

__all__ = ["create_recordings_router", "recording_file"]

log = logging.getLogger("callcenter.api.recordings")


def recording_file(stored: Any, recordings_dir: Path) -> Path | None:
    """The file to serve for a record's ``recording`` value, or None (missing, or outside the
    recordings directory)."""
    if not isinstance(stored, str) or not stored or "\x00" in stored:
        return None
    root = recordings_dir.resolve()
    path = Path(stored)
    if not path.is_absolute():
        path = Path.cwd() / path  # stored relative to the server's working directory (data_dir)
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not resolved.is_relative_to(root) or not resolved.is_file():
        return None
    return resolved


def create_recordings_router(store: Store, access: Access, recordings_dir: Path) -> APIRouter:
    router = APIRouter(prefix="/api/recordings", tags=["recordings"])
    staff = Depends(access.require(*STAFF))

    @router.get("/{call_id}", response_class=FileResponse)
    async def download(call_id: str, request: Request, principal: Principal = staff) -> FileResponse:
        """The WAV file (caller left, server/agent right)."""
        record = await asyncio.to_thread(store.get_call, call_id)
        if record is None:
            raise HTTPException(404, f"no call {call_id!r}")
        call = call_public(record)
        if principal.role not in SUPERVISORS:
            agents = {call.get("agent"), *(call.get("agents") or [])} - {None}
            if principal.agent is None or principal.agent not in agents:
                raise HTTPException(403, "agents download recordings of their own calls only")
        if call.get("recording") is None:
            raise HTTPException(404, "this call was not recorded")
        if record.ended_at is None:
            raise HTTPException(409, "the call is still going: its recording is not finished")
        path = await asyncio.to_thread(recording_file, call["recording"], recordings_dir)
        if path is None:
            log_event(log, "recording_unavailable", level=logging.WARNING, call_id=call_id)
            raise HTTPException(404, "the recording file is not available")
        # Recordings are personal data: who listened to which call is kept in the audit log.
        await asyncio.to_thread(access.audit, principal, "recording_downloaded", call_id, request)
        safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in call_id)[:120] or "call"
        return FileResponse(path, media_type="audio/wav", filename=f"{safe}.wav")

    return router
