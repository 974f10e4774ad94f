"""The cron matcher `mlspec monitor` runs batch schedules with."""

from __future__ import annotations

import datetime as dt

import pytest

from mlspec.cron import CronError, is_due, parse, previous

UTC = dt.UTC
MONDAY = dt.datetime(2026, 11, 23, 5, 47, 31, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(
    ("expression", "fired"),
    [
        ("0 2 * * *", dt.datetime(2026, 11, 23, 2, 0, tzinfo=UTC)),
        ("*/15 * * * *", dt.datetime(2026, 11, 23, 5, 45, tzinfo=UTC)),
        ("47 5 * * *", dt.datetime(2026, 11, 23, 5, 47, tzinfo=UTC)),  # this very minute
        ("48 5 * * *", dt.datetime(2026, 11, 22, 5, 48, tzinfo=UTC)),  # not yet today
        ("@hourly", dt.datetime(2026, 11, 23, 5, 0, tzinfo=UTC)),
        ("@weekly", dt.datetime(2026, 11, 22, 0, 0, tzinfo=UTC)),  # Sunday
        ("0 3 * * 7", dt.datetime(2026, 11, 22, 3, 0, tzinfo=UTC)),  # 7 is Sunday too
        ("0 9 * * mon-fri", dt.datetime(2026, 11, 20, 9, 0, tzinfo=UTC)),  # Friday
        ("@monthly", dt.datetime(2026, 11, 1, 0, 0, tzinfo=UTC)),
        ("0 0 29 feb *", dt.datetime(2024, 2, 29, 0, 0, tzinfo=UTC)),
        ("30 1 15 * mon", dt.datetime(2026, 11, 23, 1, 30, tzinfo=UTC)),  # both day fields set: either matches
        ("0 12 1-10/3 jan,nov *", dt.datetime(2026, 11, 10, 12, 0, tzinfo=UTC)),
    ],
)
def test_previous_firing(expression: str, fired: dt.datetime) -> None:
    assert previous(expression, MONDAY) == fired
    assert parse(expression).matches(fired)


def test_a_local_time_is_read_as_utc_and_a_never_firing_schedule_is_none() -> None:
    assert previous("0 2 * * *", MONDAY.replace(tzinfo=None)) == dt.datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    assert previous("0 0 31 2 *", MONDAY) is None


def test_due_once_per_firing_without_catch_up() -> None:
    last = dt.datetime(2026, 11, 22, 2, 0, 5, tzinfo=UTC)
    assert is_due("0 2 * * *", None, MONDAY)  # never ran
    assert is_due("0 2 * * *", last, MONDAY)  # fired today at 02:00 after yesterday's run
    assert not is_due("0 2 * * *", MONDAY.replace(hour=2, minute=0, second=10), MONDAY)
    assert is_due("0 2 * * *", dt.datetime(2026, 11, 1, tzinfo=UTC), MONDAY)  # weeks missed: one run


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "'61' is outside 0-59 in the minute field"),
        ("0 24 * * *", "'24' is outside 0-23 in the hour field"),
        ("* * *", "has 3 fields; cron has five"),
        ("x * * * *", "'x' is not a number in the minute field"),
        ("5-1 * * * *", "ends before it starts in the minute field"),
        ("*/0 * * * *", "bad step in the minute field"),
        ("0 0 * foo *", "'foo' is not a number in the month field"),
    ],
)
def test_bad_expressions_say_which_field(expression: str, message: str) -> None:
    with pytest.raises(CronError, match=message.replace("*", r"\*")):
        parse(expression)
