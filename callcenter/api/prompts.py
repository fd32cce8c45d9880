"""Recorded prompts and TTS preview for the admin console (``/admin/prompts``).

- ``GET /api/prompts`` (admins, supervisors): the WAV files in the flows folder's ``prompts/`` with
  their duration and format. Flows name them as ``file: prompts/NAME.wav`` (relative to the flow file).
- ``POST /api/prompts`` (admins; multipart ``file`` + optional ``name``, ``?overwrite=true``): a WAV
  of 16-bit PCM or G.711 (A-law/μ-law), any rate and channel count — told apart by its header, never
  its extension. Stored as 8 kHz mono 16-bit PCM (the media engine's rate: played without resampling)
  under a safe name (lower-case letters, digits, ``-``/``_``). Too big → 413 (``http.prompt_max_bytes``),
  not such a WAV → 422 with the reason, name taken → 409. Audited.
- ``GET /api/prompts/{name}`` (admins, supervisors): the file as ``audio/wav`` for the browser's
  ``<audio>``; ``DELETE`` (admins, audited).
- ``POST /api/tts/preview {text, language, voice?}`` (admins, supervisors): the text synthesised by the
  IVR's TTS engine (its own worker thread) as ``audio/wav``; an unknown language or voice is 422.
- ``GET /admin/prompts``: the page (same role check as the other pages: a redirect to the login form).
"""

from __future__ import annotations

import asyncio
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, Response, UploadFile
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel, Field

from callcenter.api.access import ADMIN, SUPERVISORS, Access
from callcenter.api.pages import WEB_DIR
from callcenter.auth.service import Principal
from callcenter.media import g711
from callcenter.media.playback import SAMPLE_RATE, to_8k_mono
from callcenter.speech.audio import wav_bytes
from callcenter.speech.base import SpeechError, TtsEngine
from callcenter.speech.tts import voice_for

__all__ = [
    "WavInfo",
    "WavRejected",
    "convert_upload",
    "create_prompts_router",
    "parse_wav_header",
    "safe_name",
]

# WAVE format tags (RFC 2361 appendix A)
_PCM, _ALAW, _MULAW, _EXTENSIBLE = 0x0001, 0x0006, 0x0007, 0xFFFE
_FORMATS = {(_PCM, 16): "PCM 16-bit", (_ALAW, 8): "G.711 A-law", (_MULAW, 8): "G.711 μ-law"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\.wav$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")  # BCP 47 shape (RFC 5646 §2.1)
_CHUNK = 64 << 10
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "media-src 'self' blob:; img-src 'self' data:; connect-src 'self' ws: wss:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


class WavRejected(ValueError):
    """Not a WAV this server takes; the message says why (shown to the admin)."""


@dataclass(frozen=True, slots=True)
class WavInfo:
    format: str  # "PCM 16-bit", "G.711 A-law", "G.711 μ-law"
    tag: int
    channels: int
    rate: int
    bits: int
    data_offset: int
    data_size: int

    @property
    def duration(self) -> float:
        return self.data_size / (self.channels * self.bits // 8) / self.rate

    def describe(self) -> str:
        layout = "mono" if self.channels == 1 else "stereo" if self.channels == 2 else f"{self.channels} ch"
        return f"{self.format}, {self.rate} Hz, {layout}"


def parse_wav_header(data: bytes) -> WavInfo:
    """The RIFF/WAVE ``fmt `` and ``data`` chunks of ``data``; raises WavRejected for anything but 16-bit
    PCM or G.711 (incl. WAVE_FORMAT_EXTENSIBLE whose SubFormat is one of those)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavRejected("not a WAV file (no RIFF/WAVE header)")
    pos, fmt, found = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if cid == b"fmt ":
            body = data[pos + 8 : pos + 8 + size]
            if len(body) < 16:
                raise WavRejected("the fmt chunk is too short")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]  # SubFormat GUID starts with the tag
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            # a streamed file may give 0 or 0xFFFFFFFF: the data runs to the end of the file
            end = len(data) if size in (0, 0xFFFFFFFF) else min(len(data), pos + 8 + size)
            found = (pos + 8, end - (pos + 8))
            break
        pos += 8 + size + (size & 1)  # chunks are padded to even sizes
    if fmt is None:
        raise WavRejected("no fmt chunk before the audio")
    if found is None:
        raise WavRejected("no data chunk")
    tag, channels, rate, bits = fmt
    name = _FORMATS.get((tag, bits))
    if name is None:
        raise WavRejected(
            f"unsupported encoding (format tag 0x{tag:04x}, {bits} bits): "
            "use 16-bit PCM or G.711 (A-law/μ-law)"
        )
    if not 1 <= channels <= 8 or not 4000 <= rate <= 192000:
        raise WavRejected(f"implausible format: {channels} channels at {rate} Hz")
    frame = channels * bits // 8
    size = found[1] - found[1] % frame
    if size == 0:
        raise WavRejected("no audio in the data chunk")
    return WavInfo(name, tag, channels, rate, bits, found[0], size)


def convert_upload(data: bytes) -> tuple[bytes, WavInfo]:
    """The upload as an 8 kHz mono 16-bit WAV and what it was. Blocking (resampling): run in a thread."""
    info = parse_wav_header(data)
    raw = data[info.data_offset : info.data_offset + info.data_size]
    if info.tag == _PCM:
        pcm = np.frombuffer(raw, dtype="<i2")
    elif info.tag == _ALAW:
        pcm = g711.alaw_decode(raw)
    else:
        pcm = g711.ulaw_decode(raw)
    samples = pcm.astype(np.float64).reshape(-1, info.channels) / 32768.0
    return wav_bytes(to_8k_mono(samples, info.rate), SAMPLE_RATE), info


def safe_name(requested: str) -> str:
    """A file name that cannot leave the prompts folder: the last path part's stem, lower-cased, other
    characters as ``-``, plus ``.wav``. Raises ValueError when nothing usable is left."""
    stem = re.split(r"[\\/]", requested)[-1]
    if stem.lower().endswith(".wav"):
        stem = stem[:-4]
    stem = re.sub(r"[^a-z0-9_-]+", "-", stem.lower()).strip("-_")[:64]
    if not stem:
        raise ValueError(f"{requested!r} leaves no usable file name (letters, digits, - and _)")
    return f"{stem}.wav"


class PreviewBody(BaseModel):
    text: str = Field(min_length=1, max_length=500)
    language: str = Field("en-US", min_length=2, max_length=35)
    voice: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+/-]+$")


def _describe(path: Path) -> dict[str, Any]:
    stat = path.stat()
    out: dict[str, Any] = {"name": path.name, "file": f"prompts/{path.name}", "bytes": stat.st_size}
    try:
        with path.open("rb") as f:
            head = f.read(_CHUNK)
        info = parse_wav_header(head)
        frame = info.channels * info.bits // 8
        data_size = min(stat.st_size - info.data_offset, _declared_size(head, info))
        out.update(
            duration_s=round(data_size // frame / info.rate, 3),
            format=info.describe(),
        )
    except (OSError, WavRejected) as exc:
        out.update(duration_s=None, format=None, problem=str(exc))
    return out


def _declared_size(head: bytes, info: WavInfo) -> int:
    size: int = struct.unpack_from("<I", head, info.data_offset - 4)[0]
    return size if size not in (0, 0xFFFFFFFF) else 1 << 62


def create_prompts_router(
    access: Access,
    prompts_dir: Path,
    *,
    tts: TtsEngine | None = None,
    max_bytes: int = 10 << 20,
) -> APIRouter:
    """``prompts_dir``: the flows folder's ``prompts/`` (made on the first upload); ``tts``: the IVR's
    engine (None: preview answers 503)."""
    router = APIRouter(tags=["prompts"])
    admin = Depends(access.require(*ADMIN))
    readers = Depends(access.require(*SUPERVISORS))
    folder = prompts_dir

    def existing(name: str) -> Path:
        # Only names we could have written, and only directly inside the folder (no symlink out).
        path = folder / name
        if not _NAME.match(name) or not path.is_file() or path.resolve().parent != folder.resolve():
            raise HTTPException(404, f"no prompt {name!r}")
        return path

    @router.get("/admin/prompts", include_in_schema=False)
    def page(request: Request) -> Response:
        principal = access.identify(request, request.headers.get("authorization"))
        if principal is None or principal.must_change_password or principal.role not in SUPERVISORS:
            why = "login" if principal is None or principal.must_change_password else "role"
            target = f"/?next={quote(request.url.path, safe='/')}&why={why}"
            return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
        return FileResponse(
            WEB_DIR / "prompts.html", media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS
        )

    @router.get("/api/prompts", dependencies=[readers])
    async def list_prompts() -> list[dict[str, Any]]:
        def scan() -> list[dict[str, Any]]:
            if not folder.is_dir():
                return []
            return [_describe(p) for p in sorted(folder.iterdir()) if _NAME.match(p.name) and p.is_file()]

        return await asyncio.to_thread(scan)

    @router.post("/api/prompts", status_code=201)
    async def upload(
        request: Request,
        file: Annotated[UploadFile, File(description="a WAV: 16-bit PCM or G.711, any rate/channels")],
        name: Annotated[str | None, Form(max_length=200)] = None,
        overwrite: bool = False,
        principal: Principal = admin,
    ) -> dict[str, Any]:
        # Content-Length covers the whole multipart body: a fast refusal before reading anything.
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes + (64 << 10):
            raise HTTPException(413, f"the upload is larger than {max_bytes} bytes")
        try:
            target = safe_name(name or file.filename or "")
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        chunks, total = [], 0
        while chunk := await file.read(_CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise HTTPException(413, f"the file is larger than {max_bytes} bytes")
            chunks.append(chunk)
        try:
            converted, info = await asyncio.to_thread(convert_upload, b"".join(chunks))
        except WavRejected as exc:
            raise HTTPException(422, f"{file.filename or 'the file'}: {exc}") from None
        path = folder / target

        def store() -> bool:
            folder.mkdir(parents=True, exist_ok=True)
            if path.exists() and not overwrite:
                return False
            tmp = path.with_name(f".{target}.part")
            tmp.write_bytes(converted)
            tmp.replace(path)  # atomic: a flow never reads half a file
            return True

        if not await asyncio.to_thread(store):
            raise HTTPException(409, f"a prompt {target!r} exists (upload with overwrite=true to replace it)")
        access.audit(
            principal, "prompt_uploaded", target, request,
            source=info.describe(), bytes=len(converted), duration_s=round(info.duration, 3),
        )  # fmt: skip
        return await asyncio.to_thread(_describe, path)

    @router.get("/api/prompts/{name}", dependencies=[readers])
    def download(name: str) -> FileResponse:
        return FileResponse(existing(name), media_type="audio/wav", headers={"Cache-Control": "no-cache"})

    @router.delete("/api/prompts/{name}")
    def delete(name: str, request: Request, principal: Principal = admin) -> dict[str, bool]:
        existing(name).unlink()
        access.audit(principal, "prompt_deleted", name, request)
        return {"ok": True}

    @router.post("/api/tts/preview", dependencies=[readers], response_class=Response)
    async def preview(body: PreviewBody) -> Response:
        """The text as the IVR would say it (8 kHz mono WAV)."""
        if not _LANGUAGE.match(body.language):
            raise HTTPException(422, f"language {body.language!r}: expected a tag such as en-US or zh-CN")
        if tts is None:
            raise HTTPException(503, "text-to-speech is not running")
        voice = body.voice or voice_for(body.language)
        try:
            pcm = await tts.synthesize(body.text, voice, 1.0, 1.0)  # in the engine's worker thread
        except SpeechError as exc:
            if "unknown voice" in str(exc):
                raise HTTPException(422, f"no voice for {body.language!r} ({voice}): {exc}") from None
            raise HTTPException(503, str(exc)) from None
        return Response(
            wav_bytes(pcm, SAMPLE_RATE), media_type="audio/wav", headers={"Cache-Control": "no-store"}
        )

    return router
