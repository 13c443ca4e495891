"""Soak: 30 days of three markets and of the account's fills under a 5% random mix of every
transient fault, against the same work with no fault. The faulty run must end with every trade and
fill exactly once, and send at most 1.5x the requests of the clean run (retries, not storms).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from relutil import NOW_US, assert_exactly_the_truth, fill_ids, stored_fill_ids
from storeutil import sim_fetch_config, total_requests

from fetch.executions import plan_windows
from fetch.market_span import Span
from sim import MarketSpec, SimConfig, running_sim
from sim.fills import expected_fills
from store import refresh, refresh_executions
from store.schema import open_store
from store.timeutil import day_start_us

FIRST = date(2023, 12, 11)  # 30 archive days up to 2024-01-09, then today's tail up to 12:00
MARKETS = [("BTCUSDT", "linear"), ("ETHUSDT", "linear"), ("BTCUSD", "inverse")]
# What a real exchange can do to each host: the API host answers JSON errors, the archive host is a
# static file server (status codes and cut connections only).
API_FAULTS = ["latency", "http_500", "http_502", "http_503", "ret_10016", "ret_10006", "drop",
              "malformed_json"]
ARCHIVE_FAULTS = ["latency", "http_500", "http_502", "http_503", "drop"]
RATE = 0.05
FILLS = (day_start_us(FIRST), day_start_us(date(2024, 1, 10)))  # the account's fills: 30 days too


def soak_config(cache_dir: Path) -> SimConfig:
    listed = date(2023, 12, 1)
    return SimConfig(now_ms=NOW_US // 1000, cache_dir=cache_dir, fills_per_day=60, markets=[
        MarketSpec("BTCUSDT", "linear", trades_per_day=400, listed=listed),
        MarketSpec("ETHUSDT", "linear", trades_per_day=300, base_price=3_000.0, listed=listed),
        MarketSpec("BTCUSD", "inverse", trades_per_day=300, listed=listed),
    ])


@dataclass
class Outcome:
    requests_seen: int     # what reached the emulator
    requests_sent: int     # what the clients counted
    retries: int
    faults: int


async def run_everything(config: SimConfig, db: Path, *, faults: bool) -> Outcome:
    async with running_sim(config) as sim:
        if faults:
            sim.state.faults.random_mix(RATE, API_FAULTS, seed=11, path="/v5/")
            sim.state.faults.random_mix(RATE, ARCHIVE_FAULTS, seed=12, path="/trading/")
        fetch = sim_fetch_config(sim.url, credentials=True, max_retries=6)
        sent = retries = 0
        with open_store(db) as store:
            for symbol, category in MARKETS:
                summary = await refresh(store, fetch, symbol, day_start_us(FIRST), NOW_US, category=category)
                assert summary.days_failed == [] and summary.days_fetched == 30, summary.as_dict()
                sent, retries = sent + summary.requests, retries + summary.retries
                assert_exactly_the_truth(store, config, symbol, FIRST, NOW_US, category)
            for category in ("linear", "inverse"):
                crawl = await refresh_executions(store, fetch, Span(*FILLS), category=category)
                sent, retries = sent + crawl.requests, retries + crawl.retries
            stored = stored_fill_ids(store)
            assert len(stored) == len(set(stored)), "a fill is stored twice"
            assert set(stored) == fill_ids(config, *FILLS, "linear") | fill_ids(config, *FILLS, "inverse")
        fired = sum(sim.state.faults.fired.values())
        return Outcome(total_requests(sim.state), sent, retries, fired)


def minimum_requests(config: SimConfig) -> int:
    """What a fault-free run must send: per market the index, 30 day files, the exchange's clock and
    recent-trade; per category one clock read and, per 7-day window, one execution page per 100
    fills (at least one)."""
    pages = 0
    for category in ("linear", "inverse"):
        for low, high in plan_windows(FILLS[0] // 1000, FILLS[1] // 1000):
            fills = len(expected_fills(config, low, high, category=category))  # endTime is inclusive
            pages += max(1, -(-fills // 100))
    return len(MARKETS) * (1 + 30 + 1 + 1) + 2 + pages


async def test_thirty_days_under_five_percent_transient_faults_store_everything_once(
        sim_cache_dir: Path, tmp_path: Path) -> None:
    config = soak_config(sim_cache_dir)
    clean = await run_everything(config, tmp_path / "clean.duckdb", faults=False)
    faulty = await run_everything(config, tmp_path / "faulty.duckdb", faults=True)
    assert clean.faults == 0 and clean.retries == 0
    assert faulty.faults >= 5, "the soak must actually have injected faults"
    assert clean.requests_seen == clean.requests_sent == minimum_requests(config)
    assert faulty.requests_seen <= 1.5 * clean.requests_seen, (faulty, clean)
    assert faulty.requests_sent <= 1.5 * clean.requests_sent, (faulty, clean)
    assert faulty.retries > 0
