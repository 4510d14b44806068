"""Per-store schedules: every accepted spelling, when each is next due, and what is refused."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from peersync.errors import UsageError
from peersync.schedule import parse

D = dt.datetime
# 2024-05-15 is a Wednesday.
WED_1017 = D(2024, 5, 15, 10, 17, 42)


def test_continuous_is_the_default_kind_and_never_due_by_the_clock():
    s = parse("continuous")
    assert s.kind == "continuous" and s.continuous
    assert str(s) == "continuous"
    assert s.next_due(WED_1017) is None


def test_manual_is_never_due_by_itself():
    s = parse("manual")
    assert s.kind == "manual" and not s.continuous
    assert str(s) == "manual"
    assert s.next_due(WED_1017) is None
    assert s.next_due(D(2024, 12, 31, 23, 59, 59)) is None


@pytest.mark.parametrize("spec, minutes", [
    ("every 15m", 15),
    ("every 15min", 15),
    ("every 90m", 90),
    ("every 2h", 120),
    ("every 1h", 60),
    ("Every 15M", 15),
    ("  every   15m  ", 15),
])
def test_every_n_minutes_or_hours(spec, minutes):
    s = parse(spec)
    assert s.kind == "interval" and not s.continuous
    assert s.minutes == minutes
    assert s.next_due(WED_1017) == WED_1017 + dt.timedelta(minutes=minutes)
    assert parse(str(s)) == s  # what `config` stores reads back the same


def test_hourly_is_due_at_the_top_of_the_next_hour():
    s = parse("hourly")
    assert str(s) == "hourly"
    assert s.next_due(WED_1017) == D(2024, 5, 15, 11, 0)
    assert s.next_due(D(2024, 5, 15, 11, 0)) == D(2024, 5, 15, 12, 0)  # just ran on the hour
    assert s.next_due(D(2024, 5, 15, 23, 30)) == D(2024, 5, 16, 0, 0)  # across midnight


def test_daily_at_a_time():
    s = parse("daily 18:30")
    assert s.kind == "daily" and s.at == dt.time(18, 30)
    assert str(s) == "daily 18:30"
    assert s.next_due(WED_1017) == D(2024, 5, 15, 18, 30)  # later today
    assert s.next_due(D(2024, 5, 15, 18, 30)) == D(2024, 5, 16, 18, 30)  # just ran: tomorrow
    assert s.next_due(D(2024, 5, 15, 19, 0)) == D(2024, 5, 16, 18, 30)  # missed today's: tomorrow
    assert s.next_due(D(2024, 12, 31, 20, 0)) == D(2025, 1, 1, 18, 30)  # across the year
    assert parse("daily 7:05").at == dt.time(7, 5)
    assert str(parse("daily 7:05")) == "daily 07:05"


def test_weekly_on_a_day_at_a_time():
    s = parse("weekly mon 09:00")
    assert s.kind == "weekly" and s.weekday == 0 and s.at == dt.time(9, 0)
    assert str(s) == "weekly mon 09:00"
    assert s.next_due(WED_1017) == D(2024, 5, 20, 9, 0)  # the next Monday
    assert s.next_due(D(2024, 5, 20, 8, 0)) == D(2024, 5, 20, 9, 0)  # Monday morning, before 9
    assert s.next_due(D(2024, 5, 20, 9, 0)) == D(2024, 5, 27, 9, 0)  # just ran: a week later
    assert s.next_due(D(2024, 5, 20, 10, 0)) == D(2024, 5, 27, 9, 0)
    assert parse("weekly sun 23:59").next_due(WED_1017) == D(2024, 5, 19, 23, 59)
    assert parse("WEEKLY Friday 18:00") == parse("weekly fri 18:00")


@pytest.mark.parametrize("spec", [
    "",
    "sometimes",
    "continuously please",
    "every",
    "every 0m",
    "every 0h",
    "every -5m",
    "every 15s",
    "every 15",
    "every m",
    "every 1.5h",
    "every 15m now",
    "hourly 5",
    "daily",
    "daily 25:00",
    "daily 18:60",
    "daily 18h30",
    "daily noon",
    "weekly",
    "weekly mon",
    "weekly 09:00",
    "weekly xyz 09:00",
    "weekly mon 24:00",
    "manual now",
])
def test_bad_spellings_are_refused(spec):
    with pytest.raises(UsageError) as caught:
        parse(spec)
    assert caught.value.message  # says what is wrong...
    assert caught.value.sentence().count("\n") == 0  # ...in one sentence


def test_config_refuses_a_zero_interval_with_one_sentence(make_peers):
    """A sysadmin typing `peersync config schedule 'every 0m'` is told no, and nothing changes."""
    (alice,) = make_peers(1, join=False)
    before = alice.cli("config", "schedule", check=0).out
    r = alice.cli("config", "schedule", "every 0m")
    assert r.code == 2, (r.out, r.err)
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1, r.err
    assert lines[0].startswith("peersync: ") and "every 0m" in lines[0], r.err
    assert lines[0].rstrip().endswith("."), r.err
    assert alice.cli("config", "schedule", check=0).out == before
    assert json.loads(before.split("=", 1)[1]) == "continuous"


def test_config_stores_a_schedule_per_store(make_peers):
    (alice,) = make_peers(1, join=False)
    alice.cli("config", "schedule", "every 2h", "--store", "docs", check=0)
    assert alice.cli("config", "schedule", "--store", "docs", check=0).out.strip() == 'schedule = "every 120m"'
    assert alice.cli("config", "schedule", check=0).out.strip() == 'schedule = "continuous"'
    status = json.loads(alice.cli("status", "--json", check=0).out)
    assert status["stores"][0]["schedule"] == "every 120m"
