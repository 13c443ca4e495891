"""Daily parquet files in the exact cache format the context service reads.

`{cache_dir}/backfill_YYYY-MM-DD.parquet`: T int64 epoch ms, i string, p float64, q float64,
s string buy/sell, m bool (all nullable fields, as pyarrow writes them); sorted by time. A file is
written to a hidden temp name in the same directory and `os.replace`d, so a reader globbing
`backfill_*.parquet` never sees half a file. Which files are current and which symbol owns a
directory is `store.cache_dir`'s bookkeeping; this module writes.

DuckDB writes the file itself (`COPY (query) TO`, in parallel: a third faster than fetching the rows
as Arrow and writing them with pyarrow). Two details keep the format exact:

* DuckDB marks a column REQUIRED (non-nullable) when it can prove it holds no NULL, so each column
  goes through an identity `CASE WHEN x IS NOT NULL THEN x END` it cannot see through; the written
  schema is then checked, and should a DuckDB version still differ, the file is rewritten with
  pyarrow from the same query (`write_day`);
* the target of COPY cannot be a parameter on every supported DuckDB, so it is a string literal:
  a temp name we generate inside the cache dir, made absolute, refused if it holds a control
  character, with quotes doubled (DuckDB string literals have no other escapes). The row values
  stay parameters.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fetch.market_span import Market
from store.cache_dir import (
    IdMode,
    SkippedDay,
    Written,
    as_id_mode,
    cache_path,
    check_owner,
    claim_cache_dir,
    complete_days,
    day_fingerprint,
    record_export,
    temp_dir,
    temp_prefix,
)
from store.db import Store
from store.errors import ExportError, StoreError
from store.timeutil import day_start_us

CACHE_SCHEMA = pa.schema([
    pa.field("T", pa.int64()),
    pa.field("i", pa.string()),
    pa.field("p", pa.float64()),
    pa.field("q", pa.float64()),
    pa.field("s", pa.string()),
    pa.field("m", pa.bool_()),
])


def day_rows_sql(id_mode: IdMode) -> str:
    id_column = "CAST(tick_id AS VARCHAR)" if id_mode == "tick" else "trade_id"
    return f"""
        SELECT time_us // 1000 AS "T", {id_column} AS i, price AS p, qty AS q, side AS s,
               is_buyer_maker AS m
        FROM trades
        WHERE category = ? AND symbol = ? AND time_us >= ? AND time_us < ?
        ORDER BY time_us, trade_id"""


def _nullable(column: str) -> str:
    return f'CASE WHEN "{column}" IS NOT NULL THEN "{column}" END AS "{column}"'


def copy_day_sql(id_mode: IdMode, target: Path) -> str:
    """COPY of `day_rows_sql` to `target` (a literal, see the module docstring) as parquet."""
    columns = ", ".join(_nullable(name) for name in CACHE_SCHEMA.names)
    return (f"COPY (SELECT {columns} FROM ({day_rows_sql(id_mode)})) TO {_path_literal(target)} "
            "(FORMAT parquet, COMPRESSION snappy)")


def _path_literal(path: Path) -> str:
    text = str(Path(path).absolute())
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise ExportError(f"cannot write {text!r}: the path holds a control character; choose another "
                          "--cache-dir / BACKFILL_CACHE_DIR")
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True, slots=True)
class ExportedDay:
    day: date
    path: Path
    rows: int


@contextlib.contextmanager
def _snapshot(store: Store) -> Iterator[None]:
    """One read transaction: the rows and the fingerprint come from the same state of the store.
    Not `Store.atomic`: a reader must not queue behind the ingest's write lock."""
    store.execute("BEGIN TRANSACTION")
    try:
        yield
    finally:
        with contextlib.suppress(StoreError):
            store.execute("ROLLBACK")


def write_day(store: Store, *, market: Market, day: date, target: Path, id_mode: IdMode = "tick") -> int:
    """Write one day's file atomically (hidden temp file, then rename); returns its rows as a
    `Written`, an int that also carries the fingerprint they were read with and the file's size
    (`record_export` logs both; callers that only count rows need not know). Only reads the store, so it may run on a
    cursor of its own while the store ingests the next day."""
    params = [market.category, market.symbol, day_start_us(day), day_start_us(day + timedelta(days=1))]
    try:
        handle, temp_name = tempfile.mkstemp(dir=temp_dir(target), prefix=temp_prefix(target), suffix=".tmp")
    except OSError as error:
        raise ExportError(f"cannot write {target}: {error.strerror or error}") from None
    os.close(handle)
    temp = Path(temp_name)
    try:
        with _snapshot(store):
            fingerprint = day_fingerprint(store, market, day)
            try:
                row = store.query_one(copy_day_sql(id_mode, temp), params)
            except StoreError as error:
                raise ExportError(f"cannot write {target}: {error}") from None
            rows = int(row[0]) if row else 0
            if not pq.read_schema(temp).remove_metadata().equals(CACHE_SCHEMA):
                table = store.query_arrow(day_rows_sql(id_mode), params).cast(CACHE_SCHEMA)
                pq.write_table(table, temp, compression="snappy")
                rows = table.num_rows
        size = temp.stat().st_size
        os.replace(temp, target)
    except OSError as error:
        raise ExportError(f"cannot write {target}: {error.strerror or error}") from None
    finally:
        temp.unlink(missing_ok=True)
    return Written(rows, fingerprint, size)


@dataclass(frozen=True, slots=True)
class ExportReport:
    """Files written, and the days given no file with why (a reader takes a file as the whole day)."""

    written: list[ExportedDay] = field(default_factory=list)
    skipped: list[SkippedDay] = field(default_factory=list)


def export_day(store: Store, *, market: Market, day: date, cache_dir: Path,
               id_mode: IdMode = "tick") -> ExportedDay:
    target = cache_path(cache_dir, day)
    check_owner(store, target, market)
    rows = write_day(store, market=market, day=day, target=target, id_mode=id_mode)
    record_export(store, market=market, day=day, target=target, rows=rows, id_mode=id_mode)
    return ExportedDay(day, target, int(rows))


def export_range(store: Store, *, market: Market, days: list[date], cache_dir: Path,
                 id_mode: str = "tick", live_through_us: int | None = None) -> ExportReport:
    """Write the file of every day of `days` that is complete in the store (so far, for the day a
    follower is capturing: `complete_days`); skip (and say why) the others. The directory is claimed
    first: another owner's directory is refused before any write."""
    id_mode = as_id_mode(id_mode)
    directory = claim_cache_dir(store, cache_dir, market, id_mode)
    complete, skipped = complete_days(store, market, days, live_through_us=live_through_us)
    written = [export_day(store, market=market, day=day, cache_dir=directory, id_mode=id_mode) for day in complete]
    return ExportReport(written, skipped)


def export_days(store: Store, *, market: Market, days: list[date], cache_dir: Path,
                id_mode: IdMode = "tick", live_through_us: int | None = None) -> list[ExportedDay]:
    """`export_range`'s files (the days not complete in the store are left without one)."""
    return export_range(store, market=market, days=days, cache_dir=cache_dir,
                        id_mode=id_mode, live_through_us=live_through_us).written
