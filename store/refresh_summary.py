"""What a refresh reports: its progress events as it goes and the summary at the end."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Literal

from fetch.market_span import Category
from store.coverage import Gap

if TYPE_CHECKING:
    from fetch.client import ClientStats


ProgressEvent = Literal["plan", "bytes", "day", "tail", "export"]


@dataclass(frozen=True, slots=True)
class Progress:
    """One step of a refresh, for a progress bar or a log line."""

    event: ProgressEvent
    day: date | None = None
    rows: int = 0
    bytes: int = 0
    total_days: int = 0
    message: str = ""


ProgressCallback = Callable[[Progress], None]


@dataclass
class RefreshSummary:
    category: Category
    symbol: str
    start: str
    end: str
    days_in_range: int = 0
    days_from_store: int = 0
    days_fetched: int = 0
    days_failed: list[str] = field(default_factory=list)
    rows_added: int = 0
    duplicates_skipped: int = 0
    conflicts: int = 0
    rest_rows_replaced: int = 0
    tail_rows: int = 0
    requests: int = 0
    retries: int = 0
    errors_by_type: dict[str, int] = field(default_factory=dict)
    breaker_openings: int = 0
    peak_throttle: float = 1.0
    bytes_downloaded: int = 0
    files_exported: int = 0
    gaps: list[Gap] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows_added / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gaps"] = [gap.as_dict() for gap in self.gaps]
        data["rows_per_s"] = round(self.rows_per_s, 1)
        data["elapsed_s"] = round(self.elapsed_s, 3)
        return data


def copy_client_counters(summary: Any, stats: ClientStats) -> None:
    """The one place a client's monitoring figures enter a summary (refresh, market, executions):
    each `ClientStats` field the summary dataclass also declares, copied (dicts too)."""
    declared = {f.name for f in dataclasses.fields(summary)}
    for name in (f.name for f in dataclasses.fields(stats)):
        if name in declared:
            value = getattr(stats, name)
            setattr(summary, name, dict(value) if isinstance(value, dict) else value)
