"""The per-day summary behind the `daily` view, kept beside the trades it sums up.

Answering "daily VWAP" from `trades` means aggregating every stored row (0.5 s of two cores at
45M rows); `day_summary` answers it from one row a day. Each ingest recomputes the days it touched,
from the trades themselves and inside the ingest's transaction, so the summary always says what
the stored rows say, including after REST rows give way to the archive. `verify` re-checks it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from store.timeutil import DAY_US

if TYPE_CHECKING:
    from fetch.market_span import Market, Span
    from store.db import Store

# One statement builds a summary from any `trades` filter: the migration runs it over every row,
# an ingest over the days it touched.
# `fingerprint` (rows : xor of tick ids : sum of times) changes whenever the day's set of trades does,
# even when its row count does not (e.g. REST rows giving way to archive rows): exports and the lake
# compare it with the fingerprint each file was written from.
_SUMMARY_SELECT = """
    SELECT category, symbol, CAST(make_timestamp(time_us) AS DATE) AS day, count(*) AS trades,
           min(time_us) AS first_us, max(time_us) AS last_us, min(price) AS low, max(price) AS high,
           arg_min(price, time_us) AS open, arg_max(price, time_us) AS close, sum(qty) AS volume,
           sum(price * qty) AS notional, sum(CASE WHEN side = 'buy' THEN qty ELSE 0 END) AS taker_buy_volume,
           bit_xor(tick_id) AS id_xor, sum(time_us)::HUGEINT AS time_sum,
           count(*) || ':' || bit_xor(tick_id) || ':' || sum(time_us)::HUGEINT AS fingerprint
    FROM {rows} {where}
    GROUP BY ALL"""

CREATE_TABLE_SQL = """
    CREATE TABLE day_summary (
        category         VARCHAR NOT NULL,
        symbol           VARCHAR NOT NULL,
        day              DATE    NOT NULL,
        trades           BIGINT  NOT NULL,
        first_us         BIGINT  NOT NULL,
        last_us          BIGINT  NOT NULL,
        low              DOUBLE  NOT NULL,
        high             DOUBLE  NOT NULL,
        open             DOUBLE  NOT NULL,
        close            DOUBLE  NOT NULL,
        volume           DOUBLE  NOT NULL,
        notional         DOUBLE  NOT NULL,
        taker_buy_volume DOUBLE  NOT NULL,
        id_xor           BIGINT  NOT NULL,
        time_sum         HUGEINT NOT NULL,
        fingerprint      VARCHAR NOT NULL
    )"""

FILL_ALL_SQL = "INSERT INTO day_summary " + _SUMMARY_SELECT.format(rows="trades", where="")

DAILY_VIEW_SQL = """
    CREATE OR REPLACE VIEW daily AS
    SELECT category, symbol, day, trades, make_timestamp(first_us) AS first_ts,
           make_timestamp(last_us) AS last_ts, low, high, open, close, volume,
           notional / nullif(volume, 0) AS vwap, taker_buy_volume
    FROM day_summary"""


DELETE_DAYS_SQL = """
    DELETE FROM day_summary
    WHERE category = ? AND symbol = ?
      AND day >= CAST(make_timestamp(?) AS DATE) AND day < CAST(make_timestamp(?) AS DATE)"""


SUMMARIZE_DAYS_SQL = "INSERT INTO day_summary " + _SUMMARY_SELECT.format(
    rows="trades", where="WHERE category = ? AND symbol = ? AND time_us >= ? AND time_us < ?")


def summarize_rows_sql(rows: str) -> str:
    """The summary of days that held nothing before, from the rows just inserted into them: `rows`
    is a constant subquery with the `trades` columns the summary reads."""
    return "INSERT INTO day_summary " + _SUMMARY_SELECT.format(rows=rows, where="")


def resummarize(store: Store, market: Market, span: Span) -> None:
    """Recompute the summary of every UTC day meeting `span`; call inside the transaction that
    changed those days' trades."""
    first = span.start_us // DAY_US * DAY_US
    stop = -(-span.end_us // DAY_US) * DAY_US
    store.execute(DELETE_DAYS_SQL, [market.category, market.symbol, first, stop])
    store.execute(SUMMARIZE_DAYS_SQL, [market.category, market.symbol, first, stop])


MISMATCHES_SQL = f"""
    WITH truth AS ({_SUMMARY_SELECT.format(rows="trades", where="")})
    SELECT coalesce(t.category, s.category), coalesce(t.symbol, s.symbol), coalesce(t.day, s.day),
           t.trades, s.trades
    FROM truth t FULL JOIN day_summary s USING (category, symbol, day)
    WHERE t.trades IS DISTINCT FROM s.trades OR t.first_us IS DISTINCT FROM s.first_us
       OR t.last_us IS DISTINCT FROM s.last_us OR t.low IS DISTINCT FROM s.low
       OR t.high IS DISTINCT FROM s.high
       OR t.fingerprint IS DISTINCT FROM s.fingerprint
       OR abs(t.volume - s.volume) > 1e-9 * greatest(abs(t.volume), 1)
    ORDER BY 3"""


def mismatches(store: Store) -> list[str]:
    """Days whose summary disagrees with their trades (sums compared to a relative 1e-9: the
    order of a parallel sum moves the last bits)."""
    return [f"{symbol} {day}: trades say {truth} rows, the summary {kept}"
            for _category, symbol, day, truth, kept in store.query(MISMATCHES_SQL)]
