"""What the store knows to be complete, and the three kinds of gap, all computed in SQL.

(a) uncovered: the requested range minus the union of `coverage` intervals (gaps and islands), in
    one statement for any number of (market, span) asks (`uncovered_many`; `uncovered` is one ask);
(b) silences: consecutive trades further apart than a threshold. Exact, and fast at 45M rows:
    trades are bucketed by half the threshold, so two consecutive trades farther apart than the
    threshold always lie in different non-empty buckets and only the bucket edges are compared;
(c) count mismatches: days whose stored row count differs from what their archive file held.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, NamedTuple

from fetch.market_span import Market, Span
from store.db import Store
from store.timeutil import day_start_us, days_touching, us_to_dt

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


ADD_COVERAGE_SQL = """
    INSERT INTO coverage (category, symbol, source, start_us, end_us, file_rows, expected_rows, added_rows,
                          detail, exec_type)
    SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), ?, unnest(?::BIGINT[]), unnest(?::BIGINT[]),
           unnest(?::BIGINT[]), unnest(?::BIGINT[]), unnest(?::BIGINT[]), unnest(?::VARCHAR[]),
           unnest(?::VARCHAR[])"""


class Covered(NamedTuple):
    """One coverage row: a span and the counts that justify it."""

    market: Market
    span: Span
    file_rows: int | None
    expected_rows: int | None
    added_rows: int
    detail: str | None
    exec_type: str | None = None


def add_coverage(store: Store, *, market: Market, source: str, span: Span, added_rows: int,
                 file_rows: int | None = None, expected_rows: int | None = None,
                 detail: str | None = None, exec_type: str | None = None) -> None:
    """Record `span` as complete; call inside the transaction that stored its rows."""
    add_coverage_many(store, source, [Covered(market, span, file_rows, expected_rows, added_rows, detail, exec_type)])


def add_coverage_many(store: Store, source: str, rows: Sequence[Covered]) -> None:
    """`add_coverage` of many spans in one statement (a commit of many small days)."""
    for row in rows:
        if row.span.end_us <= row.span.start_us:
            raise ValueError(f"empty coverage interval [{row.span.start_us}, {row.span.end_us})")
    store.execute(ADD_COVERAGE_SQL, [
        [r.market.category for r in rows], [r.market.symbol for r in rows], source,
        [r.span.start_us for r in rows], [r.span.end_us for r in rows], [r.file_rows for r in rows],
        [r.expected_rows for r in rows], [r.added_rows for r in rows], [r.detail for r in rows],
        [r.exec_type for r in rows]])


class Ask(NamedTuple):
    """One market over a span."""

    market: Market
    span: Span


ASKS = """asks AS (
        SELECT unnest(?::INTEGER[]) AS k, unnest(?::VARCHAR[]) AS category, unnest(?::VARCHAR[]) AS symbol,
               unnest(?::BIGINT[]) AS lo, unnest(?::BIGINT[]) AS hi
    )"""


def ask_params(asks: Sequence[Ask]) -> list[Any]:
    return [list(range(len(asks))), [a.market.category for a in asks], [a.market.symbol for a in asks],
            [a.span.start_us for a in asks], [a.span.end_us for a in asks]]


def uncovered_many_sql(sources: tuple[str, ...] = TRADE_SOURCES) -> str:
    """(k, gap_start, gap_end) of each ask's range
    minus the union of its market's coverage intervals of `sources` (of every exec type, or of the
    one asked: ?, NULL for every type, which only the former give)."""
    placeholders = ", ".join("?" for _ in sources)
    return f"""
        WITH {ASKS},
        iv AS (
            SELECT a.k, greatest(c.start_us, a.lo) AS s, least(c.end_us, a.hi) AS e
            FROM asks a JOIN coverage c ON c.category = a.category AND c.symbol = a.symbol
            WHERE c.source IN ({placeholders}) AND (c.exec_type IS NULL OR c.exec_type = ?)
              AND c.end_us > a.lo AND c.start_us < a.hi
        ),
        marked AS (
            SELECT k, s, e, CASE WHEN s <= max(e) OVER (PARTITION BY k ORDER BY s, e ROWS BETWEEN
                                 UNBOUNDED PRECEDING AND 1 PRECEDING) THEN 0 ELSE 1 END AS starts
            FROM iv
        ),
        islands AS (SELECT k, s, e, sum(starts) OVER (PARTITION BY k ORDER BY s, e) AS island FROM marked),
        merged AS (SELECT k, min(s) AS s, max(e) AS e FROM islands GROUP BY k, island),
        edges AS (SELECT k, s, lag(e) OVER (PARTITION BY k ORDER BY s) AS prev_e FROM merged),
        last AS (SELECT k, max(e) AS last_e FROM merged GROUP BY k)
        SELECT k, gap_start, gap_end FROM (
            SELECT d.k, coalesce(d.prev_e, a.lo) AS gap_start, d.s AS gap_end FROM edges d JOIN asks a USING (k)
            UNION ALL
            SELECT a.k, coalesce(l.last_e, a.lo), a.hi FROM asks a LEFT JOIN last l USING (k)
        ) WHERE gap_end > gap_start
        ORDER BY k, gap_start"""


def uncovered_many(store: Store, asks: Sequence[Ask], sources: tuple[str, ...] = TRADE_SOURCES,
                   exec_type: str | None = None) -> list[list[Span]]:
    """Each ask's uncovered spans, in the order of `asks`."""
    found: list[list[Span]] = [[] for _ in asks]
    if asks:
        for k, a, b in store.query(uncovered_many_sql(sources), [*ask_params(asks), *sources, exec_type]):
            found[int(k)].append(Span(int(a), int(b)))
    return found


def incomplete_days_many(store: Store, wanted: Sequence[tuple[Market, Sequence[date]]]) -> list[set[date]]:
    """For each (market, days): those of the days that coverage does not vouch for over the whole UTC
    day (a file or a partition is read as the whole day). One statement for all of them: a whole
    market concludes hundreds of symbols at once."""
    asks = [Ask(market, Span(day_start_us(min(days)), day_start_us(max(days) + timedelta(days=1))))
            for market, days in wanted if days]
    holes = iter(uncovered_many(store, asks))
    return [set(days_touching(next(holes))) & set(days) if days else set() for _, days in wanted]


def uncovered(store: Store, market: Market, span: Span, sources: tuple[str, ...] = TRADE_SOURCES,
              exec_type: str | None = None) -> list[Span]:
    """`span` minus the union of the market's coverage of `sources` (one ask of `uncovered_many`)."""
    return uncovered_many(store, [Ask(market, span)], sources, exec_type)[0]


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
    found = uncovered_gaps(store, market, span)
    if min_silence_s:
        found += [Gap("silence", a, b, f"no trade for {(b - a) / 1e6:.1f} s")
                  for a, b in silences(store, market, span, min_silence_s)]
    for a, b, expected, stored in count_mismatches(store, market, span):
        found.append(Gap("count_mismatch", a, b, f"the archive file held {expected} trades for this "
                         f"day, the store has {stored}", {"expected": expected, "stored": stored}))
    return sorted(found, key=lambda g: (g.start_us, g.kind))


def uncovered_gaps(store: Store, market: Market, span: Span) -> list[Gap]:
    """The spans of `span` no coverage row claims, each with its recorded reason (what `export`
    needs to refuse a day; the other kinds cost a scan of the trades)."""
    reasons = recorded_reasons(store, market, span)
    return [Gap("uncovered", hole.start_us, hole.end_us, _reason_for(hole, reasons))
            for hole in uncovered(store, market, span)]


def _reason_for(hole: Span, reasons: list[tuple[Span, str]]) -> str:
    for span, reason in reasons:
        if span.overlaps(hole):
            return reason
    return NO_REASON
