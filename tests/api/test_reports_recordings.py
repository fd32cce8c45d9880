"""GET /api/reports/queues, GET /api/calls (past calls) and GET /api/recordings/{call_id}: roles
(401/403), filters, and that a recording outside the recordings folder is never served."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_helpers import add_call, at, token_for
from fastapi import FastAPI
from fastapi.testclient import TestClient

from callcenter.api.access import Access
from callcenter.api.recordings import create_recordings_router
from callcenter.api.reports import create_reports_router
from callcenter.auth.service import UserService
from callcenter.store import Store

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 28


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "recordings" / "2025-05-01"
    folder.mkdir(parents=True)
    return folder.parent


@pytest.fixture
def client(store: Store, access: Access, recordings: Path) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(create_reports_router(store, access, sl_by_queue={"sales": 20.0, "support": 30.0}))
    app.include_router(create_recordings_router(store, access, recordings))
    with TestClient(app) as c:
        yield c


@pytest.fixture
def calls(store: Store, recordings: Path, tmp_path: Path) -> None:
    day = recordings / "2025-05-01"
    (day / "c1.wav").write_bytes(WAV)
    (day / "c2.wav").write_bytes(WAV)
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"not yours")
    (day / "link.wav").symlink_to(secret)
    visit = {"queue": "sales", "disposition": "answered", "wait_s": 5.0, "talk_s": 60.0}
    add_call(store, "c1", at("2025-05-01T09:00:00"), queue="sales", agent="al", agents=["al"],
             queue_visits=[visit], wait_s=5.0, talk_s=60.0, recording=str(day / "c1.wav"),
             transcript=[{"speaker": "caller", "text": "my card number is"}])  # fmt: skip
    add_call(store, "c2", at("2025-05-01T10:00:00"), queue="support", agent="bo", agents=["bo"],
             wait_s=40.0, talk_s=30.0, recording=str(day / "c2.wav"))  # fmt: skip
    add_call(store, "c3", at("2025-05-01T11:00:00"), queue="sales", disposition="abandoned", wait_s=12.0)
    add_call(store, "c4", at("2025-05-02T08:00:00"), queue="sales", agent="al", agents=["al"],
             recording=str(secret))  # fmt: skip
    add_call(
        store, "c5", at("2025-05-02T09:00:00"), agent="al", agents=["al"], recording=str(day / "link.wav")
    )
    add_call(store, "live", at("2025-05-02T10:00:00"), agent="al", agents=["al"],
             recording=str(day / "c1.wav"), ended_at=None)  # fmt: skip


def bearer(users: UserService, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(users, name)}"}


@pytest.mark.usefixtures("calls")
def test_queue_report_for_a_period(client: TestClient, users: UserService) -> None:
    r = client.get(
        "/api/reports/queues",
        params={"since": "2025-05-01", "until": "2025-05-01"},
        headers=bearer(users, "sue"),
    )
    assert r.status_code == 200
    body = r.json()
    assert body["since"] == "2025-05-01T00:00:00+00:00" and body["until"] == "2025-05-02T00:00:00+00:00"
    by_queue = {q["queue"]: q for q in body["queues"]}
    assert by_queue["sales"]["offered"] == 2 and by_queue["sales"]["answered"] == 1
    assert by_queue["sales"]["abandoned"] == 1 and by_queue["sales"]["service_level"] == 0.5
    assert (
        by_queue["support"]["answered"] == 1 and by_queue["support"]["answered_within_sl"] == 0
    )  # 40 s > 30


@pytest.mark.usefixtures("calls")
def test_queue_report_roles_and_bad_dates(client: TestClient, users: UserService) -> None:
    assert client.get("/api/reports/queues").status_code == 401
    assert client.get("/api/reports/queues", headers=bearer(users, "al")).status_code == 403
    r = client.get("/api/reports/queues", params={"since": "yesterday"}, headers=bearer(users, "ann"))
    assert r.status_code == 422 and "since" in r.json()["detail"]


@pytest.mark.usefixtures("calls")
def test_past_calls_newest_first_with_filters(client: TestClient, users: UserService) -> None:
    sup = bearer(users, "sue")
    everything = client.get("/api/calls", headers=sup).json()
    assert [c["sip_call_id"] for c in everything] == ["live", "c5", "c4", "c3", "c2", "c1"]
    assert all("transcript" not in c for c in everything)  # GET /api/calls/{id} has it
    sales = client.get("/api/calls", params={"queue": "sales", "until": "2025-05-01"}, headers=sup).json()
    assert [c["sip_call_id"] for c in sales] == ["c3", "c1"]
    bos = client.get("/api/calls", params={"agent": "bo"}, headers=sup).json()
    assert [c["sip_call_id"] for c in bos] == ["c2"]
    two = client.get("/api/calls", params={"limit": 2, "since": "2025-05-01T09:30:00Z"}, headers=sup).json()
    assert [c["sip_call_id"] for c in two] == ["live", "c5"]
    assert client.get("/api/calls", params={"limit": 0}, headers=sup).status_code == 422


@pytest.mark.usefixtures("calls")
def test_an_agent_lists_only_their_own_calls(client: TestClient, users: UserService) -> None:
    assert client.get("/api/calls").status_code == 401
    al = bearer(users, "al")
    assert [c["sip_call_id"] for c in client.get("/api/calls", headers=al).json()] == [
        "live",
        "c5",
        "c4",
        "c1",
    ]
    assert client.get("/api/calls", params={"agent": "bo"}, headers=al).status_code == 403


@pytest.mark.usefixtures("calls")
def test_recording_download_by_role(client: TestClient, users: UserService) -> None:
    assert client.get("/api/recordings/c1").status_code == 401
    r = client.get("/api/recordings/c1", headers=bearer(users, "sue"))
    assert r.status_code == 200 and r.content == WAV and r.headers["content-type"] == "audio/wav"
    assert 'filename="c1.wav"' in r.headers["content-disposition"]
    assert client.get("/api/recordings/c1", headers=bearer(users, "al")).status_code == 200  # al's call
    assert client.get("/api/recordings/c2", headers=bearer(users, "al")).status_code == 403  # bo's
    assert client.get("/api/recordings/c3", headers=bearer(users, "ann")).status_code == 404  # not recorded
    assert client.get("/api/recordings/nope", headers=bearer(users, "ann")).status_code == 404
    assert client.get("/api/recordings/live", headers=bearer(users, "ann")).status_code == 409
    audit = users.audit_log(10, "recording_downloaded")
    assert [(e.actor, e.target) for e in audit] == [("al", "c1"), ("sue", "c1")]


@pytest.mark.usefixtures("calls")
def test_no_file_outside_the_recordings_folder_is_ever_served(client: TestClient, users: UserService) -> None:
    admin = bearer(users, "ann")
    assert client.get("/api/recordings/c4", headers=admin).status_code == 404  # stored path outside
    assert client.get("/api/recordings/c5", headers=admin).status_code == 404  # symlink pointing out
    for probe in ("..%2F..%2Fsecret.wav", "../../secret", "%2e%2e/%2e%2e/etc/passwd"):
        r = client.get(f"/api/recordings/{probe}", headers=admin)
        assert r.status_code == 404 and r.content != b"not yours"
