"""The follower against the emulator, on a market clock the test steps by hand (speed 0 + jumps):
every trade exactly once across a midnight and forced disconnects, gaps with reasons, and the
reconciliation when the archive day replaces the live rows."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fetch.market_span import Market, Span
from fetch.errors import ParameterError
from fetch.models import Trade
from fetch.ws import StreamOptions
from sim import MarketClock, running_sim
from sim.server import RunningSim
from store.schema import open_store
from store.coverage import find_gaps
from store.follow import FollowConfig, Follower
from store.follow_state import follower_status
from store.reconcile import reconciliations
from tests.followutil import (
    DAY_BEFORE,
    MIDNIGHT,
    MIDNIGHT_MS,
    coverage_rows,
    follow_config,
    follow_sim_config,
    merged,
    stored,
    truth,
    until,
)


@dataclass
class Rig:
    sim: RunningSim
    clock: MarketClock
    follower: Follower
    db: Path

    def newest_ms(self) -> int:
        newest = self.follower.books["BTCUSDT"].committed_newest_us
        return -1 if newest is None else newest // 1000

    async def step(self, ms: int) -> None:
        """Move the market and wait until the follower has committed up to (nearly) the new now."""
        target = self.clock.jump(ms)
        expected = truth(self.sim.config, target, (DAY_BEFORE, DAY_BEFORE.replace(day=11)))
        last_ms = expected[-1][1] // 1000
        await until(lambda: self.newest_ms() >= last_ms, f"commit up to {last_ms}")

    async def disconnect(self, hole_ms: int) -> None:
        """Drop the socket at the next push, let `hole_ms` of market pass, wait for the re-bridge."""
        follower, state = self.follower, self.sim.state
        drops, bridges = follower.stats["disconnects"], follower.stats["bridges"]
        subscriptions = state.ws_subscriptions
        state.faults.add("ws_drop")
        # One jump: the next push (the first of these trades) drops the socket, and a new subscription
        # starts after them all, so the whole stretch is a hole, however fast the reconnect is.
        self.clock.jump(1_000 + hole_ms)
        await until(lambda: follower.stats["disconnects"] > drops, "the disconnect")
        await until(lambda: state.ws_subscriptions > subscriptions, "the new subscription")
        await self.step(2_000)  # its first trades open the new session, which is then bridged
        await until(lambda: follower.stats["bridges"] > bridges, "the bridge after reconnecting")


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, cache: Path, start_ms: int, *, publish_delay_ms: int = 3_600_000,
              faults: tuple[str, ...] = (), stream: StreamOptions | None = None,
              on_trades: Callable[[list[Trade]], None] | None = None, **kw: object) -> AsyncIterator[Rig]:
    clock = MarketClock(start_ms, speed=0)
    async with running_sim(follow_sim_config(cache, clock, publish_delay_ms=publish_delay_ms)) as sim:
        for kind in faults:
            sim.state.faults.add(kind)
        db = tmp_path / "store.duckdb"
        config: FollowConfig = follow_config(sim.url, db, **kw)  # type: ignore[arg-type]
        if stream is not None:
            config = dataclasses.replace(config, stream=stream)
        follower = Follower(config, clock=lambda: clock.now_ms() / 1000, on_trades=on_trades)
        task = asyncio.create_task(follower.run())
        try:
            await until(lambda: sim.state.ws_subscriptions >= 1, "the first subscription")
            clock.jump(2_000)  # the first trades open the session, then recent-trade bridges it
            await until(lambda: follower.stats["bridges"] >= 1, "the first bridge")
            yield Rig(sim, clock, follower, db)
        finally:
            follower.stop()
            await asyncio.wait_for(task, timeout=60)


async def test_a_follow_across_midnight_with_three_disconnects_stores_every_trade_exactly_once(
        tmp_path: Path, sim_cache_dir: Path) -> None:
    delivered: list[str] = []
    async with rig(tmp_path, sim_cache_dir, MIDNIGHT_MS - 60_000,
                   on_trades=lambda trades: delivered.extend(t.trade_id for t in trades)) as r:
        for k in range(3):
            await r.step(8_000)
            await r.disconnect(hole_ms=20_000)  # ~46 trades: well within recent-trade's 1000
        await r.step(8_000)
        end_ms = r.clock.now_ms()
        assert r.follower.stats["disconnects"] >= 3
    spans = merged([(a, b) for source, a, b in coverage_rows(r.db) if source in ("ws", "rest")])
    assert len(spans) == 1, spans  # every hole was bridged: one verified span
    start_us, end_us = spans[0]
    assert start_us < MIDNIGHT.timestamp() * 1e6 < end_us
    rows = stored(r.db)
    ids = [row[0] for row in rows]
    assert len(ids) == len(set(ids))  # nothing twice
    expected = {i for i, t in truth(r.sim.config, end_ms, (DAY_BEFORE, DAY_BEFORE.replace(day=11)))
                if start_us <= t < end_us}
    inside = {i for i, t, _ in rows if start_us <= t < end_us}
    assert inside == expected and len(expected) > 150  # every trade of the span, nothing else
    assert sorted(delivered) == sorted(ids)  # the callback saw each stored trade once
    with open_store(r.db, read_only=True) as store:
        gaps = find_gaps(store, Market("linear", "BTCUSDT"), Span(start_us, end_us))
    assert gaps == []
    status = follower_status(r.db)[("linear", "BTCUSDT")]
    assert status["follower"] == "not running" and status["live_last_trade"] is not None


async def test_a_hole_longer_than_recent_trades_reach_is_a_gap_with_its_reason(
        tmp_path: Path, sim_cache_dir: Path) -> None:
    async with rig(tmp_path, sim_cache_dir, MIDNIGHT_MS - 7_200_000) as r:
        await r.step(5_000)
        before_us = r.newest_ms() * 1000
        await r.disconnect(hole_ms=900_000)  # 15 minutes: ~2,100 trades, recent-trade returns 1,000
        await r.step(5_000)
        after_us = r.newest_ms() * 1000
    with open_store(r.db, read_only=True) as store:
        gaps = [g for g in find_gaps(store, Market("linear", "BTCUSDT"), Span(before_us, after_us)) if g.kind == "uncovered"]
    assert len(gaps) == 1
    gap = gaps[0]
    assert before_us <= gap.start_us < gap.end_us < after_us
    assert gap.end_us - gap.start_us > 300_000_000  # most of the 15 minutes
    assert "recent-trade's newest 1000 trades reach back only to" in gap.reason
    assert "archive file will fill it" in gap.reason
    rows = stored(r.db)
    assert not [row for row in rows if gap.start_us + 1000 < row[1] < gap.end_us - 1000]  # nothing invented


@pytest.mark.parametrize("faulty", [False, True], ids=["clean", "skipped+duplicated+phantom"])
async def test_the_archive_day_replaces_live_rows_and_reconciliation_counts_exactly(
        tmp_path: Path, sim_cache_dir: Path, faulty: bool) -> None:
    async with rig(tmp_path, sim_cache_dir, MIDNIGHT_MS - 1_800_000, publish_delay_ms=600_000,
                   archive_check_s=0.2) as r:
        await r.step(600_000)  # past recent-trade's reach of the first bridge: faults now cost trades
        state = r.sim.state
        if faulty:
            state.faults.add("ws_skip")
            r.clock.jump(5_000)
            await until(lambda: state.ws_skipped_trades > 0, "the skipped message")
            for kind in ("ws_duplicate", "ws_phantom"):
                state.faults.add(kind)
                await r.step(5_000)
        await r.step(5_000)
        with open_store(r.db, wait_s=10) as store:  # in this process: the follower's own kind of open
            assert store.query_one("SELECT count(*) FROM trades WHERE source = 'archive'") == (0,)
        await r.step(1_300_000)  # past midnight; the file of the day before is not out yet
        await asyncio.sleep(0.5)
        assert r.follower.stats["archive_days"] == 0
        r.clock.jump(700_000)  # now it is
        await until(lambda: r.follower.stats["archive_days"] == 1, "the archive day settled")
    with open_store(r.db, read_only=True) as store:
        [rec] = reconciliations(store, Market("linear", "BTCUSDT"))
        sources = dict(store.query("SELECT source, count(*) FROM trades WHERE time_us < ? GROUP BY source",
                                   [int(MIDNIGHT.timestamp() * 1e6)]))
    day_trades = len(truth(r.sim.config, MIDNIGHT_MS, (DAY_BEFORE,)))
    assert sources == {"archive": day_trades}  # the archive replaced every live row of its day
    assert rec["archive_trades"] == day_trades and rec["matched_by"] == "id"
    assert rec["missed"] == (state.ws_skipped_trades if faulty else 0)
    assert rec["phantoms"] == (1 if faulty else 0)
    assert rec["matched"] == rec["live_trades"] - rec["phantoms"]
    assert rec["archive_only"] == day_trades - rec["matched"]
    if faulty:
        assert state.ws_skipped_trades > 0


async def test_a_socket_that_pongs_but_carries_nothing_is_replaced(tmp_path: Path, sim_cache_dir: Path) -> None:
    options = StreamOptions(ping_interval_s=0.2, pong_timeout_s=5.0, stale_after_s=3.0)
    async with rig(tmp_path, sim_cache_dir, MIDNIGHT_MS - 60_000, stream=options) as r:
        state, follower = r.sim.state, r.follower
        subscriptions = state.ws_subscriptions
        state.faults.add("ws_stall")
        r.clock.jump(2_000)
        await until(lambda: state.faults.fired["ws_stall"] == 1, "the stall")
        await until(lambda: state.ws_subscriptions > subscriptions, "a new subscription after the stall")
        # And trades flow again. The market stands still between jumps, so a busy machine can let the
        # new socket sit silent past `stale_after_s` too (3 s: at 1 s, with both cores busy, the
        # replacements came faster than a bridge, and nothing was committed for a minute) and replace it
        # just as a jump's trades are pushed; a later trade bridges them, so jump until they are.
        for attempt in range(10):
            target = r.clock.jump(1_000)
            last_ms = truth(r.sim.config, target, (DAY_BEFORE, DAY_BEFORE.replace(day=11)))[-1][1] // 1000
            try:
                await until(lambda last_ms=last_ms: r.newest_ms() >= last_ms, f"commit up to {last_ms}", tries=1000)
                break
            except AssertionError:
                assert attempt < 9, "trades never flowed again after the stall"
    assert follower.stats["disconnects"] >= 1


async def test_a_refused_subscription_is_retried(tmp_path: Path, sim_cache_dir: Path) -> None:
    async with rig(tmp_path, sim_cache_dir, MIDNIGHT_MS - 60_000, faults=("ws_refuse", "ws_refuse")) as r:
        await r.step(3_000)
        assert r.sim.state.faults.fired["ws_refuse"] == 2
        assert r.follower.stats["disconnects"] >= 2


async def test_updates_yield_the_newly_committed_trades(tmp_path: Path, sim_cache_dir: Path) -> None:
    async with rig(tmp_path, sim_cache_dir, MIDNIGHT_MS - 60_000) as r:
        updates = r.follower.updates()
        first = asyncio.ensure_future(updates.__anext__())
        await asyncio.sleep(0)
        r.clock.jump(5_000)
        batch = await asyncio.wait_for(first, timeout=30)
        await updates.aclose()
    assert batch and {t.source for t in batch} <= {"ws", "rest"}
    assert [t.time_us for t in batch] == sorted(t.time_us for t in batch)


async def test_an_unknown_symbol_stops_the_follower_with_a_clear_error(tmp_path: Path, sim_cache_dir: Path) -> None:
    clock = MarketClock(MIDNIGHT_MS, speed=0)
    async with running_sim(follow_sim_config(sim_cache_dir, clock)) as sim:
        config = follow_config(sim.url, tmp_path / "s.duckdb", symbols=("NOSUCHUSDT",))
        with pytest.raises(ParameterError, match="NOSUCHUSDT"):
            await asyncio.wait_for(Follower(config).run(), timeout=60)


@pytest.mark.parametrize("category", ["linear", "spot"])
async def test_several_symbols_share_one_connection_and_each_is_stored_exactly(
        tmp_path: Path, sim_cache_dir: Path, category: str) -> None:
    clock = MarketClock(MIDNIGHT_MS - 30_000, speed=0)
    symbols = ("BTCUSDT", "ETHUSDT")
    async with running_sim(follow_sim_config(sim_cache_dir, clock, category=category)) as sim:
        db = tmp_path / "s.duckdb"
        follower = Follower(follow_config(sim.url, db, symbols=symbols, category=category),
                            clock=lambda: clock.now_ms() / 1000)
        task = asyncio.create_task(follower.run())
        try:
            await until(lambda: sim.state.ws_subscriptions >= 2, "both subscriptions")
            for _ in range(6):
                clock.jump(10_000)
                await asyncio.sleep(0.05)
            end_ms = clock.now_ms()
            for symbol in symbols:
                last = truth(sim.config, end_ms, (DAY_BEFORE, DAY_BEFORE.replace(day=11)), symbol, category)[-1][1]
                await until(lambda s=symbol, last=last: (follower.books[s].committed_newest_us or 0) >= last,
                            f"{symbol} committed")
        finally:
            follower.stop()
            await asyncio.wait_for(task, timeout=60)
    assert sim.state.ws_connections == 1
    for symbol in symbols:
        with open_store(db, read_only=True) as store:
            spans = merged([(int(a), int(b)) for a, b in store.query(
                "SELECT start_us, end_us FROM coverage WHERE symbol = ? AND source IN ('ws', 'rest')", [symbol])])
        [(start_us, end_us)] = spans
        rows = stored(db, symbol)
        expected = {i for i, t in truth(sim.config, end_ms, (DAY_BEFORE, DAY_BEFORE.replace(day=11)), symbol,
                                        category) if start_us <= t < end_us}
        assert {i for i, t, _ in rows if start_us <= t < end_us} == expected and expected
        assert len(rows) == len({r[0] for r in rows})


async def test_todays_parquet_file_is_rewritten_as_trades_come_in(tmp_path: Path, sim_cache_dir: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cache = tmp_path / "cache"
    target = cache / "backfill_2024-01-11.parquet"

    def read() -> pa.Table:  # one open: the follower may replace the file between two
        with pa.OSFile(str(target)) as source:
            return pq.read_table(source)

    async with rig(tmp_path, sim_cache_dir, MIDNIGHT_MS + 60_000, cache_dir=cache) as r:
        await until(target.exists, "today's file")
        first = read().num_rows
        await r.step(30_000)
        await until(lambda: read().num_rows > first, "a newer file")
        table = read()
    assert table.column_names == ["T", "i", "p", "q", "s", "m"]
    times = table.column("T").to_pylist()
    assert times == sorted(times) and min(times) >= MIDNIGHT_MS
    # No temp file left behind: only the directory's owner marker and the (empty) hidden temp dir.
    hidden = {p.name for p in cache.glob(".*")}
    assert hidden <= {".bybit-backfill-owner.json", ".bybit-backfill-tmp"}, hidden
    assert not list((cache / ".bybit-backfill-tmp").glob("*"))
