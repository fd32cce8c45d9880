"""The wallboard's chart of today's calls per 30 minutes in Chromium: one bar group per interval whose
<title> gives its counts, refreshed on its timer (?chart_refresh_s) and when a live call ends."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import expect
from sqlmodel import Session

from callcenter.store import Store
from callcenter.store.models import CallRecord
from callcenter.testing.pcap import Segment, write_rtp_pcap
from callcenter.testing.server import ServerProcess
from callcenter.testing.sipp import pcap_caller_scenario, run_sipp, sipp_available

pytestmark = pytest.mark.e2e

FLOW = """\
id: to_sales
language: en-US
start: queue
nodes:
  queue:
    type: queue
    queue: sales
    max_wait_s: 60
    next: bye
    on_overflow: bye
  bye:
    type: hangup
"""
CONFIG = """\
ivr:
  flows_dir: {flows}
  numbers: {{"300": to_sales}}
routing:
  queues:
    sales: {{skills: {{sales: 1}}, join_when_empty: true, service_level_s: 20}}
"""


def add_call(server: ServerProcess, call_id: str, started: datetime, disposition: str, wait_s: float) -> None:
    """A finished call of the sales queue, written straight into the server's database."""
    store = Store(f"sqlite:///{server.data_dir / 'callcenter.db'}")
    talk = 60.0 if disposition == "answered" else 0.0
    with Session(store.engine) as session:
        session.add(CallRecord(
            sip_call_id=call_id, from_uri="sip:caller@example.com", to_uri="sip:300@callcenter",
            started_at=started, ended_at=started + timedelta(seconds=wait_s + talk), disposition=disposition,
            extra={"queue": "sales", "wait_s": wait_s, "talk_s": talk},
        ))  # fmt: skip
        session.commit()
    store.engine.dispose()


def slot_titles(page: Any) -> dict[str, str]:
    """Interval label → its bar group's <title>, for the intervals with calls."""
    titles = page.locator("#interval-chart g.slot > title").all_text_contents()
    return {t.split(": ", 1)[0]: t for t in titles if not t.endswith(": 0 offered, 0 answered, 0 abandoned")}


def title(label: str, answered: int, abandoned: int, sl: int) -> str:
    counts = f"{answered + abandoned} offered, {answered} answered, {abandoned} abandoned"
    return f"{label}: {counts}, service level {sl} %"


def test_the_chart_shows_todays_calls_per_interval_and_follows_new_ones(
    start_web: Any, new_page: Any, log_in: Any, tmp_path: Path
) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "to_sales.yaml").write_text(FLOW)
    server = start_web(config=CONFIG.format(flows=flows), CALLCENTER_MEDIA_RTP_TIMEOUT_S=60)
    today = datetime.combine(datetime.now(UTC).date(), time(), tzinfo=UTC)  # routing.timezone: UTC
    add_call(server, "a1", today + timedelta(minutes=10), "answered", wait_s=5)
    add_call(server, "a2", today + timedelta(minutes=20), "answered", wait_s=45)  # outside the 20 s
    add_call(server, "b1", today + timedelta(minutes=50), "abandoned", wait_s=30)
    add_call(server, "c1", today + timedelta(hours=2, minutes=5), "answered", wait_s=3)
    expected = {
        "00:00": title("00:00", 2, 0, 50),
        "00:30": title("00:30", 0, 1, 0),
        "02:00": title("02:00", 1, 0, 100),
    }

    board = new_page(server)
    log_in(board, "sue")
    expect(board).to_have_url(re.compile("/wallboard$"))
    expect(board.locator("#interval-chart g.slot")).to_have_count(48)
    expect(board.locator("#interval-chart svg > title")).to_have_text(re.compile(r": 4 offered$"))
    assert slot_titles(board) == expected
    # Stacked: the 00:30 group has only an abandoned bar, 00:00 only an answered one.
    bars = "rs => rs.map(r => r.className.baseVal)"
    assert board.locator('g.slot[data-label="00:30"] rect').evaluate_all(bars) == ["abandoned"]
    assert board.locator('g.slot[data-label="00:00"] rect').evaluate_all(bars) == ["answered"]

    # A page with a fast timer re-reads the report without any event.
    fast = new_page(server)
    log_in(fast, "sue", path="/wallboard?chart_refresh_s=1")
    expect(fast).to_have_url(re.compile(r"/wallboard\?chart_refresh_s=1$"))
    expect(fast.locator("#interval-chart g.slot")).to_have_count(48)
    add_call(server, "c2", today + timedelta(hours=2, minutes=15), "abandoned", wait_s=10)
    expected["02:00"] = title("02:00", 1, 1, 50)
    expect(fast.locator('g.slot[data-label="02:00"] > title')).to_have_text(expected["02:00"])

    if not sipp_available():
        pytest.skip("sipp (Debian sip-tester) is not installed")
    # A live caller gives up in the queue: the board (minute timer) redraws when the call ends, and
    # shows c2 too, which it had not read yet.
    seeded = {"a1", "a2", "b1", "c1", "c2"}
    now = datetime.now(UTC)
    slot = today + timedelta(minutes=(now - today) // timedelta(minutes=30) * 30)
    label = slot.strftime("%H:%M")
    pcap = tmp_path / "caller.pcap"
    write_rtp_pcap(pcap, [Segment(pcm=np.zeros(8000 * 3, np.int16))])
    result = run_sipp(f"127.0.0.1:{server.sip_port}", tmp_path / "sipp",
                      scenario=str(pcap_caller_scenario(tmp_path, pcap, number="300")),
                      extra=["-d", "2500"], timeout_s=40)  # fmt: skip
    assert result.successful == 1, result.errors
    if label in ("00:00", "00:30", "02:00"):  # the test runs in one of the seeded intervals
        before = re.findall(r"\d+", expected[label].split(": ", 1)[1])
        answered, abandoned = int(before[1]), int(before[2]) + 1
    else:
        answered, abandoned = 0, 1
    expected[label] = title(label, answered, abandoned, round(100 * answered / (answered + abandoned)))
    expect(board.locator(f'g.slot[data-label="{label}"] > title')).to_have_text(expected[label])
    assert slot_titles(board) == expected
    (call,) = [c for c in board.request.get("/api/calls").json() if c["sip_call_id"] not in seeded]
    assert (call["queue"], call["disposition"]) == ("sales", "abandoned"), call
