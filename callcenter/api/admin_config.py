"""The admin console's queues, business hours and skills: ``/api/queues/config``, ``/api/business-hours``
and ``/api/skills``.

Queues and schedules are *provisioned* or *managed* (like Grafana's provisioning): those in config.yaml
(``routing.queues``, ``business_hours``) are read-only here (``source: "config"``); those made in the
console are stored in the database (``source: "console"``) and may be changed or removed. A name in both:
config wins, logged once by :meth:`AdminConfig.load`.

Changes apply at once: a queue to the running router (``upsert_queue`` / ``remove_queue``: callers
waiting keep their place), a schedule to the IVR's schedule mapping (the next call's ``hours`` node sees
it), and the names to ``on_names`` (the flow checks: a flow may name a console-made queue).

Admins write, supervisors and admins read. Validation reuses the config's QueueSettings and the IVR's
Schedule; a refused body is a 422 whose ``detail`` is FastAPI's list of ``{loc, msg, type}`` (``loc``
names the field). Writes go to the audit log.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any, Protocol

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field, ValidationError

from callcenter.api.access import ADMIN, SUPERVISORS, Access
from callcenter.auth.service import Principal
from callcenter.calls.acd import queue_config
from callcenter.core.config import BusinessHoursSettings, QueueSettings
from callcenter.core.errors import CallcenterError, ConfigError
from callcenter.core.logging import log_event
from callcenter.ivr.schema import Schedule
from callcenter.routing.queues import QueueConfig
from callcenter.store.admin_config import AdminConfigRepo

__all__ = ["AdminConfig", "QueueTarget", "create_admin_config_router", "queue_config"]

log = logging.getLogger("callcenter.api.admin_config")

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # no leading "_": the ACD's own queues use it


class QueueTarget(Protocol):
    """The running router (callcenter/routing/router.py)."""

    def upsert_queue(self, queue: QueueConfig) -> None: ...

    def remove_queue(self, name: str) -> None: ...


class AgentLike(Protocol):
    username: str
    skills: dict[str, int]


class _Invalid(Exception):
    """A body refused: FastAPI-shaped error entries."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors


def _invalid(field: str | None, message: str) -> _Invalid:
    return _Invalid([{"loc": ["body", *([field] if field else [])], "msg": message, "type": "value_error"}])


def _from_validation(exc: ValidationError) -> _Invalid:
    out = []
    for e in exc.errors(include_url=False, include_context=True):
        at = (e.get("ctx") or {}).get("at")  # the IVR schema's own errors name their key in ctx["at"]
        loc = [*e["loc"], *str(at).split(".")] if at else list(e["loc"])
        out.append({"loc": ["body", *loc], "msg": e["msg"], "type": e["type"]})
    return _Invalid(out)


def schedule_of(s: BusinessHoursSettings | Mapping[str, Any]) -> Schedule:
    data = s.model_dump(mode="json") if isinstance(s, BaseModel) else dict(s)
    return Schedule.model_validate(data)


class AdminConfig:
    """Provisioned and managed queues and schedules; applies every change to the running server.

    ``schedules`` is the mapping the IVR reads (hand it to ``Services.schedules``): it is updated in
    place. Blocking methods (``load`` and the ``*_sync`` writes) belong in a worker thread.
    """

    def __init__(
        self,
        repo: AdminConfigRepo,
        *,
        queues: Mapping[str, QueueSettings],
        schedules: Mapping[str, BusinessHoursSettings],
        router: QueueTarget | None = None,
        agents: Callable[[], Iterable[AgentLike]] | None = None,
        on_names: Callable[[frozenset[str], frozenset[str]], None] | None = None,
        schedule_map: MutableMapping[str, Schedule] | None = None,
        kick: Callable[[], None] | None = None,
    ) -> None:
        self.repo = repo
        self.router = router
        self.kick = kick  # after a queue change: let the ACD dispatch now (callers may match at once)
        self.agents = agents
        self.on_names = on_names
        self.config_queues: dict[str, QueueSettings] = dict(queues)
        self.config_schedules: dict[str, BusinessHoursSettings] = dict(schedules)
        self.managed_queues: dict[str, QueueSettings] = {}
        self.managed_schedules: dict[str, BusinessHoursSettings] = {}
        self.schedules: MutableMapping[str, Schedule] = schedule_map if schedule_map is not None else {}
        for name, s in self.config_schedules.items():
            try:
                self.schedules[name] = schedule_of(s)
            except ValidationError as exc:
                problem = "; ".join(e["msg"] for e in exc.errors())
                raise ConfigError(f"business_hours.{name}: {problem}") from None

    # -- start-up ------------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the console's queues and schedules (blocking) and apply them; a name config.yaml also
        has is skipped (config wins) and logged, a stored row no longer valid is skipped and logged."""
        for name, data in self.repo.queues().items():
            if name in self.config_queues:
                log_event(log, "admin_config.shadowed", level=logging.WARNING, kind="queue", name=name)
                continue
            try:
                q = QueueSettings.model_validate(data)
                self._apply_queue(name, q)
            except (ValidationError, ConfigError) as exc:
                log_event(log, "admin_config.invalid", level=logging.WARNING, kind="queue", name=name,
                          error=str(exc))
        for name, data in self.repo.schedules().items():
            if name in self.config_schedules:
                log_event(log, "admin_config.shadowed", level=logging.WARNING, kind="schedule", name=name)
                continue
            try:
                s = BusinessHoursSettings.model_validate(data)
                self.schedules[name] = schedule_of(s)
                self.managed_schedules[name] = s
            except ValidationError as exc:
                log_event(log, "admin_config.invalid", level=logging.WARNING, kind="schedule", name=name,
                          error=str(exc))
        self._names_changed()

    # -- reading -------------------------------------------------------------------------------------

    def queue_names(self) -> frozenset[str]:
        return frozenset(self.config_queues) | frozenset(self.managed_queues)

    def schedule_names(self) -> frozenset[str]:
        return frozenset(self.config_schedules) | frozenset(self.managed_schedules)

    def queues_json(self) -> list[dict[str, Any]]:
        rows = [(n, q, "config") for n, q in self.config_queues.items()]
        rows += [(n, q, "console") for n, q in self.managed_queues.items()]
        return [{"name": n, "source": src, **q.model_dump(mode="json")} for n, q, src in sorted(rows)]

    def schedules_json(self) -> list[dict[str, Any]]:
        rows = [(n, s, "config") for n, s in self.config_schedules.items()]
        rows += [(n, s, "console") for n, s in self.managed_schedules.items()]
        return [{"name": n, "source": src, **s.model_dump(mode="json")} for n, s, src in sorted(rows)]

    def skills_json(self) -> list[dict[str, Any]]:
        """Every skill named by a queue (its levels, escalations included) or an agent (their levels)."""
        skills: dict[str, dict[str, list[dict[str, Any]]]] = {}

        def entry(skill: str) -> dict[str, list[dict[str, Any]]]:
            return skills.setdefault(skill, {"queues": [], "agents": []})

        for name, q in sorted({**self.config_queues, **self.managed_queues}.items()):
            needs: dict[str, int] = {}
            for stage in (q.skills, *(e.skills for e in q.escalations)):
                for skill, level in stage.items():
                    needs[skill] = min(level, needs.get(skill, level))
            for skill, level in needs.items():
                entry(skill)["queues"].append({"name": name, "level": q.skills.get(skill, level)})
        for agent in sorted(self.agents() if self.agents else (), key=lambda a: a.username):
            for skill, level in agent.skills.items():
                entry(skill)["agents"].append({"name": agent.username, "level": level})
        return [{"skill": s, **v} for s, v in sorted(skills.items())]

    # -- changes (validate, store, apply) ----------------------------------------------------------

    def check_queue(self, name: str, data: Mapping[str, Any]) -> QueueSettings:
        try:
            q = QueueSettings.model_validate(dict(data))
        except ValidationError as exc:
            raise _from_validation(exc) from None
        if q.overflow is not None and q.overflow.startswith("queue:"):
            target = q.overflow.removeprefix("queue:")
            if target == name:
                raise _invalid("overflow", "expected another queue, not itself")
            if target not in self.queue_names():
                raise _invalid("overflow", f"no queue {target!r}")
        try:
            queue_config(name, q)
        except ConfigError as exc:
            raise _invalid(None, str(exc)) from None
        return q

    def put_queue_sync(self, name: str, q: QueueSettings, actor: str | None) -> None:
        self.repo.put_queue(name, q.model_dump(mode="json"), actor)

    def apply_queue(self, name: str, q: QueueSettings) -> None:
        """On the event loop (the router's thread)."""
        self._apply_queue(name, q)
        self._names_changed()
        if self.kick is not None:
            self.kick()

    def remove_queue(self, name: str) -> None:
        """On the event loop: refuses (CallcenterError) while callers wait or queues overflow into it."""
        users = sorted(n for n, q in {**self.config_queues, **self.managed_queues}.items()
                       if q.overflow == f"queue:{name}")
        if users:
            raise CallcenterError(f"queue {name!r} is the overflow of {', '.join(users)}")
        if self.router is not None:
            try:
                self.router.remove_queue(name)
            except KeyError:
                pass  # never made it to the router: nothing to undo there
        del self.managed_queues[name]
        self._names_changed()

    def check_schedule(self, data: Mapping[str, Any]) -> tuple[BusinessHoursSettings, Schedule]:
        try:
            s = BusinessHoursSettings.model_validate(dict(data))
            return s, schedule_of(s)
        except ValidationError as exc:
            raise _from_validation(exc) from None

    def put_schedule_sync(self, name: str, s: BusinessHoursSettings, actor: str | None) -> None:
        self.repo.put_schedule(name, s.model_dump(mode="json"), actor)

    def apply_schedule(self, name: str, s: BusinessHoursSettings, schedule: Schedule) -> None:
        self.managed_schedules[name] = s
        self.schedules[name] = schedule
        self._names_changed()

    def remove_schedule(self, name: str) -> None:
        self.managed_schedules.pop(name, None)
        self.schedules.pop(name, None)
        self._names_changed()

    def _apply_queue(self, name: str, q: QueueSettings) -> None:
        config = queue_config(name, q)
        if self.router is not None:
            self.router.upsert_queue(config)
        self.managed_queues[name] = q

    def _names_changed(self) -> None:
        if self.on_names is not None:
            self.on_names(self.queue_names(), self.schedule_names())


# -- HTTP ---------------------------------------------------------------------------------------------


class NewQueue(QueueSettings):
    name: str = Field(pattern=NAME_PATTERN, description="letters, digits, _ . - (not first)")


class NewSchedule(BusinessHoursSettings):
    name: str = Field(pattern=NAME_PATTERN, description="letters, digits, _ . - (not first)")


def create_admin_config_router(admin: AdminConfig, access: Access) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["admin"])
    writer = Depends(access.require(*ADMIN))
    reader = Depends(access.require(*SUPERVISORS))
    lock = asyncio.Lock()  # one change at a time: check, store and apply see the same state

    async def audit(principal: Principal, action: str, target: str, request: Request, **detail: Any) -> None:
        await asyncio.to_thread(access.audit, principal, action, target, request, **detail)

    def refused(exc: _Invalid) -> HTTPException:
        return HTTPException(422, exc.errors)

    # -- queues -----------------------------------------------------------------------------------------

    @router.get("/queues/config", dependencies=[reader])
    async def list_queues() -> list[dict[str, Any]]:
        """Every queue's settings; ``source`` config (read-only, from config.yaml) or console."""
        return admin.queues_json()

    @router.post("/queues/config", status_code=201)
    async def create_queue(body: NewQueue, request: Request, principal: Principal = writer) -> dict[str, Any]:
        """A new console-managed queue; the running router takes callers for it at once."""
        async with lock:
            name = body.name
            if name in admin.config_queues:
                raise HTTPException(409, f"queue {name!r} is defined in config.yaml")
            if name in admin.managed_queues:
                raise HTTPException(409, f"queue {name!r} exists")
            data = body.model_dump(exclude={"name"}, exclude_unset=True)
            try:
                q = admin.check_queue(name, data)
            except _Invalid as exc:
                raise refused(exc) from None
            await asyncio.to_thread(admin.put_queue_sync, name, q, principal.username)
            admin.apply_queue(name, q)
        await audit(principal, "queue_created", name, request, **data)
        return {"name": name, "source": "console", **q.model_dump(mode="json")}

    def managed_queue(name: str) -> QueueSettings:
        if name in admin.config_queues:
            raise HTTPException(409, f"queue {name!r} comes from config.yaml: change it there")
        q = admin.managed_queues.get(name)
        if q is None:
            raise HTTPException(404, f"no queue {name!r}")
        return q

    @router.patch("/queues/config/{name}")
    async def change_queue(
        name: str, body: dict[str, Any], request: Request, principal: Principal = writer
    ) -> dict[str, Any]:
        """Change some settings; callers waiting keep their place, the next decision uses the new ones."""
        async with lock:
            current = managed_queue(name)
            body.pop("name", None)  # renaming is delete + create
            data = {**current.model_dump(exclude_unset=True), **body}
            try:
                q = admin.check_queue(name, data)
            except _Invalid as exc:
                raise refused(exc) from None
            await asyncio.to_thread(admin.put_queue_sync, name, q, principal.username)
            admin.apply_queue(name, q)
        await audit(principal, "queue_changed", name, request, **body)
        return {"name": name, "source": "console", **q.model_dump(mode="json")}

    @router.delete("/queues/config/{name}", status_code=204)
    async def delete_queue(name: str, request: Request, principal: Principal = writer) -> Response:
        """409 while callers wait in it, calls are connected from it or another queue overflows to it."""
        async with lock:
            managed_queue(name)
            try:
                admin.remove_queue(name)
            except CallcenterError as exc:
                raise HTTPException(409, str(exc)) from None
            await asyncio.to_thread(admin.repo.delete_queue, name)
        await audit(principal, "queue_removed", name, request)
        return Response(status_code=204)

    # -- business hours ------------------------------------------------------------------------------

    @router.get("/business-hours", dependencies=[reader])
    async def list_schedules() -> list[dict[str, Any]]:
        """Named schedules for the flows' ``hours`` nodes; ``source`` config (read-only) or console."""
        return admin.schedules_json()

    @router.post("/business-hours", status_code=201)
    async def create_schedule(
        body: dict[str, Any], request: Request, principal: Principal = writer
    ) -> dict[str, Any]:
        """``{name, timezone, weekly: {"mon-fri": ["09:00-17:00"]}, holidays: ["2026-12-25"]}``."""
        async with lock:
            name = body.pop("name", None)
            if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
                raise refused(_invalid("name", "expected letters, digits, _ . - (not first), at most 64"))
            if name in admin.config_schedules:
                raise HTTPException(409, f"schedule {name!r} is defined in config.yaml")
            if name in admin.managed_schedules:
                raise HTTPException(409, f"schedule {name!r} exists")
            try:
                s, schedule = admin.check_schedule(body)
            except _Invalid as exc:
                raise refused(exc) from None
            await asyncio.to_thread(admin.put_schedule_sync, name, s, principal.username)
            admin.apply_schedule(name, s, schedule)
        await audit(principal, "schedule_created", name, request, **s.model_dump(mode="json"))
        return {"name": name, "source": "console", **s.model_dump(mode="json")}

    def managed_schedule(name: str) -> BusinessHoursSettings:
        if name in admin.config_schedules:
            raise HTTPException(409, f"schedule {name!r} comes from config.yaml: change it there")
        s = admin.managed_schedules.get(name)
        if s is None:
            raise HTTPException(404, f"no schedule {name!r}")
        return s

    @router.patch("/business-hours/{name}")
    async def change_schedule(
        name: str, body: dict[str, Any], request: Request, principal: Principal = writer
    ) -> dict[str, Any]:
        async with lock:
            current = managed_schedule(name)
            body.pop("name", None)
            try:
                s, schedule = admin.check_schedule({**current.model_dump(mode="json"), **body})
            except _Invalid as exc:
                raise refused(exc) from None
            await asyncio.to_thread(admin.put_schedule_sync, name, s, principal.username)
            admin.apply_schedule(name, s, schedule)
        await audit(principal, "schedule_changed", name, request, **body)
        return {"name": name, "source": "console", **s.model_dump(mode="json")}

    @router.delete("/business-hours/{name}", status_code=204)
    async def delete_schedule(name: str, request: Request, principal: Principal = writer) -> Response:
        async with lock:
            managed_schedule(name)
            await asyncio.to_thread(admin.repo.delete_schedule, name)
            admin.remove_schedule(name)
        await audit(principal, "schedule_removed", name, request)
        return Response(status_code=204)

    # -- skills --------------------------------------------------------------------------------------

    @router.get("/skills", dependencies=[reader])
    async def list_skills() -> list[dict[str, Any]]:
        """Skills in use: per skill the queues needing it (minimum level) and the agents with their level."""
        return await asyncio.to_thread(admin.skills_json)

    return router
