"""Readers and writers together on one DuckDB file: a writer holds it only while it commits, so other
writers commit in turn and readers (our commands, the Python API, an analyst's own session) get in
between; a wait that runs out is one clear error naming the holder. Nothing is stored twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from crashutil import cli_env, start_cli
from relutil import assert_exactly_the_truth, run_cli, wait_until
from storeutil import day, sim_fetch_config, us

from sim import MarketSpec, run_in_thread
from store import refresh
from store.schema import open_store

REFRESH = ["refresh", "BTCUSDT", "--start", "2024-01-01", "--end", "2024-01-10", "--no-export"]


@pytest.fixture
def slow_sim(sim_config):
    """Every answer 150 ms late: a refresh holds the store for a couple of seconds."""
    config = replace(sim_config, latency_ms=150, markets=[
        MarketSpec("BTCUSDT", "linear", trades_per_day=3_000, listed=date(2024, 1, 1)),
        MarketSpec("ETHUSDT", "linear", trades_per_day=1_000, base_price=3_000.0, listed=date(2024, 1, 1))])
    with run_in_thread(config) as running:
        yield running


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def writer_holds_the_lock(sim) -> bool:
    """The child opens (and locks) the store before its first request reaches the emulator."""
    return len(sim.state.log) > 0 or sum(sim.state.requests.values()) > 0


def test_two_refreshes_on_one_store_both_complete_each_committing_in_turn(slow_sim, tmp_path: Path) -> None:
    """A writer holds the store only while it commits: a second refresh (another symbol, and the
    same symbol over an overlapping range) runs beside the first and every trade is stored once."""
    db, cache = tmp_path / "two.duckdb", tmp_path / "cache"
    first = start_cli(slow_sim.url, db, cache, REFRESH, capture=True)
    wait_until(lambda: writer_holds_the_lock(slow_sim))
    overlapping = ["refresh", "BTCUSDT", "--start", "2024-01-05", "--end", "2024-01-10T12:00", "--no-export"]
    other = ["refresh", "ETHUSDT", "--start", "2024-01-03", "--end", "2024-01-10", "--no-export"]
    second = start_cli(slow_sim.url, db, cache, overlapping, capture=True)
    third = start_cli(slow_sim.url, db, cache, other, capture=True)
    outputs = [p.communicate(timeout=180) for p in (first, second, third)]
    assert [p.returncode for p in (first, second, third)] == [0, 0, 0], [err for _, err in outputs]
    with open_store(db, read_only=True) as store:
        assert_exactly_the_truth(store, slow_sim.config, "BTCUSDT", day(1), us(day(10)))
        assert_exactly_the_truth(store, slow_sim.config, "ETHUSDT", day(3), us(day(10)))
        assert store.query_one("SELECT count(*) FROM trades WHERE source = 'rest'")[0] > 0, "the tail too"


def test_readers_polling_during_a_refresh_all_succeed(slow_sim, tmp_path: Path) -> None:
    """sql, status, gaps, verify and the Python API, polled from other processes while a multi-day
    refresh runs, never fail; an analyst's own plain DuckDB session gets in between commits."""
    import duckdb

    db, cache = tmp_path / "read.duckdb", tmp_path / "cache"
    env = cli_env(slow_sim.url, db, cache)
    code, _, err = run_cli(env, "refresh", "BTCUSDT", "--start", "2024-01-01", "--end", "2024-01-02", "--no-export")
    assert code == 0, err
    slow_sim.config.latency_ms = 1000  # one day file at a time, a second each: the refresh lasts ~10 s
    writer = start_cli(slow_sim.url, db, cache, REFRESH, capture=True, BYBIT_BACKFILL_MAX_CONCURRENT_CHUNKS="1")
    api = ("import asyncio, datetime as d; from store import BybitConnectorHistory, Settings; "
           "h = BybitConnectorHistory(Settings()); s = d.datetime(2024, 1, 1, tzinfo=d.UTC); "
           "print(len(asyncio.run(h.backfill_with_cache(s, s + d.timedelta(days=1)))))")
    readers = [["sql", "SELECT count(*) FROM trades"], ["status", "--json"], ["gaps", "BTCUSDT", "--start",
               "2024-01-01", "--end", "2024-01-02"], ["verify"]]
    rounds, overlapped, plain_opens, saw_writer = 0, 0, 0, False
    while writer.poll() is None and rounds < 40:
        rounds += 1
        for args in readers:
            code, out, err = run_subprocess_cli(env, args)
            assert code == 0, (args, err)
            saw_writer |= args[0] == "status" and '"writer": {' in out
        done = subprocess.run([sys.executable, "-c", api], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == "3000", done.stderr[-2000:]
        try:
            duckdb.connect(str(db), read_only=True).close()
            plain_opens += 1
        except duckdb.Error:
            pass  # a commit was under way: an analyst's session simply tries again
        overlapped += writer.poll() is None
    _, err = writer.communicate(timeout=180)
    assert writer.returncode == 0, err
    assert overlapped >= 1, "a whole round of readers ran while the refresh did"
    assert plain_opens >= 1, "the file is let go between commits"
    assert saw_writer, "status names the active writer"
    with open_store(db, read_only=True) as store:
        assert_exactly_the_truth(store, slow_sim.config, "BTCUSDT", day(1), us(day(10)))


MANY = [MarketSpec(f"M{k:02d}USDT", "linear", trades_per_day=200 + k, listed=date(2024, 1, 1)) for k in range(40)]


def test_readers_get_in_during_a_whole_market_refresh_of_many_small_days(sim_config, tmp_path: Path) -> None:
    """A whole-market refresh of 40 symbols x 6 small days commits 240 times in quick succession and
    keeps the file open across them (`Store.keeping`), yet lets it go often enough: a reader in
    another process that waits at most READER_WAIT_S for the file never runs out of patience, gets
    in again and again while the refresh runs, and always sees whole days (each with its coverage)."""
    config = replace(sim_config, latency_ms=0, markets=MANY)
    db, cache = tmp_path / "market.duckdb", tmp_path / "cache"
    open_store(db).close()
    with run_in_thread(config) as sim:
        writer = start_cli(sim.url, db, cache, ["refresh", "--all", "--start", "2024-01-01", "--end", "2024-01-07",
                                                "--no-export", "--concurrency", "4"], capture=True)
        reads_during, seen = 0, set()
        while writer.poll() is None:
            with open_store(db, read_only=True, wait_s=READER_WAIT_S) as reader:  # StoreLocked fails the test
                rows, covered, days = reader.query_one(
                    "SELECT (SELECT count(*) FROM trades), (SELECT coalesce(sum(added_rows), 0) FROM coverage), "
                    "(SELECT count(*) FROM coverage)")
            assert rows == covered, "a reader sees each day whole, with its coverage row"
            seen.add(days)
            reads_during += writer.poll() is None
        _, err = writer.communicate(timeout=180)
        assert writer.returncode == 0, err
    assert reads_during >= 3 and len(seen - {0, 240}) >= 2, (reads_during, sorted(seen))
    with open_store(db, read_only=True) as store:
        for spec in MANY[::13]:
            assert_exactly_the_truth(store, config, spec.symbol, day(1), us(day(7)))
        assert store.query_one("SELECT count(*) FROM coverage WHERE source = 'archive'") == (240,)


# Several times the longest hold a keeping writer allows a process that waits (and marks it:
# `store.file_pool.HOLD_BOUND_S`); no more than the hold it allows when nobody does.
READER_WAIT_S = 5.0


def run_subprocess_cli(env: dict[str, str], args: list[str]) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-c", "import cli; cli.run()", *args], env=env,
                          capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


def test_a_lock_wait_that_runs_out_is_exit_4_naming_the_holder(tmp_path: Path) -> None:
    db = tmp_path / "held.duckdb"
    open_store(db).close()
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); time.sleep(60)", str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        env = {**cli_env("http://127.0.0.1:9", db, tmp_path / "cache"), "BACKFILL_LOCK_WAIT_S": "0.3"}
        code, out, err = run_subprocess_cli(env, ["status"])
        assert code == 4 and out == ""
        assert err.count("\n") == 1 and str(db) in err and f"pid {holder.pid}" in err
        assert "0.3 s" in err and "BACKFILL_LOCK_WAIT_S" in err
        assert not db.with_name(db.name + ".wait").exists(), "a waiter out of patience takes its mark away"
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_two_writers_in_one_process_never_store_a_trade_twice(sim_thread, tmp_path: Path) -> None:
    # DuckDB's lock keeps other processes out, not other threads: their transactions must not overlap.
    db = tmp_path / "threads.duckdb"
    errors: list[BaseException] = []

    def one_refresh(first: int) -> None:
        try:
            with open_store(db) as store:
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
    with open_store(db, read_only=True) as store:
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
