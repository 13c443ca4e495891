"""Deterministic synthetic public trades, computed in DuckDB SQL.

Trade `i` of (symbol, day) is a pure function of (seed, symbol, day, i): no state, no random
generator. That is what lets the archive file, the REST tail and the tests' ground truth agree row
for row, and lets the REST tail compute only the handful of rows it needs.

Time model (units of 100 microseconds, the archive's 4 decimals of a second): the day is cut into
`n` equal slots; trade `i` sits in slot `g` = `i`, or `i - 1` for ~1/8 of trades (so several trades
share one timestamp), at a hashed offset inside the slot. Slots are disjoint and ordered, so time is
non-decreasing in `i`. About 1% of trades land exactly on a whole second, which the archive prints
as an integer, as real files sometimes do. Spot times are floored to the millisecond.

`seq` (the engine's cross sequence) is the slot's: the trades sharing a timestamp are one match and
share one seq, so a WebSocket push split at 1024 trades can leave two messages with the same seq.

Randomness is a 32-bit integer mix (`mix32`, the same in SQL and Python) of `i` and a per-stream
salt; the trade id is the md5 of `"{seed}|{symbol}|{day}|{i}"` written as a UUID.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
import pyarrow as pa

from .config import MarketSpec, SimConfig, day_start_ms, utc_date

FORMAT_VERSION = 1
DAY_UNITS = 864_000_000  # 100-us units in a day
GOLDEN = 2654435761  # odd 32-bit multiplier: spreads consecutive i over the hash input space
SPOT_ID_BASE = 2_000_000_000_000_000_000  # spot REST execIds: 19 digits, below 2**63

_MACROS = """
CREATE MACRO _s16(x) AS xor(x, x >> 16);
CREATE MACRO _s15(x) AS xor(x, x >> 15);
CREATE MACRO _m32(x, k) AS (x * k::UBIGINT) % 4294967296::UBIGINT;
CREATE MACRO mix32(x) AS CAST(_s16(_m32(_s15(_m32(_s16((x)::UBIGINT % 4294967296::UBIGINT), 2146121005)),
                                   2221713035)) AS BIGINT);
"""
_base: duckdb.DuckDBPyConnection | None = None
_base_lock = threading.Lock()


def connection() -> duckdb.DuckDBPyConnection:
    """A fresh connection to the in-memory database holding the hash macros.

    One per call: DuckDB connections are not thread-safe, and a fresh one never inherits an
    unfinished result from an earlier caller.
    """
    global _base
    with _base_lock:
        if _base is None:
            _base = duckdb.connect(":memory:")
            _base.execute(_MACROS)
        return _base.cursor()


def mix32(x: int) -> int:
    """Python twin of the SQL `mix32` macro (a 32-bit avalanche hash)."""
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def trade_uuid(seed: int, symbol: str, day: date, i: int) -> str:
    """The linear/inverse trade id (archive `trdMatchID` == REST `execId`) of trade `i`."""
    h = hashlib.md5(f"{seed}|{symbol}|{day.isoformat()}|{i}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def spot_exec_id(day: date, i: int) -> str:
    """Spot REST execId of trade `i`: a 19-digit number, unique across days."""
    return str(SPOT_ID_BASE + day.toordinal() * 10_000_000 + i)


# price decimals, price step in units of 10**-decimals, qty decimals
_FORMAT = {"linear": (1, 1, 3), "inverse": (1, 5, 0), "spot": (2, 1, 3)}


@dataclass(frozen=True)
class DayModel:
    """Everything needed to generate one (market, day): turned into SQL literals."""

    seed: int
    spec: MarketSpec
    day: date

    @property
    def n(self) -> int:
        return self.spec.trades_per_day

    @property
    def prefix(self) -> str:
        return f"{self.seed}|{self.spec.symbol}|{self.day.isoformat()}|"

    def salt(self, stream: str) -> int:
        key = f"{self.prefix}{self.spec.category}|{stream}"  # spot and linear BTCUSDT differ
        return int(hashlib.md5(key.encode()).hexdigest()[:8], 16)

    def h(self, stream: str, x: str) -> str:
        """SQL for a 32-bit hash of integer expression `x` in a named stream."""
        return f"mix32(({x}) * {GOLDEN} + {self.salt(stream)})"

    def next_day(self) -> DayModel:
        return DayModel(self.seed, self.spec, self.day + timedelta(days=1))

    def price_sql(self, i: str) -> str:
        """Integer price in units of 10**-decimals: a smooth intraday wave plus hashed noise."""
        dec, step, _ = _FORMAT[self.spec.category]
        o = self.day.toordinal()
        base = self.spec.base_price * (1 + 0.05 * math.sin(o / 17.0))
        ph1, ph2 = (self.salt("ph1") % 1000) / 1000, (self.salt("ph2") % 1000) / 1000
        wave = (f"{base!r} * (1 + 0.01 * sin(2 * pi() * (({i}) / {self.n}.0 * 3 + {ph1!r}))"
                f" + 0.002 * sin(2 * pi() * (({i}) / {self.n}.0 * 41 + {ph2!r})))")
        return f"(CAST(round({wave} * {10 ** dec / step!r}) AS BIGINT) + {self.h('px', i)} % 7 - 3) * {step}"

    def int_threshold(self) -> int:
        """Per-million chance that a slot holding a whole second puts its trades on it (~1% overall)."""
        return min(1_000_000, round(10_000 * max(1.0, self.n / 86_400)))


def core_sql(m: DayModel, lo: int, hi: int) -> str:
    """SELECT of trades lo <= i < hi with their raw values (one row per trade, ordered by i)."""
    dec, _, qdec = _FORMAT[m.spec.category]
    cat, n, o = m.spec.category, m.n, m.day.toordinal()
    start_ms = day_start_ms(m.day)
    if cat == "inverse":
        qty = f"1 + (({m.h('qty', 'i')} % 20000) * (({m.h('qty', 'i')} // 32768) % 5000)) // 1000"
    else:
        qty = f"1 + (({m.h('qty', 'i')} % 5000) * (({m.h('qty', 'i')} // 8192) % 5000)) // 5000"
    units = (f"CASE WHEN is_int THEN sb ELSE a0 + {m.h('time', 'g')} % (a1 - a0) END")
    if cat == "spot":
        units = f"(({units}) // 10) * 10"
    if cat == "spot":
        ids = f"CAST(i + 1 AS VARCHAR) AS trade_id, CAST({SPOT_ID_BASE + o * 10_000_000} + i AS VARCHAR) AS exec_id"
        hx = "NULL"
    else:  # md5 once per row, in the innermost query; the UUID is cut from its hex
        hx = f"md5('{m.prefix}' || CAST(i AS VARCHAR))"
        ids = "CAST(CAST(hx AS UUID) AS VARCHAR) AS trade_id, trade_id AS exec_id"
    return f"""
    SELECT i, {o} AS day_ord, {start_ms * 1000} + units * 100 AS time_us, is_int AND {cat != 'spot'} AS is_int,
           p_units, prev_units, q_units, {ids},
           CASE WHEN {m.h('side', 'i')} % 2 = 0 THEN 'Buy' ELSE 'Sell' END AS side,
           {m.h('rpi', 'i')} % 20 = 0 AS rpi, {m.h('gv', 'i')} AS h_gv, {m.h('td', 'i')} AS h_td,
           {o * 100_000_000} + g AS seq, {dec} AS px_dec, {qdec} AS qty_dec
    FROM (
      SELECT i, g, hx, {units} AS units, is_int, {m.price_sql('i')} AS p_units,
             {m.price_sql('greatest(i - 1, 0)')} AS prev_units, {qty} AS q_units
      FROM (
        SELECT *, sb < a1 AND {m.h('int', 'g')} % 1000000 < {m.int_threshold()} AS is_int
        FROM (
          SELECT *, ((a0 + 9999) // 10000) * 10000 AS sb
          FROM (
            SELECT i, g, hx, (g * {DAY_UNITS}) // {n} AS a0, ((g + 1) * {DAY_UNITS}) // {n} AS a1
            FROM (SELECT i, {hx} AS hx, CASE WHEN i > 0 AND {m.h('share', 'i')} % 8 = 0 THEN i - 1 ELSE i END AS g
                  FROM range({lo}, {hi}) t(i))))))
    """


def value_columns_sql(category: str) -> tuple[str, str]:
    """SQL for the exact decimal price and qty strings, as both archive and REST print them."""
    dec, _, qdec = _FORMAT[category]
    price = f"CAST(CAST(p_units AS DECIMAL(18, 0)) / {10 ** dec} AS DECIMAL(18, {dec}))"
    qty = "CAST(q_units AS BIGINT)" if qdec == 0 else (
        f"CAST(CAST(q_units AS DECIMAL(18, 0)) / {10 ** qdec} AS DECIMAL(18, {qdec}))")
    return price, qty


_EMPTY_SCHEMA = pa.schema([
    ("trade_id", pa.string()), ("time_us", pa.int64()), ("price", pa.float64()), ("qty", pa.float64()),
    ("side", pa.string()), ("exec_id", pa.string()), ("is_rpi", pa.bool_()), ("seq", pa.int64()),
])


def _typed_sql(m: DayModel, lo: int, hi: int, until_us: int | None) -> str:
    price, qty = value_columns_sql(m.spec.category)
    rpi = "rpi" if m.spec.has_rpi(m.day) else "false"
    where = "" if until_us is None else f"WHERE time_us <= {until_us}"
    return f"""
    SELECT trade_id, CAST(time_us AS BIGINT) AS time_us, CAST({price} AS DOUBLE) AS price,
           CAST({qty} AS DOUBLE) AS qty, lower(side) AS side, exec_id, {rpi} AS is_rpi,
           CAST(seq AS BIGINT) AS seq, {price}::VARCHAR AS price_s, {qty}::VARCHAR AS qty_s, i
    FROM ({core_sql(m, lo, hi)}) {where} ORDER BY i
    """


def expected_count(config: SimConfig, symbol: str, day: date, category: str | None = None) -> int:
    """How many trades (symbol, day) has at the market's now: the full day for past days."""
    return int(expected_trades(config, symbol, day, category).num_rows)


def expected_trades(config: SimConfig, symbol: str, day: date, category: str | None = None) -> pa.Table:
    """Ground truth for tests: the trades of (symbol, day) with time <= the market's now.

    Columns: trade_id (archive id: UUID, or the spot per-day sequence), time_us (epoch us), price,
    qty, side ('buy'/'sell'), exec_id (the REST execId), is_rpi, seq. Sorted by time.
    """
    spec = find_market(config, symbol, category)
    now_ms = config.market_now_ms()
    if day < spec.listed or day_start_ms(day) > now_ms:
        return _EMPTY_SCHEMA.empty_table()
    m = DayModel(config.seed, spec, day)
    sql = _typed_sql(m, 0, m.n, now_ms * 1000)
    rel = connection().sql(sql)
    table = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()  # duckdb 2.x / 1.x
    return table.select(_EMPTY_SCHEMA.names).cast(_EMPTY_SCHEMA)


def find_market(config: SimConfig, symbol: str, category: str | None = None) -> MarketSpec:
    spec = config.market(symbol) if category is None else config.market(symbol, (category,))
    if spec is None:
        raise KeyError(f"no market {symbol!r} ({category or 'any category'}) in this SimConfig")
    return spec


@dataclass(frozen=True)
class TailTrade:
    """One REST trade, values already formatted as the API prints them."""

    time_us: int
    price: str
    size: str
    side: str
    exec_id: str
    is_rpi: bool
    seq: int


def _last_index_bound(m: DayModel, until_us: int) -> int:
    """An exclusive upper index bound: no trade at or after it has time <= until_us."""
    units = (until_us - day_start_ms(m.day) * 1000) // 100
    return min(m.n, max(0, units * m.n // DAY_UNITS + 6))


def recent_trades(config: SimConfig, spec: MarketSpec, now_ms: int, limit: int) -> list[TailTrade]:
    """The newest `limit` trades with time <= now_ms, newest first, reaching into earlier days.

    Computes an index window directly from the time model and generates only those rows, so a
    call costs the same on a 1.5M-trade day as on a quiet one.
    """
    out: list[TailTrade] = []
    day, until_us = utc_date(now_ms), now_ms * 1000
    for _ in range(limit + 2):  # each loop consumes >= 1 trade or one day: bounded
        if len(out) >= limit or day < spec.listed:
            break
        m = DayModel(config.seed, spec, day)
        hi = _last_index_bound(m, until_us)
        need = limit - len(out)
        lo = max(0, hi - need - 8)
        rows = connection().execute(_typed_sql(m, lo, hi, until_us)).fetchall()
        for r in reversed(rows[-need:]):
            out.append(TailTrade(r[1], r[8], r[9], r[4].capitalize(), r[5], bool(r[6]), r[7]))
        if len(rows) >= need and lo > 0:
            break
        day -= timedelta(days=1)
    return out[:limit]


def count_until(config: SimConfig, spec: MarketSpec, day: date, until_us: int) -> int:
    """How many trades of (market, day) have time <= until_us: the index of the first later one."""
    if day < spec.listed or until_us < day_start_ms(day) * 1000:
        return 0
    m = DayModel(config.seed, spec, day)
    hi = _last_index_bound(m, until_us)
    lo = max(0, hi - 64)  # every trade below lo is far earlier than until_us
    row = connection().execute(f"SELECT count(*) FROM ({_typed_sql(m, lo, hi, until_us)})").fetchone()
    return lo + int(row[0] if row else 0)


def trades_from(config: SimConfig, spec: MarketSpec, day: date, lo: int, until_us: int,
                limit: int) -> list[TailTrade]:
    """Trades lo, lo+1, ... of (market, day) with time <= until_us, ascending, at most `limit`.

    What the WebSocket pushes as the market clock passes them: the same rows (ids, values) as the
    archive file and recent-trade, generated only for the index window asked for.
    """
    m = DayModel(config.seed, spec, day)
    hi = min(m.n, lo + limit, _last_index_bound(m, until_us))
    if day < spec.listed or hi <= lo:
        return []
    rows = connection().execute(_typed_sql(m, lo, hi, until_us)).fetchall()
    return [TailTrade(r[1], r[8], r[9], r[4].capitalize(), r[5], bool(r[6]), r[7]) for r in rows]
