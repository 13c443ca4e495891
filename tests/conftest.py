"""Shared fixtures: a small frozen-time exchange (`sim_config`), served in the test's loop (`sim`) or
from a background thread for synchronous code (`sim_thread`), plus a `FakeClock` for anything that
waits.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from sim import MarketSpec, SimConfig, run_in_thread, running_sim
from sim.server import RunningSim

# A suite started in the background by a shell without job control inherits SIGINT ignored, and
# so would every child process the tests send Ctrl-C to (an ignored signal survives exec, a
# handler does not): with a handler here, the children start with the default and the tests that
# interrupt them test the tool, not how the suite was launched.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

SIM_NOW = datetime(2024, 1, 10, 12, 0, tzinfo=UTC)
SIM_NOW_MS = int(SIM_NOW.timestamp() * 1000)


class FakeClock:
    """A clock tests move by hand: `now()` in epoch seconds, `advance(s)`, and an async `sleep` that
    advances instead of waiting. Callable, so it can be passed wherever a `() -> float` clock goes."""

    def __init__(self, start: float = SIM_NOW.timestamp()) -> None:
        self.t = float(start)
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    __call__ = now

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))


@pytest.fixture(scope="session")
def sim_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One archive cache per test session: each (market, day) file is generated once."""
    return tmp_path_factory.mktemp("sim-cache")


def small_markets() -> list[MarketSpec]:
    return [
        MarketSpec("BTCUSDT", "linear", trades_per_day=2_000, listed=date(2024, 1, 1), rpi_from=date(2024, 1, 8)),
        MarketSpec("ETHUSDT", "linear", trades_per_day=500, base_price=3_000.0, listed=date(2024, 1, 3)),
        MarketSpec("BTCUSD", "inverse", trades_per_day=1_000, listed=date(2024, 1, 1)),
        MarketSpec("BTCUSDT", "spot", trades_per_day=1_000, listed=date(2024, 1, 1), rpi_from=date(2024, 1, 9)),
    ]


@pytest.fixture
def sim_config(sim_cache_dir: Path) -> SimConfig:
    """A small exchange frozen at 2024-01-10 12:00 UTC: archive days 2024-01-01..09 are published."""
    return SimConfig(now_ms=SIM_NOW_MS, markets=small_markets(), cache_dir=sim_cache_dir)


@pytest.fixture
async def sim(sim_config: SimConfig) -> AsyncIterator[RunningSim]:
    async with running_sim(sim_config) as running:
        yield running


@pytest.fixture
def sim_thread(sim_config: SimConfig) -> Iterator[RunningSim]:
    with run_in_thread(sim_config) as running:
        yield running


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def env(sim_thread: RunningSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The CLI's environment against the emulator (tests/cliutil.py `run` takes it)."""
    monkeypatch.chdir(tmp_path)  # no stray .env, and relative defaults land in tmp
    return {"BYBIT_REST_BASE_URL": sim_thread.url, "BYBIT_ARCHIVE_BASE_URL": sim_thread.url,
            "BACKFILL_DB_PATH": str(tmp_path / "cli.duckdb"),
            "BACKFILL_CACHE_DIR": str(tmp_path / "cache"), "BYBIT_BACKFILL_RETRY_BASE": "0.01",
            "BYBIT_API_KEY": "", "BYBIT_API_SECRET": ""}
