"""SIGKILL in the middle of a refresh: the next refresh completes with no loss and no duplicate."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from crashutil import kill_when, start_refresh
from storeutil import day, duplicate_keys, stored_ids, truth_ids, us

from sim import run_in_thread
from store.schema import open_store
from store.cache_dir import OWNER_FILE
from store.report import verify


def crash_then_complete(sim_config, tmp_path: Path, after_files: list[int]) -> int:
    """For each count: a fresh store, a refresh killed once the emulator served that many day files,
    a full refresh, checks. Returns kills. (A fixed delay is not used: with the archive cache warm
    or a faster ingest the run could finish before it.)"""
    args = ["refresh", "BTCUSDT", "--start", "2024-01-01", "--end", "2024-01-10"]
    killed = 0
    busy = replace(sim_config, latency_ms=150, markets=[
        replace(m, trades_per_day=20_000) if m.symbol == "BTCUSDT" and m.category == "linear" else m
        for m in sim_config.markets])
    with run_in_thread(busy) as sim:
        for n, files in enumerate(after_files):
            db, cache = tmp_path / f"crash{n}.duckdb", tmp_path / f"cache{n}"
            served = sim.state.requests["/trading"]
            def enough(served: int = served, files: int = files) -> bool:
                return sim.state.requests["/trading"] - served >= files

            killed += kill_when(start_refresh(sim.url, db, cache, args), enough)
            finished = start_refresh(sim.url, db, cache, args)
            assert finished.wait(timeout=120) == 0
            with open_store(db, read_only=True) as store:
                assert duplicate_keys(store) == []
                ids = stored_ids(store, "BTCUSDT", us(day(1)), us(day(10)))
                assert set(ids) == truth_ids(sim.config, "BTCUSDT", day(1), day(10))
                report = verify(store)
                assert report.ok, report.checks
            assert not [p for p in cache.rglob("*") if p.is_file() and not p.name.startswith("backfill_")
                    and p.name != OWNER_FILE], "temp files left"
    return killed


def test_a_refresh_killed_midway_is_completed_by_the_next_one(sim_config, tmp_path: Path) -> None:
    assert crash_then_complete(sim_config, tmp_path, [4]) == 1
