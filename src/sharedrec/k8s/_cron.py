"""Cron schedules as the CronJob controller reads them, and the shortest gap between two runs.

Kubernetes parses ``spec.schedule`` with the standard parser of robfig/cron v3: five
fields (minute 0-59, hour 0-23, day of month 1-31, month 1-12 or JAN-DEC, day of week 0-6
or SUN-SAT), each a comma-separated list of ``*`` or ``?``, ``N``, ``N-M``, with an
optional ``/STEP``; or one of the ``@yearly`` family. ``@every`` is refused, and so is an
inline ``TZ=``/``CRON_TZ=`` (the zone goes in ``spec.timeZone``). When both day fields are
restricted a day matches either of them, as in every cron.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import re
from dataclasses import dataclass

from sharedrec.errors import InvalidInput

__all__ = ["Schedule", "parse_schedule"]

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
# name, lowest, highest, names (numbered from the lowest)
_FIELDS: list[tuple[str, int, int, list[str]]] = [
    ("minute", 0, 59, []),
    ("hour", 0, 23, []),
    ("day of month", 1, 31, []),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAYS),
]
# 28 years hold every (date, weekday) pair of the Gregorian calendar but the century rules.
_SPAN_DAYS = 28 * 365 + 7
_START = datetime.date(2024, 1, 1)


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: the values of each field, and whether each day field was ``*``."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    def runs_on(self, day: datetime.date) -> bool:
        """Whether the schedule runs at some time of ``day``."""
        if day.month not in self.months:
            return False
        dom, dow = day.day in self.days, (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def shortest_interval(self) -> int:
        """The fewest seconds between two consecutive runs (0 if it never runs)."""
        return _shortest_interval(self)


@functools.lru_cache(maxsize=256)
def _shortest_interval(schedule: Schedule) -> int:
    times = sorted(hour * 60 + minute for hour in schedule.hours for minute in schedule.minutes)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    previous: int | None = None
    for offset in range(_SPAN_DAYS):
        if schedule.runs_on(_START + datetime.timedelta(days=offset)):
            if previous is not None:
                gaps.append((offset - previous) * 1440 + times[0] - times[-1])
                if offset - previous == 1:
                    break  # runs on two days in a row: no later pair of days is closer
            previous = offset
    if previous is None:
        return 0
    return 60 * min(gaps) if gaps else 60 * 1440 * _SPAN_DAYS


def _number(text: str, low: int, names: list[str], field: str, value: str) -> int:
    if text.isdigit():
        return int(text)
    if text.upper() in names:
        return low + names.index(text.upper())
    raise InvalidInput(
        f"schedule {value!r}: {text!r} is not a number"
        + (f" or a name ({names[0]}-{names[-1]})" if names else "")
        + f" in the {field} field"
    )


def _field(text: str, index: int, value: str) -> tuple[frozenset[int], bool]:
    field, low, high, names = _FIELDS[index]
    found: set[int] = set()
    star = False
    for part in text.split(","):
        span, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise InvalidInput(f"schedule {value!r}: the step in {part!r} must be a positive number")
            step = int(step_text)
        if span in {"*", "?"}:
            start, end = low, high
            star = star or step == 1
        else:
            first, dash, last = span.partition("-")
            start = _number(first, low, names, field, value)
            end = _number(last, low, names, field, value) if dash else (high if step_text else start)
        if not low <= start <= high or not low <= end <= high:
            raise InvalidInput(
                f"schedule {value!r}: {part!r} is outside the {field} field's range {low}-{high}"
                + (" (Sunday is 0, not 7)" if field == "day of week" else "")
            )
        if start > end:
            raise InvalidInput(f"schedule {value!r}: the range {part!r} goes backwards; write it low-high")
        found.update(range(start, end + 1, step))
    return frozenset(found), star


@functools.lru_cache(maxsize=256)
def parse_schedule(value: str) -> Schedule:
    """Parse ``value`` as the CronJob controller does, or raise `InvalidInput` saying what is wrong.

    Parsed schedules are immutable and remembered: a config checks its schedule when it is
    built and again when its deadlines are derived.
    """
    if re.search(r"\b(CRON_)?TZ=", value):
        raise InvalidInput(
            f"schedule {value!r} sets a time zone inline, which Kubernetes rejects: put the zone "
            "in time_zone (e.g. Europe/Paris) and keep the schedule to its five fields"
        )
    if value.strip().startswith("@every"):
        raise InvalidInput(
            f"schedule {value!r}: @every is not Kubernetes syntax; write five fields (e.g. '*/15 * * * *' "
            "for every 15 minutes) or one of " + ", ".join(MACROS)
        )
    if value.startswith("@"):
        if value not in MACROS:
            raise InvalidInput(f"schedule {value!r} is not one of " + ", ".join(MACROS))
        value_fields = MACROS[value].split()
    else:
        value_fields = value.split()
    if len(value_fields) != 5:
        raise InvalidInput(
            f"schedule {value!r} is not a cron schedule: give five fields (minute hour day month weekday, "
            "e.g. '15 * * * *' for every hour at :15) or one of " + ", ".join(MACROS)
        )
    parsed = [_field(text, index, value) for index, text in enumerate(value_fields)]
    schedule = Schedule(
        minutes=parsed[0][0],
        hours=parsed[1][0],
        days=parsed[2][0],
        months=parsed[3][0],
        weekdays=parsed[4][0],
        any_day=parsed[2][1],
        any_weekday=parsed[4][1],
    )
    if schedule.shortest_interval() == 0:
        raise InvalidInput(f"schedule {value!r} never runs: no month has that day; check the day and month")
    return schedule
