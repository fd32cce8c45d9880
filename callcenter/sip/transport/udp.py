"""UDP transport: one datagram socket per listening address, IPv4 or IPv6."""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol, cast

from callcenter.sip.transaction import Addr


class DatagramSink(Protocol):
    def receive_datagram(self, data: bytes, source: Addr) -> None: ...


class UdpTransport(asyncio.DatagramProtocol):
    def __init__(self, sink: DatagramSink) -> None:
        self._sink = sink
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._sink.receive_datagram(data, Addr("udp", str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a vanished phone: nothing to do, timers handle it.
        pass

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, dest: Addr) -> None:
        if self.transport is not None:
            self.transport.sendto(data, (dest.host, dest.port))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_udp(sink: DatagramSink, host: str, port: int) -> UdpTransport:
    """Bind a UDP socket; raises OSError (e.g. EADDRINUSE) for the caller to report."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # Bursts of REGISTERs and INVITEs must not be dropped by a small default buffer.
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)
            except OSError:
                pass
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    _, protocol = await loop.create_datagram_endpoint(lambda: UdpTransport(sink), sock=sock)
    return protocol
