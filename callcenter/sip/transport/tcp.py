"""TCP transport: stream framing per connection, connections looked up by the peer's address.

Responses and in-dialog requests go back over the connection the peer opened (§18.2.2); when none
is open, a new one is made to the target.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import cast

from callcenter.sip.message import SipMessage, SipParseError
from callcenter.sip.parser import ParseErrorWithHead, StreamFramer
from callcenter.sip.transaction import Addr

log = logging.getLogger("callcenter.sip.tcp")

MessageSink = Callable[[SipMessage, Addr], None]
BadRequestSink = Callable[[ParseErrorWithHead, Addr], None]


class TcpConnection(asyncio.Protocol):
    def __init__(self, registry: TcpTransport) -> None:
        self._registry = registry
        self._framer = StreamFramer(registry.max_size)
        self.transport: asyncio.Transport | None = None
        self.peer: Addr | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        peername = transport.get_extra_info("peername")
        self.peer = Addr(self._registry.name, str(peername[0]), int(peername[1]))
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._registry.connections[self.peer] = self

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.transport is not None
        pending: bytes = data
        while True:
            try:
                messages = self._framer.feed(pending)
            except ParseErrorWithHead as exc:
                for message in exc.parsed_before:
                    self._registry.on_message(message, self.peer)
                self._registry.on_bad_request(exc, self.peer)
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
        pings = self._framer.pings
        if pings:
            self._framer.pings = 0
            self.transport.write(b"\r\n" * pings)  # RFC 5626 §3.5.1 pong
        for message in messages:
            self._registry.on_message(message, self.peer)
        if self._framer.failed:  # framing lost after these messages: nothing more can be read
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self._registry.connections.get(self.peer) is self:
            del self._registry.connections[self.peer]

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class TcpTransport:
    """All TCP connections of the endpoint (inbound and outbound), listening on several addresses.

    ``TlsTransport`` (transport/tls.py) is this with TLS contexts: ``name`` and the two ssl hooks."""

    name = "tcp"

    def _server_ssl(self) -> ssl.SSLContext | None:
        return None

    def _client_ssl(self, dest: Addr) -> tuple[ssl.SSLContext | None, str | None]:
        """The client context and server_hostname for connecting to ``dest``."""
        return None, None

    def __init__(self, on_message: MessageSink, on_bad_request: BadRequestSink, max_size: int) -> None:
        self.on_message = on_message
        self.on_bad_request = on_bad_request
        self.max_size = max_size
        self.connections: dict[Addr, TcpConnection] = {}
        self._servers: list[asyncio.Server] = []
        self._connecting: dict[Addr, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(self, host: str, port: int) -> int:
        """Listen on host:port; returns the port really bound (useful with port 0)."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server = await loop.create_server(
            lambda: TcpConnection(self), host, port, family=family, reuse_address=True, backlog=1024,
            ssl=self._server_ssl(),
        )
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

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
            log.info('{"event":"sip_%s_connect_failed","dest":"%s","error":"%s"}', self.name, dest, exc)
            self._connecting.pop(dest, None)
            return  # the transaction's timers report the failure as a timeout
        for data in self._connecting.pop(dest, []):
            conn.send(data)
        # The connection registers itself under its peer address, which is `dest`.

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), timeout=1.0)
            except TimeoutError:
                pass
