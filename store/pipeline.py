"""Fetching what a refresh lacks: the archive days and the REST tail, into the store.

Downloads run ahead (bounded, in the client); each day's file is stream-parsed in a thread of its
own and staged in DuckDB batch by batch in a worker thread, then committed with its coverage row in
one transaction; a committed day's parquet file is written by DuckDB on a cursor of its own
(`Exporter`) while the next day is parsed and staged. A day is never held whole in Python memory.

`store.refresh` imports this module only when something is missing: pyarrow's compute and CSV
modules, the ingest SQL and the network stack load only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import queue
import re
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from fetch.archive import ArchiveSource
from fetch.archive_csv import archive_rows
from fetch.client import BybitClient
from fetch.errors import ArchiveError, Implausible
from fetch.models import RecentTail, trades_to_table
from fetch.rest import RecentTradeSource
from store.cache_dir import cache_path, check_dir_owner, check_owner, days_needing_export, record_export
from store.coverage import Gap, add_coverage
from store.db import Store
from store.errors import StoreError
from store.export import write_day
from store.ingest import EMPTY, IngestResult, Staging, distinct_ids_between, ingest_batch, ingest_staged
from store.plan import RefreshPlan, day_of_us, day_start_us, plan_refresh, unpublished_reason
from store.summary import Progress, ProgressCallback, RefreshSummary

if TYPE_CHECKING:
    from fetch.archive import ArchiveFile
    from fetch.config import FetchConfig

log = logging.getLogger("context.backfill")


@dataclass
class Run:
    """One refresh's fetching: what it added, why what is missing is missing, files written."""

    store: Store
    category: str
    symbol: str
    start_us: int
    end_us: int
    progress: ProgressCallback
    summary: RefreshSummary
    touched: set[date] = field(default_factory=set)
    reasons: list[Gap] = field(default_factory=list)
    totals: IngestResult = EMPTY
    cache_dir: Path | None = None
    id_mode: str = "tick"
    exported: list[ExportedRows] = field(default_factory=list)
    exporter: Exporter | None = None
    stopping: threading.Event = field(default_factory=threading.Event)
    implausible: int = 0

    def add(self, result: IngestResult) -> None:
        self.totals = self.totals + result


async def fetch_missing(run: Run, config: FetchConfig, missing: list[tuple[int, int]], *,
                        client: BybitClient | None = None, work_dir: Path | None = None) -> None:
    """Fetch the uncovered intervals into the store (one client, one scratch dir, DuckDB's memory
    lowered meanwhile); the client's counters go into the run's summary whatever happens."""
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(BybitClient(config))
        scratch = Path(work_dir) if work_dir else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="bybit-backfill-")))
        stack.enter_context(_memory_limit(run.store, REFRESH_MEMORY_LIMIT))
        try:
            await _fetch_missing(run, client, missing, scratch)
        finally:
            _copy_stats(run.summary, client, run.implausible)


# DuckDB keeps every block it wrote cached up to its memory limit: across a 30-day refresh that
# alone passed 2 GB of RSS. A day's staging and insert need far less; evicted blocks are on disk.
REFRESH_MEMORY_LIMIT = "1GB"
_SIZE = re.compile(r"^([0-9.]+) ?([KMGT]?)(i?)B$")


def _bytes(size: str) -> float | None:
    """A size as DuckDB writes it ('1.8 GiB', '1GB') in bytes; None if it is not one."""
    match = _SIZE.match(size.strip())
    if match is None:
        return None
    scale: int = (1024 if match[3] else 1000) ** " KMGT".index(match[2] or " ")
    return float(match[1]) * scale


@contextlib.contextmanager
def _memory_limit(store: Store, limit: str) -> Iterator[None]:
    """Lower DuckDB's memory limit for the fetch (never raise it), then restore it (as DuckDB
    renders it: to its display precision)."""
    row = store.query_one("SELECT current_setting('memory_limit')")
    before = str(row[0]) if row else ""
    now, wanted = _bytes(before), _bytes(limit)
    if now is None or wanted is None or now <= wanted:
        yield
        return
    store.execute(f"SET memory_limit = '{limit}'")  # a constant of this module (SET takes no parameter)
    try:
        yield
    finally:
        store.execute(f"SET memory_limit = '{before}'")  # DuckDB's own rendering, matched by _SIZE


def _copy_stats(summary: RefreshSummary, client: BybitClient, implausible: int) -> None:
    stats = client.stats
    summary.requests = stats.requests
    summary.retries = stats.retries
    summary.errors_by_type = dict(stats.errors_by_type)
    if summary.days_failed:  # unusable files fail at parse time, past the client's counters
        summary.errors_by_type["ArchiveError"] = (summary.errors_by_type.get("ArchiveError", 0)
                                                  + len(summary.days_failed))
    if implausible:  # so are answers that parse but cannot be true
        summary.errors_by_type["Implausible"] = summary.errors_by_type.get("Implausible", 0) + implausible
    summary.breaker_openings = stats.breaker_openings
    summary.peak_throttle = stats.peak_throttle
    summary.bytes_downloaded = stats.bytes_downloaded


async def _fetch_missing(run: Run, client: BybitClient, missing: list[tuple[int, int]],
                         scratch: Path) -> None:
    archive = ArchiveSource(client, scratch)
    published = await archive.list_days(run.category, run.symbol)
    plan = plan_refresh(missing, published)
    run.progress(Progress("plan", total_days=len(plan.archive_days),
                          message=f"{len(plan.archive_days)} archive days, tail: {plan.tail}"))
    for item in plan.unfetchable:
        run.reasons.append(_day_gap(item.day, item.reason))
    # The tail is asked for before any day is written: a REST host that refuses the symbol (10001)
    # or keeps answering garbage stops the run with the store as it was. It is stored last. An
    # answer that parses but cannot be true is refused whole: its span stays a gap with the reason.
    tail, now_us = None, 0
    if plan.tail:
        await client.sync_clock()  # coverage never reaches past the exchange's own now
        now_us = client.exchange_now_ms() * 1000
        try:
            tail = await RecentTradeSource(client).fetch(run.category, run.symbol)
        except Implausible as error:
            log.warning("%s", error)
            run.implausible += 1
            run.reasons += [_day_gap(day, str(error)) for day in plan.unpublished]
    if run.cache_dir is not None:  # after the symbol is known good: that error says more
        check_dir_owner(run.store, run.cache_dir, run.category, run.symbol, run.id_mode)
    await _ingest_archive_days(run, archive, plan)
    if tail is not None:
        _ingest_tail(run, tail, plan, now_us)


async def _ingest_archive_days(run: Run, archive: ArchiveSource, plan: RefreshPlan) -> None:
    def on_bytes(count: int) -> None:
        run.progress(Progress("bytes", bytes=count))

    exporter = run.exporter
    async for day, item in archive.fetch_days(run.category, run.symbol, plan.archive_days,
                                              on_bytes=on_bytes):
        if item is None:
            run.reasons.append(_day_gap(day, f"the archive file for {day} is listed but answered "
                                             "404; rerun later"))
            continue
        if isinstance(item, ArchiveError):
            _day_failed(run, day, item)
            continue
        try:
            staging = await _staged(run, day, item)
            _commit_day(run, day, staging, url=item.url)
        except ArchiveError as error:
            _day_failed(run, day, error)
            continue
        finally:
            with contextlib.suppress(OSError):
                os.remove(item.path)
        if exporter is not None:
            exporter.submit(day)


STAGE_ROWS = 1 << 18  # ~260k rows per staging INSERT: small appends cost DuckDB its parallelism


class _Stopped(Exception):
    """The refresh was cancelled (Ctrl-C) while a day was being staged."""


async def _staged(run: Run, day: date, item: ArchiveFile) -> Staging:
    """`_stage_file` in a worker thread. If the refresh is cancelled meanwhile, the worker is told
    to stop and waited for: it uses the store's connection, which the cancelled run's cleanup
    (rollback, settings restored) needs next, and DuckDB refuses a connection busy in another call."""
    work = asyncio.get_running_loop().run_in_executor(None, _stage_file, run, day, item)
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        run.stopping.set()
        with contextlib.suppress(Exception):
            await work
        raise


def _stage_file(run: Run, day: date, item: ArchiveFile) -> Staging:
    """Parse the day's file and stage it as it comes, in groups of ~STAGE_ROWS rows. Runs in a
    worker thread (the event loop keeps downloading; the store's connection is used by nothing else
    meanwhile) while the parser runs a few batches ahead in a thread of its own."""
    staging = Staging(run.store, category=run.category, symbol=run.symbol)
    group: list[pa.RecordBatch] = []
    rows = 0
    for batch in _read_ahead(archive_rows(item.path, run.category, run.symbol, day)):
        if run.stopping.is_set():
            raise _Stopped
        group.append(batch)
        rows += batch.num_rows
        if rows >= STAGE_ROWS:
            staging.append(pa.Table.from_batches(group).combine_chunks())
            group, rows = [], 0
    if group:
        staging.append(pa.Table.from_batches(group).combine_chunks())
    return staging


_END = object()


def _read_ahead(batches: Iterator[pa.RecordBatch], depth: int = 8) -> Iterator[pa.RecordBatch]:
    """Iterate `batches` in a thread of its own, up to `depth` ahead; its error is raised here.
    Stopping early (an error while staging) stops the parser at its next batch."""
    buffer: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        """Hand over `item`; False once the consumer has stopped."""
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                buffer.put(item, timeout=0.05)
                return True
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the consuming thread, raised there
            put(error)

    parser = threading.Thread(target=produce, name="bybit-parse", daemon=True)
    parser.start()
    try:
        while (item := buffer.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, pa.RecordBatch)
            yield item
    finally:
        stop.set()
        parser.join()


def _day_failed(run: Run, day: date, error: ArchiveError) -> None:
    log.warning("archive day %s failed: %s", day, error)
    run.summary.days_failed.append(day.isoformat())
    run.reasons.append(_day_gap(day, f"archive file for {day} is unusable ({error}); rerun to fetch "
                                     "it again"))


def _commit_day(run: Run, day: date, staging: Staging, *, url: str) -> None:
    """A whole day and its coverage row in one transaction: after a crash, all of it or none."""
    start_us, end_us = day_start_us(day), day_start_us(day + timedelta(days=1))
    with run.store.atomic():
        result = ingest_staged(run.store, staging, replace_rest=(start_us, end_us))
        expected = distinct_ids_between(run.store, start_us, end_us)
        add_coverage(run.store, category=run.category, symbol=run.symbol, source="archive",
                     start_us=start_us, end_us=end_us, added_rows=result.added,
                     file_rows=staging.received, expected_rows=expected, detail=url)
    run.add(result)
    run.summary.days_fetched += 1
    run.touched.add(day)
    run.progress(Progress("day", day=day, rows=result.added))
    log.info("archive %s %s %s: %d rows, %d added, %d duplicates, %d conflicts", run.category,
             run.symbol, day, staging.received, result.added, result.duplicates, result.conflicts)


@dataclass(frozen=True, slots=True)
class ExportedRows:
    day: date
    rows: int


class Exporter:
    """Writes the file of each committed day in the background, one at a time, on a DuckDB cursor
    of its own (a read: it never blocks the next day's transaction), and records it in `exports`
    on the main connection. Same rule as the final pass (`days_needing_export`); whatever fails here
    is simply left to that pass, which reports it."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.cursor = Store(run.store.connection.cursor(), run.store.path, run.store.read_only)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bybit-export")
        self.pending: list[tuple[date, Path, asyncio.Future[int]]] = []

    def submit(self, day: date) -> None:
        run, cache_dir = self.run, self.run.cache_dir
        assert cache_dir is not None
        self._collect(wait=False)
        target = cache_path(cache_dir, day)
        try:
            if not days_needing_export(run.store, category=run.category, symbol=run.symbol,
                                       days=[day], cache_dir=cache_dir, id_mode=run.id_mode):
                return
            check_owner(run.store, target, run.category, run.symbol)
        except StoreError:
            return
        future = asyncio.get_running_loop().run_in_executor(
            self.pool, functools.partial(write_day, self.cursor, category=run.category, symbol=run.symbol,
                                         day=day, target=target, id_mode=run.id_mode))
        self.pending.append((day, target, future))

    def _collect(self, *, wait: bool) -> None:
        keep = []
        for day, target, future in self.pending:
            if not future.done():
                keep.append((day, target, future))
                continue
            if future.cancelled() or future.exception() is not None:
                log.debug("background export of %s failed (%s): left to the final pass", day,
                          None if future.cancelled() else future.exception())
                continue
            rows = future.result()
            record_export(self.run.store, category=self.run.category, symbol=self.run.symbol, day=day,
                          target=target, rows=rows, id_mode=self.run.id_mode)
            self.run.exported.append(ExportedRows(day, rows))
        self.pending = keep

    async def close(self) -> None:
        try:
            if self.pending:
                await asyncio.wait([future for _, _, future in self.pending])
            self._collect(wait=True)
        finally:
            self.pool.shutdown(wait=True)
            self.cursor.close()


def tail_coverage(tail: RecentTail, start_us: int, end_us: int, now_us: int) -> tuple[int, int] | None:
    """The span a recent-trade answer proves complete, within the request and the exchange's now.

    Trades sharing the oldest timestamp may be cut by the limit, and more may share the newest one
    after the answer: only what lies strictly between them is complete, and of that only the part
    that was asked for (rows outside the request are not stored, so they cannot be vouched for)."""
    if tail.oldest_us is None or tail.newest_us is None:
        return None
    low, high = max(tail.oldest_us + 1, start_us), min(tail.newest_us, end_us, now_us)
    return (low, high) if high > low else None


def _ingest_tail(run: Run, tail: RecentTail, plan: RefreshPlan, now_us: int) -> None:
    """recent-trade's newest trades: complete from the oldest returned one up to the request."""
    trades = [t for t in tail.trades if run.start_us <= t.time_us < run.end_us]
    span = tail_coverage(tail, run.start_us, run.end_us, now_us)
    with run.store.atomic():
        result = ingest_batch(run.store, trades_to_table(trades), category=run.category,
                              symbol=run.symbol, skip_archive_covered=True)
        if span is not None:
            add_coverage(run.store, category=run.category, symbol=run.symbol, source="rest",
                         start_us=span[0], end_us=span[1], added_rows=result.added,
                         file_rows=len(tail.trades), detail=f"recent-trade limit {tail.limit}")
    run.add(result)
    run.summary.tail_rows = len(trades)
    run.touched.update(day_of_us(t.time_us) for t in trades)
    run.progress(Progress("tail", rows=result.added))
    reach_us = tail.oldest_us + 1 if tail.oldest_us is not None else None
    for day in plan.unpublished:
        start_us, end_us = day_start_us(day), day_start_us(day + timedelta(days=1))
        if reach_us is None or start_us < reach_us:
            run.reasons.append(Gap("uncovered", start_us, min(end_us, reach_us or end_us),
                                   unpublished_reason(day, tail.limit, tail.oldest_us)))
    if tail.newest_us is not None:
        run.reasons.append(Gap("uncovered", tail.newest_us, run.end_us, AFTER_NEWEST))


AFTER_NEWEST = ("after the newest trade recent-trade returned: nothing newer had been published when "
                "it was asked; the next refresh extends it")


def _day_gap(day: date, reason: str) -> Gap:
    return Gap("uncovered", day_start_us(day), day_start_us(day + timedelta(days=1)), reason)
