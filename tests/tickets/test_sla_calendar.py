"""Business-time arithmetic: nights, weekends, holidays and DST in Europe/Berlin and America/New_York."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from callcenter.core.config import SlaSettings
from callcenter.core.errors import ConfigError
from callcenter.ivr.schema import Schedule
from callcenter.tickets.sla import BusinessCalendar, SlaPolicy

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
H = 3600.0


def calendar(
    timezone: str, weekly: dict[str, list[str]] | None = None, holidays: Sequence[str] = ()
) -> BusinessCalendar:
    return BusinessCalendar.from_schedule(
        Schedule.model_validate({"timezone": timezone, "weekly": weekly, "holidays": list(holidays)})
    )


def local(zone: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone)


OFFICE = {"mon-fri": ["09:00-17:00"]}


def test_a_target_running_past_closing_continues_next_morning() -> None:
    cal = calendar("Europe/Berlin", OFFICE)
    # Tuesday 16:30 + 1 h: 30 minutes today, 30 tomorrow from 09:00.
    assert cal.add(local(BERLIN, 2026, 5, 5, 16, 30), H) == local(BERLIN, 2026, 5, 6, 9, 30)
    # Exactly to closing time is due at closing time, not the next morning.
    assert cal.add(local(BERLIN, 2026, 5, 5, 16, 0), H) == local(BERLIN, 2026, 5, 5, 17, 0)


def test_a_ticket_filed_at_night_starts_counting_at_opening() -> None:
    cal = calendar("Europe/Berlin", OFFICE)
    assert cal.add(local(BERLIN, 2026, 5, 5, 22, 0), 2 * H) == local(BERLIN, 2026, 5, 6, 11, 0)
    assert cal.add(local(BERLIN, 2026, 5, 6, 3, 0), 8 * H) == local(BERLIN, 2026, 5, 6, 17, 0)


def test_weekends_do_not_count() -> None:
    cal = calendar("Europe/Berlin", OFFICE)
    friday_4pm = local(BERLIN, 2026, 5, 8, 16, 0)
    assert cal.add(friday_4pm, 2 * H) == local(BERLIN, 2026, 5, 11, 10, 0)  # Monday 10:00
    saturday = local(BERLIN, 2026, 5, 9, 12, 0)
    assert cal.between(friday_4pm, saturday) == H
    assert cal.between(saturday, local(BERLIN, 2026, 5, 10, 23, 0)) == 0
    # A 40-hour target is one working week.
    assert cal.add(local(BERLIN, 2026, 5, 11, 9, 0), 40 * H) == local(BERLIN, 2026, 5, 15, 17, 0)


def test_holidays_are_skipped() -> None:
    cal = calendar("Europe/Berlin", OFFICE, holidays=["2026-12-24", "2026-12-25"])
    wednesday = local(BERLIN, 2026, 12, 23, 16, 0)
    # Wednesday 1 h, Thursday and Friday are holidays, the weekend is closed: Monday 28th 10:00.
    assert cal.add(wednesday, 2 * H) == local(BERLIN, 2026, 12, 28, 10, 0)
    assert cal.between(wednesday, local(BERLIN, 2026, 12, 28, 10, 0)) == 2 * H


def test_holidays_are_local_dates_in_the_calendars_zone() -> None:
    cal = calendar("America/New_York", OFFICE, holidays=["2026-07-03"])
    # Friday 3 July 01:00 UTC is still Thursday 2 July 21:00 in New York (closed for the night).
    start = datetime(2026, 7, 3, 1, 0, tzinfo=UTC)
    assert cal.add(start, H) == local(NEW_YORK, 2026, 7, 6, 10, 0)


def test_around_the_clock_counts_real_hours_on_dst_days_in_berlin() -> None:
    cal = calendar("Europe/Berlin")
    # 29 March 2026: clocks go from 02:00 to 03:00, the day has 23 hours.
    saturday_noon = local(BERLIN, 2026, 3, 28, 12, 0)
    assert cal.add(saturday_noon, 24 * H) == local(BERLIN, 2026, 3, 29, 13, 0)
    assert cal.between(local(BERLIN, 2026, 3, 29, 0, 0), local(BERLIN, 2026, 3, 30, 0, 0)) == 23 * H
    # 25 October 2026: 03:00 goes back to 02:00, the day has 25 hours.
    assert cal.between(local(BERLIN, 2026, 10, 25, 0, 0), local(BERLIN, 2026, 10, 26, 0, 0)) == 25 * H
    assert cal.add(local(BERLIN, 2026, 10, 24, 12, 0), 24 * H) == local(BERLIN, 2026, 10, 25, 11, 0)


def test_around_the_clock_counts_real_hours_on_dst_days_in_new_york() -> None:
    cal = calendar("America/New_York")
    # 8 March 2026 springs forward, 1 November 2026 falls back (other dates than Europe's).
    assert cal.between(local(NEW_YORK, 2026, 3, 8, 0, 0), local(NEW_YORK, 2026, 3, 9, 0, 0)) == 23 * H
    assert cal.between(local(NEW_YORK, 2026, 3, 29, 0, 0), local(NEW_YORK, 2026, 3, 30, 0, 0)) == 24 * H
    assert cal.add(local(NEW_YORK, 2026, 10, 31, 12, 0), 24 * H) == local(NEW_YORK, 2026, 11, 1, 11, 0)


def test_office_hours_stay_local_across_a_dst_change() -> None:
    berlin = calendar("Europe/Berlin", OFFICE)
    # Friday before the change 16:00 CET (15:00 UTC) + 2 h → Monday 10:00 CEST (08:00 UTC).
    due = berlin.add(local(BERLIN, 2026, 3, 27, 16, 0), 2 * H)
    assert due == datetime(2026, 3, 30, 8, 0, tzinfo=UTC)
    new_york = calendar("America/New_York", {"mon-fri": ["08:00-20:00"]})
    # Friday 19:00 EDT + 2 h → Monday 09:00 EST, which is 14:00 UTC (it was 13:00 UTC the week before).
    due = new_york.add(local(NEW_YORK, 2026, 10, 30, 19, 0), 2 * H)
    assert due == datetime(2026, 11, 2, 14, 0, tzinfo=UTC)
    assert new_york.between(local(NEW_YORK, 2026, 10, 30, 19, 0), due) == 2 * H


def test_one_instant_in_two_timezones_has_different_business_time_left() -> None:
    instant = datetime(2026, 5, 6, 15, 0, tzinfo=UTC)  # 17:00 in Berlin, 11:00 in New York
    assert calendar("Europe/Berlin", OFFICE).add(instant, H) == local(BERLIN, 2026, 5, 7, 10, 0)
    assert calendar("America/New_York", OFFICE).add(instant, H) == local(NEW_YORK, 2026, 5, 6, 12, 0)


def test_overlapping_ranges_merge_and_24_00_means_midnight() -> None:
    cal = calendar("UTC", {"mon": ["09:00-12:00", "11:00-14:00"], "tue": ["20:00-24:00"]})
    monday = datetime(2026, 5, 4, tzinfo=UTC)
    assert cal.between(monday, monday + timedelta(days=1)) == 5 * H
    assert cal.add(monday + timedelta(days=1, hours=23), H) == monday + timedelta(days=2)
    assert cal.between(monday, monday + timedelta(days=2)) == 9 * H
    assert cal.between(monday + timedelta(days=2), monday) == -9 * H


def test_a_calendar_with_no_hours_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="tickets.sla.calendar.weekly"):
        calendar("UTC", {"mon-fri": []})
    bad = SlaSettings.model_validate({"calendar": {"weekly": {"mon-fri": ["9-17"]}}})
    with pytest.raises(ConfigError, match="tickets.sla.calendar.weekly"):
        SlaPolicy.from_settings(bad)


def test_policy_targets_come_from_the_settings_in_business_hours() -> None:
    settings = SlaSettings.model_validate(
        {
            "calendar": {"timezone": "Europe/Berlin", "weekly": OFFICE, "holidays": [date(2026, 5, 14)]},
            "targets": {"urgent": {"first_response_hours": 1, "resolution_hours": 4}},
        }
    )
    policy = SlaPolicy.from_settings(settings)
    assert policy.target("urgent").resolution_s == 4 * H
    assert policy.target("low").resolution_s is None  # unlisted: no target
    wednesday = local(BERLIN, 2026, 5, 13, 15, 0)
    assert policy.calendar.add(wednesday, 4 * H) == local(BERLIN, 2026, 5, 15, 11, 0)  # Thursday is a holiday
