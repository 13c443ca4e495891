"""Stream-parse one daily archive file (gzip CSV) into Arrow batches in `TRADE_SCHEMA`.

This is the hot path of a backfill (a busy day is 1.5M rows), so it stays columnar end to end:
pyarrow's streaming CSV reader, only the needed columns, and vectorized compute for every
conversion. The gzip layer is ISA-L's (`isal`): it inflates a day in half the time zlib takes,
and inflating was the largest single cost of a day. Two conversions must be exact:

* time: the reader parses the timestamp as a decimal at microsecond scale (seconds with 6 places,
  milliseconds with 3), and its unscaled integer is the time in microseconds, never through a
  float (seconds with 4 decimals, `1741910443.7357`, would otherwise drift by a microsecond); a
  value with more places than that, or no decimal at all, fails the file (reading it as text and
  cutting out the dot cost a busy day's staging ~0.1 CPU-s more);
* spot ids restart at 1 every day, so the stable trade id is `YYYYMMDD` + the id zero-padded to
  10 digits (`202401020000000017`): unique across days, still a decimal that fits in an int64.

Constants come from `arrow_scalars` (built from raw buffers): converting any Python value would make
pyarrow import pandas, when installed, for ~0.2 s of every refresh.

Every failure of the file (unknown header, truncated gzip, malformed row, bad number, no rows at all,
a row of another day or symbol, a price or size that is not a positive number) becomes one
`ArchiveError` naming the day and, for a bad row, its line; translated here and nowhere else.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from datetime import date
from enum import Enum
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from isal import igzip, isal_zlib

from . import arrow_scalars
from .errors import ArchiveError
from .market_span import Market, Span
from .models import TRADE_SCHEMA, Source
from .plausible import first_implausible_row

LINEAR_COLUMNS = ("timestamp", "symbol", "side", "size", "price", "tickDirection", "trdMatchID",
                  "grossValue", "homeNotional", "foreignNotional")
SPOT_COLUMNS = ("id", "timestamp", "price", "volume", "side")
# ~16k rows per batch: the store groups them. The CSV reader pays a fixed cost per block, so 1 MB
# blocks cost a tenth more time; bigger blocks than 2 MB gain nothing and hold more memory.
DEFAULT_BLOCK_SIZE = 2 << 20
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DAY_US = 86_400_000_000
_MAX_SPOT_ID = 10**10          # 10 digits after the YYYYMMDD prefix
_ISAL_ERROR = cast("type[Exception]", isal_zlib.error)  # its stub declares an instance, not the class
_READ_ERRORS = (pa.ArrowException, OSError, EOFError, zlib.error, _ISAL_ERROR, ValueError, UnicodeDecodeError)


class ArchiveFormat(str, Enum):
    """The two CSV layouts Bybit publishes (each with an optional trailing RPI column)."""

    DERIVATIVES = "derivatives"  # linear and inverse: seconds, Buy/Sell, trdMatchID
    SPOT = "spot"                # milliseconds, buy/sell, a per-day id


def sniff_header(header: str) -> ArchiveFormat | None:
    """Which layout a header line is; None for anything else (a drifted format)."""
    columns = tuple(c.strip() for c in header.strip().lstrip("\ufeff").split(","))
    for known, fmt in ((LINEAR_COLUMNS, ArchiveFormat.DERIVATIVES), (SPOT_COLUMNS, ArchiveFormat.SPOT)):
        extra = columns[len(known):]
        if columns[:len(known)] == known and (not extra or [c.lower() for c in extra] == ["rpi"]):
            return fmt
    return None


def archive_rows(path: Path | str, market: Market, day: date, *,
                 block_size: int = DEFAULT_BLOCK_SIZE) -> Iterator[pa.RecordBatch]:
    """Yield the file's trades as `TRADE_SCHEMA` batches (source 'archive', block flag null).

    Rows keep the file's order, which is not guaranteed to be sorted; the consumer sorts. Raises
    `ArchiveError(day=...)` for anything wrong with the file, possibly after some batches.
    """
    symbol = market.symbol
    try:
        fmt = _read_format(Path(path), day)
        convert = _derivatives_batch if fmt is ArchiveFormat.DERIVATIVES else _spot_batch
        with _inflate(path) as inflated:
            reader = pacsv.open_csv(
                pa.PythonFile(inflated, mode="r"),
                # One thread: as fast here and far less memory in flight (the store parses in a
                # thread of its own, beside DuckDB's staging; pyarrow reads ahead in another).
                read_options=pacsv.ReadOptions(block_size=block_size, use_threads=False),
                convert_options=_convert_options(fmt),
            )
            line = 2  # the file's line of the batch's first row (line 1 is the header)
            for batch in reader:
                if batch.num_rows:
                    converted = convert(batch, market, day)
                    _check_rows(batch, converted, path, symbol, day, line)
                    yield converted
                line += batch.num_rows
            if line == 2:
                raise _bad_file(path, symbol, day, "an empty archive file (a header and no trades): "
                                "Bybit may still be writing it")
    except ArchiveError:
        raise
    except _READ_ERRORS as exc:
        raise _bad_file(path, symbol, day, f"truncated or malformed ({_reason(exc)})") from exc


def _check_rows(raw: pa.RecordBatch, batch: pa.RecordBatch, path: Path | str, symbol: str, day: date,
                line: int) -> None:
    """Every row must belong to the file's day and symbol, with sane values: one row of another
    day would be stored and exported into that day's file, one of another market into this one's."""
    start_us = (day.toordinal() - _EPOCH_ORDINAL) * _DAY_US
    bad = first_implausible_row(
        symbols=raw.column("symbol") if "symbol" in raw.schema.names else None, symbol=symbol,
        sides=batch.column("side"), prices=batch.column("price"), qtys=batch.column("qty"),
        times_us=batch.column("time_us"), window=Span(start_us, start_us + _DAY_US))
    if bad is not None:
        index, why = bad
        raise _bad_file(path, symbol, day, f"not {symbol}'s {day.isoformat()}: line {line + index}: {why} "
                        f"({_row_text(raw, index)})")


def _row_text(raw: pa.RecordBatch, index: int) -> str:
    return ",".join(str(raw.column(name)[index].as_py()) for name in raw.schema.names)[:200]


def read_archive(path: Path | str, market: Market, day: date) -> pa.Table:
    """The whole file as one table (tests and small files; the store streams `archive_rows`)."""
    batches = list(archive_rows(path, market, day))
    return pa.Table.from_batches(batches, schema=TRADE_SCHEMA)


def _inflate(path: Path | str) -> BinaryIO:
    return cast(BinaryIO, igzip.open(path, "rb"))  # type: ignore[no-untyped-call]  # isal: no annotations


def _read_format(path: Path, day: date) -> ArchiveFormat:
    with _inflate(path) as stream:
        head = stream.read(64 << 10)
    line = head.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    if not line:
        raise _bad_file(path, "", day, "empty (no header row)")
    fmt = sniff_header(line)
    if fmt is None:
        raise _bad_file(path, "", day, f"unreadable: unknown header {line[:200]!r}; expected "
                        f"{','.join(LINEAR_COLUMNS)}[,RPI] or {','.join(SPOT_COLUMNS)}[,rpi] "
                        "(Bybit changed the format: the parser needs an update)")
    return fmt


def _convert_options(fmt: ArchiveFormat) -> pacsv.ConvertOptions:
    # The timestamp is read as a decimal whose unscaled integer is the time in microseconds (seconds
    # with 6 places, milliseconds with 3): exact, in the reader's own pass (`_microseconds`).
    if fmt is ArchiveFormat.DERIVATIVES:
        types = {"timestamp": pa.decimal128(38, 6), "symbol": pa.string(), "side": pa.string(),
                 "size": pa.float64(), "price": pa.float64(), "trdMatchID": pa.string()}
    else:
        types = {"id": pa.string(), "timestamp": pa.decimal128(38, 3), "price": pa.float64(),
                 "volume": pa.float64(), "side": pa.string()}
    # No null values at all: an empty number is an error, not a silent null.
    return pacsv.ConvertOptions(column_types=types, include_columns=list(types), null_values=[],
                                strings_can_be_null=False, quoted_strings_can_be_null=False)


def _derivatives_batch(batch: pa.RecordBatch, market: Market, day: date) -> pa.RecordBatch:
    ids = batch.column("trdMatchID")
    if pc.any(pc.equal(pc.utf8_length(ids), arrow_scalars.int64(0))).as_py():
        raise ValueError("a row has an empty trdMatchID")
    return _assemble(batch, market, ids, _microseconds(batch.column("timestamp")), batch.column("size"))


def _spot_batch(batch: pa.RecordBatch, market: Market, day: date) -> pa.RecordBatch:
    seq = batch.column("id").cast(pa.int64())
    if pc.any(pc.or_(pc.less(seq, arrow_scalars.int64(0)),
                     pc.greater_equal(seq, arrow_scalars.int64(_MAX_SPOT_ID)))).as_py():
        raise ValueError(f"a spot id is outside 0..{_MAX_SPOT_ID - 1}")
    padded = pc.utf8_lpad(seq.cast(pa.string()), 10, "0")
    ids = pc.binary_join_element_wise(arrow_scalars.string(day.strftime("%Y%m%d")), padded, arrow_scalars.string(""))
    return _assemble(batch, market, ids, _microseconds(batch.column("timestamp")), batch.column("volume"))


def _microseconds(times: pa.Array) -> pa.Array:
    """The unscaled integers of a decimal128 column read at microsecond scale, as int64: exact (a
    float path would turn 1741910443.7357 s into ...735699 µs), with no text surgery. The reader
    already refused what is no decimal or has more places than the scale; a value beyond int64 is
    refused here (its low word alone would be another number)."""
    if times.null_count:
        raise ValueError("a timestamp is empty")
    words = np.frombuffer(times.buffers()[1], dtype=np.int64, count=2 * (times.offset + len(times)))
    low, high = words[2 * times.offset::2], words[2 * times.offset + 1::2]
    if not np.array_equal(high, low >> 63):
        raise ValueError("a timestamp is out of range")
    return pa.array(low, type=pa.int64())


def _assemble(batch: pa.RecordBatch, market: Market, ids: pa.Array, time_us: pa.Array, qty: pa.Array) -> pa.RecordBatch:
    side = pc.utf8_lower(batch.column("side"))  # checked with the rest of the row (`_check_rows`)
    n = batch.num_rows
    return pa.RecordBatch.from_arrays([
        pa.repeat(arrow_scalars.string(market.category), n),
        pa.repeat(arrow_scalars.string(market.symbol), n),
        ids, time_us, batch.column("price"), qty, side,
        pa.nulls(n, pa.bool_()),
        pa.repeat(arrow_scalars.string(Source.ARCHIVE.value), n),
    ], schema=TRADE_SCHEMA)


def _bad_file(path: Path | str, symbol: str, day: date, what: str) -> ArchiveError:
    name = Path(path).name
    who = f"{symbol} " if symbol else ""
    return ArchiveError(f"archive file {name} ({who}{day.isoformat()}) is {what}: this day is skipped "
                        "and the rest go on; run refresh again to download it afresh",
                        day=day.isoformat(), url=name)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
