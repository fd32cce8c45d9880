"""The media resources shared by every call of a node: the RTP port range and the send scheduler."""

from __future__ import annotations

from callcenter.core.config import MediaSettings
from callcenter.media.ports import RtpPortAllocator
from callcenter.media.session import MediaScheduler


class MediaEngine:
    def __init__(self, settings: MediaSettings) -> None:
        self.settings = settings
        self.ports = RtpPortAllocator(settings.rtp_port_min, settings.rtp_port_max)
        # Four phases: each 5 ms sub-tick sends for a quarter of the calls (see MediaScheduler).
        self.scheduler = MediaScheduler(tick=0.02, phases=4)

    def start(self) -> None:
        """Nothing to start eagerly: the scheduler's task runs while any stream is registered."""

    async def stop(self) -> None:
        await self.scheduler.aclose()
