"""Agents registered through a Path proxy (Kamailio in front of the nodes, RFC 3327)."""

from __future__ import annotations

import asyncio
from typing import Any

from callcenter.calls.agent_leg import RingTarget
from callcenter.core.config import SipSettings
from callcenter.sip.auth import compute_ha1
from callcenter.sip.client_auth import ClientCredentials, authorize, pick_challenge
from callcenter.sip.message import SipRequest, SipResponse
from callcenter.sip.parser import parse_message
from callcenter.sip.registrar import ContactRequest, Registrar
from callcenter.sip.registration import RegistrationService
from callcenter.sip.transaction import Addr, ServerTransaction, TransactionLayer, server_key

KAMAILIO = Addr("udp", "127.0.0.1", 5060)
PHONE = ("127.0.0.1", 40000)
PATH = "<sip:127.0.0.1:5060;lr;received=sip:127.0.0.1%3A40000>"


def test_path_is_stored_with_the_binding_and_gives_the_route_to_the_phone() -> None:
    registrar = Registrar()
    result = registrar.register(
        "agent1", [ContactRequest("sip:agent1@127.0.0.1:40000")], False, 60, "c1", 1, 0.0,
        ("127.0.0.1", 5060), "udp", path=[PATH],
    )  # fmt: skip
    (binding,) = result.bindings
    assert binding.path == (PATH,)
    assert binding.first_hop() == ("udp", "127.0.0.1", 5060)
    assert binding.origin() == ("udp", "127.0.0.1", 40000)

    target = RingTarget.from_binding(binding)
    assert target.uri == "sip:agent1@127.0.0.1:40000"
    assert target.dest == KAMAILIO  # through the proxy, not straight to the phone
    assert target.route == (PATH,)


def test_binding_without_path_rings_where_the_register_came_from() -> None:
    registrar = Registrar()
    result = registrar.register(
        "agent1", [ContactRequest("sip:agent1@10.0.0.9:5062")], False, 60, "c1", 1, 0.0,
        ("192.0.2.7", 31000), "udp",
    )  # fmt: skip
    target = RingTarget.from_binding(result.bindings[0])
    assert target.dest == Addr("udp", "192.0.2.7", 31000)
    assert target.route == ()


def test_path_without_received_falls_back_to_the_contact_as_origin() -> None:
    registrar = Registrar()
    result = registrar.register(
        "a", [ContactRequest("sip:a@127.0.0.1:41000;transport=tcp")], False, 60, "c", 1, 0.0,
        ("127.0.0.1", 5060), "udp", path=["<sip:10.1.1.1:5070;transport=tcp;lr>"],
    )  # fmt: skip
    (binding,) = result.bindings
    assert binding.first_hop() == ("tcp", "10.1.1.1", 5070)
    assert binding.origin() == ("tcp", "127.0.0.1", 41000)


# -- the REGISTER service ------------------------------------------------------------------------


class _Store:
    def __init__(self, realm: str) -> None:
        self.ha1s = (compute_ha1("agent1", realm, "pw", "MD5"), compute_ha1("agent1", realm, "pw", "SHA-256"))

    def get_agent_credentials(self, username: str) -> tuple[str, str] | None:
        return self.ha1s if username == "agent1" else None


class _Responder:
    def __init__(self) -> None:
        self.responses: list[SipResponse] = []

    def respond(self, txn: ServerTransaction, response: Any) -> None:
        self.responses.append(response)


def _register(supported: bool, call_id: str = "reg-1", path: str = PATH) -> SipRequest:
    lines = [
        "REGISTER sip:127.0.0.1 SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-k1",
        "Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-p1;received=127.0.0.1;rport=40000",
        f"Path: {path}",
        "From: <sip:agent1@127.0.0.1>;tag=f1",
        "To: <sip:agent1@127.0.0.1>",
        f"Call-ID: {call_id}",
        "CSeq: 1 REGISTER",
        "Contact: <sip:agent1@127.0.0.1:40000>",
        "Expires: 60",
        *(["Supported: path, outbound"] if supported else []),
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, SipRequest)
    return message


async def _register_with_auth(
    service: RegistrationService, responder: _Responder, request: SipRequest
) -> None:
    layer = TransactionLayer()
    service.on_register(ServerTransaction(layer, server_key(request), request, KAMAILIO), request, KAMAILIO)
    challenge = pick_challenge(responder.responses[-1])
    assert challenge is not None
    again = authorize(request, challenge, ClientCredentials("agent1", "pw"), branch="z9hG4bK-k2")
    service.on_register(ServerTransaction(layer, server_key(again), again, KAMAILIO), again, KAMAILIO)
    for _ in range(50):  # the HA1 lookup runs in a worker thread
        if responder.responses[-1].status != 401:
            break
        await asyncio.sleep(0.01)


async def test_registration_through_a_proxy_keeps_customer_calls_apart() -> None:
    settings = SipSettings()
    responder = _Responder()
    service = RegistrationService(
        settings, responder, _Store(settings.realm), secret=b"k" * 32, clock=lambda: 100.0
    )

    await _register_with_auth(service, responder, _register(supported=True))

    ok = responder.responses[-1]
    assert ok.status == 200
    assert ok.headers.get_all("Path") == [PATH]  # RFC 3327 §5.3: echoed to a UA that supports it
    (binding,) = service.lookup("agent1")
    assert binding.path == (PATH,)
    # Every request from Kamailio comes from the same address: a customer's INVITE relayed by it must
    # not be taken for the agent's; the agent's phone is known by its own address.
    assert service.agents_at(KAMAILIO) == []
    assert service.agents_at(Addr("udp", *PHONE)) == ["agent1"]


async def test_path_not_echoed_to_a_phone_without_path_support_but_still_used() -> None:
    settings = SipSettings()
    responder = _Responder()
    service = RegistrationService(
        settings, responder, _Store(settings.realm), secret=b"k" * 32, clock=lambda: 100.0
    )

    await _register_with_auth(service, responder, _register(supported=False, call_id="reg-2"))

    ok = responder.responses[-1]
    assert ok.status == 200
    assert ok.headers.get_all("Path") == []
    assert RingTarget.from_binding(service.lookup("agent1")[0]).route == (PATH,)


# -- brute force through the proxy: the phone is counted (and banned), not Kamailio -----------------

REMOTE_PATH = "<sip:127.0.0.1:5060;lr;received=sip:203.0.113.7%3A40000>"


async def _wrong_password(service: RegistrationService, responder: _Responder, source: Addr) -> None:
    layer = TransactionLayer()
    request = _register(supported=True, call_id="guess", path=REMOTE_PATH)
    service.on_register(ServerTransaction(layer, server_key(request), request, source), request, source)
    challenge = pick_challenge(responder.responses[-1])
    assert challenge is not None
    again = authorize(request, challenge, ClientCredentials("agent1", "guess"), branch="z9hG4bK-g2")
    service.on_register(ServerTransaction(layer, server_key(again), again, source), again, source)
    for _ in range(50):  # the HA1 lookup runs in a worker thread
        if responder.responses[-1].status != 401:
            break
        await asyncio.sleep(0.01)
    assert responder.responses[-1].status == 403


def _service() -> tuple[RegistrationService, _Responder, list[str]]:
    settings = SipSettings()  # trusted: loopback, i.e. this Kamailio
    responder = _Responder()
    service = RegistrationService(
        settings, responder, _Store(settings.realm), secret=b"k" * 32, clock=lambda: 100.0
    )
    failed: list[str] = []
    service.on_auth_failed = lambda host, username: failed.append(host)
    return service, responder, failed


async def test_a_wrong_password_through_the_proxy_counts_against_the_phone() -> None:
    service, responder, failed = _service()
    await _wrong_password(service, responder, KAMAILIO)
    assert failed == ["203.0.113.7"]  # the phone Kamailio named, so the guard bans it and not Kamailio


async def test_a_path_from_an_untrusted_sender_is_not_believed() -> None:
    service, responder, failed = _service()
    await _wrong_password(service, responder, Addr("udp", "198.51.100.9", 5060))
    assert failed == ["198.51.100.9"]  # anyone can write a Path header


async def test_a_banned_phone_behind_the_proxy_gets_403_without_a_challenge() -> None:
    service, responder, _ = _service()
    service.banned = lambda host: host == "203.0.113.7"
    layer = TransactionLayer()
    request = _register(supported=True, call_id="banned", path=REMOTE_PATH)
    service.on_register(ServerTransaction(layer, server_key(request), request, KAMAILIO), request, KAMAILIO)
    assert responder.responses[-1].status == 403
    # another phone behind the same Kamailio still registers
    await _register_with_auth(service, responder, _register(supported=True, call_id="other"))
    assert responder.responses[-1].status == 200
