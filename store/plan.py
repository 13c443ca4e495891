"""Pure refresh planning: which days come from the archive, whether the REST tail is needed, and why
anything else cannot be fetched. No I/O: the store supplies what is missing, the archive index what
is published, the caller the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from store.timeutil import days_touching, us_to_dt


@dataclass(frozen=True, slots=True)
class Unfetchable:
    """A day the archive cannot give now, and why."""

    day: date
    reason: str


@dataclass(frozen=True, slots=True)
class RefreshPlan:
    archive_days: list[date] = field(default_factory=list)
    tail: bool = False
    unpublished: list[date] = field(default_factory=list)
    unfetchable: list[Unfetchable] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.archive_days or self.tail)


def plan_refresh(missing: Sequence[tuple[int, int]], published: list[date]) -> RefreshPlan:
    """Archive for every published missing day; the tail when the range reaches past the newest file."""
    wanted = days_touching(missing)
    available = set(published)
    newest = max(published) if published else None
    archive_days, unpublished, unfetchable = [], [], []
    for day in wanted:
        if day in available:
            archive_days.append(day)
        elif newest is None or day > newest:
            unpublished.append(day)
        else:
            unfetchable.append(Unfetchable(day, f"no archive file for {day} (the index does not list "
                                                "it: before the symbol was listed, or never published)"))
    return RefreshPlan(archive_days, bool(unpublished), unpublished, unfetchable)


def unpublished_reason(day: date, limit: int, oldest_us: int | None) -> str:
    reach = (f"recent-trade's newest {limit} trades reach back only to {us_to_dt(oldest_us).isoformat()}"
             if oldest_us is not None else "recent-trade returned no trades")
    return (f"Bybit has not published the archive file for {day} yet (files appear after the day "
            f"ends) and {reach}; rerun once the file is out")
