"""The coverage questions of a refresh, asked for many (category, symbol, range) at once.

A refresh asks the store what its range lacks before it fetches (`unverified_many`), and which gaps
are left, with their recorded reasons, after (`gaps_many`, `record_gaps_many`). Asked per symbol,
a whole market of small symbols pays DuckDB's fixed cost of planning and running each statement
(a few ms, more than a small day's commit) several times per symbol; here each question is one
statement for every ask together: the asks go in as parameter lists, unnested into a table keyed
by the ask's position `k` (`store.coverage.ASKS`), and every window is partitioned by `k`. The
answers are those of `store.coverage.unverified`, `find_gaps` (without silences) and
`record_open_gaps` per ask (tests/test_coverage_many.py compares them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from fetch.market_span import Span
from store.coverage import (
    ASKS,
    NO_REASON,
    TRADE_SOURCES,
    Ask,
    Gap,
    all_count_mismatches,
    ask_params,
    merge_spans,
    uncovered_many,
)
from store.db import Store


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
    WITH {ASKS}
    SELECT a.k, g.start_us, g.end_us, g.reason
    FROM asks a JOIN open_gaps g ON g.category = a.category AND g.symbol = a.symbol
                               AND g.end_us > a.lo AND g.start_us < a.hi
    ORDER BY a.k, g.start_us, g.recorded_at DESC"""


def gaps_many(store: Store, asks: Sequence[Ask]) -> list[list[Gap]]:
    """`store.coverage.find_gaps` of each ask (no silences): uncovered spans with their recorded
    reason, and count mismatches, in three statements for all asks."""
    reasons: list[list[tuple[int, int, str]]] = [[] for _ in asks]
    if asks:
        for k, a, b, reason in store.query(RECORDED_REASONS_MANY_SQL, ask_params(asks)):
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
        WITH {ASKS}
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
    store.execute(CLEAR_OPEN_GAPS_MANY_SQL, ask_params(asks))
    rows = [(ask.market.category, ask.market.symbol, g.start_us, g.end_us, g.reason)
            for ask, found in zip(asks, gaps, strict=True) for g in found]
    if rows:
        store.execute(RECORD_OPEN_GAPS_MANY_SQL, [list(column) for column in zip(*rows, strict=True)])
