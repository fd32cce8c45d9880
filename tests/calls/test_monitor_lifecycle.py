"""Monitors: who may be rung, the supervisor's agent state, mode changes, every way a monitor ends.

The supervisor's phone is a fake leg (the SIP ringing is exercised end to end in tests/e2e); the
media are real RTP sessions on a fake clock, so the mixer really is attached and detached.
"""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from callcenter.calls.monitor import Monitor, MonitorError, Monitors
from callcenter.core.clock import FakeClock
from callcenter.core.logging import _FIELDS
from callcenter.media.bridge import Bridge
from callcenter.media.ports import RtpPortAllocator
from callcenter.media.sdp import Direction, NegotiatedMedia
from callcenter.media.session import MediaScheduler, RtpSession
from callcenter.routing.agents import AgentEvent, AgentState
from callcenter.routing.router import Router


def media_to(port: int) -> NegotiatedMedia:
    return NegotiatedMedia(
        remote_address="127.0.0.1", remote_port=port, remote_rtcp_address="127.0.0.1",
        remote_rtcp_port=port + 1, payload_type=0, codec="PCMU", clock_rate=8000,
        telephone_event_pt=101, ptime=20, direction=Direction.SENDRECV, media_index=0,
    )


class FakeLeg:
    def __init__(self) -> None:
        self.state = "confirmed"
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.byes: list[str] = []

    async def hangup(self, reason: str) -> None:
        self.byes.append(reason)
        self.state = "terminated"
        if not self.ended.done():
            self.ended.set_result("bye-sent")

    def phone_hangs_up(self) -> None:
        self.state = "terminated"
        self.ended.set_result("bye")


class FakeAcd:
    def __init__(self, scheduler: MediaScheduler) -> None:
        self.router = Router({})
        for name in ("al", "sue", "bo"):
            self.router.agents.define(name, {})
            self.router.agent_event(name, AgentEvent.LOGIN, 0.0)
        self.registered = {"al", "sue"}
        self.media = SimpleNamespace(scheduler=scheduler)
        self.talks: dict[str, Any] = {}
        self.extra: list[tuple[str, dict[str, Any]]] = []
        self.writer = SimpleNamespace(call_extra=lambda cid, fields: self.extra.append((cid, fields)))
        self.registration = SimpleNamespace(lookup=lambda n: ["binding"] if n in self.registered else [])
        self.kicks = 0

    def clock(self) -> float:
        return 5.0

    def kick(self) -> None:
        self.kicks += 1

    def live_talk(self, call_id: str) -> Any:
        return self.talks[call_id]

    async def _agent_gone(self, leg: FakeLeg, rtp: Any) -> str:
        return await asyncio.shield(leg.ended)


class FakeControl:
    def __init__(self, spawn: Any) -> None:
        self.session = SimpleNamespace(spawn=spawn)


class FakeTalk:
    def __init__(self, bridge: Bridge | None) -> None:
        self.call_id = "call-1"
        self.agent = "al"
        self.caller_bridge = bridge
        self.monitor: Any = None
        self.tasks: list[asyncio.Task[None]] = []
        self.control = FakeControl(self._spawn)
        self.visit = SimpleNamespace(queue="support")

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.append(task)
        return task


class Env:
    def __init__(self, acd: FakeAcd, talk: FakeTalk, monitors: Monitors, legs: dict[str, RtpSession]) -> None:
        self.acd, self.talk, self.monitors, self.legs = acd, talk, monitors, legs
        self.phone = asyncio.get_running_loop().create_future()  # what _ring returns
        self.phone_leg: FakeLeg | None = None

    def answer(self) -> None:
        self.phone_leg = FakeLeg()
        self.phone.set_result((self.phone_leg, self.legs["supervisor"]))


@pytest.fixture
async def env(monkeypatch: pytest.MonkeyPatch):
    clock = FakeClock(100.0)
    scheduler = MediaScheduler(clock=clock)
    allocator = RtpPortAllocator(47200, 47239)
    legs = {}
    for i, who in enumerate(("caller", "agent", "supervisor")):
        legs[who] = await RtpSession.open(allocator=allocator, scheduler=scheduler, local_ip="127.0.0.1")
        legs[who].apply(media_to(41000 + 2 * i))
        legs[who]._send_rtp = lambda data: None
    bridge = Bridge(legs["caller"], legs["agent"]).start()
    acd = FakeAcd(scheduler)
    talk = FakeTalk(bridge)
    acd.talks["call-1"] = talk
    monitors = Monitors(acd)  # type: ignore[arg-type]
    e = Env(acd, talk, monitors, legs)

    async def ring(self: Monitor, acd: Any) -> Any:
        return await e.phone

    monkeypatch.setattr(Monitor, "_ring", ring)
    yield e
    for task in talk.tasks:
        task.cancel()
    await asyncio.gather(*talk.tasks, return_exceptions=True)
    for leg in legs.values():
        leg.close()
    await scheduler.aclose()


async def until(condition: Any) -> None:
    """Turns of the loop, then short sleeps on a loaded machine: bounded (~20 s), never timed."""
    for i in range(2200):
        if condition():
            return
        await asyncio.sleep(0 if i < 200 else 0.01)
    raise AssertionError("condition never held")


def actions(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The ``action`` of each call_monitor event logged (these feed the event bus)."""
    return [getattr(r, _FIELDS)["action"] for r in caplog.records if r.getMessage() == "call_monitor"]


def state(acd: FakeAcd, name: str) -> AgentState:
    return acd.router.agents[name].state


async def test_listen_then_whisper_then_stop(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="callcenter.calls.monitor")
    view = env.monitors.start("call-1", "listen", "sue-user", "sue")
    assert view["state"] == "ringing" and view["phone"] == "sue" and view["agent"] == "al"
    assert state(env.acd, "sue") is AgentState.OWN_CALL  # no queue call is offered meanwhile
    env.answer()
    await until(lambda: env.monitors.view("call-1")["state"] == "active")
    monitor = env.monitors.get("call-1")
    assert monitor.mix is not None and monitor.mix.bridge is env.talk.caller_bridge
    assert env.talk.monitor is monitor
    assert len(env.legs["caller"]._audio_taps) == 1 and len(env.legs["supervisor"]._audio_taps) == 1

    assert env.monitors.set_mode("call-1", "whisper")["mode"] == "whisper"
    assert monitor.mix.mode == "whisper"
    assert env.monitors.stop("call-1")["state"] == "ending"
    await until(lambda: env.monitors.view("call-1") is None)
    assert env.phone_leg is not None and env.phone_leg.byes == ["stopped"]
    assert env.legs["supervisor"].closed
    assert not env.legs["caller"]._audio_taps and not env.legs["agent"]._audio_taps
    assert env.talk.monitor is None
    assert state(env.acd, "sue") is AgentState.AVAILABLE  # back where they were, no wrap-up
    assert actions(caplog) == ["ringing", "started", "mode", "ended"]
    call_id, fields = env.acd.extra[-1]
    assert call_id == "call-1"
    [entry] = fields["monitors"]
    assert entry["supervisor"] == "sue-user" and entry["phone"] == "sue"
    assert entry["modes"] == ["listen", "whisper"] and entry["end"] is not None
    assert entry["outcome"] == "stopped"


async def test_a_not_ready_supervisor_comes_back_not_ready(env: Env) -> None:
    env.acd.router.agent_event("sue", AgentEvent.SET_NOT_READY, 1.0, reason="coaching")
    env.monitors.start("call-1", "barge", "sue-user", "sue")
    env.answer()
    await until(lambda: env.monitors.view("call-1")["state"] == "active")
    assert env.phone_leg is not None
    env.phone_leg.phone_hangs_up()  # the supervisor hangs up
    await until(lambda: env.monitors.view("call-1") is None)
    agent = env.acd.router.agents["sue"]
    assert agent.state is AgentState.NOT_READY and agent.reason == "coaching"
    assert env.acd.extra[-1][1]["monitors"][0]["outcome"] == "supervisor hung up"


async def test_the_call_ending_hangs_up_the_supervisor(env: Env) -> None:
    env.monitors.start("call-1", "listen", "sue-user", "sue")
    env.answer()
    await until(lambda: env.monitors.view("call-1")["state"] == "active")
    env.talk.caller_bridge.stop()
    env.monitors.get("call-1").bridge_changed(None)  # LiveTalk's cleanup: the bridge goes, then the talk
    env.monitors.get("call-1").talk_ended()
    await until(lambda: env.monitors.view("call-1") is None)
    assert env.phone_leg is not None and env.phone_leg.byes == ["call ended"]
    assert all(t.done() and not t.cancelled() for t in env.talk.tasks)  # nothing left running


async def test_stopping_while_ringing_cancels_the_ring(env: Env) -> None:
    env.monitors.start("call-1", "listen", "sue-user", "sue")
    await asyncio.sleep(0)
    env.monitors.stop("call-1")
    await until(lambda: env.monitors.view("call-1") is None)
    assert env.phone_leg is None and state(env.acd, "sue") is AgentState.AVAILABLE
    assert env.acd.extra[-1][1]["monitors"][0]["outcome"] == "cancelled"
    # and the call can be monitored again
    assert env.monitors.start("call-1", "listen", "sue-user", "sue")["state"] == "ringing"


async def test_what_cannot_be_monitored(env: Env) -> None:
    with pytest.raises(ValueError):
        env.monitors.start("call-1", "shout", "sue-user", "sue")
    with pytest.raises(KeyError):
        env.monitors.start("no-such-call", "listen", "sue-user", "sue")
    with pytest.raises(ValueError):
        env.monitors.start("call-1", "listen", "sue-user", "nobody")
    with pytest.raises(MonitorError, match="agent on this call"):
        env.monitors.start("call-1", "listen", "sue-user", "al")
    with pytest.raises(MonitorError, match="not registered"):
        env.monitors.start("call-1", "listen", "sue-user", "bo")
    env.acd.registered.add("bo")
    env.acd.router.own_call_started("bo", "elsewhere", 1.0)
    with pytest.raises(MonitorError, match="busy"):
        env.monitors.start("call-1", "listen", "sue-user", "bo")
    bridge = env.talk.caller_bridge
    env.talk.caller_bridge = None  # on hold
    with pytest.raises(MonitorError, match="not bridged"):
        env.monitors.start("call-1", "listen", "sue-user", "sue")
    env.talk.caller_bridge = bridge
    env.monitors.start("call-1", "listen", "sue-user", "sue")
    with pytest.raises(MonitorError, match="already monitored"):
        env.monitors.start("call-1", "barge", "ann", "sue")
    with pytest.raises(KeyError):
        env.monitors.set_mode("other", "barge")
    with pytest.raises(ValueError):
        env.monitors.set_mode("call-1", "loud")
    with pytest.raises(KeyError):
        env.monitors.stop("other")
    assert state(env.acd, "sue") is AgentState.OWN_CALL


async def test_mode_changed_while_ringing_is_the_mode_mixed(env: Env) -> None:
    env.monitors.start("call-1", "listen", "sue-user", "sue")
    env.monitors.set_mode("call-1", "barge")
    env.answer()
    await until(lambda: env.monitors.view("call-1")["state"] == "active")  # type: ignore[index]
    mix = env.monitors.get("call-1").mix
    assert mix is not None and mix.mode == "barge"
    env.monitors.stop("call-1")
    await until(lambda: env.monitors.view("call-1") is None)


class Watcher:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def bridge_changed(self, bridge: Bridge | None) -> None:
        self.seen.append(bridge)

    def talk_ended(self) -> None:
        self.seen.append("ended")


async def test_the_live_talk_tells_its_monitor_about_hold_resume_and_its_end(env: Env) -> None:
    """calls/talk.py: every change of the caller↔agent bridge reaches the monitor, then the end."""
    from callcenter.calls.agent_leg import RingResult
    from callcenter.calls.talk import LiveTalk
    from callcenter.calls.transfer import HoldLog
    from callcenter.media import g711

    env.talk.caller_bridge.stop()  # type: ignore[union-attr]  # the fixture's own bridge: not this talk's
    acd: Any = SimpleNamespace(clock=lambda: 5.0, router=SimpleNamespace(agents={}))
    control: Any = SimpleNamespace(session=SimpleNamespace(call_id="call-2"), on_bridge=lambda b, a: None)
    answered = RingResult("al", leg=SimpleNamespace(on_refer=None), rtp=env.legs["agent"])  # type: ignore[arg-type]
    talk = LiveTalk(acd, control, answered, SimpleNamespace(), None, HoldLog())
    talk.caller_rtp = env.legs["caller"]
    talk.music = (g711.silence("PCMU", 160),)
    watcher = Watcher()
    talk.monitor = watcher
    talk._apply_audio()
    first = talk.caller_bridge
    assert first is not None and first.active and watcher.seen == [first]
    talk.hold()
    talk._apply_audio()
    assert talk.caller_bridge is None and watcher.seen[-1] is None and not first.active
    talk.resume()
    talk._apply_audio()
    second = talk.caller_bridge
    assert second is not None and second is not first and watcher.seen[-1] is second
    await talk._cleanup()
    assert watcher.seen[-2:] == [None, "ended"]
