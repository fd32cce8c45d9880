"""Queue statistics and CSV export from call records: the pure computation, the batched query, the CLI."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from callcenter.cli import app
from callcenter.store import CallRecordWriter, Store
from callcenter.store.reports import (
    CSV_COLUMNS,
    count_calls,
    csv_row,
    iter_calls,
    parse_when,
    queue_stats,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TIES = ["tie-0", "tie-1", "tie-2", "tie-3", "tie-4"]
runner = CliRunner()


def visit(queue: str, disposition: str, wait_s: float, talk_s: float = 0.0, agent: str | None = None) -> Any:
    return {
        "queue": queue,
        "agent": agent,
        "offered_agents": [agent] if agent else [],
        "wait_s": wait_s,
        "talk_s": talk_s,
        "disposition": disposition,
    }


def record(disposition: str, *visits: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A call record as `calls list --json` shows it; the call-level fields follow its visits."""
    out: dict[str, Any] = {"sip_call_id": "x", "disposition": disposition, **extra}
    if visits:
        answered = next((v for v in visits if v["disposition"] == "answered"), None)
        out.setdefault("queue", (answered or visits[-1])["queue"])
        out.setdefault("queue_visits", list(visits))
    return out


# -- the pure computation -----------------------------------------------------------------------------


def test_outcomes_service_level_asa_aht_and_longest_wait() -> None:
    records = [
        record("answered", visit("sales", "answered", 5, 100, "alice")),
        record("answered", visit("sales", "answered", 20, 200, "bob")),  # exactly the threshold: within
        record("answered", visit("sales", "answered", 30, 60, "alice")),
        record("abandoned", visit("sales", "abandoned", 3)),
        record("abandoned", visit("sales", "abandoned", 45)),
    ]
    sales = queue_stats(records)["sales"]
    assert (sales.offered, sales.answered, sales.abandoned, sales.overflowed) == (5, 3, 2, 0)
    # 2 answered within 20 s out of 3 answered + 2 abandoned (the 3-second abandon counts too).
    assert sales.answered_within_sl == 2 and sales.service_level == pytest.approx(0.4)
    assert sales.asa_s == pytest.approx((5 + 20 + 30) / 3)
    assert sales.aht_s == pytest.approx((100 + 200 + 60) / 3)
    assert sales.longest_wait_s == 45
    shown = sales.as_json()
    assert shown["service_level"] == 0.4 and shown["asa_s"] == 18.33 and shown["aht_s"] == 120.0


def test_the_threshold_can_be_set_overall_and_per_queue() -> None:
    records = [
        record("answered", visit("sales", "answered", 15, 10)),
        record("answered", visit("support", "answered", 15, 10)),
    ]
    assert queue_stats(records, sl_seconds=10)["sales"].service_level == 0.0
    by_queue = queue_stats(records, sl_seconds=10, sl_by_queue={"support": 30})
    assert by_queue["sales"].service_level == 0.0 and by_queue["support"].service_level == 1.0
    assert by_queue["support"].sl_seconds == 30


def test_an_overflow_counts_in_both_queues_with_each_queues_own_wait() -> None:
    call = record(
        "answered",
        visit("sales", "overflowed", 60),
        visit("general", "answered", 8, 90, "carol"),
        wait_s=68,  # the call's total wait: not what either queue is judged on
    )
    stats = queue_stats([call])
    assert (stats["sales"].offered, stats["sales"].overflowed, stats["sales"].answered) == (1, 1, 0)
    assert stats["sales"].service_level is None  # overflowed callers are outside service level
    assert (stats["general"].offered, stats["general"].answered) == (1, 1)
    assert stats["general"].asa_s == 8 and stats["general"].service_level == 1.0
    assert stats["sales"].longest_wait_s == 60


def test_voicemail_and_callback_after_an_overflow_are_their_own_outcome() -> None:
    records = [
        record("voicemail", visit("billing", "overflowed", 120)),
        record("callback", visit("billing", "overflowed", 30)),
        record("overflowed", visit("billing", "overflowed", 120)),
        # Voicemail after overflowing sales into billing: sales overflowed, billing took the message.
        record("voicemail", visit("sales", "overflowed", 10), visit("billing", "overflowed", 50)),
    ]
    stats = queue_stats(records)
    billing = stats["billing"]
    assert (billing.offered, billing.voicemail, billing.callback, billing.overflowed) == (4, 2, 1, 1)
    assert (stats["sales"].overflowed, stats["sales"].voicemail) == (1, 0)


def test_records_without_visits_use_the_call_fields_and_calls_without_a_queue_are_ignored() -> None:
    records: list[dict[str, Any]] = [
        {"disposition": "answered", "queue": "sales", "wait_s": 4.0, "talk_s": 30.0},
        {"disposition": "abandoned", "queue": "sales", "wait_s": 50.0, "talk_s": 0},
        {"disposition": "ivr"},  # served by the IVR alone
        {"disposition": "answered", "queue": None},
    ]
    stats = queue_stats(records)
    assert list(stats) == ["sales"]
    sales = stats["sales"]
    assert (sales.offered, sales.answered, sales.abandoned) == (2, 1, 1)
    assert sales.service_level == 0.5 and sales.asa_s == 4.0 and sales.longest_wait_s == 50


def test_configured_queues_without_calls_are_listed_with_no_figures() -> None:
    stats = queue_stats([], queues=["support", "billing"])
    assert list(stats) == ["billing", "support"]
    shown = stats["billing"].as_json()
    assert shown["offered"] == 0
    assert shown["service_level"] is shown["asa_s"] is shown["aht_s"] is shown["longest_wait_s"] is None


# -- time bounds and CSV cells ------------------------------------------------------------------------


def test_time_bounds() -> None:
    assert parse_when("2025-03-01") == datetime(2025, 3, 1, tzinfo=UTC)
    assert parse_when("2025-03-01", end=True) == datetime(2025, 3, 2, tzinfo=UTC)  # the whole day
    assert parse_when("2025-03-01T12:30") == datetime(2025, 3, 1, 12, 30, tzinfo=UTC)  # no zone: UTC
    assert parse_when("2025-03-01T12:30:00Z") == datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
    assert parse_when("2025-03-01T14:30:00+02:00") == datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="'yesterday': expected an ISO 8601 date"):
        parse_when("yesterday")


def test_csv_cells() -> None:
    row = dict(
        zip(
            CSV_COLUMNS,
            csv_row(
                {
                    "sip_call_id": "abc",
                    "from": '=HYPERLINK("http://evil")',
                    "to": "<sip:300@cc>",
                    "wait_s": 4.5,
                    "offered_agents": ["alice", "bob"],
                    "answered_at": None,
                    "agent": "+4930123",
                }
            ),
            strict=True,
        )
    )
    assert row["offered_agents"] == "alice;bob" and row["wait_s"] == "4.5"
    assert row["answered_at"] == "" and row["recording"] == ""  # missing / None: empty
    assert row["from"] == '\'=HYPERLINK("http://evil")'  # a caller's text never runs as a formula
    assert row["agent"] == "+4930123"  # our own values are left as they are


# -- the batched query --------------------------------------------------------------------------------


def _write_calls(data: Path, calls: list[dict[str, Any]]) -> None:
    store = Store(f"sqlite:///{data / 'callcenter.db'}")
    store.create_all()
    writer = CallRecordWriter(store)
    writer.start()
    for c in calls:
        cid, at = c["id"], c["at"]
        writer.call_started(cid, c.get("from", f"<sip:{cid}@pstn>"), "<sip:300@cc>", at)
        if c.get("extra"):
            writer.call_extra(cid, c["extra"])
        if c.get("answered"):
            writer.call_answered(cid, at + timedelta(seconds=c["extra"]["wait_s"]))
        writer.call_ended(cid, at + timedelta(seconds=60), "caller", c["disposition"])
    writer.stop()
    store.close()


def _sales(wait: float, disposition: str) -> dict[str, Any]:
    agent = "alice" if disposition == "answered" else None
    talk = 40.0 if agent else 0.0
    return {
        "queue": "sales",
        "agent": agent,
        "offered_agents": ["alice", "bob"],
        "wait_s": wait,
        "talk_s": talk,
        "flow": "to_sales",
        "end_reason": "bye",
        "queue_visits": [visit("sales", disposition, wait, talk, agent)],
    }


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Eight calls: five in sales at the same instant (keyset ties; answered / abandoned), three IVR-only
    later, one of them written last though it started before the other two (ids out of time order)."""
    calls = []
    for i in range(5):
        answered = i % 2 == 0
        calls.append(
            {
                "id": f"tie-{i}",
                "at": T0,
                "extra": _sales(5.0 + i * 10, "answered" if answered else "abandoned"),
                "answered": answered,
                "disposition": "answered" if answered else "abandoned",
            }
        )
    calls.append({"id": "next-day", "at": T0 + timedelta(days=1), "disposition": "ivr"})
    calls.append(
        {
            "id": "formula",
            "at": T0 + timedelta(days=1, hours=1),
            "from": "@SUM(1+1)",
            "disposition": "ivr",
        }
    )
    calls.append({"id": "late", "at": T0 + timedelta(hours=1), "disposition": "ivr"})
    path = tmp_path / "data"
    _write_calls(path, calls)
    return path


def test_every_record_comes_once_in_order_whatever_the_batch_size(data: Path) -> None:
    store = Store(f"sqlite:///{data / 'callcenter.db'}")
    try:
        for batch in (1, 2, 3, 1000):
            ids = [c["sip_call_id"] for c in islice(iter_calls(store, batch_size=batch), 50)]
            assert ids == [*TIES, "late", "next-day", "formula"], batch
        day = T0.replace(hour=0)
        first_day = [c["sip_call_id"] for c in iter_calls(store, until=day + timedelta(days=1), batch_size=2)]
        assert first_day == [*TIES, "late"]
        later = [c["sip_call_id"] for c in iter_calls(store, since=T0 + timedelta(seconds=1), batch_size=2)]
        assert later == ["late", "next-day", "formula"]
        assert count_calls(store) == 8 and count_calls(store, since=T0 + timedelta(seconds=1)) == 3
    finally:
        store.close()


# -- the commands -------------------------------------------------------------------------------------


def test_calls_export_writes_one_row_per_call(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "calls.csv"
    result = runner.invoke(app, ["calls", "export", "--csv", str(out), "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"exported 8 calls to {out}"
    assert not out.with_name("calls.csv.part").exists()
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [r["sip_call_id"] for r in rows] == [*TIES, "late", "next-day", "formula"]
    first = rows[0]
    assert (first["queue"], first["agent"], first["disposition"]) == ("sales", "alice", "answered")
    assert first["offered_agents"] == "alice;bob" and first["wait_s"] == "5.0" and first["flow"] == "to_sales"
    assert first["end_reason"] == "bye" and first["from"] == "<sip:tie-0@pstn>"
    assert datetime.fromisoformat(first["started_at"]) == T0
    assert rows[1]["agent"] == "" and rows[1]["disposition"] == "abandoned"
    assert rows[-1]["from"] == "'@SUM(1+1)"


def test_calls_export_by_date_to_standard_output(data: Path) -> None:
    result = runner.invoke(
        app,
        [
            "calls",
            "export",
            "--csv",
            "-",
            "--since",
            "2025-03-02",
            "--until",
            "2025-03-02",
            "--data-dir",
            str(data),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["sip_call_id"] for r in rows] == ["next-day", "formula"]


def test_calls_export_refuses_a_bad_date_and_writes_nothing(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "calls.csv"
    result = runner.invoke(
        app, ["calls", "export", "--csv", str(out), "--since", "last week", "--data-dir", str(data)]
    )
    assert result.exit_code == 2 and "last week" in result.output
    assert not out.exists()


def test_queues_stats_json_and_table(data: Path) -> None:
    result = runner.invoke(app, ["queues", "stats", "--json", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert set(stats) == {"sales", "support", "billing", "general"}  # the configured queues
    sales = stats["sales"]
    # Waits 5, 15, 25, 35, 45: answered 5, 25, 45; abandoned 15, 35.
    assert (sales["offered"], sales["answered"], sales["abandoned"]) == (5, 3, 2)
    assert sales["sl_seconds"] == 20.0 and sales["service_level"] == 0.2
    assert sales["asa_s"] == 25.0 and sales["aht_s"] == 40.0 and sales["longest_wait_s"] == 45.0
    assert stats["support"]["offered"] == 0 and stats["support"]["service_level"] is None

    wide = json.loads(
        runner.invoke(
            app, ["queues", "stats", "--json", "--sl-seconds", "30", "--data-dir", str(data)]
        ).stdout
    )
    assert wide["sales"]["service_level"] == 0.4

    none = json.loads(
        runner.invoke(
            app, ["queues", "stats", "--json", "--since", "2025-03-02", "--data-dir", str(data)]
        ).stdout
    )
    assert none["sales"]["offered"] == 0

    table = runner.invoke(app, ["queues", "stats", "--data-dir", str(data)])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split()[:6] == ["QUEUE", "OFFERED", "ANSWERED", "ABANDONED", "OVERFLOWED", "VOICEMAIL"]
    sales_row = next(line for line in lines if line.startswith("sales"))
    assert sales_row.split()[:6] == ["sales", "5", "3", "2", "0", "0"]
    assert "20.0% in 20s" in sales_row and "25.0s" in sales_row


def test_queues_stats_uses_each_queues_configured_threshold(data: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("routing:\n  queues:\n    sales: {service_level_s: 30}\n")
    result = runner.invoke(
        app, ["queues", "stats", "--json", "--config", str(config), "--data-dir", str(data)]
    )
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert set(stats) == {"sales"} and stats["sales"]["sl_seconds"] == 30.0
    assert stats["sales"]["service_level"] == 0.4


def test_queues_stats_help_says_how_abandoned_callers_count() -> None:
    result = runner.invoke(app, ["queues", "stats", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "every abandoned caller counts against it" in text
