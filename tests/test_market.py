"""Whole-market refreshes: symbol listing, concurrency across symbols, shards, and the lake."""

from __future__ import annotations

import filecmp
import itertools
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fetch.market_span import Market, Span
from storeutil import day, duplicate_keys, sim_fetch_config, stored_ids, truth_ids, us

from fetch.client import BybitClient
from fetch.errors import InputError
from fetch.instruments import InstrumentSource, parse_instruments, statuses_for
from sim import MarketSpec, SimConfig, running_sim
from store.schema import open_store
from store.lake import DATA_NAME, MANIFEST_NAME, Manifest, open_location, verify_lake
from store.market import (
    Shard,
    WorkItem,
    cache_dir_for,
    check_cache_template,
    refresh_market,
    shard_of,
    work_items,
)


@pytest.fixture
def store(tmp_path: Path):
    opened = open_store(tmp_path / "store.duckdb")
    yield opened
    opened.close()


def market_config(cache: Path, count: int = 6) -> SimConfig:
    markets = [MarketSpec(f"S{k:02d}USDT", "linear", trades_per_day=300 + 50 * k, listed=day(1))
               for k in range(count)]
    markets.append(MarketSpec("OLDUSDT", "linear", trades_per_day=200, listed=day(1), status="Closed"))
    markets.append(MarketSpec("BTCUSD", "inverse", trades_per_day=200, listed=day(1)))
    return SimConfig(now_ms=us(day(10)) // 1000 + 12 * 3_600_000, markets=markets, cache_dir=cache)


# ---- pure ------------------------------------------------------------------------------------

def test_a_shard_is_read_as_k_of_n_and_bad_ones_are_refused() -> None:
    assert Shard.parse("2/4") == Shard(2, 4) and str(Shard(2, 4)) == "2/4"
    for bad in ("0/4", "5/4", "4", "a/b", "1/0"):
        with pytest.raises(InputError, match="K/N"):
            Shard.parse(bad)


def test_shard_assignment_is_a_stable_hash_that_splits_every_day_once() -> None:
    assert shard_of(Market("linear", "BTCUSDT"), date(2024, 1, 1), 4) == shard_of(Market("linear", "BTCUSDT"), date(2024, 1, 1), 4)
    pinned = [shard_of(Market("linear", "BTCUSDT"), date(2024, 1, 1) + timedelta(days=7 * w), 3) for w in range(7)]
    assert pinned == PINNED, "the assignment must never change: machines of different versions share a lake"
    symbols = [f"S{k}" for k in range(20)]
    start, end = us(day(1)), us(day(31))
    whole = {(i.market.symbol, d) for i in work_items("linear", symbols, Span(start, end)) for d in _days(i)}
    parts = [{(i.market.symbol, d) for i in work_items("linear", symbols, Span(start, end), Shard(k, 3)) for d in _days(i)}
             for k in (1, 2, 3)]
    assert set().union(*parts) == whole and sum(len(p) for p in parts) == len(whole)
    assert all(len(p) > len(whole) / 6 for p in parts), "each machine gets a fair share"


PINNED = [2, 1, 1, 3, 2, 2, 3]  # sha256("linear|BTCUSDT|<7-day block>")[:8] mod 3 + 1, weekly from 2024-01-01


def test_the_days_of_one_seven_day_block_share_a_shard() -> None:
    for symbol in ("BTCUSDT", "ETHUSDT", "S01USDT"):
        owners = [shard_of(Market("linear", symbol), date(2024, 1, 4) + timedelta(days=k), 5) for k in range(7)]
        assert len(set(owners)) == 1, "2024-01-04 starts an epoch-aligned block of 7 days"
    items = work_items("linear", ["BTCUSDT"], Span(us(date(2024, 1, 4)), us(date(2024, 3, 28))), Shard(1, 2))
    assert all((i.span.end_us - i.span.start_us) % (7 * 86_400_000_000) == 0 for i in items), "whole blocks"


def _days(item: WorkItem) -> list[date]:
    from store.timeutil import days_touching

    return days_touching([item.span])


def test_a_shards_days_are_merged_into_contiguous_refreshes_clipped_to_the_range() -> None:
    start, end = us(day(1)) + 3_600_000_000, us(day(20)) + 60_000_000
    items = work_items("linear", ["BTCUSDT"], Span(start, end), Shard(1, 2))
    assert items and all(a.span.end_us < b.span.start_us for a, b in itertools.pairwise(items)), "runs never touch"
    assert min(i.span.start_us for i in items) >= start and max(i.span.end_us for i in items) <= end
    span = Span(start, end)
    assert work_items("linear", ["A", "B"], span) == [WorkItem(Market("linear", "A"), span),
                                                      WorkItem(Market("linear", "B"), span)]


def test_cache_dir_templates_name_the_symbol_and_category() -> None:
    assert cache_dir_for("cache/{category}/{symbol}", Market("linear", "BTCUSDT")) == Path("cache/linear/BTCUSDT")
    check_cache_template("cache/{symbol}", 5)
    check_cache_template("cache", 1)
    with pytest.raises(InputError, match="cannot share"):
        check_cache_template("cache", 2)
    with pytest.raises(InputError, match="only"):
        check_cache_template("cache/{sym}", 1)
    with pytest.raises(InputError, match="cannot read"):
        check_cache_template("cache/{symbol", 1)


def test_instruments_pages_parse_and_statuses_are_understood() -> None:
    page, cursor = parse_instruments({"list": [{"symbol": "A", "status": "Trading"}], "nextPageCursor": "x"},
                                     "linear")
    assert [i.symbol for i in page] == ["A"] and cursor == "x"
    assert statuses_for("closed") == ("Closed",) and "Closed" in statuses_for("all")
    with pytest.raises(InputError):
        statuses_for("gone")


# ---- against the emulator ----------------------------------------------------------------------

async def test_instruments_info_lists_the_category_by_status_across_pages(sim_cache_dir, monkeypatch) -> None:
    from fetch import instruments

    monkeypatch.setattr(instruments, "PAGE_LIMIT", 5)  # three pages of trading symbols
    async with running_sim(market_config(sim_cache_dir, count=12)) as sim, \
            BybitClient(sim_fetch_config(sim.url)) as client:
        source = InstrumentSource(client)
        trading = [i.symbol for i in await source.list("linear")]
        closed = [i.symbol for i in await source.list("linear", ("Closed",))]
        everything = [i.symbol for i in await source.list("linear", statuses_for("all"))]
        pages = [q for path, q, _ in sim.state.log if path == "/v5/market/instruments-info"]
    assert trading == [f"S{k:02d}USDT" for k in range(12)]
    assert closed == ["OLDUSDT"] and everything == sorted(trading + closed)
    assert sum("status=Trading" in q for q in pages) == 3 + 3, "12 symbols, 5 a page, asked twice"


async def test_a_whole_market_refresh_equals_the_ground_truth_per_symbol(sim_cache_dir, store, tmp_path) -> None:
    config = market_config(sim_cache_dir)
    done = []
    async with running_sim(config) as sim:
        summary = await refresh_market(store, sim_fetch_config(sim.url), None, Span(us(day(2)), us(day(5))),
                                       statuses=statuses_for("all"), concurrency=3,
                                       cache_template=str(tmp_path / "cache" / "{symbol}"),
                                       on_symbol=lambda r: done.append(r.symbol))
    names = [f"S{k:02d}USDT" for k in range(6)] + ["OLDUSDT"]
    assert [r.symbol for r in summary.results] == sorted(names) and sorted(done) == sorted(names)
    assert not summary.failed and duplicate_keys(store) == []
    for symbol in names:
        assert set(stored_ids(store, symbol, us(day(2)), us(day(5)))) == truth_ids(config, symbol, day(2), day(5))
        files = sorted(p.name for p in (tmp_path / "cache" / symbol).iterdir() if not p.name.startswith("."))
        assert files == ["backfill_2024-01-02.parquet", "backfill_2024-01-03.parquet", "backfill_2024-01-04.parquet"]
    row = {r.symbol: r for r in summary.results}["S01USDT"]
    assert (row.days_fetched, row.rows_added, row.gaps, row.failures) == (3, 3 * 350, 0, 0)


async def test_staged_days_stay_within_the_runs_budget_of_archive_bytes(sim_cache_dir, store, monkeypatch) -> None:
    """With a budget smaller than any file, a run of 8 symbols at once holds one staged day at a time
    (each goes alone), and still stores every trade once."""
    import threading

    import store.pipeline as pipeline
    import store.staging_budget as staging_budget

    monkeypatch.setattr(staging_budget, "DEFAULT_BYTES", 1)
    lock, in_flight, peak = threading.Lock(), [0], [0]
    staged, committed = pipeline._staged, pipeline._committed

    async def counting_stage(*args, **kwargs):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        return await staged(*args, **kwargs)

    async def counting_commit(*args, **kwargs):
        try:
            return await committed(*args, **kwargs)
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setattr(pipeline, "_staged", counting_stage)
    monkeypatch.setattr(pipeline, "_committed", counting_commit)
    config = market_config(sim_cache_dir)
    async with running_sim(config) as sim:
        summary = await refresh_market(store, sim_fetch_config(sim.url), None, Span(us(day(2)), us(day(4))),
                                       concurrency=8)
    assert not summary.failed and duplicate_keys(store) == []
    assert peak[0] == 1 and in_flight[0] == 0
    for k in range(6):
        symbol = f"S{k:02d}USDT"
        assert set(stored_ids(store, symbol, us(day(2)), us(day(4)))) == truth_ids(config, symbol, day(2), day(4))


async def test_a_refresh_waiting_only_for_its_commit_gives_its_slot_to_the_next_symbol(sim_cache_dir, store,
                                                                                     monkeypatch) -> None:
    """`--concurrency` bounds the refreshes downloading: with every commit held back, a run of 6
    symbols at 2 at a time still downloads all 6 days (a refresh that has its files waits for its
    commit without a slot), then commits them all, each trade once."""
    import asyncio
    import threading

    import store.pipeline as pipeline

    release = threading.Event()
    commit = pipeline._commit

    def held_back(*args, **kwargs):
        release.wait(timeout=120)
        return commit(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_commit", held_back)
    config = market_config(sim_cache_dir)
    async with running_sim(config) as sim:
        run = asyncio.ensure_future(refresh_market(store, sim_fetch_config(sim.url), [f"S{k:02d}USDT" for k in range(6)],
                                                   Span(us(day(2)), us(day(3))), concurrency=2))
        try:
            for _ in range(600):  # bounded: 60 s at most
                if sim.state.requests["/trading"] >= 6 or run.done():
                    break
                await asyncio.sleep(0.1)
            downloaded = sim.state.requests["/trading"]
        finally:
            release.set()
        summary = await run
    assert downloaded == 6, "the refreshes waiting for their commits held the slots"
    assert not summary.failed and duplicate_keys(store) == []
    for k in range(6):
        symbol = f"S{k:02d}USDT"
        assert set(stored_ids(store, symbol, us(day(2)), us(day(3)))) == truth_ids(config, symbol, day(2), day(3))


async def test_a_whole_market_writes_no_more_files_at_once_than_the_exporters_bound(sim_cache_dir, store,
                                                                                  tmp_path, monkeypatch) -> None:
    """However many refreshes export at once, the process writes at most its bound of daily files
    at a time (a busy day's write takes ~400 MB): here a bound of 1, each write lingering until a
    second one starts or half a second passes."""
    import threading

    import store.exporter as exporter

    monkeypatch.setattr(exporter, "_EXPORTING", threading.BoundedSemaphore(1))
    cond, in_flight, peak = threading.Condition(), [0], [0]
    write_day = exporter.write_day

    def lingering(*args, **kwargs):
        with cond:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            cond.notify_all()
            cond.wait_for(lambda: in_flight[0] > 1, timeout=0.5)
        try:
            return write_day(*args, **kwargs)
        finally:
            with cond:
                in_flight[0] -= 1

    monkeypatch.setattr(exporter, "write_day", lingering)
    config = market_config(sim_cache_dir, count=3)
    async with running_sim(config) as sim:
        summary = await refresh_market(store, sim_fetch_config(sim.url), [f"S{k:02d}USDT" for k in range(3)],
                                       Span(us(day(2)), us(day(3))), concurrency=3,
                                       cache_template=str(tmp_path / "cache" / "{symbol}"))
    assert not summary.failed and peak[0] == 1
    for k in range(3):
        assert (tmp_path / "cache" / f"S{k:02d}USDT" / "backfill_2024-01-02.parquet").exists()


async def test_a_bad_symbol_fails_alone_and_the_others_complete(sim_cache_dir, store) -> None:
    async with running_sim(market_config(sim_cache_dir)) as sim:
        summary = await refresh_market(store, sim_fetch_config(sim.url), ["S00USDT", "NOPEUSDT"],
                                       Span(us(day(2)), us(day(3))))
    by = {r.symbol: r for r in summary.results}
    assert summary.failed and by["NOPEUSDT"].error and "NOPEUSDT" in by["NOPEUSDT"].error
    assert by["S00USDT"].rows_added == 300 and by["S00USDT"].failures == 0


async def test_every_symbol_failing_raises_the_first_error(sim_cache_dir, store) -> None:
    async with running_sim(market_config(sim_cache_dir)) as sim:
        with pytest.raises(InputError, match="NOPEUSDT"):
            await refresh_market(store, sim_fetch_config(sim.url), ["NOPEUSDT"], Span(us(day(2)), us(day(3))))


def _lake_files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file()}


async def test_two_shards_into_one_lake_give_the_lake_of_one_unsharded_run(sim_cache_dir, tmp_path) -> None:
    config = market_config(sim_cache_dir, count=4)
    start, end = us(day(1)), us(day(9))
    one_lake, shared_lake = tmp_path / "one", tmp_path / "shared"
    async with running_sim(config) as sim:
        fetch = sim_fetch_config(sim.url)
        with open_store(tmp_path / "whole.duckdb") as whole:
            unsharded = await refresh_market(whole, fetch, None, Span(start, end),
                                             lake=open_location(str(one_lake)))
        per_shard = []
        for k in (1, 2):  # two machines, two stores, one lake, no coordination
            with open_store(tmp_path / f"machine{k}.duckdb") as mine:
                per_shard.append(await refresh_market(mine, fetch, None, Span(start, end), shard=Shard(k, 2),
                                                      lake=open_location(str(shared_lake))))
    assert unsharded.lake is not None and len(unsharded.lake.written) == 4 * 8
    written = [{(w.symbol, w.day) for w in s.lake.written} for s in per_shard if s.lake]
    assert written[0] and written[1] and not written[0] & written[1], "each partition written by one machine"
    one, shared = _lake_files(one_lake), _lake_files(shared_lake)
    assert sorted(one) == sorted(shared)
    for name, path in one.items():
        if name.endswith(MANIFEST_NAME):
            a, b = Manifest.from_json(path.read_bytes()), Manifest.from_json(shared[name].read_bytes())
            assert (a.rows, a.fingerprint, a.file) == (b.rows, b.fingerprint, b.file), name
        else:
            assert name.endswith(DATA_NAME)
            assert pq.read_table(path).equals(pq.read_table(shared[name])), name
            assert filecmp.cmp(path, shared[name], shallow=False), f"{name}: same rows, same bytes"
    assert verify_lake(open_location(str(shared_lake))).ok
