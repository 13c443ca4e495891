"""Insert normalized trade batches with dedup and conflict detection done in SQL.

A batch is staged once (with its `tick_id`), repeated ids inside it are folded, and the stored rows
that share an id with it are found by a semi-join restricted to the batch's time span plus a day on
each side (DuckDB's zone maps make that a small scan, so day 30 costs what day 1 does). Rows whose id
is stored with the same values are duplicates; with other values, conflicts (logged in `conflicts`,
the stored row kept); the rest are inserted by an anti-join. received = added + duplicates + conflicts.

Callers run `ingest_batch` inside `Store.atomic()` together with the coverage row it justifies.
Identifiers in the SQL are constants; every value is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from fetch.models import TRADE_SCHEMA
from store.db import Store

DAY_US = 86_400_000_000
_ARROW_NAME = "incoming_arrow"
_VALUES = "(time_us, price, qty, side)"

# TradeTick.id in SQL: the id when it is a number that fits in 63 bits, else the first 8 bytes of
# its md5 read big-endian with the sign bit cleared. `store.history.tick_id` is the Python twin.
TICK_ID_SQL = ("coalesce(CASE WHEN regexp_full_match(trade_id, '[0-9]{1,19}') "
               "THEN TRY_CAST(trade_id AS BIGINT) END, "
               "CAST(CAST('0x' || md5(trade_id)[1:16] AS UBIGINT) & 9223372036854775807 AS BIGINT))")


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


def stage_sql() -> str:
    """Fold repeated ids of the batch (keeping the earliest values) and compute tick_id once."""
    return f"""
        CREATE OR REPLACE TEMP TABLE incoming AS
        SELECT category, symbol, trade_id, {TICK_ID_SQL} AS tick_id, time_us, price, qty, side,
               side = 'sell' AS is_buyer_maker, is_block_trade, source
        FROM {_ARROW_NAME}
        QUALIFY row_number() OVER (PARTITION BY trade_id ORDER BY {_VALUES}) = 1"""


def batch_conflicts_sql() -> str:
    """Rows of the batch that repeat an id with other values than the kept row."""
    return f"""
        INSERT INTO conflicts (category, symbol, trade_id, stored_time_us, stored_price, stored_qty,
                               stored_side, new_time_us, new_price, new_qty, new_side, new_source)
        SELECT k.category, k.symbol, k.trade_id, k.time_us, k.price, k.qty, k.side,
               a.time_us, a.price, a.qty, a.side, a.source
        FROM {_ARROW_NAME} a JOIN incoming k USING (trade_id)
        WHERE (a.time_us, a.price, a.qty, a.side) IS DISTINCT FROM (k.time_us, k.price, k.qty, k.side)"""


def existing_sql() -> str:
    """Stored rows sharing an id with the batch, looked up within the batch's span +- one day."""
    return """
        CREATE OR REPLACE TEMP TABLE existing AS
        SELECT t.trade_id, t.time_us, t.price, t.qty, t.side
        FROM trades t
        WHERE t.category = ? AND t.symbol = ? AND t.time_us >= ? AND t.time_us < ?
          AND t.trade_id IN (SELECT trade_id FROM incoming)"""


def stored_conflicts_sql() -> str:
    return """
        INSERT INTO conflicts (category, symbol, trade_id, stored_time_us, stored_price, stored_qty,
                               stored_side, new_time_us, new_price, new_qty, new_side, new_source)
        SELECT i.category, i.symbol, i.trade_id, e.time_us, e.price, e.qty, e.side,
               i.time_us, i.price, i.qty, i.side, i.source
        FROM incoming i JOIN existing e USING (trade_id)
        WHERE (i.time_us, i.price, i.qty, i.side) IS DISTINCT FROM (e.time_us, e.price, e.qty, e.side)"""


def insert_sql() -> str:
    return """
        INSERT INTO trades (category, symbol, trade_id, tick_id, time_us, price, qty, side,
                            is_buyer_maker, is_block_trade, source)
        SELECT i.category, i.symbol, i.trade_id, i.tick_id, i.time_us, i.price, i.qty, i.side,
               i.is_buyer_maker, i.is_block_trade, i.source
        FROM incoming i ANTI JOIN existing e USING (trade_id)"""


def drop_rest_rows_sql() -> str:
    """The archive is authoritative for its day: REST rows of that day give way to it."""
    return """
        DELETE FROM trades
        WHERE category = ? AND symbol = ? AND source = 'rest' AND time_us >= ? AND time_us < ?"""


def drop_archive_covered_sql() -> str:
    """REST rows inside a day the archive already covers are not stored twice (spot ids differ)."""
    return """
        DELETE FROM incoming
        WHERE EXISTS (SELECT 1 FROM coverage c
                      WHERE c.category = incoming.category AND c.symbol = incoming.symbol
                        AND c.source = 'archive'
                        AND incoming.time_us >= c.start_us AND incoming.time_us < c.end_us)"""


def _count(store: Store, sql: str, params: list[object] | tuple[object, ...] = ()) -> int:
    row = store.query_one(sql, params)
    return int(row[0]) if row and row[0] is not None else 0


def ingest_batch(store: Store, batch: pa.Table, *, category: str, symbol: str,
                 replace_rest: tuple[int, int] | None = None, skip_archive_covered: bool = False,
                 ) -> IngestResult:
    """Insert a normalized batch (TRADE_SCHEMA); call inside `store.atomic()`."""
    received = batch.num_rows
    replaced = 0
    if replace_rest is not None:
        replaced = _count(store, drop_rest_rows_sql(), [category, symbol, *replace_rest])
    if received == 0:
        return IngestResult(0, 0, 0, 0, replaced)
    store.register(_ARROW_NAME, batch.select(TRADE_SCHEMA.names))
    try:
        store.execute(stage_sql())
        conflicts = 0
        staged = _count(store, "SELECT count(*) FROM incoming")
        if staged < received:
            conflicts += _count(store, batch_conflicts_sql())
    finally:
        store.unregister(_ARROW_NAME)
    skipped = _count(store, drop_archive_covered_sql()) if skip_archive_covered else 0
    low, high = store.query_one("SELECT min(time_us), max(time_us) FROM incoming") or (None, None)
    if low is None:
        return IngestResult(received, 0, received - conflicts, conflicts, replaced)
    store.execute(existing_sql(), [category, symbol, low - DAY_US, high + DAY_US + 1])
    conflicts += _count(store, stored_conflicts_sql())
    added = _count(store, insert_sql())
    duplicates = received - added - conflicts - skipped
    return IngestResult(received, added, duplicates + skipped, conflicts, replaced)


def distinct_ids_between(store: Store, start_us: int, end_us: int) -> int:
    """Distinct ids of the staged batch inside [start, end): what a day's file says the day holds."""
    return _count(store, "SELECT count(*) FROM incoming WHERE time_us >= ? AND time_us < ?",
                  [start_us, end_us])
