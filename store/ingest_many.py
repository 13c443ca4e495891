"""Commit many staged archive days in one transaction, with a few statements for all of them.

A whole market is mostly small days, where `store.ingest`'s ~20 statements per day (a millisecond
or more each) and the COMMIT are most of the work. Most of those days are *fresh*:

* the file repeats no id and its rows lie inside its day (known from the staging's summary);
* no stored row of the market falls on that day (`day_summary`, kept with the trades in every
  transaction), so no REST or live rows wait to give way and nothing is reconciled;
* the market's id filter has seen none of its ids, so no stored row anywhere shares one (the probe
  adds them too; a day with hits goes on to the general path with the filter's answer);
* no stored row within a day around it shares a tick id: the look near the batch that catches
  damaged filter bits in `store.ingest`, run only when a neighbouring day holds rows.

`day_summary` (which `verify` checks against the trades) only picks the candidates: a summary that
lies (edited by hand) cannot let a stored id in twice, since the filter is built from the trades
themselves and a hit sends the day down the general path.

A fresh day's rows are all new, so every fresh day of the group is inserted by one scan of their
staged Arrow tables, without a match; their day summaries are computed from those same rows (the
days held nothing before); their coverage rows and the markets' generations are one statement each.
Days that are not fresh, and later days of a market already in the group, go through
`ingest_staged` one by one, in the same transaction, after the fresh ones: what they match against
includes the fresh rows. The results are those `ingest_staged` would give.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from fetch.market_span import Market, Span
from store import id_filter
from store.coverage import Covered, add_coverage, add_coverage_many
from store.day_summary import summarize_rows_sql
from store.db import PRIVATE, Store
from store.ingest import NEAR_US, IngestResult, Staging, distinct_ids_between, ingest_staged
from store.timeutil import day_of_us

ARCHIVE = "archive"


@dataclass(frozen=True, slots=True)
class StagedDay:
    """One archive day staged outside the store, ready to commit with its coverage row."""

    market: Market
    span: Span        # the UTC day the file is for
    staging: Staging
    detail: str       # the file's address, kept on its coverage row


def commit_day(store: Store, day: StagedDay) -> IngestResult:
    """A day and its coverage row through the general path (call inside `store.atomic()`)."""
    result = ingest_staged(store, day.staging, replace_rest=day.span)
    expected = distinct_ids_between(store, day.span)
    add_coverage(store, market=day.market, source=ARCHIVE, span=day.span, added_rows=result.added,
                 file_rows=day.staging.received, expected_rows=expected, detail=day.detail)
    return result


def commit_days(store: Store, days: Sequence[StagedDay]) -> list[IngestResult]:
    """Every day and its coverage row (call inside `store.atomic()`), results in the given order."""
    results: list[IngestResult | None] = [None] * len(days)
    fresh = _fresh(store, days)
    if fresh:
        _insert_fresh(store, [days[i] for i in fresh], list(fresh.values()))
        for i in fresh:
            received = days[i].staging.received
            results[i] = IngestResult(received, received, 0, 0, 0)
    for i, day in enumerate(days):
        if results[i] is None:
            results[i] = commit_day(store, day)
    return [r for r in results if r is not None]


# Per candidate day: stored days of its market on that day and on the days beside it (from
# `day_summary`, one row per stored day), and its market's id-filter state (`id_filter.state_of`):
# one statement, where two cost a small group a tenth of its commit.
_CLASSIFY_SQL = """
    WITH d AS (
        SELECT unnest(?::INTEGER[]) AS k, unnest(?::VARCHAR[]) AS category, unnest(?::VARCHAR[]) AS symbol,
               unnest(?::DATE[]) AS day
    )
    SELECT d.k,
           count(s.day) FILTER (WHERE s.day = d.day),
           count(s.day) FILTER (WHERE s.day IN (d.day - 1, d.day + 1)),
           (SELECT store_id FROM store_identity LIMIT 1),
           (SELECT max(g.generation) FROM id_generation g WHERE g.category = d.category AND g.symbol = d.symbol)
    FROM d LEFT JOIN day_summary s ON s.category = d.category AND s.symbol = d.symbol
    GROUP BY d.k, d.category, d.symbol
    ORDER BY d.k"""

_NEAR_TICKS = "ingest_many_near"
# Per day k (a branch each): how many stored rows of its market within a day around its batch share
# a tick id with the batch.
_SHARED_NEAR_SQL = f"""
    (SELECT ?::INTEGER AS k, count(*) FROM trades
     WHERE category = ? AND symbol = ? AND time_us >= ? AND time_us < ?
       AND tick_id IN (SELECT tick_id FROM {_NEAR_TICKS} WHERE k = ?))"""


def _candidate(day: StagedDay) -> bool:
    staging = day.staging
    summary = staging.summary
    if staging.table is None or staging.source != ARCHIVE or summary is None:
        return False
    rows, distinct, low, high = summary
    return (rows > 0 and rows == distinct == staging.received and low is not None and high is not None
            and day.span.contains(low) and day.span.contains(high))


def _fresh(store: Store, days: Sequence[StagedDay]) -> dict[int, id_filter.MarketFilter]:
    """The fresh days (see the module's docstring), each with its market's filter."""
    if store.path == PRIVATE:  # no id filter: nothing can be shown fresh cheaply
        return {}
    seen: set[Market] = set()
    candidates = []
    for i, day in enumerate(days):
        if day.market not in seen and _candidate(day):
            candidates.append(i)
        seen.add(day.market)
    if not candidates:
        return {}
    markets = [days[i].market for i in candidates]
    classes = store.query(_CLASSIFY_SQL, [list(range(len(candidates))), [m.category for m in markets],
                                          [m.symbol for m in markets],
                                          [day_of_us(days[i].span.start_us) for i in candidates]])
    fresh: dict[int, id_filter.MarketFilter] = {}
    kept = [(i, id_filter.state_of(store_id, generation), beside)
            for i, (_, on_day, beside, store_id, generation) in zip(candidates, classes, strict=True) if not on_day]
    filters = id_filter.market_filters(
        store, [(days[i].market.category, days[i].market.symbol) for i, _, _ in kept],
        extras=[days[i].staging.received for i, _, _ in kept],
        expected_more=[days[i].staging.expected_more for i, _, _ in kept], states=[state for _, state, _ in kept])
    shared = _shared_near(store, [days[i] for i, _, beside in kept if beside])
    for (i, _, _), ids in zip(kept, filters, strict=True):
        day = days[i]
        staging = day.staging
        assert staging.table is not None
        if day.market in shared:
            continue
        ticks = staging.table.column("tick_id").to_numpy()
        hits = ids.probe_and_add(ticks)  # one pass over the filter's pages, a day's ids added
        if hits.any():  # the general path takes it from here, with what the filter answered
            staging.probed = (ids, np.unique(ticks[hits]))
            continue
        fresh[i] = ids
    return fresh


def _shared_near(store: Store, days: list[StagedDay]) -> set[Market]:
    """The markets of `days` (one day each) whose stored rows within a day around their day's
    batch share a tick id with it, in one statement: a branch per day, each filtered on its own so
    the table's zone maps skip the rest (per day, a statement and its registration cost a whole
    market's daily refresh more than the look itself)."""
    if not days:
        return set()
    params: list[object] = []
    for k, day in enumerate(days):
        assert day.staging.summary is not None
        _, _, low, high = day.staging.summary
        assert low is not None and high is not None
        params += [k, day.market.category, day.market.symbol, low - NEAR_US, high + NEAR_US + 1, k]
    ticks = pa.table({"k": pa.array(np.repeat(np.arange(len(days), dtype=np.int32),
                                              [day.staging.received for day in days])),
                      "tick_id": pa.concat_arrays([_ticks(day) for day in days])})
    store.register(_NEAR_TICKS, ticks)
    try:
        rows = store.query(" UNION ALL ".join([_SHARED_NEAR_SQL] * len(days)), params)
    finally:
        store.unregister(_NEAR_TICKS)
    return {days[int(k)].market for k, count in rows if count}


def _ticks(day: StagedDay) -> pa.Array:
    assert day.staging.table is not None
    return day.staging.table.column("tick_id").combine_chunks()


_FRESH_ROWS = "ingest_many_rows"
# The insert is left free to write rows in any order: DuckDB's order-keeping insert leaves partly
# filled row groups that the next checkpoint merges and compresses again (0.3-0.4 s after a busy
# day, against 0.03 s; the per-day path's anti-join never kept the order either).
# One call for the insert and the summary (each call to DuckDB waits for the GIL again on return,
# ~5-10 ms on a busy 2-core machine: the commit thread is what a whole market of small days waits
# on). No parameters: the source is this module's constant.
_KEEP_ORDER_SQL = "RESET preserve_insertion_order"
_SUMMARIZE_FRESH_SQL = summarize_rows_sql(
    f"(SELECT category, symbol, time_us, price, qty, tick_id, CASE WHEN is_sell THEN 'sell' ELSE 'buy' END AS side "
    f"FROM {_FRESH_ROWS})")
_INSERT_FRESH_SQL = f"""
    SET preserve_insertion_order = false;
    INSERT INTO trades (category, symbol, trade_id, tick_id, time_us, price, qty, side,
                        is_buyer_maker, is_block_trade, source)
    SELECT category, symbol, trade_id, tick_id, time_us, price, qty,
           CASE WHEN is_sell THEN 'sell' ELSE 'buy' END, is_sell, is_block_trade, '{ARCHIVE}'
    FROM {_FRESH_ROWS};
    {_KEEP_ORDER_SQL};
    {_SUMMARIZE_FRESH_SQL}"""


def _insert_fresh(store: Store, days: list[StagedDay], filters: list[id_filter.MarketFilter]) -> None:
    store.register(_FRESH_ROWS, pa.concat_tables([_with_market(day) for day in days]))
    try:
        store.execute(_INSERT_FRESH_SQL)
    except BaseException:
        with contextlib.suppress(Exception):  # the transaction is lost anyway; the setting is global
            store.execute(_KEEP_ORDER_SQL)
        raise
    finally:
        store.unregister(_FRESH_ROWS)
    add_coverage_many(store, ARCHIVE, [
        Covered(day.market, day.span, day.staging.received, day.staging.received, day.staging.received, day.detail)
        for day in days])
    generations = id_filter.bump_generations(store, [(d.market.category, d.market.symbol) for d in days])
    for ids, generation in zip(filters, generations, strict=True):
        ids.inserted(generation)


def _with_market(day: StagedDay) -> pa.Table:
    """The day's staged rows with its category and symbol as (one-value dictionary) columns."""
    table = day.staging.table
    assert table is not None
    zeros = pa.array(np.zeros(table.num_rows, np.int32))
    for name, value in (("symbol", day.market.symbol), ("category", day.market.category)):
        table = table.add_column(0, name, pa.DictionaryArray.from_arrays(zeros, pa.array([value])))
    return table
