"""Fetching what a refresh lacks: the archive days and the REST tail, into the store.

The flow: the archive index and the plan; the REST tail asked first (a refused symbol stops the run
before anything is written); then each published day downloaded ahead (bounded, in the client),
parsed and staged outside the store (`store.staging`; small files of every refresh of the process
read together, `store.batch_staging`), and committed with its coverage row in the
process's commit thread (the event loop goes on downloading meanwhile; days that wait for the thread
together, of one refresh or of many, share one transaction: `CommitQueue`, `store.ingest_many`); its
parquet file written in the background (`store.exporter`) while the next day is staged; the tail
stored last. The store file is held only while a day (or the tail) commits, or across a run of
short commits (`Store.keeping`, let go within `store.file_pool.HOLD_BOUND_S` when another process
waits): other processes read and write it in between.

Each step returns what happened (`DayOutcome`, `TailOutcome`); `fetch_missing` hands them back as
one `Fetched` that `store.orchestrator` folds into its summary once. Nothing here mutates a shared run.

`store.orchestrator` imports this module only when something is missing: pyarrow's compute and CSV
modules, the ingest SQL and the network stack load only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from fetch.archive import ArchiveSource
from fetch.client import BybitClient, ClientStats
from fetch.errors import ArchiveError, Implausible
from fetch.market_span import Market, Span
from fetch.models import RecentTail, trades_to_table
from fetch.rest import RecentTradeSource
from store.batch_staging import BATCHER, SMALL_FILE_BYTES, SmallFile
from store.cache_dir import IdMode, claim_cache_dir
from store.coverage import Gap, add_coverage
from store.db import Store
from store.exporter import ExportedRows, Exporter
from store.ingest import EMPTY, IngestResult, Staging, ingest_batch
from store.ingest_many import StagedDay, commit_days
from store.plan import RefreshPlan, plan_refresh, unpublished_reason
from store.refresh_summary import Progress, ProgressCallback
from store.staging import stage_file
from store.staging_budget import StagingBudget
from store.threads import GroupThread, finish
from store.timeutil import day_start_us
from store.writer_state import WriterNote

if TYPE_CHECKING:
    from fetch.archive import ArchiveFile
    from fetch.config import FetchConfig

log = logging.getLogger("context.backfill")

# A day's staging needs far less than this (per refresh staging at once); what does not fit spills
# to the scratch directory.
STAGING_MEMORY_GB = 1


def staging_database(scratch: Path, refreshes: int = 1) -> Store:
    """The private database a run stages its days in (spilling to `scratch`), for `refreshes`
    refreshes at once: creating one costs more than staging a small day, so a whole-market run
    creates one and each refresh branches it (`Store.branch`). At most `STAGING_THREADS` of them
    stage at a time, whatever the run's concurrency."""
    staging_at_once = min(refreshes, STAGING_THREADS)
    return Store.private(memory_limit=f"{staging_at_once * STAGING_MEMORY_GB}GB", temp_directory=scratch)


@dataclass(frozen=True)
class Job:
    """What one refresh fetches, and where to; nothing in it changes while it runs."""

    store: Store
    market: Market
    span: Span
    progress: ProgressCallback
    cache_dir: Path | None = None
    id_mode: IdMode = "tick"
    note: WriterNote | None = None
    stopping: threading.Event = field(default_factory=threading.Event)
    # Shared by the refreshes of a whole-market run (`store.market`); one refresh alone stages one
    # day at a time and needs none.
    budget: StagingBudget | None = None
    # Called once the last archive file of the refresh has arrived: a whole-market run gives its
    # slot to the next refresh then, rather than when this one's commits are done (what the staged
    # days hold meanwhile is bounded by `budget`).
    downloaded: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class DayOutcome:
    """One archive day: committed (`result`), or not, and why (`gap`; `failed` for an unusable file)."""

    day: date
    result: IngestResult | None = None
    gap: Gap | None = None
    failed: bool = False


@dataclass(frozen=True, slots=True)
class TailOutcome:
    result: IngestResult
    rows: int
    gaps: tuple[Gap, ...]


@dataclass
class Fetched:
    """Everything a fetch did, for the summary: folded once by `store.orchestrator`."""

    days: list[DayOutcome] = field(default_factory=list)
    tail: TailOutcome | None = None
    gaps: list[Gap] = field(default_factory=list)   # the plan's and the tail's refusals
    implausible: int = 0
    exported: list[ExportedRows] = field(default_factory=list)
    stats: ClientStats = field(default_factory=ClientStats)

    @property
    def totals(self) -> IngestResult:
        results = [d.result for d in self.days if d.result is not None]
        results += [self.tail.result] if self.tail is not None else []
        total = EMPTY
        for result in results:
            total = total + result
        return total

    @property
    def reasons(self) -> list[Gap]:
        return [*self.gaps, *(d.gap for d in self.days if d.gap is not None),
                *(self.tail.gaps if self.tail is not None else ())]


async def fetch_missing(job: Job, config: FetchConfig, missing: list[Span], *,
                        client: BybitClient | None = None, work_dir: Path | None = None,
                        staging: Store | None = None) -> Fetched:
    """Fetch the uncovered intervals into the store (one client, one scratch dir and one private
    staging database for the run; a whole-market run passes its own, shared by its refreshes:
    `staging` is then branched, so this refresh stages in temp tables of its own); the client's
    counters are in the result whatever happens."""
    fetched = Fetched()
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(BybitClient(config))
        scratch = Path(work_dir) if work_dir else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="bybit-backfill-")))
        if staging is None:
            staging = stack.enter_context(staging_database(scratch))
        private = stack.enter_context(staging.branch())
        try:
            await _fetch(job, client, private, missing, scratch, fetched)
        finally:
            fetched.stats = client.stats
    return fetched


async def _fetch(job: Job, client: BybitClient, private: Store, missing: list[Span], scratch: Path,
                 fetched: Fetched) -> None:
    archive, market = ArchiveSource(client, scratch), job.market
    published = await archive.list_days(market)
    plan = plan_refresh(missing, published)
    job.progress(Progress("plan", total_days=len(plan.archive_days),
                          message=f"{len(plan.archive_days)} archive days, tail: {plan.tail}"))
    log.debug("plan %s %s: archive days %s, tail %s, unfetchable %s", market.category, market.symbol,
              [d.isoformat() for d in plan.archive_days], plan.tail, [u.day.isoformat() for u in plan.unfetchable])
    fetched.gaps += [_day_gap(item.day, item.reason) for item in plan.unfetchable]
    # The tail is asked for before any day is written: a REST host that refuses the symbol (10001)
    # or keeps answering garbage stops the run with the store as it was. It is stored last. An
    # answer that parses but cannot be true is refused whole: its span stays a gap with the reason.
    tail, now_us = None, 0
    if plan.tail:
        await client.sync_clock()  # coverage never reaches past the exchange's own now
        now_us = client.exchange_now_ms() * 1000
        try:
            tail = await RecentTradeSource(client).fetch(market)
        except Implausible as error:
            log.warning("%s", error)
            fetched.implausible += 1
            fetched.gaps += [_day_gap(day, str(error)) for day in plan.unpublished]
    if job.cache_dir is not None:  # after the symbol is known good: that error says more
        with job.store.held():
            claim_cache_dir(job.store, job.cache_dir, market, job.id_mode)
    exporter = None if job.cache_dir is None else Exporter(
        job.store, market=market, cache_dir=job.cache_dir, id_mode=job.id_mode)
    try:
        async for outcome in _archive_days(job, archive, private, plan, len(plan.archive_days)):
            fetched.days.append(outcome)
            if exporter is not None and outcome.result is not None:
                exporter.submit(outcome.day, changed=outcome.result.added > 0 or outcome.result.replaced > 0)
    finally:
        if exporter is not None:
            fetched.exported = await exporter.close()
    if tail is not None:
        fetched.tail = _store_tail(job, tail, plan, now_us)


async def _archive_days(job: Job, archive: ArchiveSource, private: Store, plan: RefreshPlan,
                        total: int) -> AsyncIterator[DayOutcome]:
    def on_bytes(count: int) -> None:
        job.progress(Progress("bytes", bytes=count))

    committed = arrived = 0
    async for day, item in archive.fetch_days(job.market, plan.archive_days, on_bytes=on_bytes):
        arrived += 1
        if arrived == total and job.downloaded is not None:
            job.downloaded()
        if item is None:
            yield DayOutcome(day, gap=_day_gap(day, f"the archive file for {day} is listed but answered "
                                                    "404; rerun later"))
            continue
        if isinstance(item, ArchiveError):
            yield _day_failed(day, item)
            continue
        if job.budget is not None:
            await job.budget.take(item.size_bytes)
        try:
            staging = await _staged(job, private, day, item)
            staging.expected_more = staging.received * max(0, total - committed - 1)  # days like this one
            outcome = await _committed(job, day, staging, url=item.url)
        except ArchiveError as error:
            outcome = _day_failed(day, error)
        finally:
            if job.budget is not None:
                job.budget.give(item.size_bytes)
            with contextlib.suppress(OSError):
                os.remove(item.path)
        committed += outcome.result is not None
        if job.note is not None:
            job.note.update(f"{job.market.category} {job.market.symbol}: {committed} of {total} archive days "
                            "committed")
        yield outcome


async def _staged(job: Job, private: Store, day: date, item: ArchiveFile) -> Staging:
    """`stage_file` in a worker thread, or for a small file the process's batch of small files
    (`store.batch_staging`: read together with the others waiting, without the GIL). If the refresh
    is cancelled meanwhile, the worker is told to stop and waited for: it uses the private database,
    which the cancelled run closes next, and DuckDB refuses a connection busy in another call."""
    work: asyncio.Future[Staging]
    if item.size_bytes < SMALL_FILE_BYTES:
        work = asyncio.wrap_future(BATCHER.submit(SmallFile(private, job.market, day, item.path, job.stopping)))
    else:
        work = asyncio.get_running_loop().run_in_executor(
            _STAGING, stage_file, private, job.market, day, item.path, job.stopping)
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        job.stopping.set()
        with contextlib.suppress(Exception):  # its error, if any: the refresh is cancelled anyway
            await finish(work)
        raise


# The threads that parse and stage days, for the whole process: one per core. Staging is CPU work
# (inflate, parse, hash), and more threads than cores only take the cores and the GIL from the
# commit thread, which a whole market of small days waits on: 200 small symbols took 3.5 s with 2
# staging threads on 2 cores against 4.0-4.1 s with asyncio's default 6 (alternating runs).
STAGING_THREADS = max(2, os.cpu_count() or 2)
_STAGING = ThreadPoolExecutor(max_workers=STAGING_THREADS, thread_name_prefix="bybit-stage")


def _day_failed(day: date, error: ArchiveError) -> DayOutcome:
    log.warning("archive day %s failed: %s", day, error)
    return DayOutcome(day, failed=True, gap=_day_gap(day, f"archive file for {day} is unusable ({error}); "
                                                          "rerun to fetch it again"))


class CommitQueue(GroupThread[tuple[Store, StagedDay], IngestResult]):
    """The process's commit thread, and the days waiting for it.

    Days are committed in one thread, one transaction at a time (the store serializes them anyway),
    so the event loop goes on downloading and handing days to the staging threads while a day
    commits. The days handed over while a transaction runs wait, and the next transaction takes all
    of them that go to the same file (up to `MAX_DAYS` days and `MAX_ROWS` rows, so the file is not
    held much longer than one busy day's commit): a whole market of small days is a few commits of
    many days (`store.ingest_many`), not one commit per day. If such a transaction fails, its days
    are committed one by one, so one bad day fails alone.

    The thread does not wait for more days to gather: a transaction commits what is waiting when it
    begins (measured: waiting up to 20 ms for days being staged made 200 small symbols 5-20%
    slower, each symbol's next request waiting behind its commit)."""

    MAX_DAYS = 64
    MAX_ROWS = 2_000_000

    def __init__(self) -> None:
        super().__init__("bybit-commit")

    def submit(self, store: Store, day: StagedDay) -> Future[IngestResult]:  # type: ignore[override]
        return super().submit((store, day))

    def _choose(self, waiting: list[tuple[Store, StagedDay]]) -> list[bool]:
        path = waiting[0][0].path if waiting else None
        chosen, days, rows = [], 0, 0
        for store, day in waiting:
            received = day.staging.received
            take = store.path == path and days < self.MAX_DAYS and (not days or rows + received <= self.MAX_ROWS)
            if take:
                days, rows = days + 1, rows + received
            chosen.append(take)
        return chosen

    def _process(self, group: list[tuple[Store, StagedDay]]) -> list[IngestResult | BaseException]:
        store = group[0][0]  # any handle on the file will do: the staged rows are Arrow tables
        days = [day for _, day in group]
        try:
            return list(_commit(store, days))
        except Exception as error:  # noqa: BLE001 - handed to the refreshes waiting for these days
            if len(days) == 1:
                return [error]
            log.info("a commit of %d days failed (%s); committing them one by one", len(days), error)
        results: list[IngestResult | BaseException] = []
        for day in days:
            try:
                results.append(_commit(store, [day])[0])
            except Exception as alone:  # noqa: BLE001 - handed to the refresh waiting for this day
                results.append(alone)
        return results


def _commit(store: Store, days: list[StagedDay]) -> list[IngestResult]:
    """Days and their coverage rows in one transaction: after a crash, all of them or none. The
    store file is held for this alone."""
    with store.held(), store.atomic():
        return commit_days(store, days)


_COMMITS = CommitQueue()


async def _committed(job: Job, day: date, staging: Staging, *, url: str) -> DayOutcome:
    """The day through the commit thread. A cancelled refresh waits for a commit under way (it is
    all or nothing; the handle is used next by the run's cleanup)."""
    span = Span(day_start_us(day), day_start_us(day + timedelta(days=1)))
    work = asyncio.wrap_future(_COMMITS.submit(job.store, StagedDay(job.market, span, staging, url)))
    try:
        result = await finish(work)
    finally:
        staging.table = None  # the rows are in the store (or will never be): not kept while the next day stages
    job.progress(Progress("day", day=day, rows=result.added))
    log.info("archive %s %s %s: %d rows, %d added, %d duplicates, %d conflicts", job.market.category,
             job.market.symbol, day, staging.received, result.added, result.duplicates, result.conflicts)
    return DayOutcome(day, result=result)


def tail_coverage(tail: RecentTail, span: Span, now_us: int) -> Span | None:
    """The span a recent-trade answer proves complete, within the request and the exchange's now.

    Trades sharing the oldest timestamp may be cut by the limit, and more may share the newest one
    after the answer: only what lies strictly between them is complete, and of that only the part
    that was asked for (rows outside the request are not stored, so they cannot be vouched for)."""
    if tail.oldest_us is None or tail.newest_us is None:
        return None
    low, high = max(tail.oldest_us + 1, span.start_us), min(tail.newest_us, span.end_us, now_us)
    return Span(low, high) if high > low else None


def _store_tail(job: Job, tail: RecentTail, plan: RefreshPlan, now_us: int) -> TailOutcome:
    """recent-trade's newest trades: complete from the oldest returned one up to the request."""
    trades = [t for t in tail.trades if job.span.contains(t.time_us)]
    span = tail_coverage(tail, job.span, now_us)
    store = job.store
    with store.held(), store.atomic():
        result = ingest_batch(store, trades_to_table(trades), market=job.market, skip_archive_covered=True)
        if span is not None:
            add_coverage(store, market=job.market, source="rest", span=span, added_rows=result.added,
                         file_rows=len(tail.trades), detail=f"recent-trade limit {tail.limit}")
    job.progress(Progress("tail", rows=result.added))
    gaps = []
    reach_us = tail.oldest_us + 1 if tail.oldest_us is not None else None
    for day in plan.unpublished:
        start_us, end_us = day_start_us(day), day_start_us(day + timedelta(days=1))
        if reach_us is None or start_us < reach_us:
            gaps.append(Gap("uncovered", start_us, min(end_us, reach_us or end_us),
                            unpublished_reason(day, tail.limit, tail.oldest_us)))
    if tail.newest_us is not None:
        gaps.append(Gap("uncovered", tail.newest_us, job.span.end_us, AFTER_NEWEST))
    return TailOutcome(result, len(trades), tuple(gaps))


AFTER_NEWEST = ("after the newest trade recent-trade returned: nothing newer had been published when "
                "it was asked; the next refresh extends it")


def _day_gap(day: date, reason: str) -> Gap:
    return Gap("uncovered", day_start_us(day), day_start_us(day + timedelta(days=1)), reason)
