"""Could this trade be true? Pure checks every source's rows pass before the store sees them.

Coverage is only as good as the rows that justify it: one trade timed in seconds instead of
milliseconds would stretch a coverage row over decades and hide real trades forever. So every batch
a source produces is checked here, vectorized for the archive's millions of rows, and the first row
that cannot be true names itself in an `Implausible` (REST, WebSocket) or `ArchiveError` (archive
file) raised by the caller. Nothing of a batch that fails is stored.

A row is plausible when its symbol is the one asked for, its side is buy or sell, its price and size
are finite and positive, and its time lies in the window the source can speak for: the file's UTC
day for an archive file; from Bybit's first day to the exchange's now (plus a small skew) for REST
and live answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from . import arrow_scalars
from .market_span import Span
from .models import Trade

# Bybit opened in 2018: no trade of any market is older.
EARLIEST_US = int(datetime(2018, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000
# How far past the exchange's own clock a trade time may lie (clock reads, rounding, one hop).
CLOCK_SKEW_US = 5_000_000
_SIDES = ("buy", "sell")


def _when(time_us: int) -> str:
    try:
        return datetime.fromtimestamp(time_us / 1e6, tz=UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"{time_us} µs"


def why_implausible(trade: Trade, *, symbol: str, window: Span) -> str | None:
    """What is wrong with one trade, or None when nothing is."""
    if trade.symbol != symbol:
        return f"it is a {trade.symbol!r} trade, {symbol!r} was asked for"
    if trade.side not in _SIDES:
        return f"its side {trade.side!r} is neither buy nor sell"
    for name, value in (("price", trade.price), ("size", trade.qty)):
        if not (value > 0 and value != float("inf")):  # NaN fails `> 0`
            return f"its {name} {value!r} is not a finite positive number"
    if not window.contains(trade.time_us):
        return (f"its time {_when(trade.time_us)} lies outside {_when(window.start_us)} .. "
                f"{_when(window.end_us)} (a time in the wrong unit, or a clock far off)")
    return None


def first_implausible(trades: Iterable[Trade], *, symbol: str, window: Span) -> tuple[int, Trade, str] | None:
    """(position, trade, why) of the first trade that cannot be true, or None."""
    for position, trade in enumerate(trades):
        why = why_implausible(trade, symbol=symbol, window=window)
        if why is not None:
            return position, trade, why
    return None


def first_implausible_row(*, symbols: pa.Array | None, symbol: str, sides: pa.Array, prices: pa.Array,
                          qtys: pa.Array, times_us: pa.Array, window: Span) -> tuple[int, str] | None:
    """(row index, why) of the first row of a columnar batch that cannot be true, or None.

    One vectorized pass decides whether any row is bad; only then is the first one looked for, so a
    clean busy day pays a handful of compute kernels per batch and nothing more."""
    checks: list[tuple[pa.Array, str]] = []
    if symbols is not None:
        checks.append((pc.equal(symbols, arrow_scalars.string(symbol)), f"the symbol is not {symbol}"))
    checks.append((pc.is_in(sides, value_set=arrow_scalars.string_array(_SIDES)),
                   "the side is neither buy nor sell"))
    zero = arrow_scalars.float64(0.0)
    for name, values in (("price", prices), ("size", qtys)):
        checks.append((pc.and_(pc.is_finite(values), pc.greater(values, zero)),
                       f"the {name} is not a finite positive number"))
    checks.append((pc.and_(pc.greater_equal(times_us, arrow_scalars.int64(window.start_us)),
                           pc.less(times_us, arrow_scalars.int64(window.end_us))),
                   f"the time lies outside {_when(window.start_us)} .. {_when(window.end_us)}"))
    first: tuple[int, str] | None = None
    for ok, why in checks:
        ok = pc.fill_null(ok, False)
        if pc.all(ok).as_py():
            continue
        index = int(pc.index(ok, pa.scalar(False)).as_py())
        if first is None or index < first[0]:
            first = (index, why)
    return first
