"""Composition root: builds the objects from the settings, binds every socket, runs until a signal.

Start-up is all or nothing: SIP sockets, the HTTP socket and the database are opened before anything
serves, and any failure is reported in one line naming what failed (a port in use, say).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import gc
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import uvicorn

from callcenter import __version__
from callcenter.api.access import Access
from callcenter.api.admin_config import AdminConfig, create_admin_config_router
from callcenter.api.agents import create_agents_router
from callcenter.api.calls import create_calls_router
from callcenter.api.chat import create_chat_router
from callcenter.api.cluster import create_cluster_router
from callcenter.api.conversations import create_conversations_router
from callcenter.api.flows import flows_router
from callcenter.api.http import create_http_app
from callcenter.api.kb import create_kb_router
from callcenter.api.live import LiveHub, create_live_router
from callcenter.api.metrics import HttpMetricsMiddleware, Metrics, create_metrics_router, rtp_of_sessions
from callcenter.api.monitor import create_monitor_router
from callcenter.api.pages import create_pages_router
from callcenter.api.prompts import create_prompts_router
from callcenter.api.recordings import create_recordings_router
from callcenter.api.reports import create_reports_router
from callcenter.api.routing import create_routing_router
from callcenter.api.screen_pop import create_screen_pop_router
from callcenter.api.tickets import agent_queues_from_skills, tickets_router
from callcenter.api.wrapup import AcdWrapUp, create_wrapup_router, customer_lookup
from callcenter.auth.service import UserService
from callcenter.calls.acd import Acd, queue_configs
from callcenter.calls.assist import AgentAssist
from callcenter.calls.control import load_ivr_runtime
from callcenter.calls.manager import CallManager
from callcenter.calls.monitor import Monitors
from callcenter.calls.session import CallDeps
from callcenter.chat.model import Outbound
from callcenter.chat.webchat import WebchatGateway, create_webchat_router
from callcenter.chat.wechat import WechatGateway, create_wechat_router
from callcenter.chat.wiring import build_chat_engine
from callcenter.cluster.status import ClusterStatus, read_status, single_node
from callcenter.core.config import Settings, SipProtectionSettings
from callcenter.core.errors import CallcenterError, ConfigError
from callcenter.core.logging import log_event, setup_logging
from callcenter.core.memory import MemoryKeeper
from callcenter.customers import CustomerDirectory, CustomerRepo
from callcenter.events import EventBus, install_log_bridge
from callcenter.ivr.prompts import fixed_prompts
from callcenter.ivr.services import Services
from callcenter.ivr.versions import PublishedFlow
from callcenter.kb.service import KbService
from callcenter.media.engine import MediaEngine
from callcenter.sip.endpoint import EndpointConfig, SipEndpoint
from callcenter.sip.guard import DEFAULT_SCANNERS, GuardSettings
from callcenter.sip.overload import OverloadSettings
from callcenter.sip.registration import RegistrationService
from callcenter.sip.transport.limits import ConnectionLimits
from callcenter.speech.base import SpeechError, TtsEngine
from callcenter.speech.cache import PromptSpec
from callcenter.speech.tts import voice_for
from callcenter.store import CallRecordWriter, Store, call_public
from callcenter.store.admin_config import AdminConfigRepo
from callcenter.store.db import utcnow
from callcenter.store.recovery import recover_interrupted_calls
from callcenter.tickets import SlaMonitor, TicketService
from callcenter.webhooks import WebhookSender

if TYPE_CHECKING:
    from callcenter.cluster.wiring import Cluster

log = logging.getLogger("callcenter.app")


class StartupError(CallcenterError):
    """A resource the server needs could not be had; the message is the one line to print."""


def _guard_settings(p: SipProtectionSettings) -> GuardSettings:
    scanners = DEFAULT_SCANNERS if p.scanner_user_agents is None else tuple(p.scanner_user_agents)
    return GuardSettings(
        enabled=p.enabled,
        requests_per_s=p.requests_per_s,
        request_burst=p.request_burst,
        registers_per_s=p.registers_per_s,
        register_burst=p.register_burst,
        auth_failures=p.auth_failures,
        auth_window_s=p.auth_window_s,
        ban_s=p.ban_s,
        number_scan_failures=p.number_scan_failures,
        max_calls_per_source=p.max_calls_per_source,
        max_calls=p.max_calls,
        retry_after_s=p.retry_after_s,
        scanner_user_agents=scanners,
        trusted=tuple(p.trusted),
    )


def _listen_addresses(settings: Settings) -> list[tuple[str, str, int]]:
    sip = settings.sip
    hosts = [sip.host] + ([sip.host_v6] if sip.host_v6 else [])
    return [
        (transport, host, sip.tls_port if transport == "tls" else sip.port)
        for host in hosts
        for transport in sip.transports
    ]


def _describe_bind_error(exc: OSError, what: str, key: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{key}: {what} is already in use"
    if exc.errno == errno.EACCES:
        return f"{key}: no permission to bind {what} (ports below 1024 need root)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{key}: {what} is not an address of this machine"
    return f"{key}: cannot bind {what}: {exc.strerror or exc}"


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: the application owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Application:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.db_url)
        self.writer = CallRecordWriter(self.store, node=settings.node_id)  # which node handled it
        listen = _listen_addresses(settings)
        self.endpoint = SipEndpoint(
            EndpointConfig(
                listen=listen,
                public_host=settings.sip.public_host,
                user_agent=settings.sip.user_agent,
                max_message_bytes=settings.sip.max_message_bytes,
                guard=_guard_settings(settings.sip.protection),
                overload=OverloadSettings(
                    enabled=settings.sip.overload.enabled,
                    delay_high_s=settings.sip.overload.delay_high_s,
                    lag_high_s=settings.sip.overload.delay_high_s,
                    busy_high=settings.sip.overload.busy_high,
                    min_rate=settings.sip.overload.min_rate,
                    max_invites_per_s=settings.sip.overload.max_invites_per_s,
                    retry_after_s=settings.sip.overload.retry_after_s,
                ),
                tls_cert=settings.sip.tls_cert,
                tls_key=settings.sip.tls_key,
                tls_ca=settings.sip.tls_ca,
                connections=ConnectionLimits(
                    **settings.sip.connections.model_dump(), trusted=tuple(settings.sip.protection.trusted)
                ),
            )
        )
        self.media = MediaEngine(settings.media)
        self.calls = CallManager(
            CallDeps(settings=settings, media=self.media, writer=self.writer, endpoint=self.endpoint)
        )
        self.registration = RegistrationService(settings.sip, self.endpoint, self.store)
        self.registration.on_auth_failed = self.sip_auth_failed
        self.registration.banned = lambda host: self.endpoint.guard.banned(host, self.endpoint.now)
        # Scale-out (issue 10): with redis_url, routing is the elected leader's (callcenter/cluster/).
        self.cluster: Cluster | None = None
        if settings.redis_url is not None:
            from callcenter.cluster.wiring import Cluster

            self.cluster = Cluster(settings, queue_configs(settings))
        self.acd = Acd(
            settings, self.endpoint, self.media, self.registration, self.store,
            router=self.cluster.router if self.cluster is not None else None,
        )
        if self.cluster is not None:
            self.cluster.router.deliver = self.acd.deliver
            self.cluster.router.record_extra = self.writer.call_extra  # wrap_up_s from the leader
            self.cluster.node.calls_held = lambda: self.calls.active  # in each heartbeat (status)
        self.acd.writer = self.writer  # hold time, holds and transfers onto the call record
        self.calls.agent_calls = self.acd.agent_calls  # calls agents place through the server
        self.acd.agent_calls.on_auth_failed = self.sip_auth_failed  # wrong passwords on their INVITEs too
        # Live events: every structured log event feeds the bus (install_log_bridge), which feeds the
        # WebSocket channel, the metrics and the outgoing webhooks.
        self.bus = EventBus()
        self.metrics = Metrics(
            active_calls=lambda: self.calls.active,
            snapshot=self.acd.snapshot,
            live_rtp=rtp_of_sessions(lambda: self.calls.sessions.values()),
            sip_connections=self.endpoint.connection_stats,
            sip_guard=lambda: self.endpoint.guard.stats,
        )
        self.live = LiveHub(self.bus, self.acd.snapshot)
        self.webhooks = WebhookSender(settings.webhooks)
        self.endpoint.on_invite = self.calls.on_invite
        self.endpoint.on_register = self.registration.on_register
        self.endpoint.keep_connection = self.registration.has_binding_from  # idle TCP/TLS of phones
        self.http_socket: socket.socket | None = None
        self.db_ok = False
        self.users = UserService(self.store.engine)
        self.admin_config = AdminConfig(
            AdminConfigRepo(self.store.engine),
            queues=settings.routing.queues,
            schedules=settings.business_hours,
            router=self.acd.router,
            agents=self.store.list_agents,
            kick=self.acd.kick,
        )
        self.access = Access(
            self.users,
            admin_token=settings.http.admin_token,
            login_failures=settings.http.login_failures,
            login_window_s=settings.http.login_window_s,
        )
        self.tickets: TicketService | None = None
        self.kb: KbService | None = None
        # Text conversations (issue 9): channel adapters register with self.chat.register_channel.
        self.chat = build_chat_engine(
            settings, self.store, self.acd, ivr=lambda: self.calls.deps.ivr, tickets=lambda: self.tickets
        )

    async def cluster_status(self) -> ClusterStatus:
        """GET /api/cluster: the nodes Redis has seen, or this single node."""
        if self.cluster is None:
            return single_node(self.settings.node_id)
        return await read_status(self.cluster.redis, self.settings.node_id, prefix=self.cluster.node.prefix)

    def health(self) -> dict[str, Any]:
        return {
            "sip": "up" if self.endpoint.bound_port else "down",
            "http": "up",
            "db": "up" if self.store.ping() else "down",
            "version": __version__,
            "active_calls": self.calls.active,
            # informational (never a 503): "warming" while the recogniser loads after start-up
            "speech": runtime.speech.state() if (runtime := self.calls.deps.ivr) is not None else "none",
        }

    async def start(self) -> None:
        """Load the IVR flows, open the database, bind SIP and HTTP; on any failure undo everything and
        raise StartupError."""
        ivr = self.settings.ivr
        try:
            await asyncio.to_thread(self.store.migrate)  # Alembic: creates or upgrades every table
            first_admin = await asyncio.to_thread(self.users.ensure_first_admin)
            # Calls a killed previous run left open are closed as dropped (issue 11), before any new one.
            await asyncio.to_thread(recover_interrupted_calls, self.store.engine)
        except Exception as exc:  # noqa: BLE001 - any driver error is a start-up failure
            raise StartupError(f"database_url: cannot open the database: {exc}") from None
        if first_admin is not None:
            # Printed once, never logged: logs are often shipped elsewhere.
            print(
                f"first start: created web user 'admin' with the one-time password {first_admin}"
                " (change it at the first login)",
                flush=True,
            )
        backends = await self._open_backends()
        try:
            self.calls.deps.ivr = await load_ivr_runtime(
                ivr.flows_dir,
                ivr.numbers,
                ivr.default_flow,
                self.settings.data_dir,
                ptime_ms=self.settings.media.ptime_ms,
                intents_file=ivr.intents_file,
                store=self.store,
                queues=self.admin_config.queue_names(),
                speech=self.settings.speech,
                backends=backends,
            )
        except ConfigError as exc:
            raise StartupError(f"IVR flows are not valid:\n{exc}") from None
        if self.calls.deps.ivr is not None and self.kb is not None:
            self.calls.deps.ivr.assist = AgentAssist(self.kb)  # KB suggestions from live transcripts
        await self._start_sip()
        try:
            self.http_socket = self._bind_http()
        except StartupError:
            await self.endpoint.close()
            raise
        self.writer.start()
        await self.registration.start()
        if self.calls.deps.ivr is not None:
            self.acd.prompts = self.calls.deps.ivr.prompts  # what agents hear before a callback
        if self.cluster is not None:
            try:
                await self.cluster.start()
            except Exception as exc:  # noqa: BLE001 - any client error is a start-up failure
                raise StartupError(f"redis_url: cannot reach Redis: {exc}") from None
        await self.acd.start()
        if self.calls.deps.ivr is not None:
            self.calls.deps.ivr.acd = self.acd
        self.media.start()

    async def _open_backends(self) -> Services:
        """The knowledge base (sample articles loaded into an empty one), tickets and customers, shared
        by the IVR nodes, the post-call ticket policy and the API."""
        engine = self.store.engine
        customers = CustomerRepo(engine, country_code=self.settings.tickets.phone_country_code)
        try:
            self.tickets = TicketService(engine, self.settings.tickets, customers=customers)
        except ConfigError as exc:  # e.g. a bad tickets.sla.calendar
            raise StartupError(str(exc)) from None
        self.calls.deps.after_call = self.tickets.record_call
        try:
            self.kb = await KbService.open(engine)
        except Exception as exc:  # noqa: BLE001 - calls still work without the knowledge base
            log_event(log, "kb_unavailable", level=logging.ERROR, error=str(exc))
            self.kb = None
        await asyncio.to_thread(self.admin_config.load)  # the console's queues and schedules, applied
        return Services(
            kb=self.kb,
            tickets=self.tickets,
            customers=CustomerDirectory(customers),
            schedules=self.admin_config.schedules,
        )

    async def _start_sip(self) -> None:
        sip = self.settings.sip
        listen = _listen_addresses(self.settings)
        try:
            await self.endpoint.start()
            return
        except OSError as exc:
            failing = getattr(exc, "sip_listen", None)
            v6_missing = exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL) and sip.host_v6 == "::"
            if not v6_missing:
                what = f"{failing[0].upper()} {failing[1]}:{failing[2]}" if failing else f"port {sip.port}"
                raise StartupError(_describe_bind_error(exc, what, "sip.port")) from None
        # The default IPv6 listener failed because this machine has no IPv6: carry on with IPv4.
        log_event(log, "sip_ipv6_unavailable", level=logging.WARNING)
        self.endpoint.config.listen = [entry for entry in listen if ":" not in entry[1]]
        try:
            await self.endpoint.start()
        except OSError as exc:
            failing = getattr(exc, "sip_listen", None)
            what = f"{failing[0].upper()} {failing[1]}:{failing[2]}" if failing else f"port {sip.port}"
            raise StartupError(_describe_bind_error(exc, what, "sip.port")) from None

    def _bind_http(self) -> socket.socket:
        http = self.settings.http
        family = socket.AF_INET6 if ":" in http.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((http.host, http.port))
            sock.listen(1024)
        except OSError as exc:
            sock.close()
            raise StartupError(
                _describe_bind_error(exc, f"TCP {http.host}:{http.port}", "http.port")
            ) from None
        sock.setblocking(False)
        return sock

    async def run_until_stopped(self, stop: asyncio.Event) -> None:
        assert self.http_socket is not None
        self.bus.bind()
        install_log_bridge(self.bus)
        if self.cluster is not None:
            await self.cluster.start_events(self.bus)  # every node's live events on every node
        self.live.start()
        self.metrics.attach(self.bus)
        self.webhooks.attach(self.bus)
        self.webhooks.start()
        await self.chat.start()
        chat_task = asyncio.create_task(self.chat.run())
        self.bus.listen(lambda event: self.chat.poke() if event.kind == "agent" else None)
        routers = [
            self.access.router(),
            create_live_router(self.live, self.access),
            create_kb_router(self.kb, self.access),
            create_metrics_router(self.metrics, self.access, scrape_token=self.settings.http.metrics_token),
            create_recordings_router(self.store, self.access, self.settings.data_dir / "recordings"),
            create_reports_router(
                self.store,
                self.access,
                sl_by_queue={n: q.service_level_s for n, q in self.settings.routing.queues.items()},
                timezone=self.settings.routing.timezone,
            ),
            create_routing_router(self.acd, self.access),
            create_cluster_router(self.cluster_status, self.access),
            create_admin_config_router(self.admin_config, self.access),
            create_agents_router(self.store, self.acd, self.access, realm=self.settings.sip.realm, default_max_chats=self.settings.routing.default_max_chats),  # noqa: E501
            create_conversations_router(self.store.engine, self.access),
            create_calls_router(
                self._live_call,
                self.store,
                self.access,
                actions=self.acd,
                ringing=self.acd.router.ringing,
                flush=self.writer.flush,
            ),
            create_monitor_router(Monitors(self.acd), self.access, self._live_call),
            create_screen_pop_router(
                self.access,
                self.store,
                CustomerRepo(self.store.engine, country_code=self.settings.tickets.phone_country_code),
                live=self._live_call,
                ringing=self.acd.router.ringing,
                chats=self.chat,
            ),
            create_prompts_router(
                self.access,
                self.settings.ivr.flows_dir / "prompts",
                tts=self._tts(),
                max_bytes=self.settings.http.prompt_max_bytes,
            ),
            create_wrapup_router(
                self.store,
                self.access,
                codes=[(c.code, c.label) for c in self.settings.routing.wrap_up_codes],
                live=self._live_call,
                ender=AcdWrapUp(self.acd),
                customers=customer_lookup(self.tickets.customers, self.tickets.repo)
                if self.tickets is not None
                else None,
                categories=self.settings.tickets.categories,
                flush=self.writer.flush,
            ),
        ]
        runtime = self.calls.deps.ivr
        background: list[asyncio.Task[Any]] = []
        if runtime is not None and runtime.registry is not None:
            routers.append(flows_router(runtime.registry, access=self.access))
            registry = runtime.registry

            def names(queues: frozenset[str], schedules: frozenset[str]) -> None:
                registry.context = dataclasses.replace(registry.context, queues=queues, schedules=schedules)

            self.admin_config.on_names = names
            names(self.admin_config.queue_names(), self.admin_config.schedule_names())
            runtime.registry.on_published(self._render_published)
            background.append(
                asyncio.create_task(runtime.registry.watch(self.settings.ivr.reload_interval_s))
            )
        routers.append(create_chat_router(self.chat, self.access, suggester=self.kb))
        # The web chat widget (issue 9): /chat/* for visitors, into the same conversation engine.
        webchat = WebchatGateway(
            self.settings.chat.webchat,
            self.settings.data_dir,
            tickets=lambda: self.tickets,
            schedules=lambda: self.admin_config.schedules,
        )
        webchat.attach(self.chat)
        routers.append(
            create_webchat_router(
                webchat,
                staff=self.access.require("admin", "supervisor", "agent"),
                identify_staff=lambda req: self.access.identify(req, req.headers.get("authorization")),
            )
        )
        # WeChat Official Accounts (issue 9): /wechat[/{name}] into the same conversation engine; a
        # message WeChat refuses for good (45015 …) leaves a system note in the conversation.
        wechat: WechatGateway | None = None
        if self.settings.wechat.accounts:

            async def wechat_note(out: Outbound, reason: str) -> None:
                await asyncio.to_thread(
                    self.chat.store.add_message, out.conversation_id, "system", reason, utcnow()
                )

            wechat = WechatGateway(self.settings.wechat, on_undeliverable=wechat_note)
            wechat.attach(self.chat)
            routers.append(create_wechat_router(wechat))
        routers.append(
            create_pages_router(
                self.access, live_calls=lambda: [s.live_view() for s in list(self.calls.sessions.values())]
            )
        )
        if self.tickets is not None:
            routers.append(
                tickets_router(
                    self.tickets.repo,
                    self.tickets.customers,
                    access=self.access,
                    agent_queues=agent_queues_from_skills(self._agent_skills, self._queue_skills()),
                    calls=self._call_view,
                )
            )
            if self.tickets.sla is not None:
                monitor = SlaMonitor(self.tickets.repo, self.tickets.sla, now=utcnow)
                background.append(
                    asyncio.create_task(monitor.run(self.settings.tickets.sla.check_interval_s))
                )
        # After a load ends: collect the calls' garbage and give freed heap back (core/memory.py).
        background.append(asyncio.create_task(MemoryKeeper(lambda: self.calls.active).run()))
        http_app = create_http_app(self.health, routers=routers)
        http_app.add_middleware(HttpMetricsMiddleware, metrics=self.metrics)
        config = uvicorn.Config(http_app, log_config=None, access_log=False, lifespan="off")
        server = _HttpServer(config)
        http_task = asyncio.create_task(server.serve(sockets=[self.http_socket]))
        prerender = asyncio.create_task(self._prerender_prompts())
        log_event(
            log,
            "server_started",
            sip=[f"{t}:{h}:{p}" for t, h, p in self.endpoint.config.listen],
            http=f"{self.settings.http.host}:{self.settings.http.port}",
            version=__version__,
        )
        try:
            await stop.wait()
        finally:
            log_event(log, "server_stopping", active_calls=self.calls.active)
            await self.calls.shutdown(grace_s=self.settings.calls.shutdown_grace_s)
            chat_task.cancel()
            await self.chat.aclose()
            if wechat is not None:
                await wechat.aclose()
            if self.tickets is not None:  # the post-call tickets still queued are written now
                await asyncio.to_thread(self.tickets.close)
            prerender.cancel()
            for task in background:
                task.cancel()
            server.should_exit = True
            await asyncio.wait([http_task, prerender, *background], timeout=5.0)
            await self.webhooks.aclose()
            await self.stop()

    async def _prerender_prompts(self) -> None:
        """Synthesise every fixed prompt of every flow now and load the speech recogniser, so no caller
        waits for either (issue 4); texts that depend on the call (``${...}``) are rendered on first use."""
        runtime = self.calls.deps.ivr
        if runtime is None or not (runtime.numbers or runtime.default_flow):
            return  # no number reaches a flow (the runtime is up for the console only): no caller waits
        # Load the recogniser now too (in its worker), so the first caller who speaks does not wait.
        runtime.speech.warm()
        specs = [
            PromptSpec(p.text, p.voice or voice_for(p.language))
            for flow in runtime.flows.values()
            for p in fixed_prompts(flow)
        ]
        try:
            await runtime.prompts.render_all(specs)
        except SpeechError as exc:
            log_event(log, "prompts_render_failed", level=logging.WARNING, error=str(exc))
            return
        log_event(log, "prompts_rendered", count=len(specs))

    def sip_auth_failed(self, host: str, username: str | None) -> None:
        """A failed digest attempt from ``host`` (REGISTER, or a call an agent places): counted by the
        SIP guard, which bans a source guessing passwords."""
        self.endpoint.guard.auth_failed(host, self.endpoint.now, username=username)

    def _agent_skills(self, name: str) -> dict[str, int] | None:
        agent = self.store.get_agent(name)
        return dict(agent.skills) if agent is not None else None

    def _queue_skills(self) -> dict[str, dict[str, int]]:
        return {name: dict(q.skills) for name, q in self.settings.routing.queues.items()}

    def _tts(self) -> TtsEngine | None:
        """The IVR's TTS engine (the admin console's preview speaks with it)."""
        runtime = self.calls.deps.ivr
        return runtime.prompts.engine if runtime is not None else None

    def _live_call(self, call_id: str) -> dict[str, Any] | None:
        session = self.calls.find(call_id)
        return session.live_view() if session is not None else None

    async def _call_view(self, call_id: str) -> dict[str, Any] | None:
        """A call up now (its live view) or finished (its record), for linking a ticket to it."""
        view = self._live_call(call_id)
        if view is None:  # ended a moment ago: its last details may still be queued in the record writer
            await asyncio.to_thread(self.writer.flush, 5.0)
        record = await asyncio.to_thread(self.store.get_call, call_id)
        if view is None and record is None:
            return None
        return {**(call_public(record) if record is not None else {}), **(view or {})}

    async def _render_published(self, event: PublishedFlow) -> None:
        """A new flow version went live: its fixed prompts are synthesised now, not on a caller's time."""
        runtime = self.calls.deps.ivr
        if runtime is None:
            return
        specs = [PromptSpec(p.text, p.voice or voice_for(p.language)) for p in fixed_prompts(event.flow)]
        try:
            await runtime.prompts.render_all(specs)
        except SpeechError as exc:
            log_event(log, "prompts_render_failed", level=logging.WARNING, error=str(exc), flow=event.flow_id)
            return
        log_event(
            log,
            "flow_live",
            flow=event.flow_id,
            version=event.version,
            author=event.author,
            source=event.source,
            prompts=len(specs),
        )

    async def stop(self) -> None:
        await self.acd.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        if self.calls.deps.ivr is not None:
            await self.calls.deps.ivr.speech.aclose()
        await self.registration.stop()
        await self.endpoint.close()
        await self.media.stop()
        await asyncio.to_thread(self.writer.stop)


async def _main(settings: Settings) -> int:
    # Worker threads (the call-record writer, later ASR) must not hold the GIL for the default 5 ms
    # while the event loop waits to send RTP: bound a loop stall to 1 ms.
    sys.setswitchinterval(0.001)
    app = Application(settings)
    try:
        await app.start()
    except StartupError as exc:
        print(f"callcenter: {exc}", file=sys.stderr)
        return 2
    # Everything built at start-up lives for the whole run: keep it out of the collector's scans so
    # a full collection stays short and does not stall the media tick (CPython's gc.freeze).
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await app.run_until_stopped(stop)
    return 0


def serve(settings: Settings) -> None:
    """Run the server on uvloop until SIGINT/SIGTERM; exit code 2 when start-up fails."""
    setup_logging(settings.log.level, settings.log.format)
    try:
        import uvloop

        code = uvloop.run(_main(settings))
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        code = asyncio.run(_main(settings))
    if code:
        raise SystemExit(code)
