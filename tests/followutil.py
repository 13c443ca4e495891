"""Helpers for the follower tests: an emulator on a hand-stepped market clock, its ground truth,
and bounded waits (no wall-clock timing is asserted: conditions are polled, with a cap)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

from fetch.ws import StreamOptions
from sim import MarketClock, MarketSpec, SimConfig
from sim.market import expected_trades
from store.schema import open_store
from store.follow import FollowConfig
from tests.storeutil import sim_fetch_config

MIDNIGHT = datetime(2024, 1, 11, tzinfo=UTC)
MIDNIGHT_MS = int(MIDNIGHT.timestamp() * 1000)
DAY_BEFORE = date(2024, 1, 10)


def follow_sim_config(cache: Path, clock: MarketClock, *, trades_per_day: int = 200_000,
                      publish_delay_ms: int = 0, category: str = "linear") -> SimConfig:
    markets = [MarketSpec("BTCUSDT", category, trades_per_day=trades_per_day, listed=date(2024, 1, 1)),
               MarketSpec("ETHUSDT", category, trades_per_day=trades_per_day // 2, base_price=3_000.0,
                          listed=date(2024, 1, 1))]
    return SimConfig(markets=markets, cache_dir=cache, clock=clock, ws_tick_ms=10,
                     publish_delay_ms=publish_delay_ms)


def follow_config(url: str, db: Path, *, cache_dir: Path | None = None, archive_check_s: float = 3600.0,
                  symbols: tuple[str, ...] = ("BTCUSDT",), category: str = "linear") -> FollowConfig:
    fetch = sim_fetch_config(url)
    fetch = dataclasses.replace(fetch, endpoints=dataclasses.replace(
        fetch.endpoints, ws_base_url=url.replace("http://", "ws://")))
    return FollowConfig(db, fetch, category, symbols, cache_dir=cache_dir, export_every_s=0.3,
                        commit_every_s=0.1, archive_check_s=archive_check_s, lock_wait_s=10.0,
                        stream=StreamOptions(ping_interval_s=5.0, stale_after_s=60.0),
                        backoff_base_s=0.02, backoff_cap_s=0.1)


async def until(condition: Callable[[], bool], what: str, tries: int = 6000) -> None:
    """Poll `condition` every 10 ms, at most `tries` times (60 s by default: a busy 2-core machine)."""
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def truth(config: SimConfig, now_ms: int, days: tuple[date, ...], symbol: str = "BTCUSDT",
          category: str = "linear") -> list[tuple[str, int]]:
    """(REST/WS id, time in ms-truncated us) of every trade of `days` up to `now_ms`, ascending."""
    frozen = SimConfig(seed=config.seed, markets=config.markets, now_ms=now_ms)
    out = []
    for d in days:
        table = expected_trades(frozen, symbol, d, category)
        out += [(i, t // 1000 * 1000) for i, t in zip(table.column("exec_id").to_pylist(),
                                                     table.column("time_us").to_pylist(), strict=True)]
    return out


def stored(db: Path, symbol: str = "BTCUSDT") -> list[tuple[str, int, str]]:
    with open_store(db, read_only=True) as store:
        rows = store.query("SELECT trade_id, time_us, source FROM trades WHERE symbol = ? ORDER BY time_us, "
                           "trade_id", [symbol])
    return [(str(a), int(b), str(c)) for a, b, c in rows]


def coverage_rows(db: Path, symbol: str = "BTCUSDT") -> list[tuple[str, int, int]]:
    with open_store(db, read_only=True) as store:
        rows = store.query("SELECT source, start_us, end_us FROM coverage WHERE symbol = ? ORDER BY start_us",
                           [symbol])
    return [(str(s), int(a), int(b)) for s, a, b in rows]


def merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
