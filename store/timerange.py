"""The range a user asks for: dates and datetimes from the command line or the API, checked.

`resolve_range` turns a start, an end and a number of days into a half-open [start, end) in epoch
microseconds, refusing what cannot be meant (a range ahead of now, start after end, a length that is
not a number of days) with an `InputError` that says what to give instead. Pure: the caller passes now.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta

from fetch.errors import InputError
from fetch.market_span import Span
from store.timeutil import dt_to_us


def parse_when(text: str, now: datetime) -> datetime:
    """A date or UTC datetime from the command line; 'now' and 'today' are understood."""
    value = text.strip()
    if value.lower() == "now":
        return now
    if value.lower() == "today":
        return datetime.combine(now.date(), time(), tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"cannot read the date {text!r}: use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS] "
                         "(UTC)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def resolve_range(start: datetime | date | str | None, end: datetime | date | str | None,
                  days: float | None, now: datetime, default_days: float = 3) -> Span:
    """[start, end) in epoch µs; end is exclusive and defaults to now; a range may not lie ahead.

    `days` with both `start` and `end` is refused rather than one of them silently ignored."""
    check_days(days)
    if days is not None and start is not None and end is not None:
        raise InputError("--days cannot be combined with both --start and --end: give two of the three")
    end_dt = _as_datetime(end, now) if end is not None else now
    if start is not None:
        start_dt = _as_datetime(start, now)
    else:
        start_dt = end_dt - timedelta(days=days if days is not None else default_days)
    if start is not None and days is not None and end is None:
        end_dt = start_dt + timedelta(days=days)
    if start_dt > now:  # said first: with no --end, "not before end (now)" would hide the real mistake
        raise InputError(f"start {start_dt.isoformat()} is in the future: trades cannot be fetched "
                         "before they happen")
    if start_dt >= end_dt:
        raise InputError(f"start {start_dt.isoformat()} is not before end {end_dt.isoformat()}: "
                         "give a start earlier than the end (the end is exclusive)")
    if end_dt > now + timedelta(days=1):
        raise InputError(f"end {end_dt.isoformat()} is in the future: give an end up to tomorrow "
                         "(exclusive) or leave it out to mean now")
    return Span(dt_to_us(start_dt), dt_to_us(min(end_dt, now)))


MAX_DAYS = 36_600  # a century: far more than Bybit's history, small enough for datetime arithmetic


def check_days(days: float | None) -> None:
    """A range length must be a finite, positive number of days (nan, inf or 1e300 overflow)."""
    if days is not None and not (math.isfinite(days) and 0 < days <= MAX_DAYS):
        raise InputError(f"--days {days!r} is not a length: give a positive number of days up to "
                         f"{MAX_DAYS}")


def _as_datetime(value: datetime | date | str, now: datetime) -> datetime:
    if isinstance(value, str):
        return parse_when(value, now)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.combine(value, time(), tzinfo=UTC)
