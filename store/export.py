"""Daily parquet files in the exact cache format the context service reads.

`{cache_dir}/backfill_YYYY-MM-DD.parquet`: T int64 epoch ms, i string, p float64, q float64,
s string buy/sell, m bool; sorted by time. A file is written to a hidden temp name in the same
directory and `os.replace`d, so a reader globbing `backfill_*.parquet` never sees half a file. The
`exports` table remembers which symbol owns a directory's files: two symbols in one directory would
silently overwrite each other's days, so that is refused.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from store.db import Store
from store.errors import ExportError
from store.plan import day_start_us

CACHE_SCHEMA = pa.schema([
    pa.field("T", pa.int64()),
    pa.field("i", pa.string()),
    pa.field("p", pa.float64()),
    pa.field("q", pa.float64()),
    pa.field("s", pa.string()),
    pa.field("m", pa.bool_()),
])


def cache_path(cache_dir: Path, day: date) -> Path:
    return Path(cache_dir) / f"backfill_{day.isoformat()}.parquet"


def day_rows_sql(id_mode: str) -> str:
    id_column = "CAST(tick_id AS VARCHAR)" if id_mode == "tick" else "trade_id"
    return f"""
        SELECT time_us // 1000 AS "T", {id_column} AS i, price AS p, qty AS q, side AS s,
               is_buyer_maker AS m
        FROM trades
        WHERE category = ? AND symbol = ? AND time_us >= ? AND time_us < ?
        ORDER BY time_us, trade_id"""


@dataclass(frozen=True, slots=True)
class ExportedDay:
    day: date
    path: Path
    rows: int


def _owner(store: Store, path: Path) -> tuple[str, str] | None:
    row = store.query_one("SELECT category, symbol FROM exports WHERE path = ? "
                          "ORDER BY exported_at DESC LIMIT 1", [str(path)])
    return (str(row[0]), str(row[1])) if row else None


def check_cache_dir(cache_dir: Path) -> Path:
    """Create the directory and prove it writable before any work starts."""
    directory = Path(cache_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-", delete=True)
        probe.close()
    except OSError as error:
        raise ExportError(f"cannot write to the cache dir {directory}: {error.strerror or error}; "
                          "choose another --cache-dir / BACKFILL_CACHE_DIR") from None
    return directory


def write_atomic(table: pa.Table, target: Path) -> None:
    """Write to a hidden temp file beside the target, then rename over it; never leave the temp."""
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        pq.write_table(table, temp_name, compression="snappy")
        os.replace(temp_name, target)
    except OSError as error:
        raise ExportError(f"cannot write {target}: {error.strerror or error}") from None
    finally:
        if os.path.exists(temp_name):
            os.remove(temp_name)


def export_day(store: Store, *, category: str, symbol: str, day: date, cache_dir: Path,
               id_mode: str = "tick") -> ExportedDay:
    target = cache_path(cache_dir, day)
    owner = _owner(store, target)
    if owner is not None and owner != (category, symbol):
        raise ExportError(f"{target} belongs to {owner[1]} ({owner[0]}); give each symbol its own "
                          "--cache-dir (the file name carries no symbol)")
    start_us = day_start_us(day)
    table = store.query_arrow(day_rows_sql(id_mode), [category, symbol, start_us,
                                                      day_start_us(day + timedelta(days=1))])
    table = table.cast(CACHE_SCHEMA)
    write_atomic(table, target)
    if not store.read_only:
        store.execute("DELETE FROM exports WHERE path = ?", [str(target)])
        store.execute("INSERT INTO exports (category, symbol, day, path, rows, id_mode) "
                      "VALUES (?, ?, ?, ?, ?, ?)", [category, symbol, day, str(target), table.num_rows,
                                                    id_mode])
    return ExportedDay(day, target, table.num_rows)


def days_needing_export(store: Store, *, category: str, symbol: str, days: list[date],
                        cache_dir: Path, id_mode: str) -> list[date]:
    """Days whose file is missing or whose recorded row count differs from the store's."""
    stale = []
    for day in days:
        target = cache_path(cache_dir, day)
        row = store.query_one("SELECT rows, id_mode FROM exports WHERE path = ? AND category = ? "
                              "AND symbol = ?", [str(target), category, symbol])
        stored = store.query_one("SELECT count(*) FROM trades WHERE category = ? AND symbol = ? AND "
                                 "time_us >= ? AND time_us < ?",
                                 [category, symbol, day_start_us(day),
                                  day_start_us(day + timedelta(days=1))])
        count = int(stored[0]) if stored else 0
        if row is None or not target.exists() or int(row[0]) != count or row[1] != id_mode:
            stale.append(day)
    return stale


def export_days(store: Store, *, category: str, symbol: str, days: list[date], cache_dir: Path,
                id_mode: str = "tick") -> list[ExportedDay]:
    directory = check_cache_dir(cache_dir)
    return [export_day(store, category=category, symbol=symbol, day=day, cache_dir=directory,
                       id_mode=id_mode) for day in days]
