"""`follow`: live capture of public trades into the shared store, up to the last second.

    follower = Follower(FollowConfig(db_path, fetch_config, "linear", ["BTCUSDT"]), on_trades=cb)
    await follower.run()          # until follower.stop() (SIGTERM/Ctrl-C in the CLI)

* One task per WebSocket connection (`fetch.ws.plan_connections`): subscribe, read, ping; on any
  end it logs the disconnect on `context.backfill` and reconnects after a backoff with full jitter
  (`reconnect_delay`), forever.
* Each symbol's evidence lives in a `store.spans.SpanBook`; after the first trade of every
  (re)subscribe, recent-trade is asked to bridge the hole back to the previous session, and what it
  cannot bridge becomes an open gap with its reason.
* A commit loop writes every `commit_every_s` (0.5 s: freshness p99 stays under 1 s): it opens the store (waiting for the lock),
  writes the rows, their coverage and the gaps in one transaction, and closes it again, so other
  processes read and write between commits. A SIGKILL loses at most the uncommitted second, and the
  coverage of it was never written.
* Every `export_every_s` the day's parquet file of each symbol is rewritten; every
  `archive_check_s` the archive index is asked whether a day the follower captured is published,
  and if so the normal refresh of that day runs (the archive replaces the live rows; the difference
  is recorded in `reconciliation`).
* A small JSON state file per symbol beside the store (`<db>.follow/`) says which process follows
  it, its last committed trade and when: `status` reads it (`follower_status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from fetch.archive import ArchiveSource
from fetch.client import BybitClient
from fetch.config import FetchConfig
from fetch.errors import BackfillError, ParameterError
from fetch.market_span import Category, Market, Span
from fetch.models import Trade, trades_to_table
from fetch.rest import RecentTradeSource
from fetch.ws import PublicStream, StreamOptions, plan_connections
from store.atomic import write_json_atomic
from store.cache_dir import IdMode
from store.coverage import record_open_gaps
from store.db import Store
from store.errors import StoreError
from store.follow_state import follower_status, state_dir
from store.ingest import ingest_batch
from store.schema import open_store
from store.spans import CoverageClaim, Session, SpanBook, Work
from store.threads import in_thread
from store.timeutil import DAY_US, us_to_dt

log = logging.getLogger("context.backfill")

TradesCallback = Callable[[list[Trade]], Awaitable[None] | None]


@dataclass(frozen=True)
class FollowConfig:
    """What to follow and how often to commit, export and look for archive files."""

    db_path: Path
    fetch: FetchConfig
    category: Category
    symbols: tuple[str, ...]
    cache_dir: Path | None = None
    export_every_s: float = 60.0
    commit_every_s: float = 0.5
    archive_check_s: float = 300.0
    lock_wait_s: float = 10.0
    stream: StreamOptions = field(default_factory=StreamOptions)
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    id_mode: IdMode = "tick"


def reconnect_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)], so reconnecting clients spread out."""
    return rng.uniform(0, min(cap_s, base_s * 2 ** min(attempt, 30)))


_LOAD_PREVIOUS_ENDS_SQL = ("SELECT symbol, max(end_us) FROM coverage WHERE category = ? AND source IN "
                           "('archive', 'rest', 'ws') GROUP BY symbol")


class Follower:
    """The long-running live capture; `run()` until `stop()`. Also an async iterator of new trades
    (`updates()`), or pass `on_trades` to be called after each commit with the trades it stored."""

    def __init__(self, config: FollowConfig, *, on_trades: TradesCallback | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 client: BybitClient | None = None) -> None:
        self.config = config
        self.symbols = tuple(dict.fromkeys(s.upper() for s in config.symbols))
        self.clock = clock  # the exchange's "now" in epoch seconds: which day is today
        self.rng = rng or random.Random()
        self.on_trades = on_trades
        self.books = {s: SpanBook(Market(config.category, s)) for s in self.symbols}
        self._client = client
        self._stop = asyncio.Event()
        self._write = asyncio.Lock()  # commits and the archive refresh take turns on the store
        self._bridges: set[asyncio.Task[None]] = set()
        self._recent: deque[str] = deque(maxlen=200_000)
        self._recent_set: set[str] = set()
        self._queues: list[asyncio.Queue[list[Trade]]] = []
        self._exported_day: dict[str, date] = {}
        self.stats: dict[str, int] = {"commits": 0, "rows_added": 0, "disconnects": 0, "bridges": 0,
                                      "gaps": 0, "exports": 0, "archive_days": 0}
        self.state_dir = state_dir(config.db_path)

    # -- public surface ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask `run()` to commit what it holds and return (safe from a signal handler)."""
        self._stop.set()

    async def updates(self) -> AsyncIterator[list[Trade]]:
        """The trades of each commit, newly stored ones only, as they are committed."""
        queue: asyncio.Queue[list[Trade]] = asyncio.Queue(maxsize=1000)
        self._queues.append(queue)
        try:
            while not (self._stop.is_set() and queue.empty()):
                with contextlib.suppress(TimeoutError):
                    yield await asyncio.wait_for(queue.get(), timeout=0.5)
        finally:
            self._queues.remove(queue)

    async def run(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            if self._client is None:
                self._client = await stack.enter_async_context(BybitClient(self.config.fetch))
            client = self._client
            await self._check_symbols(client)
            await self._load_previous_ends()
            tasks = [asyncio.create_task(self._connection_loop(requests), name=f"follow-ws-{k}")
                     for k, requests in enumerate(plan_connections(self.config.category, self.symbols))]
            tasks += [asyncio.create_task(self._every(self.config.export_every_s, self._export), name="export"),
                      asyncio.create_task(self._every(self.config.archive_check_s, self.settle_published_days),
                                          name="archive")]
            try:
                await self._commit_loop(tasks)
            finally:
                for task in [*tasks, *self._bridges]:
                    task.cancel()
                await asyncio.gather(*tasks, *self._bridges, return_exceptions=True)
                for book in self.books.values():
                    session = book.session
                    if session is not None:  # a bridge cut short: its hole gets a reason all the same
                        book.on_bridge(session, None, failure="the follower stopped before recent-trade answered")
                    book.end_session()
                await self._commit()  # what it holds, then done
                self._write_states(active=False)

    # -- WebSocket side ---------------------------------------------------------------------------
    async def _connection_loop(self, requests: list[list[str]]) -> None:
        symbols = [arg.split(".", 1)[1] for req in requests for arg in req]
        attempt = 0
        while not self._stop.is_set():
            got_data = False
            try:
                async with PublicStream(self.config.fetch.endpoints.ws_base_url, self.config.category, requests,
                                        options=self.config.stream) as stream:
                    sessions = {s: self.books[s].start_session() for s in symbols}
                    log.info("follow: subscribed %s (%s)", ", ".join(symbols), self.config.category)
                    async for message in stream.messages():
                        got_data = got_data or bool(message.trades)
                        if self.books[message.symbol].on_trades(message.trades):
                            self._bridge_later(message.symbol, sessions[message.symbol])
            except (BackfillError, OSError) as error:  # every end of a stream: log it, back off, reconnect
                reason = str(error)
            else:
                reason = "the stream ended"
            for s in symbols:
                self.books[s].end_session(reason)
            attempt = 0 if got_data else attempt + 1
            delay = reconnect_delay(attempt, self.config.backoff_base_s, self.config.backoff_cap_s, self.rng)
            self.stats["disconnects"] += 1
            log.warning("follow: %s disconnected (%s); next attempt in %.1f s", ", ".join(symbols), reason, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)

    def _bridge_later(self, symbol: str, session: Session) -> None:
        task = asyncio.create_task(self._bridge(symbol, session))
        self._bridges.add(task)
        task.add_done_callback(self._bridges.discard)

    async def _bridge(self, symbol: str, session: Session) -> None:
        """recent-trade back to the previous session; what it cannot reach becomes a gap."""
        assert self._client is not None
        book = self.books[symbol]
        try:
            tail = await RecentTradeSource(self._client).fetch(book.market)
        except BackfillError as error:
            gaps = book.on_bridge(session, None, failure=str(error))
        else:
            gaps = book.on_bridge(session, tail)
        self.stats["bridges"] += 1
        self.stats["gaps"] += len(gaps)
        log.info("follow: bridged %s back to %s with recent-trade%s", symbol,
                 us_to_dt(session.prev_end_us).isoformat() if session.prev_end_us else "its start",
                 "" if not gaps else f"; {len(gaps)} gap(s) recorded: {gaps[0].reason}")

    async def _check_symbols(self, client: BybitClient) -> None:
        """An unknown symbol is bad input: say so and stop, instead of retrying its refused
        subscription forever. Any other failure here is left to the reconnect loops."""
        for symbol in self.symbols:
            try:
                await RecentTradeSource(client).fetch(self.books[symbol].market, limit=1)
            except ParameterError:
                raise
            except BackfillError as error:
                log.warning("follow: could not check %s on recent-trade (%s); following it anyway", symbol, error)

    async def _load_previous_ends(self) -> None:
        """Where each symbol's verified coverage ended before this run: the first bridge starts there."""
        def load() -> dict[str, int | None]:
            with open_store(self.config.db_path, wait_s=self.config.lock_wait_s) as store:
                rows = store.query(_LOAD_PREVIOUS_ENDS_SQL, [self.config.category])
            return {str(s): int(e) for s, e in rows if e is not None}

        ends = await in_thread(load)
        for symbol, book in self.books.items():
            book.prev_end_us = ends.get(symbol)

    # -- commits ----------------------------------------------------------------------------------
    async def _commit_loop(self, tasks: list[asyncio.Task[None]]) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.config.commit_every_s)
            for task in tasks:  # a loop that died of a bug must not leave a follower that captures nothing
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            if not self._stop.is_set():
                await self._commit()

    async def _commit(self) -> None:
        works = {s: b.take() for s, b in self.books.items()}
        works = {s: w for s, w in works.items() if not w.empty}
        if not works:
            return
        async with self._write:
            try:
                added = await in_thread(self._commit_sync, works)
            except StoreError as error:
                log.warning("follow: commit failed (%s); holding %d trades for the next one", error,
                            sum(len(w.ws) + len(w.rest) for w in works.values()))
                return
        for symbol, work in works.items():
            self.books[symbol].committed(work)
        self.stats["commits"] += 1
        self.stats["rows_added"] += added
        self._write_states(active=True)
        await self._deliver([t for w in works.values() for t in (*w.rest, *w.ws)])

    def _commit_sync(self, works: dict[str, Work]) -> int:
        added = 0
        with open_store(self.config.db_path, wait_s=self.config.lock_wait_s) as store, store.atomic():
            for symbol, work in works.items():
                added += self._write_work(store, symbol, work)
        return added

    def _write_work(self, store: Store, symbol: str, work: Work) -> int:
        book = self.books[symbol]
        market = book.market
        added = {"rest": 0, "ws": 0}
        for source, trades in (("rest", work.rest), ("ws", work.ws)):
            if trades:
                # Matched within a day around the rows: twice a second, a whole-table match would cost
                # a scan of the market's ids each time; the archive day replacing them matches it all.
                added[source] = ingest_batch(store, trades_to_table(trades), market=market,
                                             skip_archive_covered=True, match_window_us=DAY_US).added
        total = sum(added.values())
        for claim in work.claims:  # rows added are credited to the claim of their source, once
            write_claim(store, market, claim, update=claim.key in book.committed_keys,
                        added_rows=added.pop(claim.source, 0))
        for gap in work.gaps:
            record_open_gaps(store, market, Span(gap.start_us, gap.end_us), [gap])
        return total

    async def _deliver(self, trades: list[Trade]) -> None:
        fresh = []
        for t in sorted(trades, key=lambda t: (t.time_us, t.trade_id)):
            if t.trade_id in self._recent_set:
                continue
            if len(self._recent) == self._recent.maxlen:
                self._recent_set.discard(self._recent[0])
            self._recent.append(t.trade_id)
            self._recent_set.add(t.trade_id)
            fresh.append(t)
        if not fresh:
            return
        for queue in self._queues:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(fresh)
        if self.on_trades is not None:
            try:
                result = self.on_trades(fresh)
                if result is not None:
                    await result
            except Exception:  # the caller's bug must not stop the capture
                log.exception("follow: the on_trades callback failed; capture goes on")

    # -- exports and archive days -----------------------------------------------------------------
    async def _every(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=seconds)
            if self._stop.is_set():
                return
            try:
                await job()
            except BackfillError as error:  # a bad cache dir or a flaky archive host: say it, go on
                log.warning("follow: %s failed: %s", getattr(job, "__name__", "job"), error)

    def cache_dir_for(self, symbol: str) -> Path | None:
        """One directory per symbol (file names carry no symbol): a subdirectory when following several."""
        base = self.config.cache_dir
        if base is None:
            return None
        return base if len(self.symbols) == 1 else base / symbol

    def _covered_through(self, store: Store, symbol: str) -> int | None:
        """The end of the newest live coverage of `symbol`: today's file is complete up to there."""
        row = store.query_one("SELECT max(end_us) FROM coverage WHERE category = ? AND symbol = ? "
                              "AND source IN ('ws', 'rest')", [self.config.category, symbol])
        return int(row[0]) if row and row[0] is not None else None

    async def _export(self) -> None:
        from store.export import export_days

        async with self._write:
            def work() -> int:
                files = 0
                with open_store(self.config.db_path, wait_s=self.config.lock_wait_s) as store:
                    for symbol in self.symbols:
                        directory, newest = self.cache_dir_for(symbol), self.books[symbol].committed_newest_us
                        if directory is None or newest is None:
                            continue
                        day = _utc_day(newest / 1e6)  # and the day before once more, after a midnight
                        days = sorted({day, self._exported_day.get(symbol, day)})
                        files += len(export_days(store, market=self.books[symbol].market,
                                                 days=days, cache_dir=directory, id_mode=self.config.id_mode,
                                                 live_through_us=self._covered_through(store, symbol)))
                        self._exported_day[symbol] = day
                return files

            self.stats["exports"] += await in_thread(work)

    async def settle_published_days(self) -> None:
        """Refresh each captured day whose archive file is out: the archive replaces the live rows."""
        from store.orchestrator import refresh

        assert self._client is not None
        today_start = int(self.clock() // 86_400) * DAY_US
        for symbol in self.symbols:
            days = await in_thread(self._unsettled_days, symbol, today_start)
            if not days:
                continue
            published = set(await ArchiveSource(self._client, Path(".")).list_days(self.books[symbol].market))
            for day in [d for d in days if d in published]:
                start = int((day - date(1970, 1, 1)).days) * DAY_US
                async with self._write:
                    store = open_store(self.config.db_path, wait_s=self.config.lock_wait_s)
                    try:
                        summary = await refresh(store, self.config.fetch, symbol, start, start + DAY_US,
                                                category=self.config.category, cache_dir=self.cache_dir_for(symbol),
                                                id_mode=self.config.id_mode, client=self._client,
                                                sources=("archive",))
                    finally:
                        store.close()
                self.stats["archive_days"] += summary.days_fetched
                if summary.days_fetched:
                    log.info("follow: %s %s settled from the archive: %d rows, %d live rows replaced", symbol,
                             day, summary.rows_added, summary.rest_rows_replaced)
                else:
                    log.warning("follow: %s %s: the archive file is listed but could not be used (%s); "
                                "trying again at the next check", symbol, day, ", ".join(summary.days_failed))

    def _unsettled_days(self, symbol: str, today_start: int) -> list[date]:
        with open_store(self.config.db_path, wait_s=self.config.lock_wait_s) as store:
            rows = store.query(UNSETTLED_DAYS_SQL, [DAY_US, self.config.category, symbol, today_start, today_start,
                                                    self.config.category, symbol])
        return [date(1970, 1, 1) + timedelta(days=int(r[0])) for r in rows]

    # -- state file -------------------------------------------------------------------------------
    def _write_states(self, *, active: bool) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for symbol, book in self.books.items():
            state = {"pid": os.getpid(), "active": active, "category": self.config.category, "symbol": symbol,
                     "last_trade_us": book.committed_newest_us, "committed_at": time.time(),
                     "connected": bool(book.session and not book.session.ended)}
            write_json_atomic(self.state_dir / f"{self.config.category}.{symbol}.json", state)


UNSETTLED_DAYS_SQL = """
    WITH p AS (SELECT ?::BIGINT AS day_us),
    live AS (
        SELECT DISTINCT d, p.day_us FROM coverage, p, range(start_us // p.day_us, (end_us - 1) // p.day_us + 1) t(d)
        WHERE category = ? AND symbol = ? AND source IN ('ws', 'rest') AND start_us < ?
          AND detail LIKE '%session%'
    )
    SELECT d FROM live
    WHERE d * day_us < ? AND NOT EXISTS (
        SELECT 1 FROM coverage c WHERE c.category = ? AND c.symbol = ? AND c.source = 'archive'
          AND c.start_us = live.d * live.day_us)
    ORDER BY d"""


INSERT_CLAIM_SQL = ("INSERT INTO coverage (category, symbol, source, start_us, end_us, added_rows, detail) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?)")
EXTEND_CLAIM_SQL = ("UPDATE coverage SET end_us = ?, added_rows = added_rows + ?, fetched_at = now() "
                          "WHERE category = ? AND symbol = ? AND source = ? AND detail = ?")


def write_claim(store: Store, market: Market, claim: CoverageClaim, *, update: bool,
                added_rows: int = 0) -> None:
    """Insert a session's coverage row, or extend the one an earlier commit inserted."""
    if update:
        store.execute(EXTEND_CLAIM_SQL,
                      [claim.end_us, added_rows, market.category, market.symbol, claim.source, claim.key])
        return
    store.execute(INSERT_CLAIM_SQL,
                  [market.category, market.symbol, claim.source, claim.start_us, claim.end_us, added_rows, claim.key])


def _utc_day(epoch_s: float) -> date:
    return date(1970, 1, 1) + timedelta(days=int(epoch_s // 86_400))


async def follow(config: FollowConfig, *, on_trades: TradesCallback | None = None) -> Follower:
    """Run a follower until it is stopped (cancel the task or call `.stop()`); returns it, for its stats."""
    follower = Follower(config, on_trades=on_trades)
    await follower.run()
    return follower


__all__ = ["FollowConfig", "Follower", "StreamOptions", "follow", "follower_status", "reconnect_delay"]
