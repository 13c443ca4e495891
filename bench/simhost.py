"""The exchange every figure runs against: `sim/` on 127.0.0.1 with 20 ms added latency.

One busy linear market (1.5M trades a day, ~79 MB per gzip day file) frozen at NOW, so all the days
used are published archive days, and fills for two years before NOW. The day files are generated
and cached before anything is timed (`prepare_days`), so no figure pays for generation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sim import MarketSpec, SimConfig, run_in_thread
from sim.archive import ensure_file
from sim.fills import expected_fills
from sim.server import RunningSim

from .util import ROOT

SYMBOL = "BTCUSDT"
CATEGORY = "linear"
BUSY = 1_500_000
FIRST_DAY = date(2024, 1, 1)
NOW = datetime(2024, 3, 1, tzinfo=UTC)
LATENCY_MS = 20.0
API_KEY, API_SECRET = "bench-key", "bench-secret"
DEFAULT_CACHE = ROOT / "bench" / ".cache" / "sim"


@dataclass(frozen=True)
class Scale:
    """Sizes of one bench run (the full run, or `--quick`)."""

    trades_per_day: int = BUSY
    runs: int = 3
    short_runs: int = 5         # the ~3 s single-day figures (busy day, 12 h, warm) get more runs
    export_runs: int = 7        # export and its COPY, alternating in one process
    week_days: int = 7
    scale_days: int = 30
    exec_days: int = 728        # 104 windows of 7 days
    fills_per_day: int = 60     # ~441 fills a window: 5 pages of 100
    big_rows: int = 100_000_000  # the large store one busy day is ingested into (`bench/big.py`)


FULL = Scale()
QUICK = Scale(trades_per_day=20_000, runs=1, short_runs=1, export_runs=3, week_days=3, scale_days=4,
              exec_days=56, fills_per_day=60,
              big_rows=300_000)


def day(n: int) -> date:
    """Day n of the bench (1-based): day(1) is FIRST_DAY."""
    return FIRST_DAY + timedelta(days=n - 1)


def sim_config(scale: Scale, cache_dir: Path = DEFAULT_CACHE) -> SimConfig:
    spec = MarketSpec(SYMBOL, CATEGORY, trades_per_day=scale.trades_per_day, listed=FIRST_DAY)
    return SimConfig(now_ms=int(NOW.timestamp() * 1000), markets=[spec], cache_dir=cache_dir,
                     latency_ms=LATENCY_MS, api_keys={API_KEY: API_SECRET},
                     fills_per_day=scale.fills_per_day, fills_history_days=scale.exec_days + 2)


@dataclass(frozen=True)
class Prepared:
    days: int
    generated: int
    seconds: float
    per_day_s: float | None  # generation time of one day file (None: all were cached)
    total_mb: float


def prepare_days(config: SimConfig, count: int) -> Prepared:
    """Generate (or find cached) the first `count` day files, two at a time (one per core)."""
    spec = config.markets[0]
    started = time.perf_counter()
    timings: list[float] = []

    def one(n: int) -> tuple[Path, bool]:
        t0 = time.perf_counter()
        path, generated = ensure_file(config, spec, day(n))
        if generated:
            timings.append(time.perf_counter() - t0)
        return path, generated

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, range(1, count + 1)))
    seconds = time.perf_counter() - started
    generated = sum(g for _, g in results)
    per_day = sorted(timings)[len(timings) // 2] if timings else None
    total_mb = sum(p.stat().st_size for p, _ in results) / 1e6
    record = Path(config.resolved_cache_dir()) / "generation.json"
    if generated:
        record.write_text(json.dumps({"days": generated, "seconds": seconds, "per_day_s": per_day}))
    return Prepared(count, generated, seconds, per_day, total_mb)


def last_generation(config: SimConfig) -> dict[str, float] | None:
    """How long the last generation into this cache took (for RESULTS.md when all is cached)."""
    try:
        data: dict[str, float] = json.loads((Path(config.resolved_cache_dir()) / "generation.json").read_text())
        return data
    except (OSError, ValueError):
        return None


def day_file(config: SimConfig, n: int) -> Path:
    path, _ = ensure_file(config, config.markets[0], day(n))
    return path


def warm_fills(config: SimConfig, scale: Scale) -> float:
    """Compute the emulator's fills once (they are cached per day), so no crawl pays for it."""
    started = time.perf_counter()
    end_ms = config.market_now_ms()
    expected_fills(config, end_ms - (scale.exec_days + 1) * 86_400_000, end_ms)
    return time.perf_counter() - started


@contextmanager
def serving(config: SimConfig) -> Iterator[RunningSim]:
    """The emulator in a background thread of this (otherwise idle) process."""
    with run_in_thread(config) as running:
        yield running


def tool_env(url: str, **extra: str) -> dict[str, str]:
    """Environment for a `bybit-backfill` run against the emulator."""
    env = {"BYBIT_REST_BASE_URL": url, "BYBIT_ARCHIVE_BASE_URL": url, "BYBIT_API_KEY": API_KEY,
           "BYBIT_API_SECRET": API_SECRET, "BACKFILL_CACHE_ENABLED": "true",
           "BACKFILL_EXPORT_ID": "tick"}
    env.update(extra)
    return env
