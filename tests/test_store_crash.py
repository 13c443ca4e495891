"""SIGKILL in the middle of a refresh: the next refresh completes with no loss and no duplicate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from storeutil import day, duplicate_keys, stored_ids, truth_ids, us

from sim import run_in_thread
from store import Store
from store.report import verify

ROOT = Path(__file__).resolve().parent.parent


def start_refresh(url: str, db: Path, cache: Path, args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "BYBIT_REST_BASE_URL": url, "BYBIT_ARCHIVE_BASE_URL": url,
           "BACKFILL_DB_PATH": str(db), "BACKFILL_CACHE_DIR": str(cache),
           "BYBIT_BACKFILL_RETRY_BASE": "0.01", "BYBIT_BACKFILL_MAX_CONCURRENT_CHUNKS": "2",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", "import cli; cli.main()", *args], cwd=db.parent,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_at(process: subprocess.Popen, after_s: float) -> bool:
    """SIGKILL after `after_s` unless it finished first; True when it was killed."""
    try:
        process.wait(timeout=after_s)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        return True


def crash_then_complete(sim_config, tmp_path: Path, moments: list[float]) -> int:
    """For each moment: a fresh store, a refresh killed then, a full refresh, checks. Returns kills."""
    args = ["refresh", "BTCUSDT", "--start", "2024-01-01", "--end", "2024-01-10"]
    killed = 0
    busy = replace(sim_config, latency_ms=150, markets=[
        replace(m, trades_per_day=20_000) if m.symbol == "BTCUSDT" and m.category == "linear" else m
        for m in sim_config.markets])
    with run_in_thread(busy) as sim:
        for n, moment in enumerate(moments):
            db, cache = tmp_path / f"crash{n}.duckdb", tmp_path / f"cache{n}"
            killed += kill_at(start_refresh(sim.url, db, cache, args), moment)
            finished = start_refresh(sim.url, db, cache, args)
            assert finished.wait(timeout=120) == 0
            with Store.open(db, read_only=True) as store:
                assert duplicate_keys(store) == []
                ids = stored_ids(store, "BTCUSDT", us(day(1)), us(day(10)))
                assert set(ids) == truth_ids(sim.config, "BTCUSDT", day(1), day(10))
                report = verify(store)
                assert report.ok, report.checks
            assert not [p for p in cache.iterdir() if not p.name.startswith("backfill_")], "temp files left"
    return killed


def test_a_refresh_killed_midway_is_completed_by_the_next_one(sim_config, tmp_path: Path) -> None:
    assert crash_then_complete(sim_config, tmp_path, [2.2]) == 1
