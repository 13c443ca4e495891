"""Pure refresh planning and range parsing: no server, no store."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from fetch.errors import InputError
from store.plan import plan_refresh
from store.timerange import resolve_range
from store.timeutil import day_start_us, days_touching

NOW = datetime(2024, 1, 10, 12, 0, tzinfo=UTC)


def days(*numbers: int) -> list[date]:
    return [date(2024, 1, n) for n in numbers]


def span(first: int, last_exclusive: int) -> tuple[int, int]:
    return day_start_us(date(2024, 1, first)), day_start_us(date(2024, 1, last_exclusive))


def test_days_touching_counts_partial_days() -> None:
    start, _ = span(2, 3)
    assert days_touching([(start + 1, start + 86_400_000_000 + 1)]) == days(2, 3)
    assert days_touching([span(2, 4)]) == days(2, 3)


def test_published_days_go_to_the_archive_and_later_ones_to_the_tail() -> None:
    plan = plan_refresh([span(5, 11)], published=days(1, 2, 3, 4, 5, 6, 7, 8, 9))
    assert plan.archive_days == days(5, 6, 7, 8, 9)
    assert plan.unpublished == days(10)
    assert plan.tail


def test_a_fully_archived_range_needs_no_tail() -> None:
    plan = plan_refresh([span(3, 5)], published=days(1, 2, 3, 4, 5))
    assert plan.archive_days == days(3, 4) and not plan.tail


def test_a_day_missing_from_the_index_is_unfetchable_with_a_reason() -> None:
    plan = plan_refresh([span(1, 4)], published=days(2, 3, 4))
    assert plan.archive_days == days(2, 3)
    assert [u.day for u in plan.unfetchable] == days(1)
    assert "does not list" in plan.unfetchable[0].reason


def test_nothing_missing_plans_nothing() -> None:
    assert plan_refresh([], published=days(1)).empty


def test_resolve_range_dates_are_utc_midnights_and_end_is_exclusive() -> None:
    assert resolve_range("2024-01-01", "2024-01-08", None, NOW) == span(1, 8)


def test_resolve_range_days_count_back_from_the_end() -> None:
    assert resolve_range(None, "2024-01-08", 7, NOW) == span(1, 8)
    assert resolve_range("2024-01-01", None, 2, NOW) == span(1, 3)


def test_an_end_later_today_is_clipped_to_now() -> None:
    _, end = resolve_range("2024-01-09", "2024-01-11", None, NOW)
    assert end == int(NOW.timestamp()) * 1_000_000


@pytest.mark.parametrize(("start", "end", "message"), [
    ("2024-01-05", "2024-01-05", "not before end"),
    ("2024-01-06", "2024-01-05", "not before end"),
    ("2024-02-01", "2024-02-05", "in the future"),
    ("2024-01-01", "2024-03-01", "in the future"),
    ("yesterday-ish", None, "cannot read the date"),
    ("2024-13-01", None, "cannot read the date"),
])
def test_bad_ranges_are_refused_with_a_clear_message(start: str, end: str | None, message: str) -> None:
    with pytest.raises(InputError, match=message):
        resolve_range(start, end, None, NOW)
