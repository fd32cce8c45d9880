"""RTP port pairs from a configured range: even port for RTP, the next odd one for RTCP (RFC 3550 §11)."""

from __future__ import annotations

from collections import deque

from callcenter.core.errors import CallcenterError


class RtpPortsExhausted(CallcenterError):
    """Every RTP port pair of the range is in use."""


class RtpPortAllocator:
    """Hands out even RTP ports in ``[min_port, max_port]`` (RTCP = port + 1, also in range).

    Round robin: a released port goes to the back of the queue, so a port is reused as late as
    possible and stray packets of a finished call rarely reach the next one.
    """

    def __init__(self, min_port: int, max_port: int) -> None:
        if not 1024 <= min_port <= max_port <= 65535:
            raise ValueError(f"RTP port range {min_port}-{max_port} must lie within 1024-65535")
        first = min_port + (min_port % 2)
        self.min_port = min_port
        self.max_port = max_port
        self._free: deque[int] = deque(range(first, max_port, 2))  # port + 1 <= max_port
        if not self._free:
            raise ValueError(f"RTP port range {min_port}-{max_port} holds no even/odd pair")
        self.capacity = len(self._free)
        self._in_use: set[int] = set()

    def allocate(self) -> int:
        """The next free even port; its RTCP port is the returned value + 1."""
        if not self._free:
            raise RtpPortsExhausted(
                f"all {self.capacity} RTP port pairs in {self.min_port}-{self.max_port} are in use")
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def release(self, port: int) -> bool:
        """Give ``port`` back. Releasing a port that is not allocated does nothing (returns False)."""
        if port not in self._in_use:
            return False
        self._in_use.remove(port)
        self._free.append(port)
        return True

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def available(self) -> int:
        return len(self._free)
