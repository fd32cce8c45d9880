"""FlowRegistry: the live version of every flow, published, rolled back and reloaded without dropping calls.

- ``await load(flows_dir)`` at start-up checks every flow file and records a version for each flow whose
  text differs from its newest stored one (author and source ``"file"``).
- ``await publish(...)`` checks the text with the loader's schema and graph checks, in the context of the
  other live flows; refused, the old version stays live and the errors say ``file:line:column``. Accepted,
  it is stored, written back to its file (atomically) and swapped in: one assignment replaces the whole
  mapping, so a lookup sees the old flows or the new ones, never a mix. Calls keep the :class:`Flow`
  object they started with; only new calls get the new version.
- ``watch()`` polls the folder (mtime, size, then hash; no inotify) and publishes changed files.

File and SQL work runs in ``asyncio.to_thread``; publishes are serialised by one lock per registry.
Several processes (the server and ``callcenter flows publish``) may share the database and the folder:
a version number taken twice is retried (unique key), and a text equal to the newest version is not
stored again, so the watcher seeing a file the CLI wrote only makes it live.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from callcenter.core.logging import log_event
from callcenter.ivr.graph import FlowContext
from callcenter.ivr.loader import FlowLoadError, flow_files, load_flow_text
from callcenter.ivr.schema import Flow
from callcenter.ivr.source import FlowError, Reporter, parse_yaml
from callcenter.ivr.versions import (
    MAX_FLOW_BYTES,
    FileState,
    FlowNotFoundError,
    InvalidPublishError,
    LiveFlow,
    PublishedFlow,
    PublishResult,
    VersionNotFoundError,
    declared_id,
    id_error,
    read_flow_file,
    valid_flow_id,
    write_atomic,
)
from callcenter.store.flow_versions import (
    FlowVersion,
    add_flow_version,
    get_flow_version,
    latest_flow_versions,
    list_flow_versions,
    unified_diff,
)

if TYPE_CHECKING:
    from callcenter.store.repo import Store

__all__ = ["FlowRegistry", "LiveFlows", "PublishListener"]

log = logging.getLogger("callcenter.ivr.flows")

PublishListener = Callable[[PublishedFlow], Any]  # may return an awaitable
MAX_FILES = 1000  # a poll looks at this many flow files at most
_AUTHOR_MAX = 128
_MESSAGE_MAX = 2000


@dataclass(frozen=True)
class _State:
    """Everything lookups read, replaced as a whole on every publish."""

    live: Mapping[str, LiveFlow]
    flows: Mapping[str, Flow]


class LiveFlows(Mapping[str, Flow]):
    """A read-only view of the live flows that follows publishes (for ``IvrRuntime.flows``)."""

    def __init__(self, registry: FlowRegistry) -> None:
        self._registry = registry

    def __getitem__(self, flow_id: str) -> Flow:
        return self._registry._state.flows[flow_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry._state.flows)

    def __len__(self) -> int:
        return len(self._registry._state.flows)


_NEVER = "never seen"  # not a sha256: no deferred content matches it


@dataclass
class _Candidate:
    path: Path
    text: str | None
    state: FileState | None
    error: FlowError | None


class FlowRegistry:
    """Live flows backed by the ``flow_version`` table and the flows folder."""

    def __init__(
        self,
        store: Store | Engine,
        *,
        context: FlowContext | None = None,
        numbers: Mapping[str, str] | None = None,
        default_flow: str | None = None,
        max_bytes: int = MAX_FLOW_BYTES,
    ) -> None:
        self._engine: Engine = store if isinstance(store, Engine) else store.engine
        self.context = context or FlowContext()
        self.numbers = dict(numbers or {})
        self.default_flow = default_flow
        self.max_bytes = max_bytes
        self.flows_dir: Path | None = None
        self._state = _State(MappingProxyType({}), MappingProxyType({}))
        self._files: dict[Path, FileState] = {}  # what the watcher last saw (and what we wrote)
        self._deferred: dict[Path, str | None] = {}  # invalid at first sight: content hash, judged next poll
        self._listeners: list[PublishListener] = []
        self._lock = asyncio.Lock()
        self.flows = LiveFlows(self)

    # -- lookups (no I/O) ----------------------------------------------------------------------------

    def current(self, flow_id: str) -> Flow:
        """The live flow; raises :class:`FlowNotFoundError`."""
        try:
            return self._state.flows[flow_id]
        except KeyError:
            raise FlowNotFoundError(f"no flow {flow_id!r}") from None

    def live(self, flow_id: str) -> LiveFlow | None:
        return self._state.live.get(flow_id)

    def live_flows(self) -> list[LiveFlow]:
        return sorted(self._state.live.values(), key=lambda lf: lf.flow_id)

    def snapshot(self) -> Mapping[str, Flow]:
        """The live flows now, frozen: a call that keeps it gets subflows of the version it started with."""
        return self._state.flows

    def flow_for(self, number: str) -> Flow | None:
        """The live flow for a dialled number (``numbers``, else ``default_flow``), as IvrRuntime's does."""
        flow_id = self.numbers.get(number, self.default_flow)
        return self._state.flows.get(flow_id) if flow_id is not None else None

    def on_published(self, callback: PublishListener) -> Callable[[], None]:
        """Call ``callback(PublishedFlow)`` after each new version goes live (sync or async; errors are
        logged, never raised to the publisher). Returns a function that removes it."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    # -- start-up ------------------------------------------------------------------------------------

    async def load(
        self, flows_dir: Path, *, strict: bool = True, exclude: Collection[Path] = ()
    ) -> list[FlowError]:
        """Load and check every flow file in ``flows_dir``; record changed texts as new versions.

        ``strict``: any error raises :class:`FlowLoadError` (nothing goes live). Otherwise invalid files
        are logged (``flow_rejected``) and returned, and their flow stays at its newest stored version
        when it has one. ``exclude``: files not to load (``flows publish`` publishes that one itself).
        """
        self.flows_dir = flows_dir
        skip = {p.resolve() for p in exclude}
        candidates = await asyncio.to_thread(self._scan, flows_dir, skip)
        async with self._lock:
            return await asyncio.to_thread(self._load_sync, candidates, strict)

    def _scan(self, flows_dir: Path, skip: set[Path]) -> list[_Candidate]:
        out = []
        for path in flow_files([flows_dir])[:MAX_FILES]:
            if path.resolve() in skip:
                continue
            text, state, error = read_flow_file(path, self.max_bytes)
            out.append(_Candidate(path, text, state, error))
        return out

    def _load_sync(self, candidates: list[_Candidate], strict: bool) -> list[FlowError]:
        assert self.flows_dir is not None
        errors: list[FlowError] = [c.error for c in candidates if c.error is not None]
        ids = {c.path: declared_id(c.text) for c in candidates if c.text is not None}
        known = frozenset(i for i in ids.values() if i) | (self.context.flows or frozenset())
        context = replace(self.context, flows=known)
        loaded: dict[str, tuple[Flow, _Candidate]] = {}
        bad: dict[str, Path] = {}  # flow id → its rejected file
        for c in candidates:
            if c.text is None:
                continue
            try:
                flow = load_flow_text(c.text, source=str(c.path), base_dir=self.flows_dir, context=context)
            except FlowLoadError as exc:
                errors += exc.errors
                flow_id = ids[c.path]
                if flow_id:
                    bad.setdefault(flow_id, c.path)
                continue
            if flow.id in loaded:
                other = loaded[flow.id][1].path
                report = Reporter(str(c.path), parse_yaml(c.text).source_map)
                errors.append(
                    report.at(("id",), f"flow id {flow.id!r} is also used by {other}", kind="duplicate-flow")
                )
                continue
            loaded[flow.id] = (flow, c)
        errors.sort(key=lambda e: (e.file, e.line, e.column))
        if errors and strict:
            raise FlowLoadError(errors)
        stored = latest_flow_versions(self._engine)
        live: dict[str, LiveFlow] = {}
        for flow_id, (flow, c) in loaded.items():
            assert c.text is not None
            row, _ = add_flow_version(
                self._engine, flow_id, c.text, author="file", source="file", message="loaded from file"
            )
            live[flow_id] = _live(flow, row, c.path)
        for flow_id, path in bad.items():
            last = stored.get(flow_id)
            if last is None or flow_id in live:
                continue
            fallback = self._flow_from_row(last, context, path)
            if fallback is not None:
                live[flow_id] = _live(fallback, last, path)  # the old version stays live
        for error in errors:
            log_event(log, "flow_rejected", level=logging.WARNING, file=error.file, error=str(error))
        self._files = {c.path: c.state for c in candidates if c.state is not None}
        for lf in live.values():
            log_event(log, "flow_loaded", flow_id=lf.flow_id, version=lf.version, file=str(lf.path))
        self._swap(live)
        return errors

    def _flow_from_row(self, row: FlowVersion, context: FlowContext, path: Path) -> Flow | None:
        try:
            return load_flow_text(row.yaml, source=str(path), base_dir=path.parent, context=context)
        except FlowLoadError:
            return None

    # -- publish ---------------------------------------------------------------------------------------

    async def check(self, flow_id: str, text: str) -> list[FlowError]:
        """The errors publishing ``text`` as ``flow_id`` would be refused with ([]: it would go live)."""
        _check_request(flow_id, "check", None)
        _, errors = await asyncio.to_thread(self._check_sync, flow_id, text, self._target(flow_id))
        return errors

    async def publish(
        self,
        flow_id: str,
        text: str,
        *,
        author: str,
        source: str = "api",
        message: str | None = None,
        path: Path | None = None,
    ) -> PublishResult:
        """Check ``text`` and make it the live version of ``flow_id`` (a new flow when it has none).

        The text is written to ``path``, by default the flow's file (new flow: ``<flows_dir>/<id>.yaml``).
        """
        _check_request(flow_id, author, message)
        async with self._lock:
            return await self._publish(flow_id, text, author, source, message, None, path)

    async def rollback(
        self, flow_id: str, version: int, *, author: str, message: str | None = None
    ) -> PublishResult:
        """Publish the text of an earlier ``version`` again, as a new version (source ``"rollback"``)."""
        _check_request(flow_id, author, message)
        row = await asyncio.to_thread(get_flow_version, self._engine, flow_id, version)
        if row is None:
            raise VersionNotFoundError(f"flow {flow_id!r} has no version {version}")
        async with self._lock:
            return await self._publish(
                flow_id, row.yaml, author, "rollback", message or f"rollback to v{version}", version, None
            )

    def _target(self, flow_id: str, path: Path | None = None) -> Path:
        if path is not None:
            return path
        live = self._state.live.get(flow_id)
        if live is not None and live.path is not None:
            return live.path
        if self.flows_dir is None:
            raise InvalidPublishError("the registry has no flows folder: call load() first")
        return self.flows_dir / f"{flow_id}.yaml"

    def _check_sync(
        self, flow_id: str, text: str, path: Path, from_file: bool = False
    ) -> tuple[Flow | None, list[FlowError]]:
        source = str(path)
        if len(text.encode("utf-8")) > self.max_bytes:
            message = f"flow text is larger than {self.max_bytes // 1024} KiB"
            return None, [FlowError(source, 1, 1, message, kind="io")]
        others = frozenset(self._state.live) - {flow_id}
        context = replace(self.context, flows=others | (self.context.flows or frozenset()))
        try:
            flow = load_flow_text(text, source=source, base_dir=path.parent, context=context)
        except FlowLoadError as exc:
            return None, list(exc.errors)
        if flow.id != flow_id:
            return None, [id_error(text, source, flow_id, flow.id)]
        live = self._state.live.get(flow_id)
        if live is not None and live.path is not None and live.path != path and live.path.exists():
            return None, [_duplicate(text, source, flow_id, live.path)]
        if not from_file:  # never overwrite the file of another flow (the file's own change may rename)
            holder = next((lf.flow_id for lf in self._state.live.values() if lf.path == path), None)
            if holder is None and path.exists():
                on_disk, _, _ = read_flow_file(path, self.max_bytes)
                holder = declared_id(on_disk) if on_disk is not None else None
            if holder is not None and holder != flow_id:
                return None, [FlowError(source, 1, 1, f"{path} holds flow {holder!r}", kind="flow-id")]
        return flow, []

    async def _publish(
        self,
        flow_id: str,
        text: str,
        author: str,
        source: str,
        message: str | None,
        rolled_back_from: int | None,
        path: Path | None,
        from_file: bool = False,
    ) -> PublishResult:
        target = self._target(flow_id, path)
        old = self._state.live.get(flow_id)
        flow, errors = await asyncio.to_thread(self._check_sync, flow_id, text, target, from_file)
        if flow is None:
            log_event(
                log,
                "flow_rejected",
                level=logging.WARNING,
                flow_id=flow_id,
                author=author,
                source=source,
                errors=[str(e) for e in errors],
            )
            return PublishResult(flow_id, False, False, old.version if old else None, tuple(errors), old)

        def write_file(row: FlowVersion) -> None:
            # the file may already hold the text (the watcher's own file, or another process wrote it)
            _, on_disk, _ = read_flow_file(target, self.max_bytes)
            self._files[target] = (
                on_disk
                if on_disk is not None and on_disk.sha256 == row.sha256
                else write_atomic(target, text)
            )

        # The newest stored version decides (not ``old``): another process may have published since.
        row, created = await asyncio.to_thread(
            add_flow_version,
            self._engine,
            flow_id,
            text,
            author=author,
            source=source,
            message=message,
            rolled_back_from=rolled_back_from,
            before_commit=write_file,
        )
        if not created:
            await asyncio.to_thread(write_file, row)
        if old is not None and old.version == row.version and old.path == target:
            return PublishResult(flow_id, True, False, old.version, (), old)
        live = _live(flow.with_source(str(target)), row, target)
        changed = {flow_id: live}
        for lf in self._state.live.values():  # a file that now holds another flow id is no longer lf's
            if lf.flow_id != flow_id and lf.path == target:
                changed[lf.flow_id] = replace(lf, path=None)
        self._swap({**self._state.live, **changed})
        log_event(
            log,
            "flow_published",
            flow_id=flow_id,
            version=row.version,
            author=row.author,
            source=row.source,
            file=str(target),
        )
        previous = old.flow if old is not None else None
        await self._notify(PublishedFlow(flow_id, row.version, live.flow, previous, row.author, row.source))
        return PublishResult(flow_id, True, True, row.version, (), live)

    def _swap(self, live: Mapping[str, LiveFlow]) -> None:
        # one assignment: readers see the old state or the new one
        self._state = _State(
            MappingProxyType(dict(live)), MappingProxyType({k: lf.flow for k, lf in live.items()})
        )

    async def _notify(self, event: PublishedFlow) -> None:
        for callback in list(self._listeners):
            try:
                result = callback(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # a listener's bug must not undo or fail the publish
                log_event(
                    log, "flow_listener_failed", level=logging.ERROR, flow_id=event.flow_id, exc_info=True
                )

    # -- history ---------------------------------------------------------------------------------------

    async def history(self, flow_id: str) -> list[FlowVersion]:
        """Every stored version of ``flow_id``, oldest first; raises :class:`FlowNotFoundError`."""
        rows = await asyncio.to_thread(list_flow_versions, self._engine, flow_id)
        if not rows:
            raise FlowNotFoundError(f"no flow {flow_id!r}")
        return rows

    async def version(self, flow_id: str, version: int) -> FlowVersion:
        row = await asyncio.to_thread(get_flow_version, self._engine, flow_id, version)
        if row is None:
            raise VersionNotFoundError(f"flow {flow_id!r} has no version {version}")
        return row

    async def diff(self, flow_id: str, a: int | None = None, b: int | None = None) -> str:
        """Unified diff from version ``a`` to ``b`` (default: the newest and the one before it; 0 is the
        empty text before version 1)."""
        rows = {r.version: r for r in await self.history(flow_id)}
        b = max(rows) if b is None else b
        a = b - 1 if a is None else a
        texts = []
        for v in (a, b):
            if v != 0 and v not in rows:
                raise VersionNotFoundError(f"flow {flow_id!r} has no version {v}")
            texts.append(rows[v].yaml if v else "")
        label = [f"{flow_id} v{v}" if v else "/dev/null" for v in (a, b)]
        return unified_diff(texts[0], texts[1], label[0], label[1])

    # -- hot reload ------------------------------------------------------------------------------------

    async def poll_once(self) -> list[PublishResult]:
        """One look at the flows folder: publish each new or changed file (author and source ``"file"``).
        An invalid file is refused and logged (``flow_rejected``); its old version stays live. A removed
        file leaves its flow live (logged ``flow_file_removed``)."""
        if self.flows_dir is None:
            return []
        async with self._lock:
            changed, removed = await asyncio.to_thread(self._changed_files, self.flows_dir)
            for path in removed:
                owner = next((lf.flow_id for lf in self._state.live.values() if lf.path == path), None)
                log_event(log, "flow_file_removed", level=logging.WARNING, file=str(path), flow_id=owner)
            results = []
            for c in changed:
                if await self._unsettled(c):
                    continue
                if c.state is not None:
                    self._files[c.path] = c.state  # judged once per change: no repeated rejections
                results.append(await self._publish_file(c))
            return results

    async def _unsettled(self, c: _Candidate) -> bool:
        """True when an invalid file is seen for the first time with this content: it is judged at the
        next poll instead. An editor saving in place truncates, then writes; a poll in between reads a
        half-written file that the next poll finds complete — refusing it would log a false
        ``flow_rejected``. Valid files go live at once; a file still invalid one poll later is refused."""
        seen = c.state.sha256 if c.state is not None else None
        if self._deferred.pop(c.path, _NEVER) == seen:
            return False
        if c.text is not None:
            flow_id = declared_id(c.text) or c.path.stem
            flow, _ = await asyncio.to_thread(
                self._check_sync, flow_id, c.text, self._target(flow_id, c.path), True
            )
            if flow is not None:
                return False
        self._deferred[c.path] = seen
        return True

    def _changed_files(self, flows_dir: Path) -> tuple[list[_Candidate], list[Path]]:
        try:
            paths = flow_files([flows_dir])[:MAX_FILES] if flows_dir.is_dir() else []
        except OSError:
            paths = []
        changed = []
        for path in paths:
            known = self._files.get(path)
            try:
                st = path.stat()
            except OSError:
                continue
            if known is not None and known.same_stat(st):
                continue
            text, state, error = read_flow_file(path, self.max_bytes)
            if known is not None and state is not None and state.sha256 == known.sha256:
                self._files[path] = state  # touched, not changed
                continue
            changed.append(_Candidate(path, text, state, error))
        present = set(paths)
        gone = [p for p in self._files if p not in present]
        for path in gone:
            del self._files[path]
        return changed, gone

    async def _publish_file(self, c: _Candidate) -> PublishResult:
        owner = next((lf.flow_id for lf in self._state.live.values() if lf.path == c.path), None)
        flow_id = (declared_id(c.text) if c.text is not None else None) or owner or c.path.stem
        if c.text is None:
            assert c.error is not None
            log_event(
                log,
                "flow_rejected",
                level=logging.WARNING,
                flow_id=flow_id,
                source="file",
                errors=[str(c.error)],
            )
            old = self._state.live.get(flow_id)
            return PublishResult(flow_id, False, False, old.version if old else None, (c.error,), old)
        return await self._publish(flow_id, c.text, "file", "file", "changed on disk", None, c.path, True)

    async def watch(self, interval_s: float = 1.0) -> None:
        """Poll the flows folder every ``interval_s`` until cancelled (run it as a task)."""
        while True:
            try:
                await self.poll_once()
            except Exception:  # keep watching: the next poll may succeed (e.g. the database was busy)
                log_event(log, "flow_watch_failed", level=logging.ERROR, exc_info=True)
            await asyncio.sleep(interval_s)


def _live(flow: Flow, row: FlowVersion, path: Path | None) -> LiveFlow:
    return LiveFlow(
        flow=flow,
        version=row.version,
        text=row.yaml,
        sha256=row.sha256,
        path=path,
        author=row.author,
        created_at=row.created_at,
        source=row.source,
    )


def _duplicate(text: str, source: str, flow_id: str, other: Path) -> FlowError:
    message = f"flow id {flow_id!r} is also used by {other}"
    try:
        return Reporter(source, parse_yaml(text).source_map).at(("id",), message, kind="duplicate-flow")
    except Exception:  # noqa: BLE001 - only the position is at stake
        return FlowError(source, 1, 1, message, kind="duplicate-flow")


def _check_request(flow_id: str, author: str, message: str | None) -> None:
    if not valid_flow_id(flow_id):
        raise InvalidPublishError(
            f"flow id {flow_id!r}: expected a letter or '_' then letters, digits, '_' or '-' (at most 128)"
        )
    if not author.strip() or len(author) > _AUTHOR_MAX or any(ch in author for ch in "\r\n"):
        raise InvalidPublishError(f"author: expected a name of 1-{_AUTHOR_MAX} characters on one line")
    if message is not None and len(message) > _MESSAGE_MAX:
        raise InvalidPublishError(f"message: at most {_MESSAGE_MAX} characters")
