"""The main job: make the store complete over a range, fetching only what it lacks.

plan (SQL coverage + archive index) -> archive days downloaded concurrently, each stream-parsed and
staged in DuckDB batch by batch in a worker thread, then committed with its coverage row in one
transaction -> the REST tail for what lies past the newest file (asked before any day is written,
stored after them) -> gaps recorded with their reasons -> touched days exported -> a summary. A
range the store already covers sends no request. A day whose file is unusable fails alone: it is
listed in `days_failed`, the rest complete.

The stages overlap where the machine allows: downloads run ahead of parsing, and a committed day's
parquet file is written by DuckDB on a cursor of its own (`_Exporter`) while the next day is parsed
and staged; the final export pass then finds it up to date. A day is never held whole in Python
memory: the parser's batches go straight into the staging table.
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
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from fetch import ArchiveSource, BybitClient, FetchConfig, RecentTradeSource
from fetch.archive import ArchiveFile
from fetch.archive_csv import archive_rows
from fetch.errors import ArchiveError
from fetch.models import RecentTail, trades_to_table
from store.coverage import Gap, add_coverage, find_gaps, record_open_gaps, uncovered, us_to_dt
from store.db import Store
from store.errors import StoreError
from store.export import (
    cache_path,
    check_cache_dir,
    check_dir_owner,
    check_owner,
    days_needing_export,
    export_days,
    record_export,
    write_day,
)
from store.ingest import EMPTY, IngestResult, Staging, distinct_ids_between, ingest_batch, ingest_staged
from store.plan import RefreshPlan, day_of_us, day_start_us, days_touching, plan_refresh, unpublished_reason

log = logging.getLogger("context.backfill")


@dataclass(frozen=True, slots=True)
class Progress:
    """One step of a refresh, for a progress bar or a log line."""

    event: str  # plan | bytes | day | tail | export
    day: date | None = None
    rows: int = 0
    bytes: int = 0
    total_days: int = 0
    message: str = ""


ProgressCallback = Callable[[Progress], None]


@dataclass
class RefreshSummary:
    category: str
    symbol: str
    start: str
    end: str
    days_in_range: int = 0
    days_from_store: int = 0
    days_fetched: int = 0
    days_failed: list[str] = field(default_factory=list)
    rows_added: int = 0
    duplicates_skipped: int = 0
    conflicts: int = 0
    rest_rows_replaced: int = 0
    tail_rows: int = 0
    requests: int = 0
    retries: int = 0
    errors_by_type: dict[str, int] = field(default_factory=dict)
    breaker_openings: int = 0
    peak_throttle: float = 1.0
    bytes_downloaded: int = 0
    files_exported: int = 0
    gaps: list[Gap] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows_added / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gaps"] = [gap.as_dict() for gap in self.gaps]
        data["rows_per_s"] = round(self.rows_per_s, 1)
        data["elapsed_s"] = round(self.elapsed_s, 3)
        return data


@dataclass
class _Run:
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
    exporter: _Exporter | None = None

    def add(self, result: IngestResult) -> None:
        self.totals = self.totals + result


def _noop(_: Progress) -> None:
    return None


async def refresh(store: Store, config: FetchConfig, symbol: str, start_us: int, end_us: int, *,
                  category: str = "linear", cache_dir: Path | None = None, id_mode: str = "tick",
                  progress: ProgressCallback | None = None, client: BybitClient | None = None,
                  work_dir: Path | None = None) -> RefreshSummary:
    """Fetch what [start_us, end_us) lacks, export touched days, and say what could not be had."""
    began = time.monotonic()
    symbol = symbol.upper()
    summary = RefreshSummary(category, symbol, us_to_dt(start_us).isoformat(), us_to_dt(end_us).isoformat())
    run = _Run(store, category, symbol, start_us, end_us, progress or _noop, summary,
               cache_dir=Path(cache_dir) if cache_dir is not None else None, id_mode=id_mode)
    if cache_dir is not None:
        check_cache_dir(cache_dir)
    all_days = days_touching([(start_us, end_us)])
    summary.days_in_range = len(all_days)
    missing = uncovered(store, category, symbol, start_us, end_us)
    summary.days_from_store = len(set(all_days) - set(days_touching(missing)))
    # The last day's file may still be written in the background while the gaps are recorded.
    run.exporter = _Exporter(run) if cache_dir is not None and missing else None
    try:
        if missing:
            async with contextlib.AsyncExitStack() as stack:
                if client is None:
                    client = await stack.enter_async_context(BybitClient(config))
                scratch = Path(work_dir) if work_dir else Path(stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="bybit-backfill-")))
                stack.enter_context(_memory_limit(store, REFRESH_MEMORY_LIMIT))
                try:
                    await _fetch_missing(run, client, missing, scratch)
                finally:
                    _copy_stats(summary, client)
        gaps = [g for g in find_gaps(store, category, symbol, start_us, end_us)]
        summary.gaps = _with_reasons(gaps, run.reasons)
        with store.atomic():
            record_open_gaps(store, category, symbol, start_us, end_us, summary.gaps)
    finally:
        if run.exporter is not None:
            await run.exporter.close()
    if cache_dir is not None:
        stale = days_needing_export(store, category=category, symbol=symbol, cache_dir=cache_dir,
                                    days=_exportable_days(store, category, symbol, all_days),
                                    id_mode=id_mode)
        exported = export_days(store, category=category, symbol=symbol, days=stale,
                               cache_dir=cache_dir, id_mode=id_mode)
        files = len(run.exported) + len(exported)
        summary.files_exported = files
        rows = sum(e.rows for e in run.exported) + sum(e.rows for e in exported)
        run.progress(Progress("export", rows=rows, message=f"{files} files"))
    summary.rows_added = run.totals.added
    summary.duplicates_skipped = run.totals.duplicates
    summary.conflicts = run.totals.conflicts
    summary.rest_rows_replaced = run.totals.replaced
    summary.elapsed_s = time.monotonic() - began
    log.info("Bybit backfill complete: %s %s, %d rows added, %d duplicates skipped, %d conflicts, "
             "%d gaps left, %d requests in %.1f s", category, symbol, summary.rows_added,
             summary.duplicates_skipped, summary.conflicts, len(summary.gaps), summary.requests,
             summary.elapsed_s)
    return summary


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


def _copy_stats(summary: RefreshSummary, client: BybitClient) -> None:
    stats = client.stats
    summary.requests = stats.requests
    summary.retries = stats.retries
    summary.errors_by_type = dict(stats.errors_by_type)
    if summary.days_failed:  # unusable files fail at parse time, past the client's counters
        summary.errors_by_type["ArchiveError"] = (summary.errors_by_type.get("ArchiveError", 0)
                                                  + len(summary.days_failed))
    summary.breaker_openings = stats.breaker_openings
    summary.peak_throttle = stats.peak_throttle
    summary.bytes_downloaded = stats.bytes_downloaded


async def _fetch_missing(run: _Run, client: BybitClient, missing: list[tuple[int, int]],
                         scratch: Path) -> None:
    archive = ArchiveSource(client, scratch)
    published = await archive.list_days(run.category, run.symbol)
    plan = plan_refresh(missing, published)
    run.progress(Progress("plan", total_days=len(plan.archive_days),
                          message=f"{len(plan.archive_days)} archive days, tail: {plan.tail}"))
    for item in plan.unfetchable:
        run.reasons.append(_day_gap(item.day, item.reason))
    # The tail is asked for before any day is written: a REST host that refuses the symbol (10001)
    # or keeps answering garbage stops the run with the store as it was. It is stored last.
    tail = await RecentTradeSource(client).fetch(run.category, run.symbol) if plan.tail else None
    if run.cache_dir is not None:  # after the symbol is known good: that error says more
        check_dir_owner(run.store, run.cache_dir, run.category, run.symbol)
    await _ingest_archive_days(run, archive, plan)
    if tail is not None:
        _ingest_tail(run, tail, plan)


async def _ingest_archive_days(run: _Run, archive: ArchiveSource, plan: RefreshPlan) -> None:
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
            staging = await asyncio.get_running_loop().run_in_executor(None, _stage_file, run, day, item)
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


def _stage_file(run: _Run, day: date, item: ArchiveFile) -> Staging:
    """Parse the day's file and stage it as it comes, in groups of ~STAGE_ROWS rows. Runs in a
    worker thread (the event loop keeps downloading; the store's connection is used by nothing else
    meanwhile) while the parser runs a few batches ahead in a thread of its own."""
    staging = Staging(run.store, category=run.category, symbol=run.symbol)
    group: list[pa.RecordBatch] = []
    rows = 0
    for batch in _read_ahead(archive_rows(item.path, run.category, run.symbol, day)):
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


def _day_failed(run: _Run, day: date, error: ArchiveError) -> None:
    log.warning("archive day %s failed: %s", day, error)
    run.summary.days_failed.append(day.isoformat())
    run.reasons.append(_day_gap(day, f"archive file for {day} is unusable ({error}); rerun to fetch "
                                     "it again"))


def _commit_day(run: _Run, day: date, staging: Staging, *, url: str) -> None:
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


class _Exporter:
    """Writes the file of each committed day in the background, one at a time, on a DuckDB cursor
    of its own (a read: it never blocks the next day's transaction), and records it in `exports`
    on the main connection. Same rule as the final pass (`days_needing_export`); whatever fails here
    is simply left to that pass, which reports it."""

    def __init__(self, run: _Run) -> None:
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


def _ingest_tail(run: _Run, tail: RecentTail, plan: RefreshPlan) -> None:
    """recent-trade's newest trades: complete from the oldest returned one up to the request."""
    trades = [t for t in tail.trades if run.start_us <= t.time_us < run.end_us]
    with run.store.atomic():
        result = ingest_batch(run.store, trades_to_table(trades), category=run.category,
                              symbol=run.symbol, skip_archive_covered=True)
        if tail.oldest_us is not None and tail.newest_us is not None:
            # Trades sharing the oldest timestamp may be cut by the limit, and more may share the
            # newest one after the answer: cover strictly between them, nothing is assumed beyond.
            add_coverage(run.store, category=run.category, symbol=run.symbol, source="rest",
                         start_us=tail.oldest_us + 1, end_us=tail.newest_us, added_rows=result.added,
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


def _with_reasons(gaps: list[Gap], reasons: list[Gap]) -> list[Gap]:
    """Give each uncovered interval the reason of this run that overlaps it most."""
    result = []
    for gap in gaps:
        def overlap(reason: Gap, gap: Gap = gap) -> int:
            return min(reason.end_us, gap.end_us) - max(reason.start_us, gap.start_us)

        candidates = [r for r in reasons if overlap(r) > 0]
        if gap.kind == "uncovered" and candidates:
            best = max(candidates, key=overlap)
            gap = Gap(gap.kind, gap.start_us, gap.end_us, best.reason, gap.detail)
        result.append(gap)
    return result


def _exportable_days(store: Store, category: str, symbol: str, days: list[date]) -> list[date]:
    """Days with any stored trade (a day with none has nothing to export)."""
    if not days:
        return []
    rows = store.query("SELECT DISTINCT CAST(make_timestamp(time_us) AS DATE) FROM trades WHERE "
                       "category = ? AND symbol = ? AND time_us >= ? AND time_us < ?",
                       [category, symbol, day_start_us(days[0]), day_start_us(days[-1] + timedelta(days=1))])
    return sorted(row[0] for row in rows)
