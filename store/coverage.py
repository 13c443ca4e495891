"""What the store knows to be complete, and the three kinds of gap, all computed in SQL.

(a) uncovered: the requested range minus the union of `coverage` intervals (gaps and islands);
(b) silences: consecutive trades further apart than a threshold. Exact, and fast at 45M rows:
    trades are bucketed by half the threshold, so two consecutive trades farther apart than the
    threshold always lie in different non-empty buckets and only the bucket edges are compared;
(c) count mismatches: days whose stored row count differs from what their archive file held.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from fetch.market_span import Market, Span
from store.db import Store
from store.timeutil import us_to_dt

TRADE_SOURCES = ("archive", "rest", "ws")
GapKind = Literal["uncovered", "silence", "count_mismatch"]


@dataclass(frozen=True, slots=True)
class Gap:
    """One interval the store cannot vouch for, with why."""

    kind: GapKind
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


ADD_COVERAGE_SQL = ("INSERT INTO coverage (category, symbol, source, start_us, end_us, file_rows, expected_rows, "
                    "added_rows, detail, exec_type) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def add_coverage(store: Store, *, market: Market, source: str, span: Span, added_rows: int,
                 file_rows: int | None = None, expected_rows: int | None = None,
                 detail: str | None = None, exec_type: str | None = None) -> None:
    """Record `span` as complete; call inside the transaction that stored its rows."""
    if span.end_us <= span.start_us:
        raise ValueError(f"empty coverage interval [{span.start_us}, {span.end_us})")
    store.execute(
        ADD_COVERAGE_SQL,
        [market.category, market.symbol, source, *span, file_rows, expected_rows, added_rows, detail, exec_type])


def uncovered_sql(sources: tuple[str, ...] = TRADE_SOURCES) -> str:
    """Range [?, ?) minus the union of coverage intervals of (category, symbol, sources) fetched for
    every exec type or for the one asked (?: NULL asks for every type, which only the former give)."""
    placeholders = ", ".join("?" for _ in sources)
    return f"""
        WITH params AS (SELECT ?::BIGINT AS lo, ?::BIGINT AS hi),
        iv AS (
            SELECT greatest(c.start_us, p.lo) AS s, least(c.end_us, p.hi) AS e
            FROM coverage c, params p
            WHERE c.category = ? AND c.symbol = ? AND c.source IN ({placeholders})
              AND (c.exec_type IS NULL OR c.exec_type = ?)
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


def uncovered(store: Store, market: Market, span: Span, sources: tuple[str, ...] = TRADE_SOURCES,
              exec_type: str | None = None) -> list[Span]:
    rows = store.query(uncovered_sql(sources), [*span, market.category, market.symbol, *sources, exec_type])
    return [Span(int(a), int(b)) for a, b in rows]


SILENCES_SQL = """
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


def silences(store: Store, market: Market, span: Span, min_silence_s: float) -> list[Span]:
    threshold = int(min_silence_s * 1_000_000)
    width = max(1, threshold // 2)
    rows = store.query(SILENCES_SQL, [width, market.category, market.symbol, *span, threshold])
    return [Span(int(a), int(b)) for a, b in rows]


# Archive days whose stored rows (from `day_summary`, a row a day) differ from the distinct ids the
# day's newest file held; NULL category or symbol matches every one. Archive coverage is whole UTC
# days (`verify` checks), so the day's summary row is the day's stored rows.
COUNT_MISMATCHES_SQL = """
    WITH newest AS (
        SELECT category, symbol, start_us, end_us, expected_rows FROM coverage
        WHERE source = 'archive' AND expected_rows IS NOT NULL
          AND (?::VARCHAR IS NULL OR category = ?) AND (?::VARCHAR IS NULL OR symbol = ?)
          AND end_us > ? AND start_us < ?
        QUALIFY row_number() OVER (PARTITION BY category, symbol, start_us ORDER BY fetched_at DESC) = 1
    )
    SELECT n.category, n.symbol, n.start_us, n.end_us, n.expected_rows, coalesce(s.trades, 0) AS stored
    FROM newest n LEFT JOIN day_summary s
      ON s.category = n.category AND s.symbol = n.symbol AND s.day = CAST(make_timestamp(n.start_us) AS DATE)
    WHERE n.expected_rows <> coalesce(s.trades, 0)
    ORDER BY n.category, n.symbol, n.start_us"""

_ALL_TIME = Span(-(2**62), 2**62)


def all_count_mismatches(store: Store, market: Market | None = None,
                         span: Span = _ALL_TIME) -> list[tuple[str, str, int, int, int, int]]:
    """(category, symbol, start_us, end_us, expected, stored) of every archive day in `span` whose
    store disagrees with its file; no market means every one."""
    category, symbol = (market.category, market.symbol) if market is not None else (None, None)
    rows = store.query(COUNT_MISMATCHES_SQL, [category, category, symbol, symbol, *span])
    return [(str(c), str(s), int(a), int(b), int(e), int(n)) for c, s, a, b, e, n in rows]


def count_mismatches(store: Store, market: Market, span: Span) -> list[tuple[int, int, int, int]]:
    """(start_us, end_us, expected, stored) of every archive day whose store disagrees with its file."""
    return [row[2:] for row in all_count_mismatches(store, market, span)]


def unverified(store: Store, market: Market, span: Span,
               sources: tuple[str, ...] = TRADE_SOURCES) -> list[Span]:
    """What a refresh must fetch in `span`: the spans no coverage of `sources` vouches for, and the
    archive days whose stored rows disagree with their file (not complete either)."""
    spans = uncovered(store, market, span, sources)
    spans += [part for a, b, _, _ in count_mismatches(store, market, span)
              if (part := Span(a, b).clip(span)) is not None]
    return merge_spans(spans)


def merge_spans(spans: list[Span]) -> list[Span]:
    """Sorted, disjoint union of half-open spans."""
    merged: list[Span] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1].end_us:
            merged[-1] = Span(merged[-1].start_us, max(merged[-1].end_us, b))
        else:
            merged.append(Span(a, b))
    return merged


CLEAR_OPEN_GAPS_SQL = ("DELETE FROM open_gaps WHERE category = ? AND symbol = ? AND start_us >= ? "
                               "AND end_us <= ?")
RECORD_OPEN_GAP_SQL = ("INSERT INTO open_gaps (category, symbol, start_us, end_us, reason) "
                               "VALUES (?, ?, ?, ?, ?)")


def record_open_gaps(store: Store, market: Market, span: Span, gaps: list[Gap]) -> None:
    """Replace the recorded reasons inside `span` with this refresh's findings."""
    store.execute(CLEAR_OPEN_GAPS_SQL, [market.category, market.symbol, *span])
    for gap in gaps:
        store.execute(RECORD_OPEN_GAP_SQL, [market.category, market.symbol, gap.start_us, gap.end_us, gap.reason])


RECORDED_REASONS_SQL = ("SELECT start_us, end_us, reason FROM open_gaps WHERE category = ? AND "
                        "symbol = ? AND end_us > ? AND start_us < ? ORDER BY start_us, recorded_at DESC")


def recorded_reasons(store: Store, market: Market, span: Span) -> list[tuple[Span, str]]:
    rows = store.query(RECORDED_REASONS_SQL, [market.category, market.symbol, *span])
    return [(Span(int(a), int(b)), str(c)) for a, b, c in rows]


NO_REASON = "not fetched yet: run `bybit-backfill refresh` over this range"


def find_gaps(store: Store, market: Market, span: Span, min_silence_s: float | None = None) -> list[Gap]:
    """Every gap of the three kinds inside `span`, uncovered ones with their recorded reason."""
    reasons = recorded_reasons(store, market, span)
    found = [Gap("uncovered", hole.start_us, hole.end_us, _reason_for(hole, reasons))
             for hole in uncovered(store, market, span)]
    if min_silence_s:
        found += [Gap("silence", a, b, f"no trade for {(b - a) / 1e6:.1f} s")
                  for a, b in silences(store, market, span, min_silence_s)]
    for a, b, expected, stored in count_mismatches(store, market, span):
        found.append(Gap("count_mismatch", a, b, f"the archive file held {expected} trades for this "
                         f"day, the store has {stored}", {"expected": expected, "stored": stored}))
    return sorted(found, key=lambda g: (g.start_us, g.kind))


def _reason_for(hole: Span, reasons: list[tuple[Span, str]]) -> str:
    for span, reason in reasons:
        if span.overlaps(hole):
            return reason
    return NO_REASON
