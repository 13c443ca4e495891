"""Coverage only from evidence: one odd exchange answer must never make the store claim a span it
did not verifiably fetch.

Each case serves something hostile once (a recent-trade row in the wrong unit, a file of another
day, a header with no rows, a row of another market or with a price of 0...), then checks three
things: the store claims nothing it cannot back (`gaps` names the span and why), the next normal run
stores every trade exactly once, and `verify` passes only when the store is true.

The emulator's market is frozen at 2024-01-10 12:00 UTC (BTCUSDT linear: 2000 trades a day, so
recent-trade's newest 1000 reach back about 12 hours); its server clock is the real one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fetch.market_span import Market, Span
from relutil import NOW_US, archive_days, assert_exactly_the_truth, fill_ids, stored_fill_ids, truth_ids_until
from storeutil import day, sim_fetch_config, stored_ids, us

from fetch import BybitClient
from sim.market import expected_count, expected_trades
from store import Store, refresh, refresh_executions
from store.schema import open_store
from store.coverage import find_gaps
from store.report import verify

TAIL = "/v5/market/recent-trade"
HOUR_US = 3_600_000_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(tmp_path / "store.duckdb")
    yield opened
    opened.close()


def coverage_rows(store: Store, source: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in store.query(
        "SELECT start_us, end_us FROM coverage WHERE source = ? ORDER BY start_us", [source])]


def tail_oldest_us(sim_config, symbol: str = "BTCUSDT", limit: int = 1000) -> int:
    """The time of the oldest trade recent-trade returns at the frozen now."""
    table = expected_trades(sim_config, symbol, day(10), "linear")
    times = sorted(t for t in table.column("time_us").to_pylist() if t < NOW_US)
    return times[-limit]


# --- recent-trade answers that parse but cannot be true ------------------------------------------

@pytest.mark.parametrize("kind,says", [
    ("recent_seconds", "lies outside"),          # one row's time in seconds: 1970
    ("recent_future", "lies outside"),           # one row in the year 2100
    ("recent_foreign_symbol", "XYZUSDT"),        # one row of another market (crashed before)
    ("recent_zero_price", "price"),              # one row priced 0
])
async def test_an_implausible_recent_trade_answer_is_refused_whole_and_its_span_stays_a_gap(
        sim, store: Store, kind: str, says: str) -> None:
    config = sim_fetch_config(sim.url)
    sim.state.faults.add(kind, path=TAIL)
    summary = await refresh(store, config, "BTCUSDT", us(day(8)), NOW_US)
    assert sim.state.faults.fired[kind] == 1
    assert summary.errors_by_type.get("Implausible") == 1
    assert coverage_rows(store, "rest") == [] and stored_ids(store, "BTCUSDT", us(day(10)), NOW_US) == []
    assert archive_days(store, "BTCUSDT") == [day(8), day(9)], "the archive days still land"
    [gap] = [g for g in summary.gaps if g.kind == "uncovered"]
    assert (gap.start_us, gap.end_us) == (us(day(10)), NOW_US)
    assert "recent-trade" in gap.reason and "cannot be true" in gap.reason and says in gap.reason
    assert verify(store).ok
    # Past days are still fetched (a decades-long coverage row would have hidden them) ...
    past = await refresh(store, config, "BTCUSDT", us(day(2)), us(day(4)))
    assert past.days_fetched == 2 and past.rows_added > 0
    # ... and the next normal run stores the tail, each trade once.
    again = await refresh(store, config, "BTCUSDT", us(day(8)), NOW_US)
    assert again.errors_by_type == {} and again.tail_rows > 0
    oldest = tail_oldest_us(sim.config)
    truth = truth_ids_until(sim.config, "BTCUSDT", day(10), NOW_US)
    table = expected_trades(sim.config, "BTCUSDT", day(10), "linear")
    reachable = {i for i, t in zip(table.column("trade_id").to_pylist(), table.column("time_us").to_pylist(),
                                   strict=True) if oldest <= t < NOW_US}
    assert set(stored_ids(store, "BTCUSDT", us(day(10)), NOW_US)) == reachable and reachable <= truth
    assert verify(store).ok


async def test_tail_coverage_is_clipped_to_the_requested_range(sim, store: Store) -> None:
    config = sim_fetch_config(sim.url)
    start, end = us(day(10)) + 6 * HOUR_US, us(day(10)) + 9 * HOUR_US
    assert tail_oldest_us(sim.config) < start, "the tail reaches past the request on both sides"
    await refresh(store, config, "BTCUSDT", start, end)
    assert coverage_rows(store, "rest") == [(start, end)]
    assert all(start <= int(t) < end for (t,) in store.query("SELECT time_us FROM trades"))
    # A wider request later fetches what lay outside the first one: nothing was claimed for it.
    wider = await refresh(store, config, "BTCUSDT", us(day(10)), NOW_US)
    assert wider.tail_rows > 0
    oldest = tail_oldest_us(sim.config)
    table = expected_trades(sim.config, "BTCUSDT", day(10), "linear")
    reachable = {i for i, t in zip(table.column("trade_id").to_pylist(), table.column("time_us").to_pylist(),
                                   strict=True) if oldest <= t < NOW_US}
    assert set(stored_ids(store, "BTCUSDT", us(day(10)), NOW_US)) == reachable
    assert verify(store).ok


async def test_a_lower_case_symbol_is_bybits_symbol_everywhere(sim, store: Store) -> None:
    summary = await refresh(store, sim_fetch_config(sim.url), " btcusdt ", us(day(8)), us(day(9)))
    assert summary.symbol == "BTCUSDT" and summary.days_fetched == 1
    assert store.query("SELECT DISTINCT symbol FROM coverage") == [("BTCUSDT",)]
    assert_exactly_the_truth(store, sim.config, "BTCUSDT", day(8), us(day(9)))


# --- archive files that parse but cannot be the day's trades -------------------------------------

@pytest.mark.parametrize("kind,category,symbol,says", [
    ("wrong_day", "linear", "BTCUSDT", "the time lies outside"),
    ("wrong_day", "spot", "BTCUSDT", "the time lies outside"),
    ("header_only", "linear", "BTCUSDT", "empty archive file"),
    ("header_only", "spot", "BTCUSDT", "empty archive file"),
    ("foreign_symbol", "linear", "BTCUSDT", "the symbol is not BTCUSDT"),
    ("zero_price", "inverse", "BTCUSD", "the price is not a finite positive number"),
    ("nan_price", "linear", "BTCUSDT", "the price is not a finite positive number"),
    ("negative_qty", "spot", "BTCUSDT", "the size is not a finite positive number"),
])
async def test_a_hostile_archive_file_fails_its_day_alone_and_the_next_run_completes_it(
        sim, store: Store, tmp_path: Path, kind: str, category: str, symbol: str, says: str) -> None:
    config, cache = sim_fetch_config(sim.url), tmp_path / "cache"
    sim.state.faults.add(kind, day=day(8))
    summary = await refresh(store, config, symbol, us(day(7)), us(day(9)), category=category, cache_dir=cache)
    assert sim.state.faults.fired[kind] == 1
    assert summary.days_failed == ["2024-01-08"] and summary.errors_by_type.get("ArchiveError") == 1
    assert archive_days(store, symbol, category) == [day(7)]
    assert stored_ids(store, symbol, us(day(8)), us(day(9)), category) == [], "nothing of the day is stored"
    assert not (cache / "backfill_2024-01-08.parquet").exists(), "no file for a day the store lacks"
    [gap] = [g for g in find_gaps(store, Market(category, symbol), Span(us(day(7)), us(day(9)))) if g.kind == "uncovered"]
    assert (gap.start_us, gap.end_us) == (us(day(8)), us(day(9)))
    assert says in gap.reason and "2024-01-08" in gap.reason
    if kind != "header_only":
        assert "line " in gap.reason, "the first offending line is named"
    assert verify(store).ok
    again = await refresh(store, config, symbol, us(day(7)), us(day(9)), category=category, cache_dir=cache)
    assert again.days_fetched == 1 and again.days_failed == []
    if category == "spot":  # spot archive ids are per-day sequences, stored as YYYYMMDD + the sequence
        stored = stored_ids(store, symbol, us(day(7)), us(day(9)), category)
        assert len(stored) == len(set(stored)) == sum(
            expected_count(sim.config, symbol, d, category) for d in (day(7), day(8)))
        assert verify(store).ok
    else:
        assert_exactly_the_truth(store, sim.config, symbol, day(7), us(day(9)), category)
    assert (cache / "backfill_2024-01-08.parquet").exists()


async def test_an_id_reused_days_later_is_a_conflict_never_a_second_copy(sim, store: Store) -> None:
    """Day 8's file carries, in one row, the id of a trade of day 5 with other values."""
    config = sim_fetch_config(sim.url)
    await refresh(store, config, "BTCUSDT", us(day(5)), us(day(6)))
    sim.state.faults.add("reuse_id", day=day(8))
    summary = await refresh(store, config, "BTCUSDT", us(day(8)), us(day(9)))
    assert sim.state.faults.fired["reuse_id"] == 1
    assert summary.conflicts == 1, "the key is unique over the whole table, not a day around the batch"
    assert store.query_one("SELECT count(*) FROM conflicts") == (1,)
    assert store.query("SELECT trade_id FROM trades GROUP BY ALL HAVING count(*) > 1") == []
    # The day cannot be vouched for (its file held one trade more than the store has for it) ...
    [mismatch] = [g for g in find_gaps(store, Market("linear", "BTCUSDT"), Span(us(day(8)), us(day(9))))
                  if g.kind == "count_mismatch"]
    assert mismatch.detail == {"expected": 2000, "stored": 1999}
    assert not verify(store).ok
    # ... so the next normal run fetches it again, and the store is true.
    again = await refresh(store, config, "BTCUSDT", us(day(8)), us(day(9)))
    assert again.days_fetched == 1 and again.rows_added == 1
    assert_exactly_the_truth(store, sim.config, "BTCUSDT", day(8), us(day(9)))
    assert_exactly_the_truth(store, sim.config, "BTCUSDT", day(5), us(day(6)))


# --- executions: the key carries everything the fetch depended on --------------------------------

async def test_executions_of_one_exec_type_do_not_cover_the_others(sim, store: Store) -> None:
    config = sim_fetch_config(sim.url, credentials=True)
    start, end = us(day(1)), us(day(8))
    funding = await refresh_executions(store, config, Span(start, end), exec_type="Funding")
    assert funding.windows_fetched == 1 and set(funding.by_exec_type) == {"Funding"}
    everything = await refresh_executions(store, config, Span(start, end))
    assert everything.windows_fetched == 1, "the Funding window is no evidence for the other types"
    assert set(stored_fill_ids(store)) == fill_ids(sim.config, start, end)
    # And coverage for every type does answer a later Funding-only request.
    again = await refresh_executions(store, config, Span(start, end), exec_type="Funding")
    assert again.windows_fetched == 0 and again.requests == 0


async def test_executions_for_a_lower_case_symbol_ask_bybit_for_the_real_one(sim, store: Store) -> None:
    config = sim_fetch_config(sim.url, credentials=True)
    start, end = us(day(1)), us(day(8))
    summary = await refresh_executions(store, config, Span(start, end), symbol="btcusdt")
    assert summary.symbol == "BTCUSDT" and summary.rows_added > 0
    from sim.fills import expected_fills
    truth = {f["execId"] for f in expected_fills(sim.config, start // 1000, end // 1000 - 1,
                                                 category="linear", symbol="BTCUSDT")}
    assert set(stored_fill_ids(store)) == truth
    assert store.query("SELECT DISTINCT symbol FROM coverage") == [("BTCUSDT",)]


async def test_a_client_clock_ahead_of_the_exchange_never_covers_the_future(sim, store: Store) -> None:
    config = sim_fetch_config(sim.url, credentials=True)
    ahead_s = 6 * 3600.0

    def clock() -> float:
        return time.time() + ahead_s

    local_now_us = int(clock() * 1_000_000)
    async with BybitClient(config, clock=clock) as client:
        await refresh_executions(store, config, Span(local_now_us - 3 * 24 * HOUR_US, local_now_us), client=client)
    newest_end = max(b for _, b in coverage_rows(store, "executions"))
    assert newest_end <= int(time.time() * 1_000_000) + 60_000_000, "covered no further than the exchange's now"
    assert newest_end < local_now_us - HOUR_US


# --- verify: passes only when the store is true, and says how to repair it ----------------------

async def test_verify_fails_on_coverage_an_older_release_derived_from_a_bad_answer_and_repair_mends_it(
        sim, store: Store, tmp_path: Path) -> None:
    """What the seconds-instead-of-ms answer did before: a rest coverage row from 1970 to the tail,
    and the implausible trade stored. `verify` says so; `--repair` drops both; the next refresh
    fetches the days the row had hidden."""
    from click.testing import CliRunner

    import cli

    config = sim_fetch_config(sim.url)
    await refresh(store, config, "BTCUSDT", us(day(8)), NOW_US)
    with store.atomic():
        store.execute("INSERT INTO coverage (category, symbol, source, start_us, end_us, added_rows) "
                      "VALUES ('linear', 'BTCUSDT', 'rest', 1704067000000, ?, 1)", [NOW_US - HOUR_US])
        store.execute("INSERT INTO trades SELECT category, symbol, 'bogus-1', tick_id + 1, 1704067000000, price, "
                      "qty, side, is_buyer_maker, is_block_trade, 'rest' FROM trades LIMIT 1")
    path = store.path
    store.close()
    runner = CliRunner()
    checked = runner.invoke(cli.main, ["verify", "--db", path])
    assert checked.exit_code == 1
    assert "FAIL  coverage claims nothing before Bybit existed" in checked.output
    assert "FAIL  stored trades are plausible" in checked.output and "bogus-1" in checked.output
    assert "verify --repair" in checked.output
    repaired = runner.invoke(cli.main, ["verify", "--repair", "--db", path])
    assert repaired.exit_code == 0, repaired.output
    assert "1 trades dropped" in repaired.output
    with open_store(path) as again:
        past = await refresh(again, config, "BTCUSDT", us(day(2)), us(day(4)))
        assert past.days_fetched == 2
        assert verify(again).ok
        assert again.query_one("SELECT count(*) FROM trades WHERE trade_id = 'bogus-1'") == (0,)
