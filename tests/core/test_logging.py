from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from callcenter.core.logging import log_event, setup_logging

log = logging.getLogger("callcenter.test")


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_event_is_one_line_with_call_id_and_fields() -> None:
    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    log_event(
        log,
        "call.answered",
        call_id="a84b4c76e66710@pc33",
        from_uri="sip:bob@example.com",
        codecs=["PCMU"],
        path=Path("/x"),
    )
    (line,) = lines(out)
    record = json.loads(line)
    assert record["event"] == "call.answered"
    assert record["call_id"] == "a84b4c76e66710@pc33"
    assert record["level"] == "info"
    assert record["ts"].endswith("Z")
    assert record["from_uri"] == "sip:bob@example.com"
    assert record["codecs"] == ["PCMU"]
    assert record["path"] == "/x"  # not JSON-native: written as its str()
    assert list(record)[:4] == ["ts", "level", "event", "call_id"]


def test_disabled_level_writes_nothing() -> None:
    out = io.StringIO()
    setup_logging("warning", "json", stream=out)
    log_event(log, "sip.received", call_id="x")
    log_event(log, "sip.received", level=logging.DEBUG)
    log_event(log, "port.exhausted", level=logging.WARNING)
    assert [json.loads(x)["event"] for x in lines(out)] == ["port.exhausted"]


def test_plain_library_records_and_tracebacks_stay_one_line() -> None:
    out = io.StringIO()
    setup_logging("debug", "json", stream=out)
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        log_event(log, "call.crashed", call_id="c1", level=logging.ERROR, exc_info=True)
    first, second = (json.loads(x) for x in lines(out))
    assert first["event"] == "log" and first["msg"] == "Started server process [42]"
    assert first["logger"] == "uvicorn.error"
    assert second["event"] == "call.crashed" and "RuntimeError: boom" in second["exc"]


def test_field_named_like_a_core_key_does_not_clobber_it() -> None:
    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    log_event(log, "e", ts="mine")
    record = json.loads(lines(out)[0])
    assert record["ts"] != "mine" and record["field_ts"] == "mine"


def test_text_format() -> None:
    out = io.StringIO()
    setup_logging("info", "text", stream=out)
    log_event(log, "call.ended", call_id="c1", hangup_by="caller", reason="Normal clearing")
    log_event(log, "server.started")
    first, second = lines(out)
    assert first.split(" ", 1)[1] == 'INFO    call.ended call_id=c1 hangup_by=caller reason="Normal clearing"'
    assert second.endswith("INFO    server.started")


def test_setup_twice_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("info", "json", stream=first)
    setup_logging("info", "json", stream=second)
    log_event(log, "once")
    assert lines(first) == [] and len(lines(second)) == 1
