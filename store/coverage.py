"""What the store knows to be complete, and the three kinds of gap, all computed in SQL.

(a) uncovered: the requested range minus the union of `coverage` intervals (gaps and islands);
(b) silences: consecutive trades further apart than a threshold. Exact, and fast at 45M rows:
    trades are bucketed by half the threshold, so two consecutive trades farther apart than the
    threshold always lie in different non-empty buckets and only the bucket edges are compared;
(c) count mismatches: days whose stored row count differs from what their archive file held.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from store.db import Store

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_US = 86_400_000_000
TRADE_SOURCES = ("archive", "rest", "ws")


def us_to_dt(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def dt_to_us(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True, slots=True)
class Gap:
    """One interval the store cannot vouch for, with why."""

    kind: str  # uncovered | silence | count_mismatch
    start_us: int
    end_us: int
    reason: str
    detail: dict[str, Any] | None = None

    @property
    def start(self) -> datetime:
        return us_to_dt(self.start_us)

    @property
    def end(self) -> datetime:
        return us_to_dt(self.end_us)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "start": self.start.isoformat(), "end": self.end.isoformat(),
                "seconds": round((self.end_us - self.start_us) / 1e6, 3), "reason": self.reason,
                **({"detail": self.detail} if self.detail else {})}


def add_coverage(store: Store, *, category: str, symbol: str, source: str, start_us: int, end_us: int,
                 added_rows: int, file_rows: int | None = None, expected_rows: int | None = None,
                 detail: str | None = None) -> None:
    store.execute(
        "INSERT INTO coverage (category, symbol, source, start_us, end_us, file_rows, expected_rows, "
        "added_rows, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [category, symbol, source, start_us, end_us, file_rows, expected_rows, added_rows, detail])


def uncovered_sql(sources: tuple[str, ...] = TRADE_SOURCES) -> str:
    """Range [?, ?) minus the union of coverage intervals of (category, symbol, sources)."""
    placeholders = ", ".join("?" for _ in sources)
    return f"""
        WITH params AS (SELECT ?::BIGINT AS lo, ?::BIGINT AS hi),
        iv AS (
            SELECT greatest(c.start_us, p.lo) AS s, least(c.end_us, p.hi) AS e
            FROM coverage c, params p
            WHERE c.category = ? AND c.symbol = ? AND c.source IN ({placeholders})
              AND c.end_us > p.lo AND c.start_us < p.hi
        ),
        marked AS (
            SELECT s, e, CASE WHEN s <= max(e) OVER (ORDER BY s, e ROWS BETWEEN UNBOUNDED PRECEDING
                                                     AND 1 PRECEDING) THEN 0 ELSE 1 END AS starts
            FROM iv
        ),
        islands AS (SELECT s, e, sum(starts) OVER (ORDER BY s, e) AS island FROM marked),
        merged AS (SELECT min(s) AS s, max(e) AS e FROM islands GROUP BY island),
        edges AS (SELECT s, e, lag(e) OVER (ORDER BY s) AS prev_e FROM merged)
        SELECT gap_start, gap_end FROM (
            SELECT coalesce(prev_e, (SELECT lo FROM params)) AS gap_start, s AS gap_end FROM edges
            UNION ALL
            SELECT coalesce((SELECT max(e) FROM merged), (SELECT lo FROM params)),
                   (SELECT hi FROM params)
        ) WHERE gap_end > gap_start
        ORDER BY gap_start"""


def uncovered(store: Store, category: str, symbol: str, start_us: int, end_us: int,
              sources: tuple[str, ...] = TRADE_SOURCES) -> list[tuple[int, int]]:
    rows = store.query(uncovered_sql(sources), [start_us, end_us, category, symbol, *sources])
    return [(int(a), int(b)) for a, b in rows]


def silences_sql() -> str:
    return """
        WITH buckets AS (
            SELECT time_us // ? AS bucket, min(time_us) AS first_us, max(time_us) AS last_us
            FROM trades
            WHERE category = ? AND symbol = ? AND time_us >= ? AND time_us < ?
            GROUP BY bucket
        ),
        edges AS (
            SELECT last_us AS silent_from, lead(first_us) OVER (ORDER BY bucket) AS silent_to
            FROM buckets
        )
        SELECT silent_from, silent_to FROM edges
        WHERE silent_to - silent_from > ?
        ORDER BY silent_from"""


def silences(store: Store, category: str, symbol: str, start_us: int, end_us: int,
             min_silence_s: float) -> list[tuple[int, int]]:
    threshold = int(min_silence_s * 1_000_000)
    width = max(1, threshold // 2)
    rows = store.query(silences_sql(), [width, category, symbol, start_us, end_us, threshold])
    return [(int(a), int(b)) for a, b in rows]


def newest_archive_days_sql() -> str:
    """The newest archive coverage row of each interval in range, with what its file held."""
    return """
        SELECT start_us, end_us, expected_rows FROM coverage
        WHERE category = ? AND symbol = ? AND source = 'archive' AND expected_rows IS NOT NULL
          AND end_us > ? AND start_us < ?
        QUALIFY row_number() OVER (PARTITION BY start_us ORDER BY fetched_at DESC) = 1
        ORDER BY start_us"""


def rows_per_day_sql() -> str:
    """Stored rows per UTC day (epoch-day number) in [?, ?): one scan, however many days."""
    return """
        SELECT time_us // 86400000000 AS epoch_day, count(*) FROM trades
        WHERE category = ? AND symbol = ? AND time_us >= ? AND time_us < ?
        GROUP BY epoch_day"""


def rows_between_sql() -> str:
    return "SELECT count(*) FROM trades WHERE category = ? AND symbol = ? AND time_us >= ? AND time_us < ?"


def count_mismatches(store: Store, category: str, symbol: str, start_us: int,
                     end_us: int) -> list[tuple[int, int, int, int]]:
    """Archive days whose stored rows differ from the distinct ids their file held for the day.

    Archive coverage is whole UTC days (`verify` checks it), so rows are counted per day in one
    grouped scan; a correlated count per interval was decorrelated by DuckDB into a join over the
    whole table (2 s at 45M rows). Any other interval is counted on its own."""
    days = store.query(newest_archive_days_sql(), [category, symbol, start_us, end_us])
    if not days:
        return []
    low, high = min(int(d[0]) for d in days), max(int(d[1]) for d in days)
    per_day = {int(k): int(n) for k, n in store.query(rows_per_day_sql(), [category, symbol, low, high])}
    found = []
    for a, b, expected in ((int(a), int(b), int(e)) for a, b, e in days):
        if a % DAY_US == 0 and b - a == DAY_US:
            stored = per_day.get(a // DAY_US, 0)
        else:
            row = store.query_one(rows_between_sql(), [category, symbol, a, b])
            stored = int(row[0]) if row else 0
        if stored != expected:
            found.append((a, b, expected, stored))
    return found


def record_open_gaps(store: Store, category: str, symbol: str, start_us: int, end_us: int,
                     gaps: list[Gap]) -> None:
    """Replace the recorded reasons inside [start, end) with this refresh's findings."""
    store.execute("DELETE FROM open_gaps WHERE category = ? AND symbol = ? AND start_us >= ? "
                  "AND end_us <= ?", [category, symbol, start_us, end_us])
    for gap in gaps:
        store.execute("INSERT INTO open_gaps (category, symbol, start_us, end_us, reason) "
                      "VALUES (?, ?, ?, ?, ?)", [category, symbol, gap.start_us, gap.end_us, gap.reason])


def recorded_reasons(store: Store, category: str, symbol: str, start_us: int,
                     end_us: int) -> list[tuple[int, int, str]]:
    rows = store.query("SELECT start_us, end_us, reason FROM open_gaps WHERE category = ? AND "
                       "symbol = ? AND end_us > ? AND start_us < ? ORDER BY start_us, recorded_at DESC",
                       [category, symbol, start_us, end_us])
    return [(int(a), int(b), str(c)) for a, b, c in rows]


NO_REASON = "not fetched yet: run `bybit-backfill refresh` over this range"


def find_gaps(store: Store, category: str, symbol: str, start_us: int, end_us: int,
              min_silence_s: float | None = None) -> list[Gap]:
    """Every gap of the three kinds inside [start, end), uncovered ones with their recorded reason."""
    reasons = recorded_reasons(store, category, symbol, start_us, end_us)
    found = [Gap("uncovered", a, b, _reason_for(a, b, reasons))
             for a, b in uncovered(store, category, symbol, start_us, end_us)]
    if min_silence_s:
        found += [Gap("silence", a, b, f"no trade for {(b - a) / 1e6:.1f} s")
                  for a, b in silences(store, category, symbol, start_us, end_us, min_silence_s)]
    for a, b, expected, stored in count_mismatches(store, category, symbol, start_us, end_us):
        found.append(Gap("count_mismatch", a, b, f"the archive file held {expected} trades for this "
                         f"day, the store has {stored}", {"expected": expected, "stored": stored}))
    return sorted(found, key=lambda g: (g.start_us, g.kind))


def _reason_for(start_us: int, end_us: int, reasons: list[tuple[int, int, str]]) -> str:
    for a, b, reason in reasons:
        if a < end_us and start_us < b:
            return reason
    return NO_REASON
