"""Many symbols, many machines: whole-market refreshes, deterministic shards, the lake kept current.

`refresh_market` runs the steps of the one-symbol `store.orchestrator.refresh` for each piece of
work, several at once, and adds nothing to how a day is fetched or stored. What it adds:

* one client for the whole run: one connection pool, one rate limiter and one breaker across every
  symbol, so the bound on requests in flight is global, not per symbol;
* what each refresh would pay for alone, paid once: the plan of every piece asked of the store in
  one statement (`store.coverage_many`), one private staging database (each refresh stages in a
  branch of its own), one scratch directory, one writer note, the file kept open across the run's
  many small commits (`Store.keeping`: still let go within `store.file_pool.HOLD_BOUND_S` when
  another process waits, and whenever idle), and the gaps of up to CONCLUDE_BATCH pieces found and
  recorded together;
* each concurrent refresh on a DuckDB handle of its own (one connection must not be used by two
  threads at once); the store already serializes write transactions within the process
  (`Store.atomic`), so concurrent symbols interleave their downloads and parsing, not their commits;
* sharding: `--shard K/N` keeps the (symbol, day) pairs that `shard_of` gives to K, a stable hash
  (not Python's salted `hash()`) of the symbol and the day's 7-day block, so N machines with N
  stores split a market without talking to each other and fill one lake; the days a machine keeps
  are merged into contiguous runs, one refresh each;
* the lake: after each piece, its complete days are written to the lake (`store.lake`), so a run
  that stops half-way has still published what it finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import string
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fetch.errors import BackfillError, InputError
from fetch.market_span import Category, Market, Span
from store.cache_dir import check_cache_dir
from store.coverage import Ask
from store.db import Store
from store.orchestrator import Part, conclude, fetch_part, plan_parts
from store.refresh_summary import copy_client_counters
from store.staging_budget import StagingBudget
from store.threads import in_thread
from store.timeutil import day_of_us, day_start_us, days_touching, us_to_dt

if TYPE_CHECKING:
    from fetch.client import BybitClient
    from fetch.config import FetchConfig
    from store.cache_dir import IdMode
    from store.lake import LakeReport, Location
    from store.refresh_summary import RefreshSummary
    from store.writer_state import WriterNote

log = logging.getLogger("context.backfill")

# Symbols downloading at once. A whole market is mostly small days, each a chain of two requests, a
# parse and a commit: many in flight keep the commit thread's transactions full (200 small symbols
# in bench/RESULTS.md: 4.4 s at 4, 3.8-3.9 s at 16, 32 and 64; 7.0 s at 4 before a refresh gave its
# slot back once its files had arrived). Busy symbols' staged days are bounded by the run's
# `StagingBudget`, not by this.
DEFAULT_CONCURRENCY = 32


# ---- pure: shards, work items, cache directories ------------------------------------------------

@dataclass(frozen=True, slots=True)
class Shard:
    """Machine `index` (1-based) of `count`."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        head, sep, tail = text.strip().partition("/")
        try:
            index, count = int(head), int(tail)
        except ValueError:
            index = count = 0
        if not sep or not 1 <= index <= count:
            raise InputError(f"cannot read the shard {text!r}: give K/N with 1 <= K <= N, e.g. 1/4 on "
                             "the first of four machines")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


# Days are dealt in blocks of this many consecutive days (aligned on the epoch, so the same on every
# machine): each refresh of a symbol lists its archive index once, so dealing single days would make
# a machine of N >= 2 list it about once per day; a block makes that once per week, and 500 symbols
# still spread evenly.
SHARD_BLOCK_DAYS = 7
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def shard_of(market: Market, day: date, count: int) -> int:
    """The shard (1..count) owning (market, day): a sha256 of the market and the day's block, the
    same on every machine and Python version (never the salted `hash()`)."""
    block = (day.toordinal() - _EPOCH_ORDINAL) // SHARD_BLOCK_DAYS
    digest = hashlib.sha256(f"{market.category}|{market.symbol}|{block}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One refresh: a market over a span."""

    market: Market
    span: Span


def work_items(category: Category, symbols: Sequence[str], span: Span,
               shard: Shard | None = None) -> list[WorkItem]:
    """The refreshes of a run: one per symbol, or, with a shard, one per run of contiguous days
    that the shard owns (clipped to the range)."""
    items = []
    for symbol in symbols:
        market = Market(category, symbol)
        if shard is None or shard.count == 1:
            items.append(WorkItem(market, span))
            continue
        mine = [d for d in days_touching([span]) if shard_of(market, d, shard.count) == shard.index]
        for first, last in _runs(mine):
            items.append(WorkItem(market, Span(max(span.start_us, day_start_us(first)),
                                               min(span.end_us, day_start_us(last + timedelta(days=1))))))
    return items


def _runs(days: list[date]) -> list[tuple[date, date]]:
    """Sorted days as (first, last) runs of consecutive days."""
    runs: list[tuple[date, date]] = []
    for day in days:
        if runs and runs[-1][1] + timedelta(days=1) == day:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


_FIELDS = {"symbol", "category"}


def check_cache_template(template: str, symbol_count: int) -> None:
    """Refuse a template naming unknown fields, or one directory for several symbols (the daily
    file name carries no symbol, so each directory keeps one owner)."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise InputError(f"cannot read the cache dir template {template!r} ({error}): use {{symbol}} "
                         "and {category}, e.g. 'cache/{symbol}'") from None
    unknown = names - _FIELDS
    if unknown:
        raise InputError(f"the cache dir template {template!r} names {', '.join(sorted(unknown))}: only "
                         "{symbol} and {category} are known")
    if symbol_count > 1 and "symbol" not in names:
        raise InputError(f"{symbol_count} symbols cannot share the cache dir {template!r}: give a "
                         "template such as 'cache/{symbol}' or pass --no-export")


def cache_dir_for(template: str, market: Market) -> Path:
    return Path(template.format(symbol=market.symbol, category=market.category))


# ---- the run ------------------------------------------------------------------------------------

@dataclass
class SymbolResult:
    """One symbol's share of the run, over all its refreshes."""

    category: Category
    symbol: str
    refreshes: int = 0
    days_in_range: int = 0
    days_from_store: int = 0
    days_fetched: int = 0
    rows_added: int = 0
    gaps: int = 0
    days_failed: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def failures(self) -> int:
        return len(self.days_failed) + (1 if self.error else 0)

    def add(self, summary: RefreshSummary) -> None:
        self.refreshes += 1
        self.days_in_range += summary.days_in_range
        self.days_from_store += summary.days_from_store
        self.days_fetched += summary.days_fetched
        self.rows_added += summary.rows_added
        self.gaps += len(summary.gaps)
        self.days_failed += summary.days_failed


@dataclass
class MarketSummary:
    category: Category
    start: str
    end: str
    shard: str | None
    results: list[SymbolResult] = field(default_factory=list)
    summaries: list[RefreshSummary] = field(default_factory=list)
    lake: LakeReport | None = None
    requests: int = 0
    retries: int = 0
    bytes_downloaded: int = 0
    elapsed_s: float = 0.0

    @property
    def failed(self) -> bool:
        return any(r.failures for r in self.results)

    @property
    def rows_added(self) -> int:
        return sum(r.rows_added for r in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {"category": self.category, "start": self.start, "end": self.end, "shard": self.shard,
                "symbols": [{"symbol": r.symbol, "refreshes": r.refreshes, "days_in_range": r.days_in_range,
                             "days_from_store": r.days_from_store, "days_fetched": r.days_fetched,
                             "rows_added": r.rows_added, "gaps": r.gaps, "days_failed": r.days_failed,
                             "error": r.error} for r in self.results],
                "rows_added": self.rows_added, "requests": self.requests, "retries": self.retries,
                "bytes_downloaded": self.bytes_downloaded, "elapsed_s": round(self.elapsed_s, 3),
                "lake": self.lake.as_dict() if self.lake is not None else None}


async def list_symbols(client: BybitClient, category: Category, statuses: Sequence[str]) -> list[str]:
    """Every symbol of `category` with one of `statuses`, from instruments-info."""
    from fetch.instruments import InstrumentSource

    return [i.symbol for i in await InstrumentSource(client).list(category, statuses)]


# The end of each refresh (its gaps found and recorded with their reasons) is done for up to this
# many symbols at once, in one statement per question (`store.orchestrator.conclude`): per symbol,
# those statements cost more than a small day's commit. A bound, so that `on_symbol` reports and
# the recorded reasons land as the run goes (a stopped run loses at most a batch of reasons, which
# the next run finds again), not all at the end.
CONCLUDE_BATCH = 32


async def refresh_market(store: Store, config: FetchConfig, symbols: Sequence[str] | None,
                         span: Span, *, category: Category = "linear",
                         statuses: Sequence[str] = ("Trading",), shard: Shard | None = None,
                         cache_template: str | None = None, id_mode: IdMode = "tick",
                         lake: Location | None = None, concurrency: int = DEFAULT_CONCURRENCY,
                         client: BybitClient | None = None,
                         on_symbol: Callable[[SymbolResult], None] | None = None) -> MarketSummary:
    """Refresh `symbols` (None: every symbol of the category with one of `statuses`) over
    `span`, at most `concurrency` refreshes downloading at once (one whose files have arrived
    waits for its commits without a slot); the lake, when given, is updated after each. A symbol
    that fails is reported and the others go on; if every one fails, the first error is raised
    (nothing was done: a bad host or option, not a bad symbol)."""
    began = time.monotonic()
    if concurrency < 1:
        raise InputError(f"--concurrency must be at least 1, got {concurrency}")
    summary = MarketSummary(category, us_to_dt(span.start_us).isoformat(), us_to_dt(span.end_us).isoformat(),
                            str(shard) if shard else None)
    if lake is not None:
        from store.lake import LakeReport

        summary.lake = LakeReport(lake.uri)
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(store.keeping())  # the run's many small commits share the file's opens
        if client is None:
            from fetch.client import BybitClient

            client = await stack.enter_async_context(BybitClient(config))
        names = [s.upper() for s in symbols] if symbols else await list_symbols(client, category, statuses)
        names = list(dict.fromkeys(names))
        if cache_template is not None:
            check_cache_template(cache_template, len(names))
        run = _Run(store, config, client, category=category, id_mode=id_mode, lake=lake, summary=summary,
                   results={name: SymbolResult(category, name) for name in names}, on_symbol=on_symbol)
        summary.results = list(run.results.values())
        items = work_items(category, names, span, shard)
        parts = plan_parts(store, [Ask(i.market, i.span) for i in items],
                           cache_dirs=[cache_dir_for(cache_template, i.market) if cache_template
                                       else None for i in items], id_mode=id_mode)
        for item in items:
            symbol = item.market.symbol
            run.remaining[symbol] = run.remaining.get(symbol, 0) + 1
        store.release()  # each symbol's refresh holds the file only while it commits, on a handle of its own
        if any(part.missing for part in parts):
            run.open_staging(stack, concurrency)
        # The gate bounds the refreshes downloading (scratch files, connections): a refresh gives its
        # slot back once its last file has arrived, not when its commits are done, so the commit
        # thread finds more days waiting and the next symbols download meanwhile (200 small symbols:
        # see DEFAULT_CONCURRENCY). Staged days are bounded by the run's budget, exports by
        # `store.exporter.CONCURRENT_EXPORTS`.
        gate = asyncio.Semaphore(concurrency)

        async def one(item: WorkItem, part: Part) -> None:
            await gate.acquire()
            held = True

            def give_back() -> None:
                nonlocal held
                if held:
                    held = False
                    gate.release()

            try:
                await run.fetch(item, part, give_back)
            finally:
                give_back()

        async with asyncio.TaskGroup() as group:
            for item, part in zip(items, parts, strict=True):
                group.create_task(one(item, part))
        await run.conclude()
        copy_client_counters(summary, client.stats)
    if items and run.errors and len(run.errors) == len(items):
        raise run.errors[0]
    summary.elapsed_s = time.monotonic() - began
    log.info("Bybit market refresh complete: %s, %d symbols, %d rows added, %d requests in %.1f s",
             category, len(names), summary.rows_added, summary.requests, summary.elapsed_s)
    return summary


@dataclass
class _Run:
    """What the refreshes of one market run share: the client, one private staging database and
    scratch directory, one writer note, and the refreshes waiting for their gaps to be concluded."""

    store: Store
    config: FetchConfig
    client: BybitClient
    category: Category
    id_mode: IdMode
    lake: Location | None
    summary: MarketSummary
    results: dict[str, SymbolResult]
    on_symbol: Callable[[SymbolResult], None] | None
    remaining: dict[str, int] = field(default_factory=dict)
    errors: list[BackfillError] = field(default_factory=list)
    fetched: list[Part] = field(default_factory=list)
    staging: Store | None = None
    scratch: Path | None = None
    note: WriterNote | None = None
    concluding: asyncio.Lock = field(default_factory=asyncio.Lock)
    budget: StagingBudget = field(default_factory=StagingBudget)

    def open_staging(self, stack: contextlib.AsyncExitStack, concurrency: int) -> None:
        from store.pipeline import staging_database
        from store.writer_state import WriterNote

        self.scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bybit-backfill-")))
        self.staging = stack.enter_context(staging_database(self.scratch, concurrency))
        self.note = WriterNote(Path(self.store.path), f"refresh --all {self.category}")
        stack.callback(self.note.close)

    async def fetch(self, item: WorkItem, part: Part, downloaded: Callable[[], None]) -> None:
        """One refresh's fetch on a handle of its own, then its days into the lake; its end is
        concluded with others' (`conclude`). `downloaded`: once its last archive file has arrived."""
        cursor = self.store.sibling()
        try:
            try:
                if part.cache_dir is not None:
                    check_cache_dir(part.cache_dir)
                await fetch_part(cursor, self.config, part, client=self.client, work_dir=self.scratch,
                                 staging=self.staging, note=self.note, budget=self.budget, downloaded=downloaded)
            except BackfillError as error:
                self._failed(item, error)
                return
            if self.lake is not None:
                report = await in_thread(_update_lake, cursor, self.lake, item)
                assert self.summary.lake is not None
                self.summary.lake.merge(report)
        finally:
            cursor.close()
        self.fetched.append(part)
        if len(self.fetched) >= CONCLUDE_BATCH:
            await self.conclude()

    async def conclude(self) -> None:
        """The gaps of the refreshes fetched so far, found and recorded together, in a worker
        thread (its statements, and the stale days' exports, would stall the downloads in flight),
        one batch at a time on the run's handle."""
        parts, self.fetched = self.fetched, []
        if not parts:
            return
        try:
            async with self.concluding:
                await in_thread(conclude, self.store, parts)
        except BackfillError as error:
            for part in parts:
                self._failed(part.ask, error)
            return
        for part in parts:
            self.results[part.ask.market.symbol].add(part.summary)
            self.summary.summaries.append(part.summary)
            self._done(part.ask.market.symbol)

    def _failed(self, item: WorkItem | Ask, error: BackfillError) -> None:
        market = item.market
        log.warning("refresh of %s %s failed: %s", market.category, market.symbol, error)
        self.errors.append(error)
        self.results[market.symbol].error = str(error)
        self._done(market.symbol)

    def _done(self, symbol: str) -> None:
        self.remaining[symbol] -= 1
        if self.remaining[symbol] == 0 and self.on_symbol is not None:
            self.on_symbol(self.results[symbol])


def _update_lake(store: Store, lake: Location, item: WorkItem) -> LakeReport:
    from store.lake import write_lake

    first = day_of_us(item.span.start_us)
    stop = day_of_us(item.span.end_us - 1) + timedelta(days=1)
    return write_lake(store, lake, categories=[item.market.category], symbols=[item.market.symbol], first=first,
                      stop=stop)
