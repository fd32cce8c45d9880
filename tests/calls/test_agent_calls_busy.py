"""Through AgentCalls: an agent's authenticated call makes them busy to the router until it ends."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from callcenter.calls.acd import Acd
from callcenter.calls.session import CallDeps, CallSession
from callcenter.core.config import Settings
from callcenter.routing.agents import AgentEvent, AgentState
from callcenter.sip.auth import AuthResult, AuthStatus
from callcenter.sip.transaction import Addr

PHONE = Addr("udp", "127.0.0.1", 40000)


class _Registration:
    listeners: list[Any] = []

    def __init__(self, password_ok: bool = True) -> None:
        self.ok = password_ok

    def lookup(self, username: str) -> list[Any]:
        return []

    def agents_at(self, source: Addr) -> list[str]:
        return ["amy"] if source == PHONE else []

    async def authenticate(self, invite: Any) -> AuthResult:
        if self.ok:
            return AuthResult(AuthStatus.OK, "amy")
        return AuthResult(AuthStatus.FAILED, "amy", "wrong password")

    def proxy_challenge(self, stale: bool = False) -> list[tuple[str, str]]:
        return [("Proxy-Authenticate", "Digest realm=x")]


class _Call:
    call_id = "own-1@phone"
    remote_tag = "t1"
    source = PHONE
    on_refer: Any = None

    def __init__(self, uri: str) -> None:
        self.invite = SimpleNamespace(uri=uri)
        self.rejected: list[int] = []

    def reject(self, status: int, reason: str | None = None, extra: Any = None) -> None:
        self.rejected.append(status)


def _acd(tmp_path: Path, registration: _Registration) -> Acd:
    settings = Settings(sip={"port": 5060}, routing={"queues": {"support": {"skills": {"support": 1}}}},
                        data_dir=tmp_path)
    endpoint: Any = SimpleNamespace(client_credentials=None, bound_port=5060)
    acd = Acd(settings, endpoint, SimpleNamespace(), registration, None)  # type: ignore[arg-type]
    for name in ("amy", "ben"):
        acd._define(SimpleNamespace(username=name, skills={"support": 1}, languages=[]))
        acd.router.agent_event(name, AgentEvent.LOGIN, 0.0)
    acd.prompts = SimpleNamespace()  # type: ignore[assignment]  # never used: the call is faked below
    return acd


@pytest.mark.parametrize("dialled", ["sip:support@127.0.0.1", "sip:ben@127.0.0.1"])
async def test_busy_from_acceptance_until_the_call_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dialled: str
) -> None:
    acd = _acd(tmp_path, _Registration())
    acd.router.agent_event("amy", AgentEvent.SET_NOT_READY, 0.0, reason="lunch")
    seen: list[str] = []
    release = asyncio.Event()

    async def the_call(self: CallSession) -> None:  # the served call, up until released
        seen.append(str(acd.router.agents["amy"].state))
        await release.wait()

    monkeypatch.setattr(CallSession, "run", the_call)
    deps = CallDeps(acd.settings, SimpleNamespace(), SimpleNamespace(), SimpleNamespace())  # type: ignore[arg-type]
    call = _Call(dialled)
    task = asyncio.create_task(acd.agent_calls.session(call, deps).run())  # type: ignore[arg-type]
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0)
    assert seen == ["own_call"] and call.rejected == []
    assert acd.snapshot()["agents"]["amy"]["own_calls"] == ["own-1@phone"]
    release.set()
    await task
    amy = acd.router.agents["amy"]
    assert (amy.state, amy.reason) == (AgentState.NOT_READY, "lunch")
    await acd.stop()


async def test_a_refused_call_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    acd = _acd(tmp_path, _Registration(password_ok=False))
    transitions_before = list(acd.router.agents.transitions or [])
    call = _Call("sip:support@127.0.0.1")
    deps = CallDeps(acd.settings, SimpleNamespace(), SimpleNamespace(), SimpleNamespace())  # type: ignore[arg-type]
    await acd.agent_calls.session(call, deps).run()  # type: ignore[arg-type]
    assert call.rejected == [403]
    assert acd.router.agents["amy"].state is AgentState.AVAILABLE
    assert [t for t in acd.router.agents.transitions or [] if t.agent == "amy"] == [
        t for t in transitions_before if t.agent == "amy"
    ]
    await acd.stop()


class _ChallengingRegistration(_Registration):
    async def authenticate(self, invite: Any) -> AuthResult:
        return AuthResult(AuthStatus.CHALLENGE)


async def test_a_wrong_password_is_reported_to_the_auth_failure_hook(tmp_path: Path) -> None:
    acd = _acd(tmp_path, _Registration(password_ok=False))
    failures: list[tuple[str, str | None]] = []
    acd.agent_calls.on_auth_failed = lambda host, username: failures.append((host, username))
    call = _Call("sip:ben@127.0.0.1")
    deps = CallDeps(acd.settings, SimpleNamespace(), SimpleNamespace(), SimpleNamespace())  # type: ignore[arg-type]
    await acd.agent_calls.session(call, deps).run()  # type: ignore[arg-type]
    assert call.rejected == [403]
    assert failures == [("127.0.0.1", "amy")]  # the source host (no port) and the username tried
    await acd.stop()


async def test_the_guard_bans_a_phone_guessing_passwords_by_invite(tmp_path: Path) -> None:
    """Wired as app.py does: five wrong passwords in a minute ban a (non-trusted) source."""
    from callcenter.sip.guard import GuardSettings, SipGuard

    acd = _acd(tmp_path, _Registration(password_ok=False))
    guard = SipGuard(GuardSettings(trusted=()))
    acd.agent_calls.on_auth_failed = lambda host, username: guard.auth_failed(host, 10.0, username=username)
    deps = CallDeps(acd.settings, SimpleNamespace(), SimpleNamespace(), SimpleNamespace())  # type: ignore[arg-type]
    for attempt in range(5):
        assert not guard.banned("127.0.0.1", 10.0), attempt
        await acd.agent_calls.session(_Call("sip:support@127.0.0.1"), deps).run()  # type: ignore[arg-type]
    assert guard.banned("127.0.0.1", 10.0)
    await acd.stop()


async def test_a_challenge_or_a_good_password_is_no_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def the_call(self: CallSession) -> None:
        return None

    monkeypatch.setattr(CallSession, "run", the_call)
    failures: list[tuple[str, str | None]] = []
    for registration, status in ((_ChallengingRegistration(), [407]), (_Registration(), [])):
        acd = _acd(tmp_path, registration)
        acd.agent_calls.on_auth_failed = lambda host, username: failures.append((host, username))
        deps = CallDeps(acd.settings, SimpleNamespace(), SimpleNamespace(), SimpleNamespace())  # type: ignore[arg-type]
        call = _Call("sip:support@127.0.0.1")
        await acd.agent_calls.session(call, deps).run()  # type: ignore[arg-type]
        assert call.rejected == status and failures == []
        await acd.stop()


# -- behind Kamailio: the phone it names is counted and banned, not Kamailio -----------------------

REMOTE_PHONE = Addr("udp", "203.0.113.7", 40000)
KAMAILIO = Addr("udp", "127.0.0.1", 5060)  # trusted (loopback, the default)


class _RemoteRegistration(_Registration):
    banned: Any = None

    def agents_at(self, source: Addr) -> list[str]:
        return ["amy"] if source == REMOTE_PHONE else []


class _ProxiedCall(_Call):
    source = KAMAILIO

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.invite = SimpleNamespace(
            uri=uri,
            headers=SimpleNamespace(
                get_all=lambda name: ["sip:203.0.113.7:40000"] if name == "X-Callcenter-Source" else []
            ),
        )


async def test_a_wrong_password_through_kamailio_counts_against_the_phone(tmp_path: Path) -> None:
    registration = _RemoteRegistration(password_ok=False)
    acd = _acd(tmp_path, registration)
    failures: list[tuple[str, str | None]] = []
    acd.agent_calls.on_auth_failed = lambda host, username: failures.append((host, username))
    deps = CallDeps(acd.settings, SimpleNamespace(), SimpleNamespace(), SimpleNamespace())  # type: ignore[arg-type]
    call = _ProxiedCall("sip:ben@127.0.0.1")
    assert acd.agent_calls.claims(call)  # type: ignore[arg-type]
    await acd.agent_calls.session(call, deps).run()  # type: ignore[arg-type]
    assert call.rejected == [403]
    assert failures == [("203.0.113.7", "amy")]  # so the guard bans that phone, never Kamailio
    await acd.stop()


async def test_a_banned_phone_behind_kamailio_is_refused_before_any_password_check(tmp_path: Path) -> None:
    registration = _RemoteRegistration(password_ok=True)
    registration.banned = lambda host: host == "203.0.113.7"
    checked: list[Any] = []
    original = registration.authenticate

    async def authenticate(invite: Any) -> AuthResult:
        checked.append(invite)
        return await original(invite)

    registration.authenticate = authenticate  # type: ignore[method-assign]
    acd = _acd(tmp_path, registration)
    deps = CallDeps(acd.settings, SimpleNamespace(), SimpleNamespace(), SimpleNamespace())  # type: ignore[arg-type]
    call = _ProxiedCall("sip:support@127.0.0.1")
    await acd.agent_calls.session(call, deps).run()  # type: ignore[arg-type]
    assert call.rejected == [403] and checked == []
    await acd.stop()
