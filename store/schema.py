"""Tables, analyst views and their comments, applied as numbered migrations.

`schema_version` records what a file has; opening an older file applies the missing steps in one
transaction each, so a store made by an earlier release upgrades itself and a newer one is refused.

The trades key (category, symbol, trade_id) is enforced by the ingest SQL (an anti-join on the key),
not by a PRIMARY KEY index: DuckDB's ART index over 45M string keys costs gigabytes of memory and
grows insert time day after day, while the anti-join stays flat. `verify` re-checks the whole table.
"""

from __future__ import annotations

import logging
from pathlib import Path

from store import day_summary, reconcile
from store.db import Store
from store.errors import StoreError

_V1 = [
    """CREATE TABLE trades (
        category       VARCHAR NOT NULL,
        symbol         VARCHAR NOT NULL,
        trade_id       VARCHAR NOT NULL,
        tick_id        BIGINT  NOT NULL,
        time_us        BIGINT  NOT NULL,
        price          DOUBLE  NOT NULL,
        qty            DOUBLE  NOT NULL,
        side           VARCHAR NOT NULL,
        is_buyer_maker BOOLEAN NOT NULL,
        is_block_trade BOOLEAN,
        source         VARCHAR NOT NULL
    )""",
    "COMMENT ON TABLE trades IS 'One row per public trade; key (category, symbol, trade_id), never duplicated'",
    "COMMENT ON COLUMN trades.category IS 'linear, inverse or spot'",
    "COMMENT ON COLUMN trades.symbol IS 'Bybit symbol, e.g. BTCUSDT'",
    "COMMENT ON COLUMN trades.trade_id IS 'Exchange trade id (trdMatchID/execId); spot archive: YYYYMMDD + 10-digit daily id'",
    "COMMENT ON COLUMN trades.tick_id IS 'TradeTick.id: the id itself when numeric, else a stable 63-bit md5 hash'",
    "COMMENT ON COLUMN trades.time_us IS 'Trade time, epoch microseconds UTC (archive precision is 0.1 ms)'",
    "COMMENT ON COLUMN trades.price IS 'Trade price'",
    "COMMENT ON COLUMN trades.qty IS 'Trade size (contracts for inverse, base coin otherwise)'",
    "COMMENT ON COLUMN trades.side IS 'Taker side: buy or sell'",
    "COMMENT ON COLUMN trades.is_buyer_maker IS 'True when the taker sold (side = sell)'",
    "COMMENT ON COLUMN trades.is_block_trade IS 'Block trade flag where the source says (REST); NULL if unknown'",
    "COMMENT ON COLUMN trades.source IS 'Where the row came from: archive, rest or ws'",
    """CREATE TABLE executions (
        exec_id      VARCHAR PRIMARY KEY,
        category     VARCHAR NOT NULL,
        symbol       VARCHAR NOT NULL,
        order_id     VARCHAR NOT NULL,
        exec_type    VARCHAR NOT NULL,
        time_us      BIGINT  NOT NULL,
        price        DOUBLE,
        qty          DOUBLE,
        side         VARCHAR,
        fee          DOUBLE,
        fee_currency VARCHAR,
        is_maker     BOOLEAN
    )""",
    "COMMENT ON TABLE executions IS 'The account''s own fills from /v5/execution/list, keyed by execId'",
    "COMMENT ON COLUMN executions.exec_type IS 'Trade, Funding, BustTrade, AdlTrade, Settle, Delivery...'",
    "COMMENT ON COLUMN executions.time_us IS 'execTime, epoch microseconds UTC'",
    """CREATE TABLE coverage (
        category      VARCHAR NOT NULL,
        symbol        VARCHAR NOT NULL,
        source        VARCHAR NOT NULL,
        start_us      BIGINT  NOT NULL,
        end_us        BIGINT  NOT NULL,
        file_rows     BIGINT,
        expected_rows BIGINT,
        added_rows    BIGINT  NOT NULL,
        fetched_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
        detail        VARCHAR
    )""",
    "COMMENT ON TABLE coverage IS 'Intervals [start_us, end_us) known complete, committed with their rows'",
    "COMMENT ON COLUMN coverage.source IS 'archive (a whole day file), rest (recent-trade tail) or executions'",
    "COMMENT ON COLUMN coverage.file_rows IS 'Rows the source held (archive: lines of the day file)'",
    "COMMENT ON COLUMN coverage.expected_rows IS 'Distinct trade ids of the source inside the interval'",
    "COMMENT ON COLUMN coverage.added_rows IS 'Rows this fetch added (the rest were already stored)'",
    """CREATE TABLE open_gaps (
        category    VARCHAR NOT NULL,
        symbol      VARCHAR NOT NULL,
        start_us    BIGINT  NOT NULL,
        end_us      BIGINT  NOT NULL,
        reason      VARCHAR NOT NULL,
        recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    "COMMENT ON TABLE open_gaps IS 'Why the last refresh could not cover an interval (reported, never papered over)'",
    """CREATE TABLE conflicts (
        category       VARCHAR NOT NULL,
        symbol         VARCHAR NOT NULL,
        trade_id       VARCHAR NOT NULL,
        stored_time_us BIGINT,
        stored_price   DOUBLE,
        stored_qty     DOUBLE,
        stored_side    VARCHAR,
        new_time_us    BIGINT,
        new_price      DOUBLE,
        new_qty        DOUBLE,
        new_side       VARCHAR,
        new_source     VARCHAR,
        seen_at        TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    "COMMENT ON TABLE conflicts IS 'A known trade id that arrived again with different values; the stored row is kept'",
    """CREATE VIEW trades_v AS
       SELECT category, symbol, trade_id, tick_id, make_timestamp(time_us) AS ts, time_us, price, qty,
              side, is_buyer_maker, is_block_trade, source, price * qty AS notional
       FROM trades""",
    "COMMENT ON VIEW trades_v IS 'trades with a TIMESTAMP column ts (UTC) and notional = price * qty'",
    """CREATE VIEW daily AS
       SELECT category, symbol, CAST(make_timestamp(time_us) AS DATE) AS day, count(*) AS trades,
              make_timestamp(min(time_us)) AS first_ts, make_timestamp(max(time_us)) AS last_ts,
              min(price) AS low, max(price) AS high,
              arg_min(price, time_us) AS open, arg_max(price, time_us) AS close,
              sum(qty) AS volume, sum(price * qty) / nullif(sum(qty), 0) AS vwap,
              sum(CASE WHEN side = 'buy' THEN qty ELSE 0 END) AS taker_buy_volume
       FROM trades GROUP BY ALL""",
    "COMMENT ON VIEW daily IS 'Per-day summary: count, OHLC, volume, VWAP, taker buy volume'",
]

# Version 2 added the export log; a version-1 file gains it when opened.
_V2 = [
    """CREATE TABLE exports (
        category    VARCHAR NOT NULL,
        symbol      VARCHAR NOT NULL,
        day         DATE    NOT NULL,
        path        VARCHAR NOT NULL,
        rows        BIGINT  NOT NULL,
        id_mode     VARCHAR NOT NULL,
        exported_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    "COMMENT ON TABLE exports IS 'Parquet cache files written, with their row counts'",
]

# Version 3 keeps a per-day summary with the trades, so `daily` reads a row a day, not every trade.
_V3 = [
    day_summary.CREATE_TABLE_SQL,
    ("COMMENT ON TABLE day_summary IS 'One row per (category, symbol, UTC day) with trades: "
     "recomputed from trades by every ingest, in its transaction'"),
    "COMMENT ON COLUMN day_summary.notional IS 'sum(price * qty): vwap = notional / volume'",
    day_summary.FILL_ALL_SQL,
    day_summary.DAILY_VIEW_SQL,
    "COMMENT ON VIEW daily IS 'Per-day summary: count, OHLC, volume, VWAP, taker buy volume'",
]

# Version 4: coverage is evidence. Each day's summary carries a content fingerprint; each export
# records the fingerprint and size of the file it wrote; executions coverage names its exec type.
_V4 = [
    "DROP VIEW daily",
    "DROP TABLE day_summary",
    day_summary.CREATE_TABLE_SQL,
    ("COMMENT ON TABLE day_summary IS 'One row per (category, symbol, UTC day) with trades: "
     "recomputed from trades by every ingest, in its transaction'"),
    "COMMENT ON COLUMN day_summary.notional IS 'sum(price * qty): vwap = notional / volume'",
    "COMMENT ON COLUMN day_summary.id_xor IS 'bit_xor of the day''s tick ids'",
    "COMMENT ON COLUMN day_summary.time_sum IS 'sum of the day''s time_us'",
    ("COMMENT ON COLUMN day_summary.fingerprint IS 'trades:id_xor:time_sum, changes whenever the "
     "day''s set of trades does'"),
    day_summary.FILL_ALL_SQL,
    day_summary.DAILY_VIEW_SQL,
    "COMMENT ON VIEW daily IS 'Per-day summary: count, OHLC, volume, VWAP, taker buy volume'",
    "ALTER TABLE exports ADD COLUMN fingerprint VARCHAR",
    "ALTER TABLE exports ADD COLUMN size_bytes BIGINT",
    "COMMENT ON COLUMN exports.fingerprint IS 'day_summary.fingerprint of the rows the file was written from'",
    "COMMENT ON COLUMN exports.size_bytes IS 'Size of the file as written, in bytes'",
    "ALTER TABLE coverage ADD COLUMN exec_type VARCHAR",
    ("COMMENT ON COLUMN coverage.exec_type IS 'executions coverage: the execType filter it was fetched "
     "with (NULL: every type); NULL for trades'"),
]

# Version 5: live capture (`follow`) is reconciled against the archive day that replaces it.
_V5 = [*reconcile.MIGRATION,
       ("COMMENT ON COLUMN coverage.source IS 'archive (a whole day file), rest (recent-trade), ws (live "
        "WebSocket capture) or executions'")]

# Version 6: every table, view and column explains itself (`SELECT table_name, column_name, comment
# FROM duckdb_columns()`): comments only, no data changes.
_MARKET = {"category": "linear, inverse or spot", "symbol": "Bybit symbol, e.g. BTCUSDT"}
_SUMMARY = {"day": "UTC day", "trades": "Number of trades of the day", "low": "Lowest price",
            "high": "Highest price", "open": "Price of the first trade", "close": "Price of the last trade",
            "volume": "sum(qty)", "taker_buy_volume": "sum(qty) of trades whose taker bought"}
COLUMN_COMMENTS: dict[str, dict[str, str]] = {
    "conflicts": {**_MARKET, "trade_id": "The trade id seen again",
                  "stored_time_us": "Time of the stored row, epoch microseconds UTC",
                  "stored_price": "Price of the stored row", "stored_qty": "Size of the stored row",
                  "stored_side": "Taker side of the stored row", "new_time_us": "Time of the arriving row",
                  "new_price": "Price of the arriving row", "new_qty": "Size of the arriving row",
                  "new_side": "Taker side of the arriving row", "new_source": "Source of the arriving row",
                  "seen_at": "When the conflict was seen"},
    "coverage": {**_MARKET, "start_us": "Start of the interval (inclusive), epoch microseconds UTC",
                 "end_us": "End of the interval (exclusive), epoch microseconds UTC",
                 "fetched_at": "When the interval was fetched and committed",
                 "detail": "Where it came from (e.g. the archive file) or other notes"},
    "day_summary": {**_MARKET, **_SUMMARY, "first_us": "Time of the first trade, epoch microseconds UTC",
                    "last_us": "Time of the last trade, epoch microseconds UTC"},
    "executions": {"exec_id": "execId: the fill's id (the key)", **_MARKET, "order_id": "orderId of the fill",
                   "price": "execPrice", "qty": "execQty", "side": "Buy or Sell (the account's side)",
                   "fee": "execFee (negative: a rebate)", "fee_currency": "Currency of the fee",
                   "is_maker": "True when the account was the maker"},
    "exports": {**_MARKET, "day": "UTC day of the file", "path": "Path of the parquet file",
                "rows": "Rows written", "id_mode": "tick (decimal TradeTick.id) or raw (the exchange id) in column i",
                "exported_at": "When the file was written"},
    "open_gaps": {**_MARKET, "start_us": "Start of the gap (inclusive), epoch microseconds UTC",
                  "end_us": "End of the gap (exclusive), epoch microseconds UTC",
                  "reason": "Why the interval could not be covered", "recorded_at": "When the gap was recorded"},
    "reconciliation": {**_MARKET, "day": "UTC day reconciled", "archive_trades": "Trades in the archive file",
                       "live_trades": "Live (ws/rest) trades stored for the day before the archive replaced them",
                       "matched": "Trades in both", "reconciled_at": "When the archive replaced the live rows"},
    "schema_version": {"version": "Schema version applied", "applied_at": "When it was applied"},
    "daily": {**_MARKET, **_SUMMARY, "first_ts": "Time of the first trade (TIMESTAMP, UTC)",
              "last_ts": "Time of the last trade (TIMESTAMP, UTC)", "vwap": "Volume-weighted average price"},
    "trades_v": {**_MARKET, "trade_id": "Exchange trade id", "tick_id": "TradeTick.id",
                 "ts": "Trade time (TIMESTAMP, UTC, microseconds)", "time_us": "Trade time, epoch microseconds UTC",
                 "price": "Trade price", "qty": "Trade size", "side": "Taker side: buy or sell",
                 "is_buyer_maker": "True when the taker sold", "is_block_trade": "Block trade flag (NULL if unknown)",
                 "source": "archive, rest or ws", "notional": "price * qty"},
}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_V6 = ["COMMENT ON TABLE schema_version IS 'Schema versions applied to this file, one row per migration'"] + [
    f"COMMENT ON COLUMN {table}.{column} IS {_quote(comment)}"
    for table, columns in COLUMN_COMMENTS.items() for column, comment in columns.items()]

# Version 7: what proves a market's id filter (`store.id_filter`, a file beside the store) current:
# the store's own random identity and a per-market generation, bumped with every insert into trades.
_V7 = [
    "CREATE TABLE store_identity (store_id VARCHAR NOT NULL)",
    "INSERT INTO store_identity SELECT CAST(uuid() AS VARCHAR)",
    """CREATE TABLE id_generation (
        category   VARCHAR NOT NULL,
        symbol     VARCHAR NOT NULL,
        generation BIGINT  NOT NULL
    )""",
    "COMMENT ON TABLE store_identity IS 'This store''s random identity: a filter file names the store it belongs to'",
    "COMMENT ON COLUMN store_identity.store_id IS 'Random UUID chosen when the table was created'",
    ("COMMENT ON TABLE id_generation IS 'Per market, bumped in the transaction of every insert into trades: "
     "an id filter file beside the store is trusted only at the generation it names'"),
    "COMMENT ON COLUMN id_generation.category IS 'linear, inverse or spot'",
    "COMMENT ON COLUMN id_generation.symbol IS 'Bybit symbol, e.g. BTCUSDT'",
    "COMMENT ON COLUMN id_generation.generation IS 'Inserts into the market''s trades so far (since version 7)'",
]

MIGRATIONS: list[list[str]] = [_V1, _V2, _V3, _V4, _V5, _V6, _V7]
log = logging.getLogger("context.backfill")
SCHEMA_VERSION = len(MIGRATIONS)
# Versions 6 and 7 only add comments and the id filter's bookkeeping: a version-5 file answers every
# read-only command the same, so the read-only commands keep working on it until the next `refresh`
# upgrades it.
READABLE_FROM = 5


VERSION_SQL = "SELECT coalesce(max(version), 0) FROM schema_version"
CREATE_VERSION_TABLE_SQL = ("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, "
                              "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
def current_version(store: Store) -> int:
    store.execute(CREATE_VERSION_TABLE_SQL)
    row = store.query_one(VERSION_SQL)
    return int(row[0]) if row else 0


HAS_VERSION_TABLE_SQL = ("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' "
                             "AND table_name = 'schema_version'")


def stored_version(store: Store) -> int:
    """The schema version of a file, read without changing it (0: no schema at all)."""
    row = store.query_one(HAS_VERSION_TABLE_SQL)
    if not row or not row[0]:
        return 0
    row = store.query_one(VERSION_SQL)
    return int(row[0]) if row else 0


_FOREIGN_SQL = """
    SELECT
        (SELECT count(*) FROM information_schema.tables
         WHERE table_catalog = current_database() AND table_name <> 'schema_version') AS other_tables,
        (SELECT count(*) FROM information_schema.columns
         WHERE table_catalog = current_database() AND table_schema = 'main'
           AND table_name = 'schema_version' AND column_name IN ('version', 'applied_at')) AS ours"""


def check_ours(store: Store) -> None:
    """Refuse a DuckDB file someone else made: tables, but no `schema_version` of ours. Extending it
    would mix our tables into another application's database (and migrate would fail half-way)."""
    row = store.query_one(_FOREIGN_SQL)
    other_tables, ours = (int(row[0]), int(row[1])) if row else (0, 0)
    if other_tables and ours != 2:
        raise StoreError(f"{store.path} is a DuckDB database made by something else (it has tables but no "
                         "bybit-backfill schema_version); it was left unchanged: point --db / "
                         "BACKFILL_DB_PATH at a new or existing bybit-backfill store")


def check_readable(store: Store) -> None:
    """A read-only open cannot migrate: refuse a file whose schema is missing or older than this release
    (e.g. a first run killed while it created the file) with what to do, not a catalog error later."""
    check_ours(store)
    version = stored_version(store)
    if version < READABLE_FROM:
        raise StoreError(f"{store.path} has schema version {version}, this release needs {SCHEMA_VERSION} "
                         "(a first run was interrupted while creating it, or an older release made it); "
                         "run `bybit-backfill refresh` on it once to complete or upgrade it")


RECORD_VERSION_SQL = "INSERT INTO schema_version (version) VALUES (?)"


def migrate(store: Store) -> int:
    """Bring the file to SCHEMA_VERSION, one transaction per step; returns the steps applied."""
    check_ours(store)
    with store.atomic():
        version = current_version(store)
    if version > SCHEMA_VERSION:
        raise StoreError(f"{store.path} has schema version {version}, newer than this release "
                         f"({SCHEMA_VERSION}); upgrade bybit-backfill")
    if 0 < version < SCHEMA_VERSION:  # an earlier release's file: say why this open takes a moment
        log.info("upgrading %s from schema version %d to %d", store.path, version, SCHEMA_VERSION)
    for number in range(version + 1, SCHEMA_VERSION + 1):
        with store.atomic():
            if current_version(store) >= number:  # another thread of this process applied it meanwhile
                continue
            for statement in MIGRATIONS[number - 1]:
                store.execute(statement)
            store.execute(RECORD_VERSION_SQL, [number])
    return SCHEMA_VERSION - version


def open_store(path: str | Path, *, read_only: bool = False, wait_s: float = 0.0, memory_limit: str = "2GB",
               sandbox: bool = False) -> Store:
    """`Store.open`, then the schema: migrated to this release when writable, checked when read-only
    or sandboxed (a read-only open cannot migrate). The store is closed again if either step fails."""
    store = Store.open(path, read_only=read_only, wait_s=wait_s, memory_limit=memory_limit, sandbox=sandbox)
    try:
        if store.read_only:
            check_readable(store)
        else:
            migrate(store)
    except BaseException:
        store.close()
        raise
    return store
