"""Prompt upload (WAV checked by its header, converted to 8 kHz mono, safe names, size limit), listing,
playing, deleting and TTS preview: roles per route (401/403) and the admin's audit log."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from api_helpers import token_for
from fastapi import FastAPI
from fastapi.testclient import TestClient

from callcenter.api.access import Access
from callcenter.api.prompts import create_prompts_router, parse_wav_header
from callcenter.auth.service import UserService
from callcenter.media import g711
from callcenter.speech.base import SpeechError


def wav(rate: int = 16000, channels: int = 2, seconds: float = 0.5, width: int = 2) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    tone = (np.sin(2 * np.pi * 440 * t) * 12000).astype("<i2")
    frames = np.repeat(tone[:, None], channels, axis=1)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames.astype("<i2").tobytes() if width == 2 else bytes(len(t) * channels * width))
    return buf.getvalue()


def alaw_wav(rate: int = 8000, seconds: float = 1.0) -> bytes:
    body = g711.alaw_encode(np.zeros(int(rate * seconds), dtype=np.int16))
    fmt = (6).to_bytes(2, "little") + (1).to_bytes(2, "little") + rate.to_bytes(4, "little")
    fmt += rate.to_bytes(4, "little") + (1).to_bytes(2, "little") + (8).to_bytes(2, "little") + b"\x00\x00"
    chunks = b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data" + len(body).to_bytes(4, "little") + body
    return b"RIFF" + (4 + len(chunks)).to_bytes(4, "little") + b"WAVE" + chunks


class FakeTts:
    name = "fake"
    version = "1"

    def __init__(self) -> None:
        self.said: list[tuple[str, str]] = []

    async def synthesize(self, text: str, voice: str, rate: float = 1.0, pitch: float = 1.0) -> np.ndarray:
        if voice == "xx":
            raise SpeechError(f"espeak-ng: unknown voice {voice!r}")
        self.said.append((text, voice))
        return np.zeros(800, dtype=np.int16)

    async def aclose(self) -> None:
        return None


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "flows" / "prompts"


@pytest.fixture
def tts() -> FakeTts:
    return FakeTts()


@pytest.fixture
def client(access: Access, folder: Path, tts: FakeTts) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(create_prompts_router(access, folder, tts=tts, max_bytes=200_000))
    with TestClient(app) as c:
        yield c


def bearer(users: UserService, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(users, name)}"}


def upload(client: TestClient, headers: dict[str, str], data: bytes, filename: str = "welcome.wav",
           **form: str) -> Any:  # fmt: skip
    return client.post(
        "/api/prompts", headers=headers, files={"file": (filename, data, "audio/wav")}, data=form
    )


def test_an_upload_is_stored_as_8k_mono_and_listed(
    client: TestClient, users: UserService, folder: Path
) -> None:
    admin = bearer(users, "ann")
    r = upload(client, admin, wav(rate=16000, channels=2, seconds=0.5), filename="Welcome Message.WAV")
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "welcome-message.wav" and r.json()["file"] == "prompts/welcome-message.wav"
    with wave.open(str(folder / "welcome-message.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert abs(w.getnframes() - 4000) <= 8
    listed = client.get("/api/prompts", headers=bearer(users, "sue")).json()
    assert [(p["name"], p["format"]) for p in listed] == [
        ("welcome-message.wav", "PCM 16-bit, 8000 Hz, mono")
    ]
    assert listed[0]["duration_s"] == pytest.approx(0.5, abs=0.01)
    played = client.get("/api/prompts/welcome-message.wav", headers=bearer(users, "sue"))
    assert played.status_code == 200 and played.headers["content-type"] == "audio/wav"
    assert played.content == (folder / "welcome-message.wav").read_bytes()
    audit = users.audit_log(10, "prompt_uploaded")
    assert [(e.actor, e.target) for e in audit] == [("ann", "welcome-message.wav")]
    assert "16000 Hz" in audit[0].detail["source"]


def test_g711_is_accepted_and_a_name_field_wins(client: TestClient, users: UserService) -> None:
    r = upload(client, bearer(users, "ann"), alaw_wav(seconds=1.0), filename="x.bin", name="closed_hours")
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "closed_hours.wav" and r.json()["duration_s"] == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"ID3\x04" + b"\x00" * 100, "no RIFF/WAVE header"),  # an MP3 named .wav
        (wav(width=1), "unsupported encoding"),  # 8-bit PCM
        (b"RIFF\x04\x00\x00\x00WAVE", "no fmt chunk"),
    ],
)
def test_a_file_that_is_not_a_usable_wav_is_refused_with_the_reason(
    client: TestClient, users: UserService, folder: Path, data: bytes, why: str
) -> None:
    r = upload(client, bearer(users, "ann"), data, filename="song.wav")
    assert r.status_code == 422 and why in r.json()["detail"]
    assert not folder.exists() or not any(folder.iterdir())


def test_too_big_is_413_and_an_existing_name_409_unless_overwrite(
    client: TestClient, users: UserService
) -> None:
    admin = bearer(users, "ann")
    assert upload(client, admin, wav(rate=48000, channels=2, seconds=2.0)).status_code == 413
    assert upload(client, admin, wav()).status_code == 201
    assert upload(client, admin, wav()).status_code == 409
    r = client.post("/api/prompts", params={"overwrite": "true"}, headers=admin,
                    files={"file": ("welcome.wav", wav(seconds=1.0), "audio/wav")})  # fmt: skip
    assert r.status_code == 201 and r.json()["duration_s"] == pytest.approx(1.0, abs=0.01)


def test_names_never_leave_the_prompts_folder(
    client: TestClient, users: UserService, folder: Path, tmp_path: Path
) -> None:
    admin = bearer(users, "ann")
    r = upload(client, admin, wav(), filename="../../etc/evil.wav")
    assert r.status_code == 201 and r.json()["name"] == "evil.wav" and (folder / "evil.wav").is_file()
    assert upload(client, admin, wav(), filename="../..").status_code == 422
    (tmp_path / "secret.wav").write_bytes(b"secret")
    (folder / "link.wav").symlink_to(tmp_path / "secret.wav")
    for probe in ("link.wav", "..%2Fsecret.wav", "%2e%2e%2fsecret.wav", "Evil.wav"):
        assert client.get(f"/api/prompts/{probe}", headers=admin).status_code == 404
        assert client.delete(f"/api/prompts/{probe}", headers=admin).status_code == 404
    assert (tmp_path / "secret.wav").exists()


def test_delete(client: TestClient, users: UserService, folder: Path) -> None:
    admin = bearer(users, "ann")
    upload(client, admin, wav())
    assert client.delete("/api/prompts/welcome.wav", headers=bearer(users, "sue")).status_code == 403
    assert client.delete("/api/prompts/welcome.wav", headers=admin).status_code == 200
    assert not (folder / "welcome.wav").exists()
    assert client.get("/api/prompts", headers=admin).json() == []
    assert [e.target for e in users.audit_log(10, "prompt_deleted")] == ["welcome.wav"]


def test_tts_preview_plays_the_ivr_voice(client: TestClient, users: UserService, tts: FakeTts) -> None:
    r = client.post(
        "/api/tts/preview", json={"text": "Hello there", "language": "en-US"}, headers=bearer(users, "sue")
    )
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(r.content)) as w:
        assert (w.getframerate(), w.getnframes()) == (8000, 800)
    client.post("/api/tts/preview", json={"text": "你好", "language": "zh-CN"}, headers=bearer(users, "ann"))
    assert tts.said == [("Hello there", "en-us"), ("你好", "cmn")]
    unknown = client.post(
        "/api/tts/preview", json={"text": "hi", "language": "xx"}, headers=bearer(users, "ann")
    )
    assert unknown.status_code == 422 and "xx" in unknown.json()["detail"]
    bad = client.post(
        "/api/tts/preview", json={"text": "hi", "language": "not a language"}, headers=bearer(users, "ann")
    )
    assert bad.status_code == 422
    long = client.post(
        "/api/tts/preview", json={"text": "a" * 501, "language": "en"}, headers=bearer(users, "ann")
    )
    assert long.status_code == 422


@pytest.mark.parametrize(
    ("method", "path", "writes"),
    [
        ("GET", "/api/prompts", False),
        ("POST", "/api/prompts", True),
        ("GET", "/api/prompts/welcome.wav", False),
        ("DELETE", "/api/prompts/welcome.wav", True),
        ("POST", "/api/tts/preview", False),
    ],
)
def test_roles_per_route(
    client: TestClient, users: UserService, method: str, path: str, writes: bool
) -> None:
    kwargs: dict[str, object] = {}
    if path == "/api/tts/preview":
        kwargs["json"] = {"text": "hi", "language": "en"}
    elif method == "POST":
        kwargs["files"] = {"file": ("welcome.wav", wav(), "audio/wav")}
    assert client.request(method, path, **kwargs).status_code == 401  # type: ignore[arg-type]
    assert client.request(method, path, headers=bearer(users, "al"), **kwargs).status_code == 403  # type: ignore[arg-type]
    sup = client.request(method, path, headers=bearer(users, "sue"), **kwargs)  # type: ignore[arg-type]
    assert (sup.status_code == 403) == writes


def test_the_header_parser_reads_extensible_and_streamed_sizes() -> None:
    data = bytearray(alaw_wav(seconds=0.25))
    at = data.index(b"data") + 4
    data[at : at + 4] = b"\xff\xff\xff\xff"  # a streamed file: data size unknown
    info = parse_wav_header(bytes(data))
    assert info.format == "G.711 A-law" and info.duration == pytest.approx(0.25)
