"""The sample hotline with its real backends: a voicemail becomes a ticket with the recording and the
conversation; a spoken question is answered from the knowledge base (the bilingual sample loaded on
first start). SIPp callers, real espeak-ng, Whisper tiny.en and SQLite."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from callcenter.media import g711
from callcenter.speech.tts import EspeakNgEngine
from callcenter.testing.pcap import Segment, write_rtp_pcap
from callcenter.testing.server import ServerProcess, StartServer
from callcenter.testing.sipp import pcap_caller_scenario, run_sipp

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sipp")]

CORPUS = Path(__file__).resolve().parents[1] / "speech" / "corpus" / "audio"


def quiet(seconds: float) -> Segment:
    return Segment(pcm=np.zeros(int(8000 * seconds), np.int16))


def call(
    server: ServerProcess, tmp_path: Path, segments: list[Segment], hangup_after_ms: int | None = None
) -> dict:  # type: ignore[type-arg]
    """One caller to the English hotline (100) who plays ``segments`` until the server hangs up (or
    hangs up ``hangup_after_ms`` after the answer)."""
    pcap = tmp_path / "caller.pcap"
    write_rtp_pcap(pcap, segments)
    result = run_sipp(
        f"127.0.0.1:{server.sip_port}",
        tmp_path / "sipp",
        scenario=str(pcap_caller_scenario(tmp_path, pcap, server_hangs_up=hangup_after_ms is None)),
        extra=["-d", str(hangup_after_ms)] if hangup_after_ms is not None else [],
        timeout_s=90,
    )
    assert result.successful == 1 and result.failed == 0, result.errors
    (record,) = server.new_calls(set(), 1, timeout=30)
    return dict(record)


def test_a_voicemail_becomes_one_ticket_with_the_recording_and_the_conversation(
    start_server: StartServer, tmp_path: Path
) -> None:
    message = g711.decode((CORPUS / "asterisk_conf-onlyone.ulaw").read_bytes(), "PCMU").astype(np.int16)
    server = start_server()
    record = call(
        server,
        tmp_path,
        # 9 while the welcome plays (type-ahead for the menu); the voicemail prompt and its beep; the
        # message; # to finish; the thanks, then the server hangs up.
        [
            quiet(1.5),
            Segment(digit="9"),
            quiet(9),
            Segment(pcm=message),
            quiet(1),
            Segment(digit="#"),
            quiet(15),
        ],
    )
    assert record["disposition"] == "voicemail" and record["ivr_path"][-2:] == [
        "voicemail",
        "voicemail_thanks",
    ]
    [voicemail] = record["voicemails"]
    tickets = json.loads(server.cli("tickets", "list", "--json").stdout)
    assert len(tickets) == 1, tickets  # the post-call policy updated the flow's ticket, no duplicate
    number = tickets[0]["number"]
    assert tickets[0]["subject"] == "Voicemail from caller" and tickets[0]["status"] == "new"
    detail = json.loads(server.cli("tickets", "show", str(number), "--json").stdout)
    [conversation] = detail["conversations"]
    assert conversation["call_id"] == record["sip_call_id"] and conversation["channel"] == "voice"
    assert conversation["recording"] == voicemail and Path(voicemail).is_file()
    said = " ".join(m["text"] for m in conversation["messages"] if m["speaker"] == "system").lower()
    assert "leave your name" in said  # the conversation holds what the caller heard, too


def test_a_spoken_question_is_answered_from_the_sample_knowledge_base(
    start_server: StartServer, tmp_path: Path
) -> None:
    engine = EspeakNgEngine()
    try:
        question = asyncio.run(engine.synthesize("How do I reset my password?", "en-us"))
    finally:
        engine.close()
    server = start_server()
    record = call(
        server,
        tmp_path,
        # 5 (ask a question) during the welcome; "Please ask your question."; the question; then the
        # caller listens to the answer for a while and hangs up.
        [quiet(1.5), Segment(digit="5"), quiet(4), Segment(pcm=np.asarray(question, np.int16)), quiet(30)],
        hangup_after_ms=25_000,
    )
    path = record["ivr_path"]
    assert "kb" in path, path
    asked = [u["text"].lower() for u in record["transcript"] if u["speaker"] == "caller"]
    assert any("password" in text for text in asked), record["transcript"]
    answers = [u["text"] for u in record["transcript"] if u["speaker"] == "system"]
    # The sample article on passwords was read to the caller (not the not-found apology).
    assert any(
        "password" in a.lower() and "reset" in a.lower()
        for a in answers[answers.index("Please ask your question.") + 1 :]
    ), answers
    assert not any("do not have an answer" in a for a in answers), answers
