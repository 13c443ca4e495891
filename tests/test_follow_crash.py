"""`bybit-backfill follow` in a child process, SIGKILLed at random moments and restarted on the same
store: nothing committed is lost or duplicated, and coverage never claims a trade the store lacks.
A final SIGTERM commits what it holds and exits 0."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

from sim import MarketClock, run_in_thread
from store.schema import open_store
from tests.crashutil import start_cli
from tests.followutil import DAY_BEFORE, MIDNIGHT_MS, follow_sim_config, truth

KILLS = int(os.environ.get("FOLLOW_KILLS", "6"))  # FOLLOW_KILLS=20 for the full run; the suite stays fast
ARGS = ["follow", "BTCUSDT", "--commit-every", "0.2", "--no-export", "--archive-check", "3600",
        "--ping-every", "5", "--wait-lock", "30"]


def state_file(db: Path) -> Path:
    return Path(str(db) + ".follow") / "linear.BTCUSDT.json"


def wait_for_commit(process: subprocess.Popen[str], db: Path, after: float, timeout_s: float = 90.0) -> None:
    """Until the child has committed once since `after` (its state file says so); bounded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the follower exited early"
        try:
            state = json.loads(state_file(db).read_text())
            if state["pid"] == process.pid and state["committed_at"] >= after and state["last_trade_us"]:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError("the follower never committed")


def test_sigkill_at_random_moments_loses_and_duplicates_nothing_committed(
        tmp_path: Path, sim_cache_dir: Path) -> None:
    clock = MarketClock(MIDNIGHT_MS - 600_000, speed=10)  # ~23 trades a second
    rng = random.Random(14)
    db, cache = tmp_path / "store.duckdb", tmp_path / "cache"
    with run_in_thread(follow_sim_config(sim_cache_dir, clock)) as sim:
        ws = sim.url.replace("http://", "ws://")
        for _ in range(KILLS):
            started = time.time()
            child = start_cli(sim.url, db, cache, ARGS, BYBIT_WS_BASE_URL=ws)
            try:
                wait_for_commit(child, db, started)
                time.sleep(rng.uniform(0.0, 1.2))  # somewhere in a commit, a read or an idle moment
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=30)
        started = time.time()
        child = start_cli(sim.url, db, cache, ARGS, capture=True, BYBIT_WS_BASE_URL=ws)
        wait_for_commit(child, db, started)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        assert "follow stopped" in err
        end_ms = clock.now_ms()
        config = sim.config
    expected = truth(config, end_ms, (DAY_BEFORE, DAY_BEFORE.replace(day=11)))
    known = dict(expected)
    with open_store(db, read_only=True) as store:
        rows = store.query("SELECT trade_id, time_us FROM trades")
        spans = store.query("SELECT start_us, end_us FROM coverage WHERE source IN ('ws', 'rest')")
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "a trade was stored twice"
    assert all(known.get(i) == t for i, t in rows), "a stored trade is not the exchange's"
    stored_ids = set(ids)
    for start_us, end_us in spans:  # coverage is evidence: every trade it claims is stored
        claimed = [i for i, t in expected if start_us <= t < end_us]
        assert set(claimed) <= stored_ids, f"coverage [{start_us}, {end_us}) claims trades the store lacks"
    assert len(spans) >= KILLS and len(stored_ids) > 100
    state = json.loads(state_file(db).read_text())
    assert state["active"] is False  # the graceful stop says so


def test_readers_and_writers_get_in_between_the_followers_commits(tmp_path: Path, sim_cache_dir: Path) -> None:
    clock = MarketClock(MIDNIGHT_MS - 600_000, speed=10)
    db, cache = tmp_path / "store.duckdb", tmp_path / "cache"
    with run_in_thread(follow_sim_config(sim_cache_dir, clock)) as sim:
        started = time.time()
        child = start_cli(sim.url, db, cache, ARGS, BYBIT_WS_BASE_URL=sim.url.replace("http://", "ws://"))
        try:
            wait_for_commit(child, db, started)
            counts = []
            for k in range(4):  # this process is "another process": it waits a moment, never fails
                with open_store(db, read_only=True, wait_s=30) as store:
                    counts.append(store.query_one("SELECT count(*) FROM trades")[0])
                with open_store(db, wait_s=30) as store, store.atomic():
                    store.execute("INSERT INTO open_gaps (category, symbol, start_us, end_us, reason) "
                                  "VALUES ('linear', 'OTHER', ?, ?, 'written meanwhile')", [k, k + 1])
                time.sleep(0.3)
            assert child.poll() is None, "the follower kept running"
            wait_for_commit(child, db, time.time())
        finally:
            child.send_signal(signal.SIGTERM)
            child.wait(timeout=60)
    assert counts == sorted(counts) and counts[-1] > counts[0]
    with open_store(db, read_only=True) as store:
        assert store.query_one("SELECT count(*) FROM open_gaps WHERE symbol = 'OTHER'") == (4,)
    assert child.returncode == 0
