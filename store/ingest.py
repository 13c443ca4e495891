"""Insert normalized trade batches with dedup and conflict detection done in SQL.

A batch is staged in the temp table `incoming` (with its `tick_id`), possibly one Arrow batch at a
time as the archive file is parsed (`Staging`), so a day never has to sit whole in Python memory.
Then, inside the caller's transaction (`ingest_staged`):

* repeated ids inside the batch are folded, keeping the earliest values (a `row_number()` window
  over the id). That window is the costliest statement of the path, and a busy day has no repeated
  id, so it runs only when `count(DISTINCT tick_id) < count(*)` says some id may repeat: equal ids
  have equal tick ids, so equal counts prove there is none. A day staged in a private database is
  counted there, before it moves into the store, so the store is not held for the count;
* the stored rows that share an id with the batch are found by `tick_id` (a 64-bit integer, much
  cheaper to hash than the id string; every later join is on the id itself), over all of the
  market's rows, whatever their time: an id stored a week earlier is found too. The market's id
  filter (`store.id_filter`) answers for most ids that no stored row has them; only its hits are
  looked up, near the batch's time first, then over the market's rows with those tick ids alone
  (without a filter, a semi-join over all of the market's rows). Rows whose id is stored with the
  same values are duplicates; with other values, conflicts (logged in `conflicts`, the stored row
  kept); the rest are inserted by an anti-join, and their insert bumps the market's generation.
  received = added + duplicates + conflicts.

The days it changed get their `day_summary` rows recomputed in the same transaction.

Callers run `ingest_batch` / `ingest_staged` inside `Store.atomic()` together with the coverage
row it justifies. Identifiers in the SQL are constants; every value is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from fetch import arrow_scalars
from fetch.errors import InputError
from fetch.market_span import Market, Span
from fetch.models import TRADE_SCHEMA
from store import id_filter
from store.day_summary import resummarize
from store.db import PRIVATE, Store
from store.errors import StoreError
from store.reconcile import reconcile_day
from store.tick_ids import TICK_ID_SQL, md5_low_sql, tick_ids, tick_number_sql

_ARROW_NAME = "incoming_arrow"
_VALUES = "(time_us, price, qty, is_sell)"  # is_sell orders as side does: buy < sell


@dataclass(frozen=True, slots=True)
class IngestResult:
    received: int
    added: int
    duplicates: int
    conflicts: int
    replaced: int = 0

    def __add__(self, other: IngestResult) -> IngestResult:
        return IngestResult(self.received + other.received, self.added + other.added,
                            self.duplicates + other.duplicates, self.conflicts + other.conflicts,
                            self.replaced + other.replaced)


EMPTY = IngestResult(0, 0, 0, 0, 0)

# The staged batch. Category, symbol and source are the same for every row: parameters, not columns.
# The side is staged as a boolean (short strings cost DuckDB more than the ids do) and turned back
# into 'buy'/'sell' on insert.
_STAGE_COLUMNS = "trade_id, tick_id, time_us, price, qty, is_sell, is_block_trade"
_SIDE = "CASE WHEN {0}.is_sell THEN 'sell' ELSE 'buy' END"


CREATE_STAGE_SQL = """
    CREATE OR REPLACE TEMP TABLE incoming (
        trade_id VARCHAR NOT NULL, tick_id BIGINT NOT NULL, time_us BIGINT NOT NULL,
        price DOUBLE NOT NULL, qty DOUBLE NOT NULL, is_sell BOOLEAN NOT NULL, is_block_trade BOOLEAN)"""


# One Arrow batch into `incoming`, with its tick_id computed once.
APPEND_STAGE_SQL = f"""
    INSERT INTO incoming ({_STAGE_COLUMNS})
    SELECT trade_id, {TICK_ID_SQL}, time_us, price, qty,
           CASE side WHEN 'sell' THEN true WHEN 'buy' THEN false END, is_block_trade
    FROM {_ARROW_NAME}"""


# The same rows for a private staging, kept in Arrow (`Staging`), with the tick id in two
# parts that `with_tick_ids` joins: the id as a number when it is one (TICK_ID_SQL's test), else the
# low 64 bits of md5_number (bytes 0..7 of the digest, little-endian), byte-swapped by numpy.
# TICK_ID_SQL in one expression costs DuckDB ~2.5 ms to bind and plan, more than the query itself on
# a small day. The number is computed in a subquery, so the md5 part reads it (`store.batch_staging`
# builds its own query from the same two pieces).
STAGE_ARROW_SQL = f"""
    SELECT trade_id, tick_number, {md5_low_sql("trade_id")} AS md5_low,
           time_us, price, qty, CASE side WHEN 'sell' THEN true WHEN 'buy' THEN false END AS is_sell,
           is_block_trade
    FROM (SELECT *, {tick_number_sql("trade_id")} AS tick_number FROM {_ARROW_NAME})"""
_SIGN_MASK = np.uint64(0x7FFF_FFFF_FFFF_FFFF)


def with_tick_ids(table: pa.Table) -> pa.Table:
    """A query's rows with its `tick_number` and `md5_low` columns (second and third:
    `tick_number_sql`, `md5_low_sql`) joined into `tick_id` (TICK_ID_SQL's value), in their place."""
    low = pc.fill_null(table.column("md5_low"), 0).to_numpy()
    hashed = pa.array((low.byteswap() & _SIGN_MASK).astype(np.int64))
    ticks = pc.if_else(pc.is_null(table.column("tick_number")), hashed, table.column("tick_number"))
    return table.drop_columns(["tick_number", "md5_low"]).add_column(1, "tick_id", ticks)


# Up to this many rows, a private staging's tick ids are hashed in Python (`store.tick_ids`, ~0.45 µs
# a row) rather than by STAGE_ARROW_SQL (~2.5 ms a statement before its first row, then ~0.2 µs a
# row): the break-even is near 10,000 rows, and most days of a whole market are smaller.
PYTHON_TICKS_ROWS = 8_192


def _staged_in_python(batch: pa.RecordBatch | pa.Table) -> pa.Table:
    """STAGE_ARROW_SQL's rows with `with_tick_ids`' tick ids, without DuckDB (the side is checked)."""
    ids = batch.column("trade_id")
    return pa.Table.from_arrays(
        [ids, pa.array(tick_ids(ids.to_pylist())), batch.column("time_us"), batch.column("price"),
         batch.column("qty"), pc.equal(batch.column("side"), arrow_scalars.string("sell")),
         batch.column("is_block_trade")], schema=_STAGE_SCHEMA)


_STAGE_SCHEMA = pa.schema([("trade_id", pa.string()), ("tick_id", pa.int64()), ("time_us", pa.int64()),
                           ("price", pa.float64()), ("qty", pa.float64()), ("is_sell", pa.bool_()),
                           ("is_block_trade", pa.bool_())])


# Rows, distinct tick ids (fewer than rows: an id may repeat) and the time span of the batch.
STAGE_SUMMARY_SQL = "SELECT count(*), count(DISTINCT tick_id), min(time_us), max(time_us) FROM incoming"
_ARROW_SUMMARY_SQL = STAGE_SUMMARY_SQL.replace("FROM incoming", f"FROM {_ARROW_NAME}")


# Fold repeated ids of the batch, keeping the earliest values.
FOLD_SQL = f"""
    CREATE OR REPLACE TEMP TABLE incoming_folded AS
    SELECT {_STAGE_COLUMNS} FROM incoming
    QUALIFY row_number() OVER (PARTITION BY trade_id ORDER BY {_VALUES}) = 1"""


# Rows of the batch (before folding) that repeat an id with other values than the kept row.
BATCH_CONFLICTS_SQL = f"""
    INSERT INTO conflicts (category, symbol, trade_id, stored_time_us, stored_price, stored_qty,
                           stored_side, new_time_us, new_price, new_qty, new_side, new_source)
    SELECT ?, ?, k.trade_id, k.time_us, k.price, k.qty, {_SIDE.format("k")},
           a.time_us, a.price, a.qty, {_SIDE.format("a")}, ?
    FROM incoming a JOIN incoming_folded k USING (trade_id)
    WHERE (a.time_us, a.price, a.qty, a.is_sell) IS DISTINCT FROM (k.time_us, k.price, k.qty, k.is_sell)"""


# Stored rows of the market that may share an id with the batch (same tick_id), at any time (`? IS
# NULL`) or within a window around the batch. Without an id filter (`store.id_filter`) this is the
# whole check: the semi-join reads the market's whole `tick_id` column (0.7 s at 45M rows in a fresh
# process), so the follower, which commits twice a second and may find no trusted filter, matches
# within a day around its rows (zone maps make that a small scan); its day is matched over the whole
# table again when its archive file replaces them. The id itself is compared next.
EXISTING_SQL = """
    CREATE OR REPLACE TEMP TABLE existing AS
    SELECT t.trade_id, t.tick_id, t.time_us, t.price, t.qty, t.side, t.side = 'sell' AS is_sell
    FROM trades t
    WHERE t.category = ? AND t.symbol = ? AND t.tick_id IN (SELECT tick_id FROM incoming)
      AND (?::BIGINT IS NULL OR (t.time_us >= ? AND t.time_us < ?))"""


_FILTER_HITS = "filter_hits"  # the tick ids the filter may have seen (an Arrow table)
NEAR_US = 86_400_000_000     # ids are looked for first within a day around the batch

# Stored rows found near the batch whose id the filter answered "never seen" for.
MISSED_BY_FILTER_SQL = f"SELECT count(*) FROM existing WHERE tick_id NOT IN (SELECT tick_id FROM {_FILTER_HITS})"

# Hits not explained near the batch: neither found there nor a REST/live row this ingest just dropped
# (`replaced`: the key being unique, that row was the only one with its id). A false positive of
# the filter, or an id really stored far away.
FAR_TICKS_SQL = f"""
    CREATE OR REPLACE TEMP TABLE far_ticks AS
    SELECT DISTINCT i.tick_id FROM incoming i
    WHERE i.tick_id IN (SELECT tick_id FROM {_FILTER_HITS})
      AND i.trade_id NOT IN (SELECT trade_id FROM existing)
      AND i.trade_id NOT IN (SELECT trade_id FROM replaced)"""
FAR_TICKS_COUNT_SQL = "SELECT count(*) FROM far_ticks"

# Those alone, over the market's other rows: a scan of the `tick_id` column, on the rare days it runs.
EXISTING_FAR_SQL = """
    INSERT INTO existing
    SELECT t.trade_id, t.tick_id, t.time_us, t.price, t.qty, t.side, t.side = 'sell'
    FROM trades t
    WHERE t.category = ? AND t.symbol = ? AND t.tick_id IN (SELECT tick_id FROM far_ticks)
      AND NOT (t.time_us >= ? AND t.time_us < ?)"""
FALSE_HITS_SQL = "SELECT count(*) FROM far_ticks WHERE tick_id NOT IN (SELECT tick_id FROM existing)"

# The REST and live rows the archive day is about to replace: their ids are no longer stored.
REPLACED_SQL = """
    CREATE OR REPLACE TEMP TABLE replaced AS
    SELECT trade_id FROM trades
    WHERE category = ? AND symbol = ? AND source IN ('rest', 'ws') AND time_us >= ? AND time_us < ?"""
NO_REPLACED_SQL = "CREATE OR REPLACE TEMP TABLE replaced (trade_id VARCHAR)"
BATCH_TICKS_SQL = "SELECT tick_id FROM incoming"


STORED_CONFLICTS_SQL = f"""
    INSERT INTO conflicts (category, symbol, trade_id, stored_time_us, stored_price, stored_qty,
                           stored_side, new_time_us, new_price, new_qty, new_side, new_source)
    SELECT ?, ?, i.trade_id, e.time_us, e.price, e.qty, e.side,
           i.time_us, i.price, i.qty, {_SIDE.format("i")}, ?
    FROM incoming i JOIN existing e USING (trade_id)
    WHERE (i.time_us, i.price, i.qty, i.is_sell) IS DISTINCT FROM (e.time_us, e.price, e.qty, e.is_sell)"""


INSERT_SQL = f"""
    INSERT INTO trades (category, symbol, trade_id, tick_id, time_us, price, qty, side,
                        is_buyer_maker, is_block_trade, source)
    SELECT ?, ?, i.trade_id, i.tick_id, i.time_us, i.price, i.qty, {_SIDE.format("i")},
           i.is_sell, i.is_block_trade, ?
    FROM incoming i ANTI JOIN existing e USING (trade_id)"""


# The archive is authoritative for its day: REST and live (ws) rows of that day give way to it.
DROP_REST_ROWS_SQL = """
    DELETE FROM trades
    WHERE category = ? AND symbol = ? AND source IN ('rest', 'ws') AND time_us >= ? AND time_us < ?"""


# REST rows inside a day the archive already covers are not stored twice (spot ids differ).
DROP_ARCHIVE_COVERED_SQL = """
    DELETE FROM incoming
    WHERE EXISTS (SELECT 1 FROM coverage c
                  WHERE c.category = ? AND c.symbol = ? AND c.source = 'archive'
                    AND incoming.time_us >= c.start_us AND incoming.time_us < c.end_us)"""


def _count(store: Store, sql: str, params: list[object] | tuple[object, ...] = ()) -> int:
    row = store.query_one(sql, params)
    return int(row[0]) if row and row[0] is not None else 0


class Staging:
    """Rows staged batch by batch: `Staging(store, ...)`, `.append(batch)` as batches come, then
    `ingest_staged` inside a transaction. Every row must hold the given market, and one source (that
    of the first batch). Staged in the store itself, the rows go to its temp table `incoming`.
    Staged in a private database (`Store.private()`, a refresh staging a day outside the store
    file), that database only computes the tick ids: the rows are kept as Arrow tables, one `table`
    once `detach`ed, and move into the store being ingested into at commit time (for a small day a
    private temp table's statements cost more than the parse)."""

    def __init__(self, store: Store, *, market: Market, match_window_us: int | None = None) -> None:
        self.store, self.market = store, market
        self.match_window_us = match_window_us  # None: match stored ids at any time (`existing_sql`)
        self.source: str | None = None
        self.received = 0
        # (rows, distinct tick ids, min and max time) of what is staged, once known: worked out in
        # the private database before the hop (`_bring_into`), it is not done while the store is held.
        self.summary: tuple[int, int, int | None, int | None] | None = None
        # Rows the rest of the run is expected to add after this batch (the caller's estimate), so a
        # rebuilt id filter is sized for the run, not for this batch alone (`id_filter.market_filter`).
        self.expected_more = 0
        # The staged rows as one Arrow table, once `detach`ed (a private staging only); set to None
        # by the caller once committed, and never staged again after that.
        self.table: pa.Table | None = None
        # The filter this transaction probed for the staged ids (adding them), and the tick ids it
        # had seen: `store.ingest_many` probed first, and a filter must not be probed twice for one
        # batch (its second answer would be "seen" for every id).
        self.probed: tuple[id_filter.MarketFilter, npt.NDArray[np.int64]] | None = None
        # The Arrow batches of a private staging until `detach` (None before: in the store, or detached).
        self._parts: list[pa.Table] | None = [] if store.path == PRIVATE else None
        if self._parts is None:
            store.execute(CREATE_STAGE_SQL)

    @classmethod
    def of_staged_rows(cls, private: Store, *, market: Market, table: pa.Table, source: str) -> Staging:
        """A private staging, detached, of rows already in the staged columns (`_STAGE_SCHEMA`, tick
        ids included: `store.batch_staging` stages many small files in one read)."""
        staging = cls(private, market=market)
        staging.source, staging.received = source, table.num_rows
        staging.table, staging._parts = table.cast(_STAGE_SCHEMA), None
        staging.summary = _arrow_summary(private, staging.table)
        return staging

    def append(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows == 0:
            return
        if self.source is None:
            self.source = str(batch.column("source")[0].as_py())
        market = self.market
        for name, expected in (("category", market.category), ("symbol", market.symbol), ("source", self.source)):
            if not pc.all(pc.equal(batch.column(name), arrow_scalars.string(expected)), skip_nulls=False).as_py():
                raise InputError(f"a batch staged for {market.category} {market.symbol} ({self.source}) holds "
                                 f"another {name}")
        sides = arrow_scalars.string_array(("buy", "sell"))
        if not pc.all(pc.is_in(batch.column("side"), value_set=sides), skip_nulls=False).as_py():
            raise InputError("a staged trade's side is neither 'buy' nor 'sell'")
        self.summary = None
        if self._parts is not None and batch.num_rows <= PYTHON_TICKS_ROWS:
            self._parts.append(_staged_in_python(batch))
        else:
            self.store.register(_ARROW_NAME, batch.select(TRADE_SCHEMA.names))
            try:
                if self._parts is not None:
                    self._parts.append(with_tick_ids(self.store.query_arrow(STAGE_ARROW_SQL)))
                else:
                    self.store.execute(APPEND_STAGE_SQL)
            finally:
                self.store.unregister(_ARROW_NAME)
        self.received += batch.num_rows

    def detach(self) -> None:
        """Join a private staging's batches into `table` and count them (rows, distinct tick ids,
        time span), in the staging worker: the commit, which holds the store, then only scans the
        table, and can scan it again if its transaction has to be retried. Once only: rows let go
        after a commit are never taken for an empty day."""
        if self._parts is None:
            raise StoreError(f"the rows staged for {self.market.category} {self.market.symbol} are not a "
                             "private staging's, or were already taken")
        table = pa.concat_tables(self._parts) if self._parts else _STAGE_SCHEMA.empty_table()
        self.table, self._parts = table, None
        self.summary = _arrow_summary(self.store, table)


_SMALL_ROWS = 50_000


def _arrow_summary(private: Store, table: pa.Table) -> tuple[int, int, int | None, int | None]:
    """STAGE_SUMMARY_SQL's answer for staged Arrow rows: pyarrow for a small day (a statement costs
    more than the count), DuckDB for a big one (it counts in parallel; pyarrow is ~10x slower)."""
    if table.num_rows < _SMALL_ROWS:
        times = pc.min_max(table.column("time_us")).as_py()
        return (table.num_rows, pc.count_distinct(table.column("tick_id")).as_py(), times["min"], times["max"])
    private.register(_ARROW_NAME, table)
    try:
        row = private.query_one(_ARROW_SUMMARY_SQL)
    finally:
        private.unregister(_ARROW_NAME)
    assert row is not None
    return int(row[0]), int(row[1]), row[2], row[3]


def ingest_staged(store: Store, staging: Staging, *, replace_rest: Span | None = None,
                  skip_archive_covered: bool = False) -> IngestResult:
    """Fold, match and insert what `staging` holds; call inside `store.atomic()`. The days whose
    rows changed (REST rows dropped, rows added) get their summary recomputed once, at the end."""
    _bring_into(store, staging)
    market = staging.market
    category, symbol = market.category, market.symbol
    replaced = 0
    if replace_rest is not None:
        reconcile_day(store, market, replace_rest)
        store.execute(REPLACED_SQL, [category, symbol, *replace_rest])
        replaced = _count(store, DROP_REST_ROWS_SQL, [category, symbol, *replace_rest])
    else:
        store.execute(NO_REPLACED_SQL)
    result, inserted = _match_and_insert(store, staging, skip_archive_covered)
    changed = ([replace_rest] if replace_rest is not None and replaced else []) + ([inserted] if inserted else [])
    if changed:
        resummarize(store, market, Span(min(a for a, _ in changed), max(b for _, b in changed)))
    return IngestResult(result.received, result.added, result.duplicates, result.conflicts, replaced)


_STAGED_NAME = "staged_incoming"


_COPY_STAGED_SQL = f"INSERT INTO incoming ({_STAGE_COLUMNS}) SELECT {_STAGE_COLUMNS} FROM {_STAGED_NAME}"


def _bring_into(store: Store, staging: Staging) -> None:
    """Move rows staged in another (private) database into `store`'s `incoming`, as one Arrow hop:
    a refresh stages a day without holding the store file, and holds it only for this and the merge."""
    if staging.store is store:
        return
    if staging.table is None:
        staging.detach()  # refuses rows already let go
    store.execute(CREATE_STAGE_SQL)
    store.register(_STAGED_NAME, staging.table)
    try:
        store.execute(_COPY_STAGED_SQL)
    finally:
        store.unregister(_STAGED_NAME)


_STAGE_SPAN_SQL = "SELECT min(time_us), max(time_us) FROM incoming"


def _match_and_insert(store: Store, staging: Staging, skip_archive_covered: bool,
                      ) -> tuple[IngestResult, Span | None]:
    """The counts, and the time span of the rows inserted (None when none were)."""
    market, received, source = staging.market, staging.received, staging.source
    category, symbol = market.category, market.symbol
    if received == 0:
        return EMPTY, None
    summary, staging.summary = staging.summary, None
    conflicts = _fold(store, market, source, summary)
    skipped = _count(store, DROP_ARCHIVE_COVERED_SQL, [category, symbol]) if skip_archive_covered else 0
    span: tuple[int | None, int | None]
    if summary is not None and not conflicts and not skipped and summary[0] == summary[1]:
        span = summary[2], summary[3]  # nothing was folded or dropped: the span is the staged one
    else:
        row = store.query_one(_STAGE_SPAN_SQL)
        span = (row[0], row[1]) if row else (None, None)
    low, high = span
    if low is None or high is None:
        return IngestResult(received, 0, received - conflicts, conflicts), None
    ids = _find_existing(store, staging, low, high)
    conflicts += _count(store, STORED_CONFLICTS_SQL, [category, symbol, source])
    added = _count(store, INSERT_SQL, [category, symbol, source])
    if added and store.path != PRIVATE:
        [generation] = id_filter.bump_generations(store, [(category, symbol)])
        if ids is not None:
            ids.inserted(generation)
    duplicates = received - added - conflicts - skipped
    return IngestResult(received, added, duplicates + skipped, conflicts), (Span(low, high + 1) if added else None)


def _find_existing(store: Store, staging: Staging, low: int, high: int) -> id_filter.MarketFilter | None:
    """Fill `existing` with the stored rows that share an id with the batch; the market's id filter
    when one was used (its bits now hold the batch's ids too). A global match (`match_window_us`
    None) always has one (built from the store if need be); a windowed one uses it if it is trusted,
    and is then global too."""
    category, symbol, window = staging.market.category, staging.market.symbol, staging.match_window_us
    market = None
    if store.path != PRIVATE:
        market = id_filter.market_filter(store, category, symbol, rebuild=window is None,
                                         extra=staging.received, expected_more=staging.expected_more)
    if market is None:
        lo, hi = (low - window, high + window + 1) if window is not None else (None, None)
        store.execute(EXISTING_SQL, [category, symbol, window, lo, hi])
        return None
    probed, staging.probed = staging.probed, None
    if probed is not None and probed[0] is market:
        seen = probed[1]
    else:
        ticks = store.query_arrow(BATCH_TICKS_SQL).column(0).to_numpy()
        seen = np.unique(ticks[market.probe_and_add(ticks)])
    # Every id of the batch is looked for near it, hit or not: that is where stored ids almost always
    # are (a day fetched again, the live rows around it), zone maps keep it a small scan, and a stored
    # id the filter missed proves its bits damaged (the header's checksum covers only the header):
    # the batch is then matched over the whole market and the file discarded, so a broken filter
    # cannot let a near duplicate in. Only hits unexplained near the batch are looked for far away.
    lo, hi = low - NEAR_US, high + NEAR_US + 1
    store.execute(EXISTING_SQL, [category, symbol, NEAR_US, lo, hi])
    store.register(_FILTER_HITS, pa.table({"tick_id": pa.array(seen, pa.int64())}))
    try:
        if _count(store, MISSED_BY_FILTER_SQL):
            market.damaged = True
            store.execute(EXISTING_SQL, [category, symbol, None, None, None])
            return market
        store.execute(FAR_TICKS_SQL)
    finally:
        store.unregister(_FILTER_HITS)
    if _count(store, FAR_TICKS_COUNT_SQL):
        store.execute(EXISTING_FAR_SQL, [category, symbol, lo, hi])
        market.stale_hits += _count(store, FALSE_HITS_SQL)
    return market


_DROP_STAGE_SQL = "DROP TABLE incoming"
_RENAME_FOLDED_SQL = "ALTER TABLE incoming_folded RENAME TO incoming"


def _fold(store: Store, market: Market, source: str | None,
          summary: tuple[int, int, int | None, int | None] | None) -> int:
    """Fold repeated ids when some id may repeat; returns the conflicts found among them."""
    rows, distinct, _, _ = summary or store.query_one(STAGE_SUMMARY_SQL) or (0, 0, None, None)
    if distinct == rows:
        return 0
    store.execute(FOLD_SQL)
    conflicts = _count(store, BATCH_CONFLICTS_SQL, [market.category, market.symbol, source])
    store.execute(_DROP_STAGE_SQL)
    store.execute(_RENAME_FOLDED_SQL)
    return conflicts


def ingest_batch(store: Store, batch: pa.Table, *, market: Market, replace_rest: Span | None = None,
                 skip_archive_covered: bool = False, match_window_us: int | None = None) -> IngestResult:
    """Insert a normalized batch (TRADE_SCHEMA); call inside `store.atomic()`. `match_window_us`
    limits the duplicate match to that far around the batch (see `existing_sql`)."""
    staging = Staging(store, market=market, match_window_us=match_window_us)
    staging.append(batch)
    return ingest_staged(store, staging, replace_rest=replace_rest,
                         skip_archive_covered=skip_archive_covered)


STAGED_BETWEEN_SQL = "SELECT count(*) FROM incoming WHERE time_us >= ? AND time_us < ?"


def distinct_ids_between(store: Store, span: Span) -> int:
    """Distinct ids of the staged batch inside `span`: what a day's file says the day holds."""
    return _count(store, STAGED_BETWEEN_SQL, [*span])
