"""The parquet files of committed days, written in the background while the next day is staged.

Each file is written on a connection of its own, opened for that file and closed after it, so the
store is held only while a file is written (and never by an idle refresh); the write is a read, so
it never blocks the next day's commit in this process. Same rule as the refresh's final pass
(`days_needing_export`): whatever fails here is simply left to that pass, which reports it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from fetch.market_span import Market
from store.cache_dir import IdMode, cache_path, check_owner, record_export, stale_reason
from store.db import REACQUIRE_WAIT_S, Store
from store.errors import StoreError
from store.export import write_day

log = logging.getLogger("context.backfill")


@dataclass(frozen=True, slots=True)
class ExportedRows:
    day: date
    rows: int


# Files written at once in the process, whatever the number of refreshes exporting: a busy day's
# sort and parquet writer take ~400 MB, and a whole-market run has dozens of refreshes whose days
# commit in quick succession. One per core: the writes are CPU work beside the staging.
CONCURRENT_EXPORTS = max(2, os.cpu_count() or 2)
_EXPORTING = threading.BoundedSemaphore(CONCURRENT_EXPORTS)


def _write_on_own_connection(path: str, *, market: Market, day: date, target: Path, id_mode: IdMode) -> int:
    with _EXPORTING, Store.open(path, wait_s=REACQUIRE_WAIT_S) as own:
        return write_day(own, market=market, day=day, target=target, id_mode=id_mode)


class Exporter:
    """`submit(day)` after each commit; `close()` waits for the last file and returns what was written."""

    def __init__(self, store: Store, *, market: Market, cache_dir: Path, id_mode: IdMode) -> None:
        self.store, self.market = store, market
        self.cache_dir, self.id_mode = cache_dir, id_mode
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bybit-export")
        self.pending: list[tuple[date, Path, asyncio.Future[int]]] = []
        self.exported: list[ExportedRows] = []

    def submit(self, day: date, *, changed: bool = False) -> None:
        """Write `day`'s file if it is stale; `changed`: the caller just stored rows on the day, so
        its file is stale by definition (its fingerprint changed) and is not checked."""
        self._collect()
        target = cache_path(self.cache_dir, day)
        try:
            with self.store.held():
                if not changed and stale_reason(self.store, market=self.market, day=day, cache_dir=self.cache_dir,
                                                id_mode=self.id_mode) is None:
                    return
                check_owner(self.store, target, self.market)
        except StoreError:
            return
        future = asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(
            _write_on_own_connection, self.store.path, market=self.market, day=day, target=target,
            id_mode=self.id_mode))
        self.pending.append((day, target, future))

    def _collect(self) -> None:
        keep, done = [], []
        for day, target, future in self.pending:
            if not future.done():
                keep.append((day, target, future))
            elif future.cancelled() or future.exception() is not None:
                log.debug("background export of %s failed (%s): left to the final pass", day,
                          None if future.cancelled() else future.exception())
            else:
                done.append((day, target, future.result()))
        self.pending = keep
        if not done:
            return
        with self.store.held():
            for day, target, rows in done:
                record_export(self.store, market=self.market, day=day, target=target, rows=rows,
                              id_mode=self.id_mode)
                self.exported.append(ExportedRows(day, rows))

    async def close(self) -> list[ExportedRows]:
        try:
            if self.pending:
                await asyncio.wait([future for _, _, future in self.pending])
            self._collect()
        finally:
            self.pool.shutdown(wait=True)
        return self.exported
