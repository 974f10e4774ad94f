"""Five-field cron expressions (minute hour day-of-month month day-of-week), in UTC, with no dependencies.

Enough cron for schedules the local platform runs itself (``mlspec monitor`` starts
batch scoring that is due): ``*``, lists, ranges, steps, month and weekday names,
``7`` as Sunday, the ``@hourly``/``@daily``/``@weekly``/``@monthly``/``@yearly``
shorthands, and Vixie cron's rule that when both day fields are restricted a day
matching either one runs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (name, lowest, highest, names for values from lowest)
FIELDS: tuple[tuple[str, int, int, list[str]], ...] = (
    ("minute", 0, 59, []),
    ("hour", 0, 23, []),
    ("day of month", 1, 31, []),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, DAYS),
)
LOOKBACK_DAYS = 5 * 366  # a schedule that fires less than once in five years is treated as never firing


class CronError(ValueError):
    """The expression is not valid five-field cron."""


@dataclass(frozen=True)
class Cron:
    """A parsed expression: the allowed values of each field."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is '*'
    any_weekday: bool  # day of week is '*'

    def day_matches(self, day: dt.date) -> bool:
        """Whether the schedule runs on ``day`` at all."""
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def matches(self, when: dt.datetime) -> bool:
        """Whether the schedule fires in ``when``'s minute (UTC)."""
        when = _utc(when)
        return when.minute in self.minutes and when.hour in self.hours and self.day_matches(when.date())


def _value(text: str, field: str, low: int, names: list[str]) -> int:
    lowered = text.lower()
    if lowered in names:
        return names.index(lowered) + low
    if not text.isdigit():
        raise CronError(f"'{text}' is not a number in the {field} field")
    return int(text)


def _field(text: str, field: str, low: int, high: int, names: list[str]) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        body, _, step_text = item.partition("/")
        if step_text and (not step_text.isdigit() or int(step_text) < 1):
            raise CronError(f"'{item}' has a bad step in the {field} field")
        step = int(step_text) if step_text else 1
        if body == "*":
            start, stop = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start, stop = _value(first, field, low, names), _value(last, field, low, names)
        else:
            start = _value(body, field, low, names)
            stop = high if step_text else start
        if not (low <= start <= high and low <= stop <= high):
            raise CronError(f"'{item}' is outside {low}-{high} in the {field} field")
        if start > stop:
            raise CronError(f"'{item}' is a range that ends before it starts in the {field} field")
        values.update(range(start, stop + 1, step))
    return frozenset(values)


def parse(expression: str) -> Cron:
    """Parse a five-field expression or an ``@`` shorthand; raises CronError saying what is wrong."""
    text = ALIASES.get(expression.strip().lower(), expression)
    parts = text.split()
    if len(parts) != len(FIELDS):
        raise CronError(f"'{expression}' has {len(parts)} fields; cron has five (minute hour day month weekday)")
    sets = [_field(part, *spec) for part, spec in zip(parts, FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in sets[4])
    return Cron(sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] == "*", parts[4] == "*")


def _utc(when: dt.datetime) -> dt.datetime:
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def previous(expression: str | Cron, now: dt.datetime) -> dt.datetime | None:
    """The latest time at or before ``now`` (to the minute, UTC) the schedule fired; None if not in five years."""
    cron = parse(expression) if isinstance(expression, str) else expression
    now = _utc(now).replace(second=0, microsecond=0)
    day = now.date()
    for back in range(LOOKBACK_DAYS):
        if cron.day_matches(day):
            latest = (now.hour, now.minute) if back == 0 else (23, 59)
            times = [(h, m) for h in cron.hours for m in cron.minutes if (h, m) <= latest]
            if times:
                hour, minute = max(times)
                return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC)
        day -= dt.timedelta(days=1)
    return None


def is_due(expression: str | Cron, last_run: dt.datetime | None, now: dt.datetime) -> bool:
    """Whether the schedule fired after ``last_run`` (and by ``now``); missed firings count once (no catch-up)."""
    fired = previous(expression, now)
    if fired is None:
        return False
    return last_run is None or fired > _utc(last_run)
