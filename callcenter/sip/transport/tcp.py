"""TCP transport: stream framing per connection, connections looked up by the peer's address.

Responses and in-dialog requests go back over the connection the peer opened (§18.2.2); when none
is open, a new one is made to the target.

Inbound connections are accepted here, not by ``loop.create_server``: the caps of ``limits.py`` are
checked on the bare socket, so a refused connection costs one accept and one close — no transport,
no protocol, no TLS handshake. One housekeeping task per transport closes the connections the table
says are due (handshake, first message, stalled message, idle).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from typing import cast

from callcenter.core.logging import log_event
from callcenter.sip.message import SipMessage, SipParseError
from callcenter.sip.parser import ParseErrorWithHead, StreamFramer
from callcenter.sip.transaction import Addr, transport_failure
from callcenter.sip.transport.limits import ConnectionLimits, ConnectionTable, Expiry

log = logging.getLogger("callcenter.sip.tcp")

_ACCEPT_BATCH = 128  # connections accepted per readiness event before the loop serves others
_ACCEPT_PAUSE_S = 1.0  # out of file descriptors: accept again after this (as asyncio's servers do)
# A TLS peer that does not answer our close_notify within this is dropped (asyncio's default: 30 s).
_TLS_SHUTDOWN_S = 5.0


def connect_error(exc: BaseException) -> str:
    """Why a connect failed, for a log line and a TransportFailure (a refused certificate's own words)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, TimeoutError):
        return "no connection (or TLS handshake) within 5 s"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc)

MessageSink = Callable[[SipMessage, Addr], None]
BadRequestSink = Callable[[ParseErrorWithHead, Addr], None]


class TcpConnection(asyncio.Protocol):
    def __init__(self, registry: TcpTransport, cid: int | None = None) -> None:
        self._registry = registry
        self._framer = StreamFramer(registry.max_size)
        self.transport: asyncio.Transport | None = None
        self.peer: Addr | None = None
        self.cid = cid  # id in the registry's ConnectionTable (outbound: given in connection_made)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        registry = self._registry
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        peername = transport.get_extra_info("peername")
        self.peer = Addr(registry.name, str(peername[0]), int(peername[1]))
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        now = registry.now()
        if self.cid is None:
            self.cid = registry.table.add_outbound(self.peer.host, now)
        else:
            registry.table.established(self.cid, now)
        registry.by_id[self.cid] = self
        registry.connections[self.peer] = self
        registry.ensure_housekeeping()

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.transport is not None
        registry = self._registry
        pending: bytes = data
        framed = 0
        while True:
            try:
                messages = self._framer.feed(pending)
            except ParseErrorWithHead as exc:
                for message in exc.parsed_before:
                    registry.on_message(message, self.peer)
                registry.on_bad_request(exc, self.peer)
                framed += len(exc.parsed_before) + 1
                if exc.framing_ok:
                    pending = b""
                    continue
                self.transport.close()
                return
            except SipParseError as exc:
                log.info('{"event":"sip_tcp_framing_error","peer":"%s","error":"%s"}', self.peer, exc)
                self.transport.close()
                return
            break
        if self.cid is not None:
            framed += len(messages)
            registry.table.received(self.cid, registry.now(), messages=framed, partial=self._framer.partial)
        pings = self._framer.pings
        if pings:
            self._framer.pings = 0
            self.transport.write(b"\r\n" * pings)  # RFC 5626 §3.5.1 pong
        for message in messages:
            registry.on_message(message, self.peer)
        if self._framer.failed:  # framing lost after these messages: nothing more can be read
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        registry = self._registry
        if self.peer is not None and registry.connections.get(self.peer) is self:
            del registry.connections[self.peer]
        if self.cid is not None:
            registry.table.closed(self.cid)
            if registry.by_id.get(self.cid) is self:
                del registry.by_id[self.cid]

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            if self.cid is not None:
                self._registry.table.sent(self.cid, self._registry.now())


class TcpTransport:
    """All TCP connections of the endpoint (inbound and outbound), listening on several addresses.

    ``TlsTransport`` (transport/tls.py) is this with TLS contexts: ``name`` and the two ssl hooks."""

    name = "tcp"

    def _server_ssl(self) -> ssl.SSLContext | None:
        return None

    def _client_ssl(self, dest: Addr) -> tuple[ssl.SSLContext | None, str | None]:
        """The client context and server_hostname for connecting to ``dest``."""
        return None, None

    def __init__(
        self,
        on_message: MessageSink,
        on_bad_request: BadRequestSink,
        max_size: int,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.on_message = on_message
        self.on_bad_request = on_bad_request
        self.max_size = max_size
        self.connections: dict[Addr, TcpConnection] = {}
        self.table = ConnectionTable(limits, self.name)
        self.by_id: dict[int, TcpConnection] = {}  # established connections by table id
        # Whether an idle connection is still in use (a registration binding or dialog rides on it,
        # RFC 3261 §18.2.2): asked before the idle timeout closes it. Set by the endpoint.
        self.needed: Callable[[Addr], bool] | None = None
        # Whether the SIP guard bans an address (set by the endpoint): its new connections are closed
        # at once, as its datagrams are dropped — a banned scanner costs no TLS handshake.
        self.banned: Callable[[str], bool] | None = None
        self._listeners: list[tuple[socket.socket, ssl.SSLContext | None]] = []
        self._handshakes: dict[int, asyncio.Task[None]] = {}  # accepted, not yet established
        self._housekeeper: asyncio.Task[None] | None = None
        self._connecting: dict[Addr, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def now() -> float:
        return asyncio.get_running_loop().time()

    async def listen(self, host: str, port: int) -> int:
        """Listen on host:port; returns the port really bound (useful with port 0)."""
        loop = asyncio.get_running_loop()
        context = self._server_ssl()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # SO_REUSEADDR, and IPV6_V6ONLY on an IPv6 address (the IPv4 one has its own socket).
        sock = socket.create_server((host, port), family=family, backlog=1024)
        sock.setblocking(False)
        try:
            loop.add_reader(sock.fileno(), self._accept, sock, context)
        except BaseException:
            sock.close()
            raise
        self._listeners.append((sock, context))
        self.ensure_housekeeping()
        return int(sock.getsockname()[1])

    def _accept(self, sock: socket.socket, context: ssl.SSLContext | None) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.info('{"event":"sip_%s_accept_error","error":"%s"}', self.name, exc)
                    return
                # Out of descriptors: stop accepting for a while rather than spin on the ready socket.
                log_event(log, "sip_accept_paused", level=logging.WARNING, transport=self.name,
                          error=str(exc), open=len(self.table), pause_s=_ACCEPT_PAUSE_S)
                loop = asyncio.get_running_loop()
                loop.remove_reader(sock.fileno())
                loop.call_later(_ACCEPT_PAUSE_S, self._resume_accept, sock, context)
                return
            self._admit(conn, str(addr[0]), context)

    def _resume_accept(self, sock: socket.socket, context: ssl.SSLContext | None) -> None:
        if any(s is sock for s, _ in self._listeners):
            asyncio.get_running_loop().add_reader(sock.fileno(), self._accept, sock, context)

    def _admit(self, conn: socket.socket, host: str, context: ssl.SSLContext | None) -> None:
        if self.banned is not None and self.banned(host):
            self.table.stats["refused_banned"] += 1
            conn.close()
            return
        cid = self.table.admit(host, self.now(), handshake=context is not None)
        if cid is None:
            conn.close()  # over a cap: nothing read, no TLS handshake
            return
        conn.setblocking(False)
        task = asyncio.get_running_loop().create_task(self._establish(conn, cid, context))
        self._handshakes[cid] = task

    async def _establish(self, conn: socket.socket, cid: int, context: ssl.SSLContext | None) -> None:
        """Wrap an admitted socket in a transport: at once for TCP, after the handshake for TLS."""
        loop = asyncio.get_running_loop()
        established = False
        try:
            if context is None:
                await loop.connect_accepted_socket(lambda: TcpConnection(self, cid), conn)
            else:
                timeout = self.table.limits.handshake_timeout_s
                await loop.connect_accepted_socket(
                    lambda: TcpConnection(self, cid), conn, ssl=context,
                    ssl_handshake_timeout=timeout if timeout > 0 else None,
                    ssl_shutdown_timeout=_TLS_SHUTDOWN_S,
                )
            established = True  # the transport owns the socket now
        except Exception as exc:  # noqa: BLE001 - a failed handshake concerns this peer only
            if log.isEnabledFor(logging.DEBUG):
                log.debug('{"event":"sip_%s_handshake_failed","error":"%s"}', self.name, exc)
        finally:
            self._handshakes.pop(cid, None)
            if not established:  # failed, timed out or cancelled (the table's handshake deadline)
                self.table.closed(cid)
                conn.close()

    def ensure_housekeeping(self) -> None:
        if self._housekeeper is None or self._housekeeper.done():
            self._housekeeper = asyncio.get_running_loop().create_task(self._housekeep())

    async def _housekeep(self) -> None:
        """Close what the table says is due; wakes at the next deadline, at least every tick."""
        table = self.table
        tick = table.limits.tick_s
        while True:
            now = self.now()
            due = table.get_timer()
            wake = now + tick if due is None else min(due, now + tick)
            await asyncio.sleep(max(0.0, wake - now))
            for cid, why in table.handle_timer(self.now(), self._needed):
                self._expire(cid, why)

    def _needed(self, cid: int) -> bool:
        conn = self.by_id.get(cid)
        if conn is None or conn.peer is None or self.needed is None:
            return False
        return self.needed(conn.peer)

    def _expire(self, cid: int, why: Expiry) -> None:
        conn = self.by_id.get(cid)
        if conn is not None and conn.transport is not None:
            if why is Expiry.IDLE:
                conn.transport.close()  # flushes what is queued (and says close_notify over TLS)
            else:
                conn.transport.abort()  # a peer that stalls gets nothing more
            return
        task = self._handshakes.get(cid)
        if task is not None:
            task.cancel()  # _establish closes the socket and the table entry
        else:
            self.table.closed(cid)

    def send(self, data: bytes, dest: Addr) -> None:
        conn = self.connections.get(dest)
        if conn is not None:
            conn.send(data)
            return
        queued = self._connecting.get(dest)
        if queued is not None:
            queued.append(data)
            return
        self._connecting[dest] = [data]
        task = asyncio.get_running_loop().create_task(self._connect(dest))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, dest: Addr) -> None:
        loop = asyncio.get_running_loop()
        context, hostname = self._client_ssl(dest)
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: TcpConnection(self), dest.host, dest.port, ssl=context, server_hostname=hostname
                ),
                timeout=5.0,
            )
        except (TimeoutError, OSError) as exc:  # ssl.SSLError (a refused certificate) is an OSError
            error = connect_error(exc)
            log.info('{"event":"sip_%s_connect_failed","dest":"%s","error":"%s"}', self.name, dest, error)
            self._connect_failed(dest, self._connecting.pop(dest, []), error)
            return
        for data in self._connecting.pop(dest, []):
            conn.send(data)
        # The connection registers itself under its peer address, which is `dest`.

    def _connect_failed(self, dest: Addr, unsent: list[bytes], error: str) -> None:
        """The requests that waited for the connection fail now, each as a local 503 to its client
        transaction (RFC 3261 §8.1.3.1, §17.1.4), not at timer B or the caller's ring timeout."""
        for data in unsent:
            failure = transport_failure(data, error)
            if failure is not None:
                self.on_message(failure, dest)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock, _ in self._listeners:
            loop.remove_reader(sock.fileno())
            sock.close()
        self._listeners.clear()
        for conn in {*self.connections.values(), *self.by_id.values()}:
            if conn.transport is not None:
                conn.transport.close()
        tasks = [*self._tasks, *self._handshakes.values()]
        if self._housekeeper is not None:
            tasks.append(self._housekeeper)
            self._housekeeper = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
