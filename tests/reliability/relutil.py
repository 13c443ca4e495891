"""Shared checks of the reliability suite: "the store holds exactly the emulator's trades", and an
emulator state that timestamps every arrival (so a test can prove nothing arrived during a cooldown).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta

from conftest import SIM_NOW_MS
from storeutil import duplicate_keys

from sim import SimConfig, SimState
from sim.faults import RequestInfo
from sim.fills import expected_fills
from sim.market import expected_trades
from store import Store
from store.timeutil import DAY_US
from store.timeutil import day_start_us
from store.report import verify

NOW_US = SIM_NOW_MS * 1000  # the emulator's frozen "now" (`sim_config`): 2024-01-10 12:00 UTC


def truth_ids_until(config: SimConfig, symbol: str, first: date, end_us: int,
                    category: str = "linear") -> set[str]:
    """Every trade id the emulator has for `symbol` from `first` up to (not including) `end_us`."""
    ids: set[str] = set()
    current = first
    while day_start_us(current) < end_us:
        table = expected_trades(config, symbol, current, category)
        pairs = zip(table.column("trade_id").to_pylist(), table.column("time_us").to_pylist(), strict=True)
        ids.update(i for i, t in pairs if t < end_us)
        current += timedelta(days=1)
    return ids


def archive_days(store: Store, symbol: str, category: str = "linear") -> list[date]:
    """Days the store holds as complete archive days (one coverage row per day)."""
    rows = store.query("SELECT start_us, end_us FROM coverage WHERE source = 'archive' AND category = ? "
                       "AND symbol = ? ORDER BY start_us", [category, symbol])
    assert all(end - start == DAY_US and start % DAY_US == 0 for start, end in rows), "whole days only"
    return [date(1970, 1, 1) + timedelta(microseconds=start) for start, _ in rows]


def assert_exactly_the_truth(store: Store, config: SimConfig, symbol: str, first: date, end_us: int,
                             category: str = "linear", truth: set[str] | None = None) -> int:
    """The store holds every trade of [first, end_us) once, nothing else, and passes `verify`.

    `truth` may be passed precomputed (`truth_ids_until`) when one range is checked many times.
    """
    rows = store.query("SELECT trade_id FROM trades WHERE category = ? AND symbol = ? AND time_us >= ? "
                       "AND time_us < ?", [category, symbol, day_start_us(first), end_us])
    ids = [r[0] for r in rows]
    assert duplicate_keys(store) == []
    assert len(ids) == len(set(ids)), "a trade is stored twice"
    if truth is None:
        truth = truth_ids_until(config, symbol, first, end_us, category)
    assert set(ids) == truth, f"{len(truth - set(ids))} trades missing, {len(set(ids) - truth)} unknown"
    report = verify(store)
    assert report.ok, report.checks
    return len(ids)


def fill_ids(config: SimConfig, start_us: int, end_us: int, category: str = "linear") -> set[str]:
    """The account's fills of [start_us, end_us) as the emulator has them."""
    return {f["execId"] for f in expected_fills(config, start_us // 1000, end_us // 1000 - 1,
                                                 category=category)}


def stored_fill_ids(store: Store) -> list[str]:
    return [r[0] for r in store.query("SELECT exec_id FROM executions")]


def recording_sleep(delays: list[float]) -> Callable[[float], Awaitable[None]]:
    """A real sleep that also notes every delay asked for (retry backoff, reset waits, cooldowns)."""
    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(seconds)
    return sleep


class TimedState(SimState):
    """The emulator's state, plus the wall-clock time of every request's arrival."""

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        self.arrivals: list[tuple[float, str]] = []

    def count(self, info: RequestInfo) -> None:
        self.arrivals.append((time.time(), info.path))
        super().count(info)


def run_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """`bybit-backfill ARGS` in-process (CliRunner): exit code, stdout, stderr."""
    from click.testing import CliRunner

    import cli

    result = CliRunner().invoke(cli.main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll `condition` every 20 ms; fail after `timeout_s` (every loop in this suite is bounded)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)
