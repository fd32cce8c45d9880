"""Flow versions as the IVR sees them: what is live, what a publish did, and the flow files on disk.

The registry (:mod:`callcenter.ivr.registry`) keeps one immutable :class:`LiveFlow` per flow and swaps
the whole mapping on publish; a call holds the :class:`Flow` object it started with, so it keeps that
version to its end. File helpers here are blocking: the registry runs them in ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from callcenter.core.errors import CallcenterError
from callcenter.core.yamlsafe import safe_load
from callcenter.ivr.schema import Flow
from callcenter.ivr.source import FlowError, Reporter, parse_yaml

__all__ = [
    "FileState",
    "FlowNotFoundError",
    "InvalidPublishError",
    "LiveFlow",
    "MAX_FLOW_BYTES",
    "PublishResult",
    "PublishedFlow",
    "VersionNotFoundError",
    "declared_id",
    "error_json",
    "id_error",
    "read_flow_file",
    "valid_flow_id",
    "write_atomic",
]

MAX_FLOW_BYTES = 256 * 1024  # a flow file is a few KiB; anything this big is a mistake
_ID_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,127}")  # schema's flow id, bounded (it names a file)


class FlowNotFoundError(CallcenterError, KeyError):
    """No live flow (or no stored version) with that id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class VersionNotFoundError(FlowNotFoundError):
    """The flow has no such version."""


class InvalidPublishError(CallcenterError, ValueError):
    """The publish request itself is wrong (author, flow id), not the flow's text."""


@dataclass(frozen=True)
class LiveFlow:
    """The version of a flow new calls get. ``path`` is its file in the flows folder (None: none)."""

    flow: Flow
    version: int
    text: str
    sha256: str
    path: Path | None
    author: str
    created_at: datetime
    source: str

    @property
    def flow_id(self) -> str:
        return self.flow.id


@dataclass(frozen=True)
class PublishResult:
    """What a publish (or rollback) did.

    ``ok``: the text is valid and is live now. ``changed``: a new version went live (False when the
    text equals the live one, or when refused). ``version``: the live version afterwards (the old one
    when refused; None when the flow has none). ``errors``: why it was refused, ``file:line:column``.
    """

    flow_id: str
    ok: bool
    changed: bool
    version: int | None
    errors: tuple[FlowError, ...] = ()
    live: LiveFlow | None = field(default=None, repr=False)


@dataclass(frozen=True)
class PublishedFlow:
    """Handed to ``on_published`` listeners after a new version went live."""

    flow_id: str
    version: int
    flow: Flow
    previous: Flow | None
    author: str
    source: str


@dataclass(frozen=True)
class FileState:
    """What the watcher last saw of a file (``stat`` first, the hash only when the stat changed)."""

    mtime_ns: int
    size: int
    sha256: str
    inode: int = 0  # editors that save by rename give the file a new inode

    def same_stat(self, st: os.stat_result) -> bool:
        return (st.st_mtime_ns, st.st_size, st.st_ino) == (self.mtime_ns, self.size, self.inode)


def valid_flow_id(flow_id: str) -> bool:
    return _ID_RE.fullmatch(flow_id) is not None


def declared_id(text: str) -> str | None:
    """The ``id:`` a flow text declares, or None when the text has none (or is not YAML)."""
    try:
        data = safe_load(text)
    except yaml.YAMLError:
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def id_error(text: str, source: str, expected: str, found: str) -> FlowError:
    """The error for a text whose ``id`` is not the flow it is published as, at the ``id`` value."""
    try:
        report = Reporter(source, parse_yaml(text).source_map)
        return report.at(
            ("id",),
            f"flow id {found!r} does not match {expected!r}, the flow it is published as",
            kind="flow-id",
        )
    except yaml.YAMLError:  # pragma: no cover - only called on text that loaded
        return FlowError(source, 1, 1, f"flow id {found!r} does not match {expected!r}", kind="flow-id")


def error_json(error: FlowError) -> dict[str, Any]:
    return {
        "file": error.file,
        "line": error.line,
        "column": error.column,
        "node": error.node,
        "kind": error.kind,
        "message": error.message,
        "text": str(error),
    }


def read_flow_file(
    path: Path, max_bytes: int = MAX_FLOW_BYTES
) -> tuple[str | None, FileState | None, FlowError | None]:
    """``(text, state, None)`` or ``(None, state-or-None, error)``. Reads at most ``max_bytes`` + 1 bytes;
    newlines are kept as they are (the hash is of the exact text)."""
    try:
        st = path.stat()
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        return None, None, FlowError(str(path), 1, 1, f"cannot read: {exc.strerror or exc}", kind="io")
    state = FileState(st.st_mtime_ns, st.st_size, hashlib.sha256(data).hexdigest(), st.st_ino)
    if len(data) > max_bytes:
        return (
            None,
            state,
            FlowError(str(path), 1, 1, f"file is larger than {max_bytes // 1024} KiB: not a flow", kind="io"),
        )
    try:
        return data.decode("utf-8"), state, None
    except UnicodeDecodeError as exc:
        return (
            None,
            state,
            FlowError(str(path), 1, 1, f"cannot read: not UTF-8 text ({exc.reason})", kind="io"),
        )


def write_atomic(path: Path, text: str) -> FileState:
    """Replace ``path`` with ``text`` (temp file in the same folder, fsync, ``os.replace``): a reader sees
    the old file or the new one, never half of one. The file keeps its permissions (new: 0644)."""
    data = text.encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            mode = 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    st = path.stat()
    return FileState(st.st_mtime_ns, st.st_size, hashlib.sha256(data).hexdigest(), st.st_ino)
