"""Two writers on one DuckDB file: the second is refused at once (or waits with --wait-lock), nothing is
corrupted, and read-only commands share the file freely when nobody writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from crashutil import cli_env, start_cli
from relutil import assert_exactly_the_truth, run_cli, wait_until
from storeutil import day, sim_fetch_config, us

from sim import MarketSpec, run_in_thread
from store import Store, refresh

REFRESH = ["refresh", "BTCUSDT", "--start", "2024-01-01", "--end", "2024-01-10", "--no-export"]


@pytest.fixture
def slow_sim(sim_config):
    """Every answer 150 ms late: a refresh holds the store for a couple of seconds."""
    config = replace(sim_config, latency_ms=150, markets=[
        MarketSpec("BTCUSDT", "linear", trades_per_day=3_000, listed=date(2024, 1, 1))])
    with run_in_thread(config) as running:
        yield running


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def writer_holds_the_lock(sim) -> bool:
    """The child opens (and locks) the store before its first request reaches the emulator."""
    return len(sim.state.log) > 0 or sum(sim.state.requests.values()) > 0


def test_a_second_refresh_is_refused_at_once_with_a_message_naming_the_file(slow_sim, tmp_path: Path) -> None:
    db, cache = tmp_path / "one.duckdb", tmp_path / "cache"
    env = cli_env(slow_sim.url, db, cache)
    first = start_cli(slow_sim.url, db, cache, REFRESH, capture=True)
    try:
        wait_until(lambda: writer_holds_the_lock(slow_sim))
        code, out, err = run_cli(env, *REFRESH)
        # Refused while the first still runs: not after waiting for it (no wall-clock bound needed).
        assert first.poll() is None, "the first refresh must still be running"
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and str(db) in err and "in use by another process" in err
        assert "wait for it to finish" in err
        code, _, err = run_cli(env, "status")  # readers are refused too while a writer holds the file
        assert code == 2 and str(db) in err and "in use" in err
    finally:
        _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err
    with Store.open(db, read_only=True) as store:
        assert_exactly_the_truth(store, slow_sim.config, "BTCUSDT", day(1), us(day(10)))


def test_with_wait_lock_the_second_refresh_waits_then_succeeds(slow_sim, tmp_path: Path) -> None:
    db, cache = tmp_path / "two.duckdb", tmp_path / "cache"
    env = cli_env(slow_sim.url, db, cache)
    first = start_cli(slow_sim.url, db, cache, REFRESH, capture=True)
    try:
        wait_until(lambda: writer_holds_the_lock(slow_sim))
        wider = ["refresh", "BTCUSDT", "--start", "2024-01-01", "--end", "2024-01-10T12:00", "--no-export",
                 "--wait-lock", "60"]
        code, out, err = run_cli(env, *wider)
        assert first.poll() is not None, "the second refresh could only open the store after the first"
    finally:
        first.communicate(timeout=120)
    assert first.returncode == 0
    assert code == 0, err
    assert "9 already stored, 0 fetched" in out, "the waiting refresh sees the first one's days"
    with Store.open(db, read_only=True) as store:
        assert_exactly_the_truth(store, slow_sim.config, "BTCUSDT", day(1), us(day(10)))
        rest = store.query_one("SELECT count(*) FROM trades WHERE source = 'rest'")[0]
        assert rest == 1000, "then it added today's tail"


def test_two_writers_in_one_process_never_store_a_trade_twice(sim_thread, tmp_path: Path) -> None:
    # DuckDB's lock keeps other processes out, not other threads: their transactions must not overlap.
    db = tmp_path / "threads.duckdb"
    errors: list[BaseException] = []

    def one_refresh(first: int) -> None:
        try:
            with Store.open(db) as store:
                asyncio.run(refresh(store, sim_fetch_config(sim_thread.url), "BTCUSDT", us(day(first)),
                                    us(day(10))))
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            errors.append(error)

    threads = [threading.Thread(target=one_refresh, args=(first,)) for first in (1, 1, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with Store.open(db, read_only=True) as store:
        assert_exactly_the_truth(store, sim_thread.config, "BTCUSDT", day(1), us(day(10)))


def test_sql_and_status_share_the_file_read_only_and_change_nothing(slow_sim, tmp_path: Path) -> None:
    db, cache = tmp_path / "read.duckdb", tmp_path / "cache"
    env = cli_env(slow_sim.url, db, cache)
    slow_sim.config.latency_ms = 0
    code, _, err = run_cli(env, *REFRESH)
    assert code == 0, err
    before = sha256(db)
    query = "SELECT count(*) AS n, count(DISTINCT trade_id) AS ids FROM trades"
    readers = [start_cli(slow_sim.url, db, cache, ["sql", query, "--format", "json"], capture=True)
               for _ in range(3)]
    readers.append(start_cli(slow_sim.url, db, cache, ["status", "--json"], capture=True))
    outputs = [reader.communicate(timeout=60) for reader in readers]
    assert [reader.returncode for reader in readers] == [0, 0, 0, 0], [err for _, err in outputs]
    for out, _ in outputs[:3]:
        assert json.loads(out) == [{"n": 27_000, "ids": 27_000}]
    [status] = json.loads(outputs[3][0])
    assert status["symbol"] == "BTCUSDT" and status["rows"] == 27_000 and status["days_covered"] == 9
    code, _, err = run_cli(env, "sql", "INSERT INTO trades SELECT * FROM trades")
    assert code == 2 and "read-only" in err.lower()
    assert sha256(db) == before, "read-only commands never change the file"
