"""Install, list and remove official Vosk models (zip files from the Vosk model site or a mirror).

The catalogue is ``{base_url}/model-list.json``: a JSON list of entries with ``name``, ``url``,
``size``, ``md5``, ``lang``, ``type``, ``version`` and ``obsolete`` ("true"/"false", strings), as
published next to the official models. An entry may also carry ``sha256``; the official list only
has MD5, so the download is checked against ``sha256`` when known (from the entry or the caller),
else against ``md5``, and its SHA-256 is recorded in the installed model's manifest either way.

Downloads go to ``MODELS_DIR/.downloads/NAME.zip.part`` and resume with an HTTP Range request after
an interruption (a server answering 200 instead of 206 restarts from zero). The zip is checked
(no absolute paths, no "..", no links), unpacked into a temporary directory inside ``MODELS_DIR``
and renamed to ``MODELS_DIR/NAME`` in one step, so a half-unpacked model is never visible.

These functions block (network and disk): call them from a CLI, or through ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

import httpx

from callcenter.speech.base import SpeechError

DEFAULT_BASE_URL: Final = "https://alphacephei.com/vosk/models"
MANIFEST: Final = ".callcenter-model.json"
_DOWNLOADS: Final = ".downloads"
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


class ModelInstallError(SpeechError):
    """A model could not be listed, downloaded, verified or unpacked; the message says which step."""


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    url: str
    size: int | None
    lang: str
    type: str
    version: str
    obsolete: bool
    md5: str | None = None
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class InstalledModel:
    name: str
    path: Path
    size_bytes: int
    sha256: str | None  # of the zip it came from, when installed by install()
    source_url: str | None


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name) or name in (".", ".."):
        raise ModelInstallError(f"not a model name: {name!r}")


def _entry(obj: dict[str, Any], base_url: str) -> ModelEntry:
    name = str(obj["name"])
    size = obj.get("size")
    return ModelEntry(
        name=name,
        url=str(obj.get("url") or f"{base_url.rstrip('/')}/{name}.zip"),
        size=int(size) if isinstance(size, int | str) and str(size).isdigit() else None,
        lang=str(obj.get("lang", "")),
        type=str(obj.get("type", "")),
        version=str(obj.get("version", "")),
        obsolete=str(obj.get("obsolete", "false")).lower() == "true",
        md5=(str(obj["md5"]).lower() if obj.get("md5") else None),
        sha256=(str(obj["sha256"]).lower() if obj.get("sha256") else None),
    )


def fetch_catalog(base_url: str = DEFAULT_BASE_URL, *, timeout: float = 30.0) -> list[ModelEntry]:
    """The models the site offers (obsolete ones included; see ``ModelEntry.obsolete``)."""
    url = f"{base_url.rstrip('/')}/model-list.json"
    try:
        r = httpx.get(url, timeout=timeout, follow_redirects=True)
        r.raise_for_status()
        data = r.json()
    except (httpx.HTTPError, ValueError) as e:
        raise ModelInstallError(f"cannot read the model list {url}: {e}") from e
    if not isinstance(data, list):
        raise ModelInstallError(f"{url}: expected a JSON list of models")
    out: list[ModelEntry] = []
    for obj in data:
        if isinstance(obj, dict) and isinstance(obj.get("name"), str) and _NAME_RE.match(obj["name"]):
            out.append(_entry(obj, base_url))
    return out


def list_installed(models_dir: str | Path) -> list[InstalledModel]:
    """Model directories under ``models_dir`` (anything with am/ or conf/, or our manifest)."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    out: list[InstalledModel] = []
    for p in sorted(root.iterdir()):
        if not p.is_dir() or p.name.startswith("."):
            continue
        manifest: dict[str, Any] = {}
        mf = p / MANIFEST
        if mf.is_file():
            try:
                manifest = json.loads(mf.read_text())
            except ValueError:
                manifest = {}
        elif not ((p / "am").is_dir() or (p / "conf").is_dir()):
            continue
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        out.append(InstalledModel(p.name, p, size, manifest.get("sha256"), manifest.get("url")))
    return out


def remove(name: str, models_dir: str | Path) -> bool:
    """Delete an installed model (and any partial download of it). False if it was not there."""
    _check_name(name)
    root = Path(models_dir)
    part = root / _DOWNLOADS / f"{name}.zip.part"
    part.unlink(missing_ok=True)
    target = root / name
    if not target.is_dir() or target.is_symlink():
        return False
    _remove_dir(target)
    return True


def _remove_dir(target: Path) -> None:
    # Rename first so a concurrent reader never sees a half-deleted model under its name.
    trash = target.parent / f".remove-{target.name}-{os.getpid()}-{time.monotonic_ns()}"
    target.rename(trash)
    shutil.rmtree(trash)


def install(
    name: str,
    models_dir: str | Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    progress: Progress | None = None,
    sha256: str | None = None,
    catalog: list[ModelEntry] | None = None,
    replace: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download, verify and unpack model ``name``; returns its directory ``models_dir/name``.

    ``catalog`` defaults to ``fetch_catalog(base_url)``. ``progress(done, total)`` is called as bytes
    arrive (``done`` counts resumed bytes too). An existing model is kept unless ``replace``.
    """
    _check_name(name)
    root = Path(models_dir)
    target = root / name
    if target.exists() and not replace:
        raise ModelInstallError(f"{name} is already installed in {root} (remove it first)")
    entries = catalog if catalog is not None else fetch_catalog(base_url)
    entry = next((e for e in entries if e.name == name), None)
    if entry is None:
        raise ModelInstallError(f"{name}: not in the model list of {base_url}")
    expect_sha = (sha256 or entry.sha256 or "").lower() or None
    root.mkdir(parents=True, exist_ok=True)
    part = root / _DOWNLOADS / f"{name}.zip.part"
    part.parent.mkdir(exist_ok=True)
    _download(entry.url, part, entry.size, progress, timeout)
    digest_sha, digest_md5 = _hashes(part)
    if expect_sha and digest_sha != expect_sha:
        part.unlink()
        raise ModelInstallError(f"{name}: SHA-256 mismatch (got {digest_sha}, expected {expect_sha})")
    if not expect_sha and entry.md5 and digest_md5 != entry.md5:
        part.unlink()
        raise ModelInstallError(f"{name}: MD5 mismatch (got {digest_md5}, expected {entry.md5})")
    zip_size = part.stat().st_size
    _unpack(part, root, name, replace)
    (target / MANIFEST).write_text(json.dumps(
        {"name": name, "url": entry.url, "sha256": digest_sha, "size": zip_size,
         "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))
    part.unlink()
    return target


# --- download ---------------------------------------------------------------------------------------


def _download(url: str, part: Path, size: int | None, progress: Progress | None, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is not None and have == size:
        if progress:
            progress(have, size)
        return
    # identity: byte ranges and the checksum are about the file as published, never a re-encoding
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with httpx.stream("GET", url, headers=headers, timeout=timeout, follow_redirects=True) as r:
            if r.status_code == 416 and have:
                # Range not satisfiable: the part file already holds everything (size was unknown)
                if progress:
                    progress(have, have)
                return
            if r.status_code == 206 and have:
                start, total = _content_range(r.headers.get("content-range", ""))
                if start != have:
                    raise ModelInstallError(f"{url}: server resumed at byte {start}, not {have}")
                mode = "ab"
            elif r.status_code == 200:
                total = int(r.headers["content-length"]) if "content-length" in r.headers else size
                have, mode = 0, "wb"  # no Range support (or a fresh download): from the start
            else:
                raise ModelInstallError(f"{url}: HTTP {r.status_code}")
            total = total if total is not None else size
            done = have
            if progress:
                progress(done, total)
            with open(part, mode) as f:
                for chunk in r.iter_raw():  # as received: bytes before a cut are kept for the resume
                    f.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
    except httpx.HTTPError as e:
        raise ModelInstallError(f"{url}: download interrupted after {_size(part)} bytes ({e}); "
                                "run install again to resume") from e
    got = part.stat().st_size
    if total is not None and got != total:
        raise ModelInstallError(f"{url}: got {got} of {total} bytes; run install again to resume")


def _content_range(value: str) -> tuple[int, int | None]:
    m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", value.strip())
    if not m:
        raise ModelInstallError(f"bad Content-Range: {value!r}")
    return int(m.group(1)), (None if m.group(3) == "*" else int(m.group(3)))


def _size(p: Path) -> int:
    return p.stat().st_size if p.exists() else 0


def _hashes(p: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(p, "rb") as f:
        while block := f.read(1 << 20):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


# --- unpack -----------------------------------------------------------------------------------------


def _unpack(zip_path: Path, root: Path, name: str, replace: bool) -> None:
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        zip_path.unlink()
        raise ModelInstallError(f"{name}: not a zip file ({e})") from e
    with zf:
        members = zf.infolist()
        for m in members:
            pp = PurePosixPath(m.filename)
            if pp.is_absolute() or ".." in pp.parts or "\\" in m.filename:
                raise ModelInstallError(f"{name}: unsafe path in zip: {m.filename!r}")
            if stat.S_ISLNK(m.external_attr >> 16):
                raise ModelInstallError(f"{name}: zip contains a link: {m.filename!r}")
        tops = {PurePosixPath(m.filename).parts[0] for m in members if m.filename.strip("/")}
        tmp = Path(tempfile.mkdtemp(prefix=f".unpack-{name}-", dir=root))
        try:
            zf.extractall(tmp)
            # Official zips hold one top directory named like the model; otherwise the files are the model.
            src = tmp / next(iter(tops)) if len(tops) == 1 and (tmp / next(iter(tops))).is_dir() else tmp
            target = root / name
            if target.exists():
                if not replace:
                    raise ModelInstallError(f"{name} appeared in {root} during the install")
                _remove_dir(target)
            src.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
