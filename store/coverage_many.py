"""The coverage questions of a refresh, asked for many (category, symbol, range) at once.

A refresh asks the store what its range lacks before it fetches (`unverified_many`), and which gaps
are left, with their recorded reasons, after (`gaps_many`, `record_gaps_many`). Asked per symbol,
a whole market of small symbols pays DuckDB's fixed cost of planning and running each statement
(a few ms, more than a small day's commit) several times per symbol; here each question is one
statement for every ask together: the asks go in as parameter lists, unnested into a table keyed
by the ask's position `k`, and every window of `store.coverage`'s SQL is partitioned by `k`. The
answers are those of `store.coverage.unverified`, `find_gaps` (without silences) and
`record_open_gaps` per ask (tests/test_coverage_many.py compares them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, NamedTuple

from fetch.market_span import Market, Span
from store.coverage import NO_REASON, TRADE_SOURCES, Gap, all_count_mismatches, merge_spans
from store.db import Store


class Ask(NamedTuple):
    """One market over a span."""

    market: Market
    span: Span


_ASKS = """asks AS (
        SELECT unnest(?::INTEGER[]) AS k, unnest(?::VARCHAR[]) AS category, unnest(?::VARCHAR[]) AS symbol,
               unnest(?::BIGINT[]) AS lo, unnest(?::BIGINT[]) AS hi
    )"""


def _ask_params(asks: Sequence[Ask]) -> list[Any]:
    return [list(range(len(asks))), [a.market.category for a in asks], [a.market.symbol for a in asks],
            [a.span.start_us for a in asks], [a.span.end_us for a in asks]]


def uncovered_many_sql(sources: tuple[str, ...] = TRADE_SOURCES) -> str:
    """`store.coverage.uncovered_sql` for every ask: (k, gap_start, gap_end) of each ask's range
    minus the union of its market's coverage intervals of `sources` (of every exec type, or of the
    one asked: ?, NULL for every type, which only the former give)."""
    placeholders = ", ".join("?" for _ in sources)
    return f"""
        WITH {_ASKS},
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
        for k, a, b in store.query(uncovered_many_sql(sources), [*_ask_params(asks), *sources, exec_type]):
            found[int(k)].append(Span(int(a), int(b)))
    return found


def _mismatches_many(store: Store, asks: Sequence[Ask]) -> list[list[tuple[int, int, int, int]]]:
    """Each ask's archive days whose stored rows disagree with their file: one statement per
    category over the asks' whole span, shared out by market."""
    found: list[list[tuple[int, int, int, int]]] = [[] for _ in asks]
    by_category: dict[str, list[int]] = defaultdict(list)
    for k, ask in enumerate(asks):
        by_category[ask.market.category].append(k)
    for category, ks in by_category.items():
        lo, hi = min(asks[k].span.start_us for k in ks), max(asks[k].span.end_us for k in ks)
        by_symbol: dict[str, list[int]] = defaultdict(list)
        for k in ks:
            by_symbol[asks[k].market.symbol].append(k)
        for row_category, symbol, a, b, expected, stored in all_count_mismatches(store, None, Span(lo, hi)):
            if row_category != category:
                continue
            for k in by_symbol.get(symbol, ()):
                if a < asks[k].span.end_us and asks[k].span.start_us < b:
                    found[k].append((a, b, expected, stored))
    return found


def unverified_many(store: Store, asks: Sequence[Ask],
                    sources: tuple[str, ...] = TRADE_SOURCES) -> list[list[Span]]:
    """`store.coverage.unverified` of each ask: what a refresh must fetch (uncovered spans, and
    archive days whose stored rows disagree with their file), in two statements for all asks."""
    spans = uncovered_many(store, asks, sources)
    for k, mismatches in enumerate(_mismatches_many(store, asks)):
        clipped = [part for a, b, _, _ in mismatches if (part := Span(a, b).clip(asks[k].span)) is not None]
        spans[k] = merge_spans(spans[k] + clipped)
    return spans


RECORDED_REASONS_MANY_SQL = f"""
    WITH {_ASKS}
    SELECT a.k, g.start_us, g.end_us, g.reason
    FROM asks a JOIN open_gaps g ON g.category = a.category AND g.symbol = a.symbol
                               AND g.end_us > a.lo AND g.start_us < a.hi
    ORDER BY a.k, g.start_us, g.recorded_at DESC"""


def gaps_many(store: Store, asks: Sequence[Ask]) -> list[list[Gap]]:
    """`store.coverage.find_gaps` of each ask (no silences): uncovered spans with their recorded
    reason, and count mismatches, in three statements for all asks."""
    reasons: list[list[tuple[int, int, str]]] = [[] for _ in asks]
    if asks:
        for k, a, b, reason in store.query(RECORDED_REASONS_MANY_SQL, _ask_params(asks)):
            reasons[int(k)].append((int(a), int(b), str(reason)))
    found = [[Gap("uncovered", a, b, _reason_for(a, b, reasons[k])) for a, b in spans]
             for k, spans in enumerate(uncovered_many(store, asks))]
    for k, mismatches in enumerate(_mismatches_many(store, asks)):
        found[k] += [Gap("count_mismatch", a, b, f"the archive file held {expected} trades for this day, the "
                         f"store has {stored}", {"expected": expected, "stored": stored})
                     for a, b, expected, stored in mismatches]
    return [sorted(gaps, key=lambda g: (g.start_us, g.kind)) for gaps in found]


def _reason_for(start_us: int, end_us: int, reasons: list[tuple[int, int, str]]) -> str:
    for a, b, reason in reasons:
        if a < end_us and start_us < b:
            return reason
    return NO_REASON


CLEAR_OPEN_GAPS_MANY_SQL = f"""
    DELETE FROM open_gaps WHERE EXISTS (
        WITH {_ASKS}
        SELECT 1 FROM asks a
        WHERE open_gaps.category = a.category AND open_gaps.symbol = a.symbol
          AND open_gaps.start_us >= a.lo AND open_gaps.end_us <= a.hi)"""
RECORD_OPEN_GAPS_MANY_SQL = """
    INSERT INTO open_gaps (category, symbol, start_us, end_us, reason)
    SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::BIGINT[]), unnest(?::BIGINT[]),
           unnest(?::VARCHAR[])"""


def record_gaps_many(store: Store, asks: Sequence[Ask], gaps: Sequence[Sequence[Gap]]) -> None:
    """Replace the recorded reasons inside each ask's range with its findings (the asks of one
    market must not overlap); call inside a transaction."""
    if not asks:
        return
    store.execute(CLEAR_OPEN_GAPS_MANY_SQL, _ask_params(asks))
    rows = [(ask.market.category, ask.market.symbol, g.start_us, g.end_us, g.reason)
            for ask, found in zip(asks, gaps, strict=True) for g in found]
    if rows:
        store.execute(RECORD_OPEN_GAPS_MANY_SQL, [list(column) for column in zip(*rows, strict=True)])
