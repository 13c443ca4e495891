"""Stage many small archive files in one DuckDB read, with the GIL free.

A whole market is mostly small days. Staging one in `store.staging` parses it with pyarrow and
hashes its ids in Python: ~5 ms a file, most of it holding the GIL, so with hundreds of them in a
run the event loop (the next requests) and the commit thread (which every small day waits on) wait
for the GIL. DuckDB reads a list of gzip CSV files in one statement, in its own threads and without
the GIL: here the small files waiting to be staged are read together (up to MAX_FILES, one
statement per layout), and each file's rows come back as its own detached `Staging`, exactly what
`stage_file` gives.

It is a fast path, not a parser of record. A file comes here only with a header this module knows
for its market's category (linear and inverse: the derivatives columns; spot: the spot columns;
either with its trailing RPI column, as `fetch.archive_csv` reads them), and its rows are kept only
when every one of them passes the checks `fetch.archive_csv` makes (the symbol where the file has
one, the side, a finite positive price and size, an id of the expected shape, a time of the file's
day in seconds with at most six decimals or, for spot, milliseconds with at most three); the time is
turned into microseconds by integer arithmetic, never through a float. Every other file, a file
with any row that fails, and every file of a read that fails (a truncated gzip, a malformed row)
are staged by `stage_file`, which stages them or says exactly what is wrong (the line, the value).
`tests/test_store_batch_staging.py` holds the two paths equal.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from isal import igzip

from fetch.archive_csv import LINEAR_COLUMNS, SPOT_COLUMNS
from fetch.market_span import Market
from fetch.models import Source
from store.db import Store
from store.ingest import Staging, with_tick_ids
from store.staging import Stopped, stage_file
from store.threads import GroupThread
from store.tick_ids import md5_low_sql, tick_number_sql
from store.timeutil import DAY_US, day_start_us

log = logging.getLogger("context.backfill")

MAX_FILES = 256  # files read in one statement at most
_GLOB = set("*?[]{}")
# Files smaller than this are staged here (`store.pipeline`): ~30,000 trades, where a file's fixed
# costs are most of its staging; a bigger one is parsed alone, streamed in batches.
SMALL_FILE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class _Layout:
    """A header this module reads, and how its rows become the staged columns."""

    columns: tuple[str, ...]
    spot: bool


_LAYOUTS = {",".join(columns).encode(): _Layout(columns, spot)
            for base, spot, rpi in ((LINEAR_COLUMNS, False, "RPI"), (SPOT_COLUMNS, True, "rpi"))
            for columns in (base, (*base, rpi))}
# Every column is read as text, with quoting off: DuckDB and pyarrow disagree on the margins of the
# CSV and number grammars (DuckDB reads `1_000` as a number, drops a space beside a quote), so only
# the plain shapes below are converted here; a quote, or anything else, sends the file to
# `stage_file`. Bybit's files are never quoted.
_NUMBER = "[0-9]+(\\.[0-9]+)?"


def _number_sql(column: str) -> str:
    """The DOUBLE of a plain decimal string; NULL for any other shape."""
    return f"CASE WHEN regexp_full_match({column}, '{_NUMBER}') THEN CAST({column} AS DOUBLE) END"


def _time_sql(column: str, decimals: int) -> str:
    """Integer microseconds of a decimal string of seconds (`decimals` 6) or milliseconds (3) with at
    most `decimals` places, by integer arithmetic; NULL for any other shape (`stage_file` then
    reads it, or says what it is)."""
    return (f"CASE WHEN regexp_full_match({column}, '[0-9]{{1,{18 - decimals}}}(\\.[0-9]{{1,{decimals}}})?') "
            f"THEN CAST(split_part({column}, '.', 1) AS BIGINT) * {10**decimals} "
            f"+ CAST(rpad(split_part({column}, '.', 2), {decimals}, '0') AS BIGINT) END")


def _read_sql(layout: _Layout) -> str:
    """The rows of the files `?` (a list), with the file's index `k` and whether the row passed
    every check (`ok`), in `with_tick_ids`' column order. Spot ids restart every day, so the
    stored id is the file's `YYYYMMDD` and the id zero-padded to 10 digits (as `fetch.archive_csv`;
    padding 1 to 10 digits gives the number's own padding, leading zeros or not)."""
    types = ", ".join(f"'{name}': 'VARCHAR'" for name in layout.columns)
    if layout.spot:
        trade_id = ("CASE WHEN regexp_full_match(c.id, '[0-9]{1,10}') "
                    "THEN f.prefix || lpad(c.id, 10, '0') END")
        time_us, qty, symbol_ok = _time_sql("c.timestamp", 3), _number_sql("c.volume"), "true"
    else:
        trade_id, qty = """CASE WHEN NOT contains(c.trdMatchID, '"') THEN c.trdMatchID END""", _number_sql("c.size")
        time_us, symbol_ok = _time_sql("c.timestamp", 6), "c.symbol = f.symbol"
    return f"""
    WITH f AS (
        SELECT unnest(?::VARCHAR[]) AS filename, unnest(?::INTEGER[]) AS k, unnest(?::VARCHAR[]) AS symbol,
               unnest(?::BIGINT[]) AS start_us, unnest(?::VARCHAR[]) AS prefix
    ), r AS (
        SELECT f.k, {trade_id} AS trade_id, {time_us} AS time_us, {_number_sql("c.price")} AS price, {qty} AS qty,
               lower(c.side) AS side,
               {symbol_ok} AND time_us >= f.start_us AND time_us < f.start_us + {DAY_US} AS fits
        FROM read_csv(?, columns = {{{types}}}, header = true, auto_detect = false, delim = ',', quote = '',
                      escape = '', compression = 'gzip', filename = true) c
        JOIN f USING (filename)
    )
    SELECT trade_id, tick_number, {md5_low_sql("trade_id")} AS md5_low, time_us, price, qty,
           side = 'sell' AS is_sell, NULL::BOOLEAN AS is_block_trade, k,
           coalesce(fits AND side IN ('buy', 'sell') AND isfinite(price) AND price > 0
                    AND isfinite(qty) AND qty > 0 AND length(trade_id) > 0, false) AS ok
    FROM (SELECT *, {tick_number_sql("trade_id")} AS tick_number FROM r)
    ORDER BY k"""


@dataclass(frozen=True, slots=True)
class SmallFile:
    """One downloaded day file to stage, the private database its refresh stages in, and the
    refresh's stop signal (for `stage_file`, if the file is staged alone)."""

    private: Store
    market: Market
    day: date
    path: Path
    stopping: threading.Event


def layout_of(path: Path, market: Market) -> _Layout | None:
    """How the file is read here, when its header is one this module reads for the market's
    category, else None (also when it cannot be read: `stage_file` then says why)."""
    try:
        with igzip.open(path, "rb") as stream:  # type: ignore[no-untyped-call]  # isal: no annotations
            line = stream.readline(4096)
    except Exception:  # noqa: BLE001 - any unreadable file (isal's own error too) is for `stage_file` to name
        return None
    layout = _LAYOUTS.get(line.rstrip(b"\r\n"))
    return layout if layout is not None and layout.spot == (market.category == "spot") else None


def stage_many(reader: Store, files: list[SmallFile]) -> list[Staging | BaseException]:
    """Each file's detached staging (or its error), in order: those `reader` (a private database
    of the caller's) can read together in one statement per layout, the rest by `stage_file`."""
    results: list[Staging | BaseException | None] = [None] * len(files)
    by_layout: dict[_Layout, list[int]] = {}
    paths: set[str] = set()
    for i, file in enumerate(files):
        if file.stopping.is_set():
            results[i] = Stopped()
            continue
        path = str(file.path)
        # DuckDB takes each path for a glob, and reads a path given twice twice: those go alone.
        layout = None if path in paths or _GLOB & set(path) else layout_of(file.path, file.market)
        paths.add(path)
        if layout is not None:
            by_layout.setdefault(layout, []).append(i)
    for layout, indexes in by_layout.items():
        for i, staging in zip(indexes, _read_together(reader, layout, [files[i] for i in indexes]), strict=True):
            results[i] = staging
    for i, file in enumerate(files):
        if results[i] is None:
            try:
                results[i] = stage_file(file.private, file.market, file.day, file.path, file.stopping)
            except Exception as error:  # noqa: BLE001 - handed to the refresh waiting for this file
                results[i] = error
    return [r for r in results if r is not None]


def _read_together(reader: Store, layout: _Layout, files: list[SmallFile]) -> list[Staging | None]:
    """The files read in one statement; None for a file whose rows did not all pass (or for all of
    them, if the read failed)."""
    paths = [str(f.path) for f in files]
    params: list[object] = [paths, list(range(len(files))), [f.market.symbol for f in files],
                            [day_start_us(f.day) for f in files], [f.day.strftime("%Y%m%d") for f in files], paths]
    try:
        table = with_tick_ids(reader.query_arrow(_read_sql(layout), params))
    except Exception as error:  # noqa: BLE001 - each file is staged alone next, which names its fault
        log.debug("a read of %d small archive files failed (%s); each is staged alone", len(files), error)
        return [None] * len(files)
    ks = table.column("k").to_numpy()
    bounds = np.searchsorted(ks, np.arange(len(files) + 1))
    ok = table.column("ok")
    rows = table.drop_columns(["k", "ok"])
    stagings: list[Staging | None] = []
    for k, file in enumerate(files):
        start, stop = int(bounds[k]), int(bounds[k + 1])
        if stop == start or not pc.all(ok.slice(start, stop - start)).as_py():
            stagings.append(None)  # no rows, or a row that fails: `stage_file` says what is wrong
            continue
        try:
            stagings.append(Staging.of_staged_rows(file.private, market=file.market, source=Source.ARCHIVE.value,
                                                   table=rows.slice(start, stop - start).combine_chunks()))
        except Exception:  # noqa: BLE001 - staged alone next, which names its fault
            stagings.append(None)
    return stagings


class StagingBatcher(GroupThread[SmallFile, Staging]):
    """The process's small-file staging thread, and the files waiting for it.

    Like the commit thread (`store.pipeline.CommitQueue`), it does not wait for files to gather: a
    read takes every file waiting when it begins (up to MAX_FILES), and the files handed over
    meanwhile wait for the next one. Reads run in a private database of its own."""

    def __init__(self) -> None:
        super().__init__("bybit-stage-small")
        self._reader: Store | None = None

    def _choose(self, waiting: list[SmallFile]) -> list[bool]:
        return [k < MAX_FILES for k in range(len(waiting))]

    def _process(self, group: list[SmallFile]) -> list[Staging | BaseException]:
        if self._reader is None:
            # No spilling: DuckDB's default would put temp files in the user's working directory
            # (`.tmp`), left there by a process that ends without teardown (`cli.run`); a read that
            # does not fit fails, and its files are staged one by one.
            self._reader = Store.private(memory_limit="1GB", temp_directory="")
        return stage_many(self._reader, group)


BATCHER = StagingBatcher()
