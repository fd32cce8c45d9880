"""CPU per monitored call: the mixer's work per 20 ms tick, in µs, and what that is per call in cores.

    .venv/bin/python scripts/bench/monitor_mix.py

Three real RTP sessions (caller, agent, supervisor) on a fake clock, sends going to a no-op: per tick
each leg's jitter-buffered frame reaches the mixer through its audio tap, the mixer sums and clips,
encodes and sends. Printed per mode (listen: one output, whisper: two, barge: three): the extra cost
of a monitored call per tick over the same call plainly bridged (its legs' own ticks included in
both), and the mixer core alone (``Mixer.tick``, no RTP). Best of several runs: the machine is shared.
"""

from __future__ import annotations

import asyncio
import time

from callcenter.core.clock import FakeClock
from callcenter.media import g711, rtp, tones
from callcenter.media.bridge import Bridge
from callcenter.media.mixer import LiveMix, Mixer
from callcenter.media.ports import RtpPortAllocator
from callcenter.media.sdp import Direction, NegotiatedMedia
from callcenter.media.session import MediaScheduler, RtpSession

TICKS = 5000
ADDR = ("127.0.0.1", 40000)


def media(port: int) -> NegotiatedMedia:
    return NegotiatedMedia(
        remote_address="127.0.0.1", remote_port=port, remote_rtcp_address="127.0.0.1",
        remote_rtcp_port=port + 1, payload_type=0, codec="PCMU", clock_rate=8000,
        telephone_event_pt=101, ptime=20, direction=Direction.SENDRECV, media_index=0)


async def per_tick(mode: str | None, repeats: int = 5) -> float:
    """µs per tick of one call (three legs receiving, the bridge, and the mixer when ``mode``)."""
    best = float("inf")
    for _ in range(repeats):
        clock = FakeClock(100.0)
        scheduler = MediaScheduler(clock=clock)
        allocator = RtpPortAllocator(46000, 46099)
        legs = []
        for i in range(3):
            leg = await RtpSession.open(allocator=allocator, scheduler=scheduler, local_ip="127.0.0.1",
                                        jitter_depth_ms=20)
            leg.apply(media(42000 + 2 * i))
            leg._send_rtp = lambda packet: None  # type: ignore[method-assign]
            legs.append(leg)
        caller, agent, sup = legs
        bridge = Bridge(caller, agent).start()
        mix = None
        if mode is not None:
            mix = LiveMix(scheduler, sup, mode)  # type: ignore[arg-type]
            mix.attach(bridge)
        else:
            sup.add_audio_tap(lambda f, now: None)  # the same jitter-buffer work on the idle third leg
        payload = g711.ulaw_encode(tones.sine(440, 0.02))
        packets = [[rtp.RtpPacket(0, k & 0xFFFF, 1000 + 160 * k, 0x100 + j, payload, False).serialize()
                    for k in range(TICKS)] for j in range(3)]
        start = time.perf_counter()
        for k in range(TICKS):
            for j, leg in enumerate(legs):
                leg._on_rtp(packets[j][k], ADDR)
            scheduler.tick(clock.now())
            clock.advance(0.02)
        best = min(best, (time.perf_counter() - start) / TICKS * 1e6)
        if mix is not None:
            mix.close()
        for leg in legs:
            leg.close()
        await scheduler.aclose()
    return best


def core_per_tick(mode: str, repeats: int = 5) -> float:
    mixer = Mixer(mode)  # type: ignore[arg-type]
    frames = [tones.sine(f, 0.02) for f in (400.0, 1000.0, 2200.0)]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(TICKS):
            for who, frame in zip(("caller", "agent", "supervisor"), frames, strict=True):
                mixer.push(who, frame)  # type: ignore[arg-type]
            mixer.tick()
        best = min(best, (time.perf_counter() - start) / TICKS * 1e6)
    return best


async def main() -> None:
    await per_tick("barge", repeats=1)  # warm up (imports, allocator, numpy paths)
    core_per_tick("barge", repeats=1)
    plain = await per_tick(None)
    print(f"plain bridged call + idle third leg: {plain:7.1f} µs/tick")
    for mode in ("listen", "whisper", "barge"):
        monitored = await per_tick(mode)
        extra = monitored - plain
        print(f"{mode:8s} monitored call: {monitored:7.1f} µs/tick, mixer adds {extra:6.1f} µs/tick "
              f"= {extra / 20_000 * 100:.2f} % of a core per monitored call "
              f"(~{int(20_000 / max(extra, 1e-3))} monitored calls per core); "
              f"core mix alone {core_per_tick(mode):5.1f} µs/tick")


if __name__ == "__main__":
    asyncio.run(main())
