"""The account's own fills: a resumable crawl of /v5/execution/list into `executions`.

Each 7-day window is committed with its coverage row in one transaction, so a crawl killed halfway
resumes at the first window it had not finished, and `exec_id` (the primary key; the table stays
small) makes a repeated window harmless.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from fetch import BybitClient, ExecutionSource, FetchConfig
from fetch.market_span import Category, Market, Span
from fetch.models import Execution
from fetch.symbols import normalize_symbol
from store.coverage import add_coverage, uncovered
from store.db import Store
from store.refresh_summary import copy_client_counters
from store.threads import in_thread
from store.timeutil import us_to_dt

ALL_SYMBOLS = "*"

_EXECUTION_COLUMNS = ["exec_id", "category", "symbol", "order_id", "exec_type", "time_us", "price",
                      "qty", "side", "fee", "fee_currency", "is_maker"]


@dataclass
class ExecutionsSummary:
    category: str
    symbol: str
    start: str
    end: str
    windows_fetched: int = 0
    rows_added: int = 0
    duplicates_skipped: int = 0
    by_exec_type: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0
    errors_by_type: dict[str, int] = field(default_factory=dict)
    breaker_openings: int = 0
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["elapsed_s"] = round(self.elapsed_s, 3)
        return data


INSERT_EXECUTIONS_SQL = (f"INSERT INTO executions ({', '.join(_EXECUTION_COLUMNS)}) "
                         f"SELECT {', '.join(_EXECUTION_COLUMNS)} FROM incoming_executions "
                         "ON CONFLICT (exec_id) DO NOTHING")


def _as_table(executions: list[Execution]) -> pa.Table:
    return pa.table({name: [getattr(e, name) for e in executions] for name in _EXECUTION_COLUMNS})


def clip_to(spans: list[Span], now_us: int) -> list[Span]:
    """The parts of `spans` before `now_us`."""
    return [Span(a, min(b, now_us)) for a, b in spans if a < now_us]


def store_window(store: Store, executions: list[Execution], *, market: Market, span: Span,
                 exec_type: str | None = None) -> int:
    """Insert one window's fills and mark the window covered, atomically; returns rows added."""
    with store.atomic():
        added = 0
        if executions:
            store.register("incoming_executions", _as_table(executions))
            try:
                row = store.query_one(INSERT_EXECUTIONS_SQL)
                added = int(row[0]) if row else 0
            finally:
                store.unregister("incoming_executions")
        add_coverage(store, market=market, source="executions", span=span, added_rows=added,
                     file_rows=len(executions), exec_type=exec_type)
    return added


async def refresh_executions(store: Store, config: FetchConfig, span: Span, *,
                             category: Category = "linear", symbol: str | None = None,
                             exec_type: str | None = None, client: BybitClient | None = None,
                             ) -> ExecutionsSummary:
    """Fetch the fills of [start, end) that the store lacks; windows already covered are skipped."""
    began = time.monotonic()
    symbol = normalize_symbol(symbol) if symbol else None
    key = Market(category, symbol or ALL_SYMBOLS)
    summary = ExecutionsSummary(category, key.symbol, us_to_dt(span.start_us).isoformat(),
                                us_to_dt(span.end_us).isoformat())
    missing = uncovered(store, key, span, sources=("executions",), exec_type=exec_type)
    if missing:
        async with contextlib.AsyncExitStack() as stack:
            if client is None:
                client = await stack.enter_async_context(BybitClient(config))
            await _crawl(store, client, missing, summary, key, symbol, exec_type)
    summary.elapsed_s = time.monotonic() - began
    return summary


async def _crawl(store: Store, client: BybitClient, missing: list[Span], summary: ExecutionsSummary,
                 key: Market, symbol: str | None, exec_type: str | None) -> None:
    """Fetch the `missing` spans of the fills filed under `key` (the symbol asked for, or every one)."""
    source = ExecutionSource(client)
    try:
        # A window is covered only up to the exchange's now: a local clock running ahead must not
        # mark the fills of the next hour as known to be none.
        await client.sync_clock()
        now_us = client.exchange_now_ms() * 1000
        for start_us, end_us in clip_to(missing, now_us):
            async for (w_start_ms, w_end_ms), executions in source.fetch(
                    key.category, start_us // 1000, -(-end_us // 1000), symbol=symbol, exec_type=exec_type):
                # In a worker thread: a commit (with its fsync) on the event loop would stall every
                # request in flight for its duration, which cost ~7% of the allowed request rate.
                window = Span(max(start_us, w_start_ms * 1000), min(end_us, w_end_ms * 1000))
                added = await in_thread(store_window, store, executions, market=key, span=window,
                                        exec_type=exec_type)
                summary.windows_fetched += 1
                summary.rows_added += added
                summary.duplicates_skipped += len(executions) - added
                for execution in executions:
                    summary.by_exec_type[execution.exec_type] = (
                        summary.by_exec_type.get(execution.exec_type, 0) + 1)
    finally:
        copy_client_counters(summary, client.stats)
