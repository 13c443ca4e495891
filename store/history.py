"""The drop-in replacement for the context service's `BinanceTradeHistory`.

Same shape, same `TradeTick` fields, same cache files; behind it the store makes the history complete
first (refreshing only what is missing) and then reads it back in ascending order.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fetch import BybitClient, FetchConfig, RecentTradeSource
from fetch.errors import AuthError, InputError
from fetch.market_span import Market
from store.cache_dir import cache_path, stale_reason
from store.db import Store
from store.orchestrator import refresh
from store.refresh_summary import RefreshSummary
from store.schema import open_store
from store.service_settings import settings_from
from store.tick_ids import tick_id
from store.timeutil import day_start_us, days_touching, dt_to_us, us_to_dt

log = logging.getLogger("context.backfill")

@dataclass(frozen=True, slots=True)
class TradeTick:
    """Exactly the service's fields, plus the exchange's own id string as `exec_id`."""

    ts: datetime
    price: float
    qty: float
    side: str
    isBuyerMaker: bool
    id: int
    exec_id: str = field(default="", compare=False)


_FIRST_PAGE_SQL = """
    SELECT time_us, price, qty, side, is_buyer_maker, tick_id, trade_id
    FROM trades
    WHERE category = ? AND symbol = ? AND time_us >= ? AND time_us < ?
    ORDER BY time_us, trade_id
    LIMIT ?"""

# Keyset pagination on (time_us, trade_id): stable and cheap however deep the range goes.
_NEXT_PAGE_SQL = """
    SELECT time_us, price, qty, side, is_buyer_maker, tick_id, trade_id
    FROM trades
    WHERE category = ? AND symbol = ? AND (time_us > ? OR (time_us = ? AND trade_id > ?))
      AND time_us < ?
    ORDER BY time_us, trade_id
    LIMIT ?"""


_RANGE_SQL = """
    SELECT time_us, price, qty, side, is_buyer_maker, tick_id, trade_id
    FROM trades
    WHERE category = ? AND symbol = ? AND time_us >= ? AND time_us < ?
    ORDER BY time_us, trade_id"""


def _ticks_from_rows(rows: list[tuple]) -> list[TradeTick]:  # type: ignore[type-arg]
    return [TradeTick(us_to_dt(t), float(p), float(q), str(s), bool(m), int(i), str(x))
            for t, p, q, s, m, i, x in rows]


class BybitConnectorHistory:
    """`iterate_trades`, `backfill_with_cache` and `test_single_window` over the Bybit store."""

    def __init__(self, settings: Any = None, *, fetch_config: FetchConfig | None = None,
                 symbol: str | None = None, category: str | None = None) -> None:
        """`settings` may be ours, None (the environment), or the context service's own settings
        object: any object whose attributes carry our settings' names (`store.service_settings`)."""
        self.settings = settings_from(settings)
        self.fetch_config = fetch_config or self.settings.fetch_config()
        self.market = Market.parse(category or self.settings.bybit_category, symbol or self.settings.bybit_symbol)
        self.category, self.symbol = self.market.category, self.market.symbol  # as the service reads them
        self.last_summary: RefreshSummary | None = None

    @property
    def test_mode(self) -> bool:
        """The service asks `hasattr(provider, "test_mode") and provider.test_mode`."""
        return self.settings.context_backfill_test_mode

    @property
    def cache_enabled(self) -> bool:
        """The service asks `hasattr(provider, "cache_enabled") and provider.cache_enabled`."""
        return self.settings.backfill_cache_enabled

    @property
    def cache_dir(self) -> Path:
        return self.settings.backfill_cache_dir

    def _warn_gaps(self) -> None:
        """One WARNING per call when the range is not complete: what is returned is what the store has."""
        summary = self.last_summary
        if summary is None or not summary.gaps:
            return
        first = summary.gaps[0]
        more = f" (and {len(summary.gaps) - 1} more)" if len(summary.gaps) > 1 else ""
        log.warning("Bybit history of %s %s is incomplete: %s gap %s .. %s: %s%s; returning what the store "
                    "has (see last_summary.gaps)", self.category, self.symbol, first.kind,
                    first.start.isoformat(), first.end.isoformat(), first.reason, more)

    async def _refresh(self, start: datetime, end: datetime, export: bool) -> Store:
        store = open_store(self.settings.backfill_db_path, wait_s=self.settings.backfill_lock_wait_s)
        try:
            self.last_summary = await refresh(
                store, self.fetch_config, self.symbol, dt_to_us(start), dt_to_us(end),
                category=self.category, command=f"python API {self.category} {self.symbol}",
                **self.settings.refresh_arguments(export=export))
        except BaseException:
            store.close()
            raise
        return store

    async def iterate_trades(self, start: datetime, end: datetime,
                             chunk_rows: int = 100_000) -> AsyncIterator[TradeTick]:
        """Ascending trades of [start, end) from the store, after fetching what it lacks."""
        if self.settings.context_backfill_test_mode:
            for tick in await self.test_single_window():
                yield tick
            return
        _check_range(start, end)
        store = await self._refresh(start, end, export=False)
        self._warn_gaps()
        try:
            end_us = dt_to_us(end)
            rows = store.query(_FIRST_PAGE_SQL, [self.category, self.symbol, dt_to_us(start), end_us,
                                                 chunk_rows])
            while rows:
                for tick in _ticks_from_rows(rows):
                    yield tick
                if len(rows) < chunk_rows:
                    return
                last_us, last_id = int(rows[-1][0]), str(rows[-1][6])
                rows = store.query(_NEXT_PAGE_SQL, [self.category, self.symbol, last_us, last_us,
                                                    last_id, end_us, chunk_rows])
        finally:
            store.close()

    async def backfill_with_cache(self, start: datetime, end: datetime) -> list[TradeTick]:
        """Refresh the store, export the daily parquet cache, then read the range from those files.

        A day whose file is not current (today, still going on, gets no file; a file damaged after
        the refresh repaired it) is read from the store instead: a pyarrow error never reaches the
        caller, and neither does a file that does not say what the store says."""
        if self.settings.context_backfill_test_mode:
            return await self.test_single_window()
        _check_range(start, end)
        if not self.settings.backfill_cache_enabled:
            return [tick async for tick in self.iterate_trades(start, end)]
        store = await self._refresh(start, end, export=True)
        self._warn_gaps()
        try:
            ticks: list[TradeTick] = []
            for day in days_touching([(dt_to_us(start), dt_to_us(end))]):
                ticks += self._day_ticks(store, day, start, end)
            return ticks
        finally:
            store.close()

    def _day_ticks(self, store: Store, day: date, start: datetime, end: datetime) -> list[TradeTick]:
        cache_dir = self.settings.backfill_cache_dir
        if stale_reason(store, market=self.market, day=day, cache_dir=cache_dir,
                        id_mode=self.settings.backfill_export_id) is None:
            try:
                return _file_ticks(cache_path(cache_dir, day), start, end)
            except (pa.ArrowException, OSError) as error:
                log.warning("cache file of %s unreadable (%s): read from the store", day, error)
        lo = max(dt_to_us(start), day_start_us(day))
        hi = min(dt_to_us(end), day_start_us(day + timedelta(days=1)))
        return _ticks_from_rows(store.query(_RANGE_SQL, [self.category, self.symbol, lo, hi]))

    async def test_single_window(self) -> list[TradeTick]:
        """One small signed call that proves the key works, then the newest few public trades."""
        config = self.fetch_config
        if not config.credentials.present:
            raise AuthError("test_single_window needs BYBIT_API_KEY and BYBIT_API_SECRET")
        async with BybitClient(config) as client:
            end_ms = int(datetime.now(UTC).timestamp() * 1000)
            await client.get_private("/v5/execution/list", {
                "category": self.category, "startTime": str(end_ms - 3_600_000),
                "endTime": str(end_ms), "limit": "1"})
            tail = await RecentTradeSource(client).fetch(self.market, limit=10)
        log.info("Bybit test window OK: signed call accepted, %d recent trades", len(tail.trades))
        return [TradeTick(us_to_dt(t.time_us), t.price, t.qty, t.side, t.is_buyer_maker,
                          tick_id(t.trade_id), t.trade_id) for t in tail.trades]


def _check_range(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise InputError("start and end must be timezone-aware datetimes (UTC)")
    if start >= end:
        raise InputError(f"start {start.isoformat()} is not before end {end.isoformat()}")


def read_cache(cache_dir: Path, start: datetime, end: datetime) -> list[TradeTick]:
    """TradeTicks of [start, end) from the daily files, as the context service reads them."""
    ticks: list[TradeTick] = []
    for day in days_touching([(dt_to_us(start), dt_to_us(end))]):
        path = cache_path(cache_dir, day)
        if path.exists():
            ticks += _file_ticks(path, start, end)
    return ticks


def _file_ticks(path: Path, start: datetime, end: datetime) -> list[TradeTick]:
    start_ms, end_ms = dt_to_us(start) // 1000, -(-dt_to_us(end) // 1000)
    # One open for the footer and the pages: read by path, pyarrow opens the file twice, and a file
    # replaced in between (the follower rewrites today's file every minute, atomically) mixes one
    # version's footer with the other's pages (41% of reads failed in a tight loop beside a writer).
    with pa.OSFile(str(path)) as source:
        table = pq.read_table(source)
    return [TradeTick(datetime.fromtimestamp(t / 1000, UTC), p, q, s, m, int(i) if i.isdigit() else tick_id(i), i)
            for t, i, p, q, s, m in zip(*(table.column(n).to_pylist() for n in "Tipqsm"))
            if start_ms <= t < end_ms]


def create_history_provider(settings: Any = None) -> BybitConnectorHistory:
    """Pick the provider named by DATA_SOURCE; this package serves 'bybit'. Takes our settings or
    the service's own settings object, like `BybitConnectorHistory`."""
    settings = settings_from(settings)
    if settings.data_source.lower() != "bybit":
        raise InputError(f"DATA_SOURCE={settings.data_source!r} is not served by bybit-backfill; "
                         "set DATA_SOURCE=bybit")
    return BybitConnectorHistory(settings)
