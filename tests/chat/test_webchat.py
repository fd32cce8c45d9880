"""The web chat channel's server side: signed visitor ids, rate limits (fake clock), body and upload
limits, files only for their visitor, the long-poll, history, Origin checks and the offline form."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chat_helpers import World, until
from fastapi import FastAPI

from callcenter.chat.webchat import (
    HEADER,
    VisitorSigner,
    WebchatGateway,
    create_webchat_router,
    load_secret,
    sniff,
)
from callcenter.core.config import WebchatSettings
from callcenter.ivr.services import TicketDraft

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
SECRET = b"s" * 40


class FakeTickets:
    def __init__(self) -> None:
        self.drafts: list[TicketDraft] = []

    async def create(self, draft: TicketDraft) -> str:
        self.drafts.append(draft)
        return str(len(self.drafts))

    async def update(self, ticket_id: str, update: Any) -> None:
        pass


class Site:
    def __init__(
        self, world: World, gateway: WebchatGateway, client: httpx.AsyncClient, tickets: FakeTickets
    ):
        self.world, self.gateway, self.client, self.tickets = world, gateway, client, tickets

    async def visitor(self, **headers: str) -> tuple[str, dict[str, str]]:
        """A new visitor (as another browser: no cookie), identified by the header from then on."""
        self.client.cookies.clear()
        r = await self.client.post("/chat/session", headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        return body["visitor"], {HEADER: body["token"]}


def make_site(world: World, tmp_path: Path, **settings: Any) -> tuple[WebchatGateway, FastAPI, FakeTickets]:
    tickets = FakeTickets()
    gateway = WebchatGateway(
        WebchatSettings(**settings),
        tmp_path / "data",
        tickets=lambda: tickets,
        clock=world.clock,
        secret=SECRET,
    )
    gateway.attach(world.engine)
    app = FastAPI()
    app.include_router(create_webchat_router(gateway))
    return gateway, app, tickets


@pytest.fixture
async def site(running: World, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Site]:
    settings = getattr(request, "param", {})
    gateway, app, tickets = make_site(running, tmp_path, **settings)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.5", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://chat.test") as client:
        yield Site(running, gateway, client, tickets)


# -- identity ------------------------------------------------------------------------------------------------


def test_a_signed_visitor_id_verifies_and_any_change_is_refused() -> None:
    signer = VisitorSigner(SECRET)
    visitor, token = signer.new()
    assert signer.verify(token) == visitor
    other_visitor, _ = signer.new()
    forged = f"{other_visitor}.{token.partition('.')[2]}"  # someone else's id with this signature
    assert signer.verify(forged) is None
    assert signer.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert VisitorSigner(b"t" * 40).verify(token) is None  # another server's key
    for junk in ("", "abc", "x" * 500, f"{visitor}", f"../../{visitor}.sig"):
        assert signer.verify(junk) is None


def test_the_secret_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    first = load_secret(None, tmp_path)
    assert len(first) >= 32 and load_secret(None, tmp_path) == first
    assert stat.S_IMODE(os.stat(tmp_path / "webchat_secret").st_mode) == 0o600
    assert (
        load_secret("configured-secret-configured-secret", tmp_path) == b"configured-secret-configured-secret"
    )


async def test_a_returning_visitor_keeps_their_id_and_a_forged_token_gets_a_new_one(site: Site) -> None:
    visitor, headers = await site.visitor()
    again = await site.client.post("/chat/session", headers=headers)
    assert again.json()["visitor"] == visitor
    cookie = again.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie  # plain http: SameSite=None would be dropped
    forged = await site.client.post("/chat/session", headers={HEADER: visitor + ".AAAA"})
    assert forged.json()["visitor"] != visitor
    r = await site.client.post("/chat/messages", json={"text": "hi"}, headers={HEADER: visitor + ".AAAA"})
    assert r.status_code == 401


# -- rate and size limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("site", [{"visitor_burst": 3, "visitor_rate_per_s": 0.5}], indirect=True)
async def test_a_visitor_beyond_their_burst_gets_429_with_retry_after_until_tokens_refill(site: Site) -> None:
    _, headers = await site.visitor()
    for i in range(3):
        r = await site.client.post("/chat/messages", json={"text": f"m{i}"}, headers=headers)
        assert r.status_code == 201, r.text
    r = await site.client.post("/chat/messages", json={"text": "too many"}, headers=headers)
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    _, other = await site.visitor()  # another visitor is not held back
    assert (
        await site.client.post("/chat/messages", json={"text": "hello"}, headers=other)
    ).status_code == 201
    site.world.clock.advance(2.0)
    assert (
        await site.client.post("/chat/messages", json={"text": "later"}, headers=headers)
    ).status_code == 201


@pytest.mark.parametrize("site", [{"ip_burst": 2, "ip_rate_per_s": 0.1}], indirect=True)
async def test_one_address_cannot_open_sessions_without_end(site: Site) -> None:
    await site.visitor()
    await site.visitor()
    r = await site.client.post("/chat/session")
    assert r.status_code == 429 and int(r.headers["retry-after"]) == 10


@pytest.mark.parametrize("site", [{"max_message_bytes": 512, "max_upload_bytes": 2048}], indirect=True)
async def test_oversize_bodies_are_refused_with_413(site: Site) -> None:
    _, headers = await site.visitor()
    r = await site.client.post("/chat/messages", json={"text": "x" * 600}, headers=headers)
    assert r.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the stream itself is counted
        yield PNG
        for _ in range(10):
            yield b"\x00" * 512

    r = await site.client.post("/chat/upload", content=chunks(), headers=headers)
    assert r.status_code == 413
    assert not list((site.gateway.uploads).glob("*"))  # nothing half-written left behind


# -- uploads -----------------------------------------------------------------------------------------------


def test_file_types_are_read_from_their_first_bytes() -> None:
    assert sniff(PNG) == "image/png"
    assert sniff(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert sniff(b"%PDF-1.7\n") == "application/pdf"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff(b"<html><script>alert(1)</script>") is None
    assert sniff(b"MZ\x90\x00") is None


async def test_an_upload_reaches_the_conversation_and_only_its_visitor_can_fetch_it(site: Site) -> None:
    _, headers = await site.visitor()
    r = await site.client.post(
        "/chat/upload", content=PNG, headers={**headers, "X-File-Name": "shot%201.png"}
    )
    assert r.status_code == 201, r.text
    entry = r.json()
    assert entry["kind"] == "image" and entry["text"] == "shot 1.png"
    url = entry["extra"]["url"]
    got = await site.client.get(url, headers=headers)
    assert got.status_code == 200 and got.content == PNG
    assert got.headers["content-type"] == "image/png" and got.headers["x-content-type-options"] == "nosniff"
    _, stranger = await site.visitor()
    assert (await site.client.get(url, headers=stranger)).status_code == 404
    assert (await site.client.get(url)).status_code == 404
    rows = await asyncio.to_thread(site.world.engine.store.messages, entry_conversation(site, headers))
    assert any(url in m.text for m in rows)  # the agent's view names the file


def entry_conversation(site: Site, headers: dict[str, str]) -> int:
    visitor = site.gateway.signer.verify(headers[HEADER])
    assert visitor is not None
    box = site.gateway._boxes[visitor]
    assert box.conversation_id is not None
    return box.conversation_id


async def test_a_page_named_like_an_image_is_refused(site: Site) -> None:
    _, headers = await site.visitor()
    r = await site.client.post(
        "/chat/upload",
        content=b"<html><script>alert(1)</script></html>",
        headers={**headers, "X-File-Name": "a.png"},
    )
    assert r.status_code == 415
    assert not list(site.gateway.uploads.glob("*.bin"))


# -- long-poll and history ---------------------------------------------------------------------------------


async def test_a_long_poll_returns_when_the_agent_replies(site: Site) -> None:
    world = site.world
    world.add_agent("al")
    _, headers = await site.visitor()
    await site.client.post("/chat/messages", json={"text": "hello"}, headers=headers)
    box = site.gateway._boxes[site.gateway.signer.verify(headers[HEADER]) or ""]
    await until(lambda: any("What can we do" in e["text"] for e in box.entries))
    await site.client.post("/chat/messages", json={"text": "1"}, headers=headers)  # billing → al
    await until(lambda: any("al has joined" in e["text"] for e in box.entries))
    last = box.seq

    poll = asyncio.create_task(site.client.get(f"/chat/poll?after={last}", headers=headers))
    await until(lambda: len(box.changed._waiters) > 0)
    assert not poll.done()
    conv = box.conversation_id
    assert conv is not None
    await world.engine.agent_reply(conv, "Hi, Al here <b>really</b>", agent="al", sender="al")
    r = await poll
    news = r.json()["messages"]
    assert [(m["from"], m["name"], m["text"]) for m in news] == [("agent", "al", "Hi, Al here <b>really</b>")]
    assert r.json()["last"] == last + 1


@pytest.mark.parametrize("site", [{"poll_wait_s": 0.01}], indirect=True)
async def test_a_long_poll_with_nothing_new_answers_empty(site: Site) -> None:
    _, headers = await site.visitor()
    r = await site.client.get("/chat/poll?after=0", headers=headers)
    assert r.status_code == 200 and r.json() == {"messages": [], "last": 0, "typing": False}


async def test_history_survives_a_new_gateway_without_duplicates(site: Site, tmp_path: Path) -> None:
    _, headers = await site.visitor()
    await site.client.post("/chat/messages", json={"text": "first"}, headers=headers)
    visitor = site.gateway.signer.verify(headers[HEADER]) or ""
    box = site.gateway._boxes[visitor]
    await until(lambda: any("What can we do" in e["text"] for e in box.entries))
    before = [(e["from"], e["text"]) for e in box.entries]

    fresh = WebchatGateway(WebchatSettings(), tmp_path / "data", clock=site.world.clock, secret=SECRET)
    fresh.attach(site.world.engine)  # e.g. the mailbox was evicted: read back from the store
    again = await fresh.box(visitor)
    assert [(e["from"], e["text"]) for e in again.entries] == before
    assert before[0] == ("visitor", "first") and ("bot", "Welcome to Acme.") in before


# -- origins, online, offline --------------------------------------------------------------------------------


@pytest.mark.parametrize("site", [{"allowed_origins": ["https://shop.example"]}], indirect=True)
async def test_only_allowed_sites_may_use_the_chat(site: Site) -> None:
    r = await site.client.post("/chat/session", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    r = await site.client.post("/chat/session", headers={"Origin": "https://shop.example"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://shop.example"
    assert r.headers["access-control-allow-credentials"] == "true"
    pre = await site.client.options("/chat/messages", headers={"Origin": "https://shop.example"})
    assert pre.status_code == 204 and "X-Chat-Visitor" in pre.headers["access-control-allow-headers"]
    assert (
        await site.client.options("/chat/messages", headers={"Origin": "https://evil.example"})
    ).status_code == 403
    own = await site.client.post("/chat/session", headers={"Origin": "http://chat.test"})
    assert own.status_code == 200


async def test_without_an_agent_the_widget_is_offline_and_the_form_files_a_ticket(site: Site) -> None:
    r = await site.client.post("/chat/session")
    assert r.json()["online"] is False
    body = {"name": "Eve <script>", "email": "eve@example.com", "message": "Call me back"}
    r = await site.client.post("/chat/offline", json=body)
    assert r.status_code == 201 and r.json()["ticket"] == "1"
    draft = site.tickets.drafts[0]
    assert "eve@example.com" in draft.body and "Call me back" in draft.body and "webchat" in draft.tags
    bad = await site.client.post("/chat/offline", json={**body, "email": "not-an-address"})
    assert bad.status_code == 422
    site.world.add_agent("al")  # logged in with the billing skill the flow's queue needs
    assert (await site.client.get("/chat/status")).json() == {"online": True}
