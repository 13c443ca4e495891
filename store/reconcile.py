"""When a day's archive file replaces the live rows of that day: how well did live capture do?

Inside the archive day's transaction, before the live ('ws' and 'rest') rows are dropped, the
staged archive rows (`incoming`) are compared with them in SQL and one row per (category, symbol,
day) goes into `reconciliation`:

* matched: trades in both; archive_only: trades only the archive has; of those, missed: the ones
  inside a span live capture claimed as covered (coverage 'ws'/'rest'), so a failure of the
  evidence, not an admitted gap; phantoms: live trades the archive does not have.

Derivatives match by trade id (WebSocket `i` = REST `execId` = archive `trdMatchID`). Spot archive
ids are a per-day sequence that no live source carries, so spot matches by values: (millisecond,
price, qty, side), the k-th of equal trades with the k-th. A day with no live rows records nothing:
plain refreshes pay one count.
"""

from __future__ import annotations

from fetch.market_span import Market, Span
from store.db import Store

LIVE_SOURCES = ("ws", "rest")

CREATE_TABLE_SQL = """
    CREATE TABLE reconciliation (
        category       VARCHAR NOT NULL,
        symbol         VARCHAR NOT NULL,
        day            DATE    NOT NULL,
        archive_trades BIGINT  NOT NULL,
        live_trades    BIGINT  NOT NULL,
        matched        BIGINT  NOT NULL,
        archive_only   BIGINT  NOT NULL,
        missed         BIGINT  NOT NULL,
        phantoms       BIGINT  NOT NULL,
        matched_by     VARCHAR NOT NULL,
        reconciled_at  TIMESTAMPTZ NOT NULL DEFAULT now()
    )"""

MIGRATION = [
    CREATE_TABLE_SQL,
    ("COMMENT ON TABLE reconciliation IS 'Per day, when its archive file replaced live capture (ws/rest "
     "rows): trades matched, only in the archive, missed inside claimed coverage, phantoms'"),
    "COMMENT ON COLUMN reconciliation.archive_only IS 'Archive trades live capture never stored'",
    ("COMMENT ON COLUMN reconciliation.missed IS 'Archive-only trades inside a span live coverage "
     "claimed complete: should be 0'"),
    "COMMENT ON COLUMN reconciliation.phantoms IS 'Live trades the archive does not have: should be 0'",
    "COMMENT ON COLUMN reconciliation.matched_by IS 'id (derivatives) or values (spot: ms, price, qty, side)'",
]

_LIVE = "('ws', 'rest')"


LIVE_ROWS_SQL = (f"SELECT count(*) FROM trades WHERE category = ? AND symbol = ? AND source IN {_LIVE} "
                 "AND time_us >= ? AND time_us < ?")


def reconcile_sql(by_values: bool) -> str:
    """Counts for one day; parameters: start, end, category, symbol, start, end, category, symbol,
    start, end."""
    if by_values:
        key = "ms, price, qty, is_sell, k"
        archive = ("SELECT time_us // 1000 AS ms, price, qty, is_sell, row_number() OVER (PARTITION BY "
                   "time_us // 1000, price, qty, is_sell ORDER BY trade_id) AS k FROM incoming "
                   "WHERE time_us >= ? AND time_us < ?")
        live = ("SELECT time_us // 1000 AS ms, price, qty, side = 'sell' AS is_sell, row_number() OVER "
                "(PARTITION BY time_us // 1000, price, qty, side ORDER BY trade_id) AS k FROM trades "
                f"WHERE category = ? AND symbol = ? AND source IN {_LIVE} AND time_us >= ? AND time_us < ?")
    else:
        key = "trade_id"
        archive = ("SELECT trade_id, min(time_us) // 1000 AS ms FROM incoming WHERE time_us >= ? "
                   "AND time_us < ? GROUP BY trade_id")
        live = ("SELECT trade_id, min(time_us) // 1000 AS ms FROM trades WHERE category = ? AND symbol = ? "
                f"AND source IN {_LIVE} AND time_us >= ? AND time_us < ? GROUP BY trade_id")
    return f"""
        WITH a AS ({archive}), l AS ({live}),
        cov AS (SELECT start_us, end_us FROM coverage WHERE category = ? AND symbol = ?
                AND source IN {_LIVE} AND end_us > ? AND start_us < ?),
        only_a AS (SELECT ms FROM a ANTI JOIN l USING ({key}))
        SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM l),
               (SELECT count(*) FROM a SEMI JOIN l USING ({key})),
               (SELECT count(*) FROM only_a),
               (SELECT count(*) FROM only_a o WHERE EXISTS (
                    SELECT 1 FROM cov WHERE o.ms * 1000 >= cov.start_us AND o.ms * 1000 < cov.end_us)),
               (SELECT count(*) FROM l ANTI JOIN a USING ({key}))"""


RECONCILE_DAY_SQL = ("INSERT INTO reconciliation (category, symbol, day, archive_trades, live_trades, matched, "
                     "archive_only, missed, phantoms, matched_by) VALUES (?, ?, make_timestamp(?)::DATE, ?, ?, "
                     "?, ?, ?, ?, ?)")


def reconcile_day(store: Store, market: Market, span: Span) -> bool:
    """Record how the day's live rows compare with the staged archive rows (call inside the archive
    day's transaction, before the live rows go); False when the day has no live rows."""
    category, symbol, (start_us, end_us) = market.category, market.symbol, span
    row = store.query_one(LIVE_ROWS_SQL, [category, symbol, start_us, end_us])
    if not row or not row[0]:
        return False
    by_values = category == "spot"
    counts = store.query_one(reconcile_sql(by_values), [start_us, end_us, category, symbol, start_us, end_us,
                                                        category, symbol, start_us, end_us])
    assert counts is not None
    store.execute(RECONCILE_DAY_SQL, [category, symbol, start_us, *[int(c) for c in counts],
                                     "values" if by_values else "id"])
    return True


RECONCILIATIONS_SQL = ("SELECT * EXCLUDE (category, symbol) FROM reconciliation WHERE category = ? "
                       "AND symbol = ? ORDER BY day DESC, reconciled_at DESC")


def reconciliations(store: Store, market: Market) -> list[dict[str, object]]:
    """The recorded reconciliations of a symbol, newest day first."""
    return store.query_dicts(RECONCILIATIONS_SQL, [market.category, market.symbol])
