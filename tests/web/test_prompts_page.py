"""The prompts page (/admin/prompts) in Chromium: an admin uploads a WAV, sees it listed with its
duration, plays it (the <audio> element loads it: its duration becomes known), deletes it and hears a
TTS preview; a supervisor sees and plays but cannot upload or delete; an agent is sent away."""

from __future__ import annotations

import io
import re
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

FLOW = """\
id: hello
language: en-US
start: hi
nodes:
  hi: {type: say, text: Hello., next: bye}
  bye: {type: hangup}
"""
LOADED = "id => { const a = document.getElementById(id); return a.src !== '' && a.duration > 0; }"


def start(start_web: Any, tmp_path: Path) -> Any:
    """A server whose flows folder (so its prompts/) is the test's own, not the checkout's ivr_flows."""
    flows = tmp_path / "flows"
    flows.mkdir()
    # A number with a flow: without one the IVR (and its TTS engine, which the preview uses) is off.
    (flows / "hello.yaml").write_text(FLOW)
    return start_web(config=f'ivr:\n  flows_dir: {flows}\n  numbers: {{"100": hello}}\n')


def stereo_wav(seconds: float, rate: int = 16000) -> bytes:
    """A 16-bit stereo WAV at 16 kHz (the server stores it as 8 kHz mono)."""
    t = np.arange(int(seconds * rate)) / rate
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.column_stack([tone, tone]).tobytes())
    return out.getvalue()


def test_an_admin_uploads_plays_and_deletes_a_prompt_and_hears_a_tts_preview(
    start_web: Any, new_page: Any, log_in: Any, tmp_path: Path
) -> None:
    server = start(start_web, tmp_path)
    page = new_page(server)
    log_in(page, "ada", path="/admin/prompts")
    expect(page).to_have_url(re.compile("/admin/prompts$"))
    expect(page.locator("#no-prompts")).to_be_visible()

    wav = tmp_path / "Welcome Message.WAV"
    wav.write_bytes(stereo_wav(1.5))
    page.set_input_files("#prompt-file", str(wav))
    page.click("#upload-button")
    expect(page.locator("#upload-status")).to_contain_text("Stored welcome-message.wav (1.5 s")
    row = page.locator('#prompts tr[data-name="welcome-message.wav"]')
    expect(row.locator(".duration")).to_have_text("1.5 s")
    expect(row.locator(".format")).to_have_text("PCM 16-bit, 8000 Hz, mono")
    expect(page.locator("#no-prompts")).to_be_hidden()

    row.locator("button.play").click()
    page.wait_for_function(LOADED, arg="player")
    assert page.evaluate("document.getElementById('player').duration") == pytest.approx(1.5, abs=0.05)
    fetched = page.request.get("/api/prompts/welcome-message.wav")
    assert fetched.status == 200 and fetched.headers["content-type"] == "audio/wav"

    # The same name again is refused (no silent overwrite) and the reason is shown.
    page.set_input_files("#prompt-file", str(wav))
    page.click("#upload-button")
    refused = "Upload refused: a prompt 'welcome-message.wav' exists"
    expect(page.locator("#upload-status")).to_contain_text(refused)
    # Not a WAV: the reason is shown, nothing is added.
    junk = tmp_path / "notes.wav"
    junk.write_bytes(b"this is text, not audio")
    page.set_input_files("#prompt-file", str(junk))
    page.click("#upload-button")
    expect(page.locator("#upload-status")).to_contain_text("not a WAV file")
    expect(page.locator("#prompts tbody tr")).to_have_count(1)

    row.locator("button.delete").click()
    expect(page.locator("#prompts tbody tr")).to_have_count(0)
    expect(page.locator("#no-prompts")).to_be_visible()
    assert page.request.get("/api/prompts").json() == []
    assert page.request.get("/api/prompts/welcome-message.wav").status == 404
    assert not any((tmp_path / "flows" / "prompts").iterdir())

    page.fill("#preview-text", "Thank you for calling.")
    page.click("#preview-button")
    expect(page.locator("#preview-status")).to_contain_text("Ready")
    page.wait_for_function(LOADED, arg="preview-player")
    assert page.evaluate("document.getElementById('preview-player').duration") > 0.5
    # A language no voice speaks: the page says why instead of playing nothing.
    page.fill("#preview-language", "xx-XX")
    page.click("#preview-button")
    expect(page.locator("#preview-status")).to_contain_text("Preview failed")


def test_a_supervisor_plays_prompts_but_cannot_change_them_and_an_agent_is_sent_away(
    start_web: Any, new_page: Any, log_in: Any, tmp_path: Path
) -> None:
    server = start(start_web, tmp_path)
    admin = new_page(server)
    log_in(admin, "ada", path="/admin/prompts")
    expect(admin).to_have_url(re.compile("/admin/prompts$"))
    wav = tmp_path / "hold.wav"
    wav.write_bytes(stereo_wav(1.0))
    admin.set_input_files("#prompt-file", str(wav))
    admin.click("#upload-button")
    expect(admin.locator('#prompts tr[data-name="hold.wav"]')).to_have_count(1)
    assert (tmp_path / "flows" / "prompts" / "hold.wav").is_file()  # where flows find it

    sue = new_page(server)
    log_in(sue, "sue")
    expect(sue).to_have_url(re.compile("/wallboard$"))
    sue.goto("/admin/prompts")
    row = sue.locator('#prompts tr[data-name="hold.wav"]')
    expect(row.locator(".duration")).to_have_text("1.0 s")
    expect(sue.locator("#upload-section")).to_be_hidden()
    expect(row.locator("button.delete")).to_have_count(0)
    row.locator("button.play").click()
    sue.wait_for_function(LOADED, arg="player")
    # The API refuses what the page does not offer.
    assert sue.request.delete("/api/prompts/hold.wav").status == 403
    refused = sue.request.post(
        "/api/prompts",
        multipart={"file": {"name": "x.wav", "mimeType": "audio/wav", "buffer": stereo_wav(0.5)}},
    )
    assert refused.status == 403

    sam = new_page(server)
    log_in(sam, "sam")
    expect(sam).to_have_url(re.compile("/agent$"))
    sam.goto("/admin/prompts")
    expect(sam).to_have_url(re.compile(r"/\?next=/admin/prompts&why=role$"))
    expect(sam.locator("#notice")).to_contain_text("that page needs another role")
    assert sam.request.get("/api/prompts").status == 403
