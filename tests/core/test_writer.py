from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlmodel import SQLModel

from callcenter.store import CallRecordWriter, Store, call_public

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'cc.db'}")
    s.create_all()
    return s


@pytest.fixture
def writer(store: Store) -> Iterator[CallRecordWriter]:
    w = CallRecordWriter(store)
    w.start()
    yield w
    w.stop()


def test_lifecycle_across_batches(store: Store, writer: CallRecordWriter) -> None:
    writer.call_started("c1@host", "sip:alice@a.example", "sip:100@cc.example", T0)
    assert writer.flush(10)
    (rec,) = store.list_calls(10)
    assert (rec.answered_at, rec.ended_at, rec.disposition) == (None, None, None)
    writer.call_answered("c1@host", T0 + timedelta(seconds=1))
    assert writer.flush(10)
    writer.call_ended("c1@host", T0 + timedelta(seconds=9), "caller", "answered")
    assert writer.flush(10)
    assert call_public(store.list_calls(10)[0]) == {
        "sip_call_id": "c1@host",
        "from": "sip:alice@a.example",
        "to": "sip:100@cc.example",
        "started_at": "2025-03-01T12:00:00+00:00",
        "answered_at": "2025-03-01T12:00:01+00:00",
        "ended_at": "2025-03-01T12:00:09+00:00",
        "hangup_by": "caller",
        "disposition": "answered",
    }


def test_whole_call_in_one_batch(store: Store, writer: CallRecordWriter) -> None:
    writer.call_started("c2", "sip:a@x", "sip:b@y", T0)
    writer.call_ended("c2", T0 + timedelta(seconds=2), "caller", "cancelled")
    assert writer.flush(10)
    rec = store.get_call("c2")
    assert rec is not None
    assert (rec.answered_at, rec.hangup_by, rec.disposition) == (None, "caller", "cancelled")


def test_many_calls_latest_first(store: Store, writer: CallRecordWriter) -> None:
    for i in range(1500):
        writer.call_started(f"call-{i}", "sip:a@x", "sip:b@y", T0 + timedelta(milliseconds=i))
        writer.call_answered(f"call-{i}", T0 + timedelta(milliseconds=i + 1))
    for i in range(1500):
        writer.call_ended(f"call-{i}", T0 + timedelta(seconds=5), "server", "answered")
    assert writer.flush(30)
    calls = store.list_calls(2000)
    assert len(calls) == 1500
    assert [c.sip_call_id for c in calls[:2]] == ["call-1499", "call-1498"]
    assert all(c.hangup_by == "server" and c.answered_at is not None for c in calls)
    assert len(store.list_calls(3)) == 3


def test_first_answer_and_first_end_win(store: Store, writer: CallRecordWriter) -> None:
    writer.call_started("c3", "sip:a@x", "sip:b@y", T0)
    writer.call_answered("c3", T0 + timedelta(seconds=1))
    writer.flush(10)
    writer.call_answered("c3", T0 + timedelta(seconds=5))  # a re-INVITE does not move it
    writer.call_ended("c3", T0 + timedelta(seconds=6), "agent", "answered")
    writer.call_ended("c3", T0 + timedelta(seconds=7), "server", "timeout")
    writer.flush(10)
    rec = store.get_call("c3")
    assert rec is not None
    assert rec.answered_at == T0 + timedelta(seconds=1)
    assert (rec.ended_at, rec.hangup_by) == (T0 + timedelta(seconds=6), "agent")


def test_times_in_other_zones_are_stored_as_the_same_instant(store: Store, writer: CallRecordWriter) -> None:
    seoul = timezone(timedelta(hours=9))
    writer.call_started("c4", "sip:a@x", "sip:b@y", T0.astimezone(seoul))
    writer.flush(10)
    writer.call_answered("c4", (T0 + timedelta(seconds=3)).astimezone(seoul))  # the update path
    writer.flush(10)
    rec = store.get_call("c4")
    assert rec is not None
    assert rec.started_at == T0 and rec.started_at.utcoffset() == timedelta(0)
    assert call_public(rec)["answered_at"] == "2025-03-01T12:00:03+00:00"


def test_extra_fields_merge_and_show_in_the_public_view(store: Store, writer: CallRecordWriter) -> None:
    writer.call_started("c5", "sip:a@x", "sip:b@y", T0)
    writer.call_extra("c5", {"rtp_lost": 0})
    writer.flush(10)
    writer.call_extra("c5", {"recording": "data/rec/c5.wav"})
    writer.flush(10)
    public = call_public(store.get_call("c5"))  # type: ignore[arg-type]
    assert public["rtp_lost"] == 0 and public["recording"] == "data/rec/c5.wav"


def test_update_for_unknown_call_is_logged_and_others_still_written(
    store: Store, writer: CallRecordWriter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="callcenter.store.writer")
    writer.call_ended("never-started", T0, "caller", "answered")
    writer.call_started("c6", "sip:a@x", "sip:b@y", T0)
    writer.flush(10)
    assert [c.sip_call_id for c in store.list_calls(10)] == ["c6"]
    assert any(getattr(r, "cc_event", None) == "callrecord.unknown_call" for r in caplog.records)


def test_stop_writes_what_is_queued(store: Store) -> None:
    writer = CallRecordWriter(store)
    writer.call_started("c7", "sip:a@x", "sip:b@y", T0)  # queued before start: kept
    writer.start()
    writer.call_ended("c7", T0 + timedelta(seconds=1), None, "failed")
    writer.stop()
    rec = store.get_call("c7")
    assert rec is not None and rec.disposition == "failed" and rec.hangup_by is None


def test_flush_needs_a_running_writer(store: Store) -> None:
    with pytest.raises(RuntimeError):
        CallRecordWriter(store).flush(1)


def test_a_failed_batch_does_not_kill_the_writer(store: Store, writer: CallRecordWriter) -> None:
    SQLModel.metadata.drop_all(store.engine)
    writer.call_started("lost", "sip:a@x", "sip:b@y", T0)
    assert writer.flush(30)
    assert writer.failed_batches == 1
    store.create_all()
    writer.call_started("kept", "sip:a@x", "sip:b@y", T0)
    assert writer.flush(30)
    assert [c.sip_call_id for c in store.list_calls(10)] == ["kept"]


def test_bytes_from_the_wire_that_are_not_utf8_are_stored_as_replacement_characters(
    store: Store, writer: CallRecordWriter
) -> None:
    # The SIP parser keeps undecodable bytes as lone surrogates (surrogateescape).
    bad_from = b'"\xc0\xff" <sip:x@a.example>'.decode("utf-8", "surrogateescape")
    writer.call_started("c3", bad_from, "sip:100@cc.example\x00", T0)
    writer.call_started("c4", "sip:ok@a.example", "sip:100@cc.example", T0)  # same batch
    writer.call_extra("c3", {"caller_name": bad_from, "path": [bad_from]})
    writer.call_ended("c3", T0 + timedelta(seconds=1), "caller", "abandoned")
    assert writer.flush(10)
    rec = store.get_call("c3")
    assert rec is not None and rec.from_uri == '"\ufffd\ufffd" <sip:x@a.example>'
    assert rec.to_uri == "sip:100@cc.example" and rec.disposition == "abandoned"
    assert rec.extra["path"] == ['"\ufffd\ufffd" <sip:x@a.example>']
    assert store.get_call("c4") is not None


def test_a_call_the_database_refuses_loses_only_its_own_record(
    store: Store, writer: CallRecordWriter
) -> None:
    writer.call_started("good-1", "sip:a@x", "sip:b@y", T0)
    writer.call_started("bad", "sip:a@x", "sip:b@y", T0)
    writer.call_extra("bad", {"not_json": object()})  # cannot be serialised: the insert of its row fails
    writer.call_started("good-2", "sip:a@x", "sip:b@y", T0)
    assert writer.flush(10)
    assert store.get_call("good-1") is not None and store.get_call("good-2") is not None
    assert store.get_call("bad") is None and writer.failed_batches == 1
