"""Crash safety: `bybit-backfill` SIGKILLed at 20 seeded random moments spanning a whole run.

After each kill the store as left must already be consistent (only whole days, or whole execution
windows, each with all of its rows), the next run completes it (in-process, to save time), and then
it holds exactly the exchange's data once and passes `verify`. Parquet readers polling the cache
directory while files are rewritten, or while the writer is killed, never open a partial file.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import threading
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
from fetch.market_span import Span
from crashutil import ROOT, cli_env, kill_at, kill_when, start_cli
from relutil import (
    archive_days,
    assert_exactly_the_truth,
    fill_ids,
    run_cli,
    stored_fill_ids,
    truth_ids_until,
)
from storeutil import KEY, SECRET, day, sim_fetch_config, us

from sim import MarketSpec, run_in_thread
from sim.server import RunningSim
from store import CACHE_SCHEMA, Store, StoreError, refresh, refresh_executions
from store.schema import open_store
from store.cache_dir import OWNER_FILE
from store.timeutil import day_start_us
from store.report import verify

KILLS = 20
REFRESH = ["refresh", "BTCUSDT", "--start", "2024-01-01", "--end", "2024-01-10"]
EXEC_START, EXEC_END = date(2023, 11, 1), date(2024, 1, 10)  # ten 7-day windows
EXECUTIONS = ["executions", "--start", EXEC_START.isoformat(), "--end", EXEC_END.isoformat()]


PER_DAY = 3_000
LATENCY_MS = 100


def slow_exchange(sim_config, trades_per_day: int = PER_DAY):
    """Every answer 100 ms late: a run lasts long enough to be cut anywhere (`fast` lifts it)."""
    return replace(sim_config, latency_ms=LATENCY_MS, markets=[
        MarketSpec("BTCUSDT", "linear", trades_per_day=trades_per_day, listed=date(2024, 1, 1))])


class fast:
    """No latency while the completing run goes (in-process, so the kill loop stays quick)."""

    def __init__(self, sim: RunningSim) -> None:
        self.config = sim.config

    def __enter__(self) -> None:
        self.config.latency_ms = 0

    def __exit__(self, *exc: object) -> None:
        self.config.latency_ms = LATENCY_MS


def timed_run(sim: RunningSim, db: Path, cache: Path, args: list[str], **env: str) -> float:
    """One uninterrupted run of the command: how long a whole run takes (kill moments span it)."""
    started = time.monotonic()
    process = start_cli(sim.url, db, cache, args, capture=True, **env)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return time.monotonic() - started


def requests_seen(sim: RunningSim) -> int:
    """Requests that reached the emulator so far: the run's progress, observed, not timed."""
    return sum(sim.state.requests.values())


def counted_run(sim: RunningSim, db: Path, cache: Path, args: list[str], **env: str) -> int:
    """One uninterrupted run of the command: how many requests a whole run sends (kill moments are
    drawn among them, so a busy machine shifts no kill before the first request or past the end)."""
    before = requests_seen(sim)
    process = start_cli(sim.url, db, cache, args, capture=True, **env)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return requests_seen(sim) - before


def kill_after_request(sim: RunningSim, process: subprocess.Popen, k: int) -> bool:
    """SIGKILL the process as soon as its k-th request has reached the emulator."""
    before = requests_seen(sim)
    return kill_when(process, lambda: requests_seen(sim) - before >= k, timeout_s=120)


def parquet_problems(cache: Path) -> list[str]:
    """Every visible cache file must read whole with the cache schema."""
    problems = []
    for path in sorted(cache.glob("backfill_*.parquet")):
        try:
            table = pq.read_table(path)
        except Exception as error:  # noqa: BLE001 - any failure to read is the finding
            problems.append(f"{path.name}: {error}")
            continue
        if not table.schema.remove_metadata().equals(CACHE_SCHEMA):
            problems.append(f"{path.name}: schema {table.schema}")
    return problems


def open_killed(db: Path) -> Store | None:
    """The store a killed run left, read-only; None when it never got past creating the file."""
    if not db.exists():
        return None
    try:
        return open_store(db, read_only=True)
    except StoreError as error:  # killed between migrations: said clearly, fixed by a rerun
        assert re.search(r"schema version \d+, this release needs", str(error)), error
        assert "run `bybit-backfill refresh`" in str(error)
        return None


def leftovers(cache: Path) -> list[str]:
    """Any file in the cache directory (or its hidden temp directory) that is neither a finished day
    file nor the owner marker: temp files of a writer."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and not (
        p.parent == cache and (p.name == OWNER_FILE or (p.name.startswith("backfill_")
                                                        and p.name.endswith(".parquet")))))


def test_refresh_killed_at_20_random_moments_is_completed_by_the_next_run(sim_config, tmp_path: Path) -> None:
    rng = random.Random(20240110)
    mid_run = killed = 0
    with run_in_thread(slow_exchange(sim_config)) as sim:
        whole = counted_run(sim, tmp_path / "baseline.duckdb", tmp_path / "baseline-cache", REFRESH)
        truth = truth_ids_until(sim.config, "BTCUSDT", day(1), us(day(10)))
        for n in range(KILLS):
            db, cache = tmp_path / f"r{n}.duckdb", tmp_path / f"cache{n}"
            killed += kill_after_request(sim, start_cli(sim.url, db, cache, REFRESH), rng.randint(1, whole))
            store = open_killed(db)
            if store is not None:
                with store:
                    report = verify(store)
                    assert report.ok, (n, report.checks)  # the killed store holds whole days only
                    committed = archive_days(store, "BTCUSDT")
                    for d in committed:
                        assert store.query_one("SELECT count(*) FROM trades WHERE time_us >= ? AND "
                                               "time_us < ?", [us(d), us(d) + 86_400_000_000]) == (PER_DAY,)
                    assert store.query_one("SELECT count(*) FROM trades") == (PER_DAY * len(committed),), \
                        "no row outside a committed day"
                mid_run += 0 < len(committed) < 9
            if cache.exists():
                assert parquet_problems(cache) == [], n
            with fast(sim), open_store(db) as store:
                summary = asyncio.run(refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(1)),
                                              us(day(10)), cache_dir=cache))
                assert summary.days_failed == []
                assert_exactly_the_truth(store, sim.config, "BTCUSDT", day(1), us(day(10)), truth=truth)
            assert len(list(cache.glob("backfill_*.parquet"))) == 9 and parquet_problems(cache) == []
            assert leftovers(cache) == [], "the next run removes a killed export's temp files"
    assert killed >= KILLS // 2, f"only {killed} of {KILLS} runs were killed before they finished"
    assert mid_run >= 3, f"only {mid_run} kills landed mid-run (some days committed, not all)"


def test_executions_crawl_killed_at_20_random_moments_is_completed_by_the_next_run(
        sim_config, tmp_path: Path) -> None:
    rng = random.Random(7)
    keys = {"BYBIT_API_KEY": KEY, "BYBIT_API_SECRET": SECRET, "BYBIT_BACKFILL_MAX_CONCURRENT_CHUNKS": "1"}
    start_us, end_us = day_start_us(EXEC_START), day_start_us(EXEC_END)
    mid_run = killed = 0
    # 40 fills a day: two or three pages per window, so commits spread over the crawl.
    with run_in_thread(replace(sim_config, latency_ms=LATENCY_MS, fills_per_day=40)) as sim:
        truth = fill_ids(sim.config, start_us, end_us)
        whole = counted_run(sim, tmp_path / "baseline.duckdb", tmp_path / "c", EXECUTIONS, **keys)
        for n in range(KILLS):
            db = tmp_path / f"x{n}.duckdb"
            crawl = start_cli(sim.url, db, tmp_path / "c", EXECUTIONS, **keys)
            killed += kill_after_request(sim, crawl, rng.randint(1, whole))
            windows = 0
            store = open_killed(db)
            if store is not None:
                with store:
                    covered = store.query("SELECT start_us, end_us FROM coverage WHERE source = 'executions'")
                    for low, high in covered:  # a committed window holds all of its fills, nothing else
                        got = {r[0] for r in store.query("SELECT exec_id FROM executions WHERE time_us >= ? "
                                                         "AND time_us < ?", [low, high])}
                        assert got == fill_ids(sim.config, low, high), (n, low, high)
                    windows = len(covered)
                    assert store.query_one("SELECT count(*) FROM executions") == (
                        sum(len(fill_ids(sim.config, a, b)) for a, b in covered),)
            mid_run += 0 < windows < 10
            with fast(sim), open_store(db) as store:
                summary = asyncio.run(refresh_executions(store, sim_fetch_config(sim.url, credentials=True),
                                                         Span(start_us, end_us)))
                assert summary.windows_fetched == 10 - windows
                stored = stored_fill_ids(store)
                assert len(stored) == len(set(stored)) and set(stored) == truth
    assert killed >= KILLS // 2, f"only {killed} of {KILLS} crawls were killed before they finished"
    assert mid_run >= 3, f"only {mid_run} kills landed mid-crawl (some windows committed, not all)"


# Loaded by the child through PYTHONPATH: SIGKILLs the process inside the transaction of the third
# archive day (or execution window), after its rows went in and before its coverage row and COMMIT.
KILL_INSIDE_THE_THIRD_TRANSACTION = """
import importlib, os, signal

# Kill the process as the third coverage row of `source` is added (one day's transaction, or a
# group's: `add_coverage_many(store, source, rows)`).
def _dying(name, source):
    module = importlib.import_module(name)
    seen = []
    def wrap(real):
        def add(*args, **kwargs):
            if kwargs.get("source", args[1] if len(args) > 1 else None) == source:
                seen.append(1)
                if len(seen) == 3:
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        return add
    for attr in ("add_coverage", "add_coverage_many"):
        if hasattr(module, attr):
            setattr(module, attr, wrap(getattr(module, attr)))

_dying("store.ingest_many", "archive")
_dying("store.executions", "executions")
"""


def test_a_kill_inside_a_days_transaction_leaves_no_trace_of_that_day(sim_config, tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_INSIDE_THE_THIRD_TRANSACTION)
    child_path = {"PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)])}
    keys = {"BYBIT_API_KEY": KEY, "BYBIT_API_SECRET": SECRET, "BYBIT_BACKFILL_MAX_CONCURRENT_CHUNKS": "1"}
    with run_in_thread(replace(slow_exchange(sim_config), latency_ms=0)) as sim:
        db, cache = tmp_path / "t.duckdb", tmp_path / "cache"
        refresh_run = start_cli(sim.url, db, cache, REFRESH, **child_path)
        assert refresh_run.wait(timeout=60) == -signal.SIGKILL, "the hook must have killed the refresh"
        with open_store(db, read_only=True) as store:
            assert archive_days(store, "BTCUSDT") == [day(1), day(2)]
            assert store.query_one("SELECT count(*) FROM trades") == (2 * PER_DAY,), "day 3 rolled back whole"
            assert verify(store).ok
        crawl = start_cli(sim.url, db, cache, EXECUTIONS, **keys, **child_path)
        assert crawl.wait(timeout=60) == -signal.SIGKILL, "the hook must have killed the crawl"
        start_us, end_us = day_start_us(EXEC_START), day_start_us(EXEC_END)
        with open_store(db, read_only=True) as store:
            covered = store.query("SELECT start_us, end_us FROM coverage WHERE source = 'executions' "
                                  "ORDER BY start_us")
            assert len(covered) == 2, "two windows committed, the third rolled back"
            expected = set().union(*(fill_ids(sim.config, a, b) for a, b in covered))
            assert set(stored_fill_ids(store)) == expected, "no fill of the third window remains"
        with open_store(db) as store:
            asyncio.run(refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(1)), us(day(10))))
            asyncio.run(refresh_executions(store, sim_fetch_config(sim.url, credentials=True),
                                           Span(start_us, end_us)))
            assert_exactly_the_truth(store, sim.config, "BTCUSDT", day(1), us(day(10)))
            stored = stored_fill_ids(store)
            assert len(stored) == len(set(stored)) and set(stored) == fill_ids(sim.config, start_us, end_us)


def test_a_store_killed_while_its_schema_was_created_is_refused_read_only_then_completed(
        sim_thread, tmp_path: Path) -> None:
    db = tmp_path / "half.duckdb"
    with Store.open(db) as store:  # what a kill during the first migration leaves
        store.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMPTZ)")
    env = cli_env(sim_thread.url, db, tmp_path / "cache")
    for command in (["status"], ["verify"], ["sql", "SELECT 1"]):
        code, out, err = run_cli(env, *command)
        assert code == 4 and out == "", (command, err)
        assert err.startswith(f"error: {db} has schema version 0") and "run `bybit-backfill refresh`" in err
    code, _, err = run_cli(env, "refresh", "BTCUSDT", "--start", "2024-01-08", "--end", "2024-01-09")
    assert code == 0, err
    assert run_cli(env, "verify")[0] == 0


# Loaded by the child: SIGKILLs `export` just before the rename that publishes 2024-01-03's file.
KILL_BEFORE_THE_THIRD_RENAME = """
import os, signal
_replace = os.replace
def replace(src, dst, *args, **kwargs):
    if str(dst).endswith("backfill_2024-01-03.parquet"):
        os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst, *args, **kwargs)
os.replace = replace
"""


def test_an_export_killed_before_its_rename_publishes_nothing_partial_and_the_next_run_cleans_up(
        sim_thread, tmp_path: Path) -> None:
    db, cache = tmp_path / "x.duckdb", tmp_path / "cache"
    with open_store(db) as store:
        asyncio.run(refresh(store, sim_fetch_config(sim_thread.url), "BTCUSDT", us(day(1)), us(day(6))))
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_BEFORE_THE_THIRD_RENAME)
    export = ["export", "BTCUSDT", "--start", "2024-01-01", "--end", "2024-01-06", "--cache-dir", str(cache)]
    child = start_cli(sim_thread.url, db, cache, export, PYTHONPATH=os.pathsep.join([str(hook), str(ROOT)]))
    assert child.wait(timeout=60) == -signal.SIGKILL, "the hook must have killed the export"
    assert sorted(p.name for p in cache.glob("backfill_*.parquet")) == [
        "backfill_2024-01-01.parquet", "backfill_2024-01-02.parquet"], "day 3 was never published"
    assert parquet_problems(cache) == [] and leftovers(cache), "its temp file is left behind, hidden"
    code, _, err = run_cli(cli_env(sim_thread.url, db, cache), *export)
    assert code == 0, err
    assert len(list(cache.glob("backfill_*.parquet"))) == 5 and parquet_problems(cache) == []
    assert leftovers(cache) == [], "the next run removed the dead writer's temp file"


def test_a_reader_polling_the_cache_never_opens_a_partial_parquet_file(sim_config, tmp_path: Path) -> None:
    cache, db = tmp_path / "cache", tmp_path / "e.duckdb"
    stop = threading.Event()
    reads: list[int] = []
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:  # the whole directory, as pyarrow, polars or Spark read it: no temp file may show
                whole = pq.read_table(cache)
                if not whole.schema.remove_metadata().equals(CACHE_SCHEMA) or whole.num_rows % 40_000:
                    problems.append(f"the directory: {whole.num_rows} rows, {whole.schema}")
                reads.append(whole.num_rows)
            except FileNotFoundError:
                pass  # a file replaced between pyarrow's listing and its open
            except Exception as error:  # noqa: BLE001 - a temp or partial file is exactly this
                problems.append(f"the directory: {type(error).__name__}: {error}")
            for path in cache.glob("backfill_*.parquet"):
                try:
                    table = pq.read_table(path)
                except FileNotFoundError:
                    continue  # replaced between the listing and the open: the next listing has it
                except Exception as error:  # noqa: BLE001 - a partial file is exactly this
                    problems.append(f"{path.name}: {type(error).__name__}: {error}")
                    continue
                if not table.schema.remove_metadata().equals(CACHE_SCHEMA) or table.num_rows != 40_000:
                    problems.append(f"{path.name}: {table.num_rows} rows, {table.schema}")
                reads.append(table.num_rows)

    rng = random.Random(3)
    with run_in_thread(slow_exchange(sim_config, trades_per_day=40_000)) as sim:
        with open_store(db) as store:
            asyncio.run(refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(1)), us(day(7)),
                                cache_dir=cache))
        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        try:
            export = ["export", "BTCUSDT", "--start", "2024-01-01", "--end", "2024-01-07",
                      "--cache-dir", str(cache)]
            whole = timed_run(sim, db, cache, export)
            for n in range(6):  # rewrites, half of them killed somewhere in the middle
                process = start_cli(sim.url, db, cache, export)
                if n % 2:
                    kill_at(process, rng.uniform(0.0, whole))
                else:
                    assert process.wait(timeout=60) == 0
            with open_store(db) as store:  # a refresh that rewrites files too (new days touched)
                asyncio.run(refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(1)), us(day(9)),
                                    cache_dir=cache))
        finally:
            stop.set()
            thread.join(timeout=30)
    assert problems == []
    assert len(reads) > 50, "the reader must have raced the writers many times"
    assert parquet_problems(cache) == [] and len(list(cache.glob("backfill_*.parquet"))) == 8
    assert leftovers(cache) == [], "temp files of the killed exports were removed"


def test_one_of_two_writers_killed_at_random_moments_loses_and_duplicates_nothing(sim_config,
                                                                                 tmp_path: Path) -> None:
    """Two refreshes share one store, each holding it only while it commits (BTCUSDT, and ETHUSDT
    over the same days); one is SIGKILLed after a random one of its requests. The other completes;
    the store holds whole committed days only; the killed one's rerun completes it: every trade of
    both symbols exactly once."""
    rng = random.Random(20241201)
    config = replace(slow_exchange(sim_config), markets=[
        MarketSpec("BTCUSDT", "linear", trades_per_day=PER_DAY, listed=date(2024, 1, 1)),
        MarketSpec("ETHUSDT", "linear", trades_per_day=PER_DAY // 3, base_price=3_000.0, listed=date(2024, 1, 1))])
    other = ["refresh", "ETHUSDT", "--start", "2024-01-01", "--end", "2024-01-10"]
    kills = 6
    with run_in_thread(config) as sim:
        whole = counted_run(sim, tmp_path / "baseline.duckdb", tmp_path / "baseline-cache", REFRESH)
        for n in range(kills):
            db = tmp_path / f"two{n}.duckdb"
            survivor = start_cli(sim.url, db, tmp_path / f"eth{n}", other, capture=True)
            victim = start_cli(sim.url, db, tmp_path / f"btc{n}", REFRESH)
            kill_after_request(sim, victim, rng.randint(1, whole))
            _, err = survivor.communicate(timeout=180)
            assert survivor.returncode == 0, err
            with Store.open(db, read_only=True) as store:
                assert verify(store).ok
                committed = archive_days(store, "BTCUSDT")
                assert store.query_one("SELECT count(*) FROM trades WHERE symbol = 'BTCUSDT' AND source = "
                                       "'archive'") == (PER_DAY * len(committed),), "whole BTCUSDT days only"
                assert_exactly_the_truth(store, sim.config, "ETHUSDT", day(1), us(day(10)))
            with fast(sim), open_store(db) as store:
                asyncio.run(refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(1)), us(day(10))))
                assert_exactly_the_truth(store, sim.config, "BTCUSDT", day(1), us(day(10)))
                assert_exactly_the_truth(store, sim.config, "ETHUSDT", day(1), us(day(10)))


def test_a_whole_market_refresh_killed_while_it_keeps_the_file_loses_and_duplicates_nothing(sim_config,
                                                                                           tmp_path: Path) -> None:
    """`refresh --all` of many small days keeps the file open across its commits (`Store.keeping`),
    so most of them are in DuckDB's log, not yet checkpointed, when it is SIGKILLed after a random
    one of its requests: the store as left holds whole days only (each with its coverage row), and
    the rerun completes every symbol exactly once."""
    rng = random.Random(20241219)
    markets = [MarketSpec(f"K{k:02d}USDT", "linear", trades_per_day=150 + 10 * k, listed=date(2024, 1, 1))
               for k in range(12)]
    config = replace(sim_config, latency_ms=5, markets=markets)
    args = ["refresh", "--all", "--start", "2024-01-01", "--end", "2024-01-05", "--no-export", "--concurrency", "4"]
    with run_in_thread(config) as sim:
        whole = counted_run(sim, tmp_path / "baseline.duckdb", tmp_path / "baseline-cache", args)
        for n in range(4):
            db = tmp_path / f"market{n}.duckdb"
            victim = start_cli(sim.url, db, tmp_path / "cache", args)
            kill_after_request(sim, victim, rng.randint(whole // 4, whole - 1))
            with Store.open(db, read_only=True) as store:
                assert verify(store).ok
                rows = store.query("SELECT c.symbol, c.added_rows, (SELECT count(*) FROM trades t WHERE t.symbol = "
                                   "c.symbol AND t.time_us >= c.start_us AND t.time_us < c.end_us) FROM coverage c")
                assert all(added == stored for _, added, stored in rows), "whole days, each with its coverage"
                assert store.query_one("SELECT count(*) FROM trades")[0] == sum(a for _, a, _ in rows)
            code, _, err = run_cli(cli_env(sim.url, db, tmp_path / "cache"), *args)
            assert code == 0, err
            with Store.open(db, read_only=True) as store:
                for spec in markets:
                    assert_exactly_the_truth(store, sim.config, spec.symbol, day(1), us(day(5)))
