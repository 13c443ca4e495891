"""Epoch microseconds and UTC days: the one place times are converted.

The store keeps every time as integer epoch microseconds (the archive's 0.1 ms survives), and a day
is the half-open UTC span [00:00, 24:00). Pure: no I/O, nothing heavier than `datetime`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_US = 86_400_000_000


def us_to_dt(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def dt_to_us(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def day_start_us(day: date) -> int:
    return dt_to_us(datetime.combine(day, time(), tzinfo=UTC))


def day_of_us(value: int) -> date:
    return us_to_dt(value).date()


def days_touching(intervals: Iterable[tuple[int, int]]) -> list[date]:
    """UTC days that intersect any of the half-open intervals."""
    days: set[date] = set()
    for start_us, end_us in intervals:
        day = day_of_us(start_us)
        while day_start_us(day) < end_us:
            days.add(day)
            day += timedelta(days=1)
    return sorted(days)
