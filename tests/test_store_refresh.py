"""Refresh against the emulator: exactly-once storage, resume, gaps, export and the history API."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from storeutil import day, dt, duplicate_keys, sim_fetch_config, stored_ids, total_requests, truth_ids, us

from sim import MarketSpec, SimConfig, running_sim
from sim.market import expected_count
from store import CACHE_SCHEMA, BybitConnectorHistory, Settings, id_filter, refresh
from store.cache_dir import OWNER_FILE, TEMP_DIR
from store.schema import open_store
from store.timeutil import day_start_us


@pytest.fixture
def store(tmp_path: Path):
    opened = open_store(tmp_path / "store.duckdb")
    yield opened
    opened.close()


async def test_overlapping_refreshes_store_each_trade_exactly_once(sim, store) -> None:
    config = sim_fetch_config(sim.url)
    first = await refresh(store, config, "BTCUSDT", us(day(1)), us(day(4)))
    second = await refresh(store, config, "BTCUSDT", us(day(2)), us(day(7)))
    assert first.days_fetched == 3 and second.days_fetched == 3, "only the 3 missing days are fetched"
    assert second.days_from_store == 2
    assert duplicate_keys(store) == []
    ids = stored_ids(store, "BTCUSDT", us(day(1)), us(day(7)))
    assert len(ids) == len(set(ids))
    assert set(ids) == truth_ids(sim.config, "BTCUSDT", day(1), day(7))
    assert first.rows_added + second.rows_added == len(ids)


async def test_a_second_identical_refresh_sends_no_request(sim, store) -> None:
    config = sim_fetch_config(sim.url)
    await refresh(store, config, "BTCUSDT", us(day(2)), us(day(5)))
    before = total_requests(sim.state)
    summary = await refresh(store, config, "BTCUSDT", us(day(2)), us(day(5)))
    assert total_requests(sim.state) == before
    assert summary.requests == 0 and summary.rows_added == 0
    assert summary.days_from_store == 3


async def test_unpublished_today_and_the_unreachable_part_of_it_are_reported(sim_cache_dir, store) -> None:
    busy = SimConfig(now_ms=day_start_us(day(10)) // 1000 + 12 * 3_600_000, cache_dir=sim_cache_dir,
                     markets=[MarketSpec("BTCUSDT", "linear", trades_per_day=20_000, listed=day(1))])
    async with running_sim(busy) as sim:
        summary = await refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(8)),
                                us(day(10)) + 12 * 3_600_000_000)
    assert summary.days_fetched == 2 and summary.tail_rows == 1000
    gap, after = summary.gaps
    assert gap.start_us == us(day(10))
    assert us(day(10)) < gap.end_us < us(day(10)) + 11 * 3_600_000_000
    assert "not published" in gap.reason and "1000" in gap.reason
    assert after.end_us == us(day(10)) + 12 * 3_600_000_000, "nothing is assumed after the newest trade"
    assert "after the newest trade" in after.reason and after.end_us - after.start_us < 60_000_000
    tail_ids = set(stored_ids(store, "BTCUSDT", us(day(10)), us(day(11))))
    assert len(tail_ids) == 1000
    assert tail_ids <= truth_ids(busy, "BTCUSDT", day(10), day(11)), "the tail has the archive's ids"


async def test_a_day_without_trades_in_the_index_is_reported_not_invented(sim, store) -> None:
    summary = await refresh(store, sim_fetch_config(sim.url), "ETHUSDT", us(day(1)), us(day(5)))
    reasons = {g.start.date(): g.reason for g in summary.gaps}
    assert set(reasons) == {day(1)}, "ETHUSDT is listed from Jan 3: Jan 1-2 are one reported gap"
    assert "does not list" in reasons[day(1)]


async def test_exported_parquet_has_the_cache_schema_and_the_stores_rows(sim, store, tmp_path) -> None:
    cache = tmp_path / "cache"
    summary = await refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(3)), us(day(5)),
                            cache_dir=cache)
    assert summary.files_exported == 2
    for d in (day(3), day(4)):
        table = pq.read_table(cache / f"backfill_{d.isoformat()}.parquet")
        assert table.schema.remove_metadata().equals(CACHE_SCHEMA)
        assert table.num_rows == expected_count(sim.config, "BTCUSDT", d)
        times = table.column("T").to_pylist()
        assert times == sorted(times)
        stored = store.query("SELECT CAST(tick_id AS VARCHAR), time_us // 1000, price, qty, side, "
                             "is_buyer_maker FROM trades WHERE time_us >= ? AND time_us < ? ORDER BY "
                             "time_us, trade_id", [us(d), us(d + timedelta(days=1))])
        assert [tuple(r.values()) for r in table.to_pylist()] == [(r[1], r[0], *r[2:]) for r in stored]
    hidden = [p.name for p in cache.iterdir() if p.name.startswith(".")]
    assert sorted(hidden) == [OWNER_FILE, TEMP_DIR] and not list((cache / TEMP_DIR).iterdir()), \
        "only the owner marker and an empty temp dir beside the day files"
    again = await refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(3)), us(day(5)),
                          cache_dir=cache)
    assert again.files_exported == 0, "unchanged days are not rewritten"


async def test_a_covered_range_rewrites_a_deleted_day_file_without_a_request(sim, store, tmp_path) -> None:
    cache = tmp_path / "cache"
    await refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(3)), us(day(5)), cache_dir=cache)
    gone = cache / f"backfill_{day(4).isoformat()}.parquet"
    gone.unlink()
    before = total_requests(sim.state)
    again = await refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(3)), us(day(5)), cache_dir=cache)
    assert total_requests(sim.state) == before and again.days_fetched == 0
    assert again.files_exported == 1
    assert pq.read_table(gone).num_rows == expected_count(sim.config, "BTCUSDT", day(4))


async def test_exporting_a_second_symbol_into_the_same_dir_is_refused(sim, store, tmp_path) -> None:
    from store.errors import ExportError

    cache = tmp_path / "cache"
    await refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(3)), us(day(4)), cache_dir=cache)
    with pytest.raises(ExportError, match="own --cache-dir"):
        await refresh(store, sim_fetch_config(sim.url), "ETHUSDT", us(day(3)), us(day(4)),
                      cache_dir=cache)
    assert store.query_one("SELECT count(*) FROM trades WHERE symbol = 'ETHUSDT'")[0] == 0


async def test_spot_and_inverse_archives_are_stored_with_stable_ids(sim, store) -> None:
    await refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(8)), us(day(10)), category="spot")
    await refresh(store, sim_fetch_config(sim.url), "BTCUSD", us(day(8)), us(day(10)), category="inverse")
    assert duplicate_keys(store) == []
    spot = stored_ids(store, "BTCUSDT", us(day(8)), us(day(10)), category="spot")
    assert len(spot) == expected_count(sim.config, "BTCUSDT", day(8), "spot") * 2
    assert "202401080000000001" in spot and "202401090000000001" in spot
    inverse = stored_ids(store, "BTCUSD", us(day(8)), us(day(10)), category="inverse")
    assert set(inverse) == truth_ids(sim.config, "BTCUSD", day(8), day(10), category="inverse")


async def test_unknown_symbol_is_a_clear_input_error_and_changes_nothing(sim, store) -> None:
    from fetch.errors import InputError

    with pytest.raises(InputError, match="unknown symbol NOPEUSDT"):
        await refresh(store, sim_fetch_config(sim.url), "NOPEUSDT", us(day(1)), us(day(3)))
    assert store.query_one("SELECT count(*) FROM coverage")[0] == 0


async def test_iterate_trades_spans_archive_days_and_todays_tail(sim, tmp_path) -> None:
    settings = Settings(backfill_db_path=tmp_path / "h.duckdb", backfill_cache_dir=tmp_path / "cache",
                        bybit_symbol="BTCUSDT", _env_file=None)
    history = BybitConnectorHistory(settings, fetch_config=sim_fetch_config(sim.url))
    start, end = dt(day(9)), dt(day(10)) + timedelta(hours=12)
    ticks = [t async for t in history.iterate_trades(start, end, chunk_rows=700)]
    keys = [(t.ts, t.exec_id) for t in ticks]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert ticks[0].ts.date() == day(9) and ticks[-1].ts.date() == day(10)
    archive_day = [t for t in ticks if t.ts.date() == day(9)]
    assert len(archive_day) == expected_count(sim.config, "BTCUSDT", day(9))
    assert all(t.isBuyerMaker == (t.side == "sell") for t in ticks)
    cached = await history.backfill_with_cache(start, end)
    assert [t.id for t in cached] == [t.id for t in ticks]


async def test_a_run_of_many_days_builds_the_id_filter_once_sized_for_the_run(sim, store, monkeypatch) -> None:
    """Each rebuild reads every stored id while the store is held: sized one day at a time, a week
    would rebuild it every few days (readers waited behind it); sized for the run, once."""
    monkeypatch.setattr(id_filter, "MIN_CAPACITY", 64)
    monkeypatch.setattr(id_filter, "CAPACITY_STEP", 64)
    id_filter.forget_mapped()
    built: list[int] = []
    rebuild = id_filter._rebuild

    def counted(*args, **kwargs):
        market = rebuild(*args, **kwargs)
        built.append(market.file.header.capacity)
        return market

    monkeypatch.setattr(id_filter, "_rebuild", counted)
    summary = await refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(1)), us(day(7)))
    assert summary.days_fetched == 6 and duplicate_keys(store) == []
    assert len(built) == 1, f"the filter was built {len(built)} times (capacities {built})"
    assert built[0] >= summary.rows_added
    id_filter.forget_mapped()
