"""`bybit-backfill demo`: the whole tool, offline, in one command.

It starts the emulator in-process on 127.0.0.1, refreshes a few days of a busy symbol into a demo
store (archive days plus the REST tail of "today"), exports the parquet cache, runs one analyst
query and prints what to try next. An app like the CLI, beside both: it imports the library and the
emulator like any user would, while the library never imports `sim` and `sim` never imports `store`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sim.config import MarketSpec, SimConfig
from sim.server import run_in_thread

DEMO_SYMBOL = "BTCUSDT"
DEMO_QUERY = """SELECT day, trades, round(open, 1) AS open, round(high, 1) AS high, round(low, 1) AS low,
       round(close, 1) AS close, round(volume, 3) AS volume, round(vwap, 2) AS vwap
FROM daily WHERE category = 'linear' AND symbol = 'BTCUSDT' ORDER BY day"""


def demo_config(days: int, trades_per_day: int, now: datetime) -> SimConfig:
    """A market whose "now" is the real now, so `days` whole days are published before today."""
    today = now.date()
    market = MarketSpec(DEMO_SYMBOL, "linear", trades_per_day=trades_per_day,
                        listed=today - timedelta(days=days + 30))
    return SimConfig(now_ms=int(now.timestamp() * 1000), markets=[market])


def _files(directory: Path) -> dict[str, tuple[int, int]]:
    """Visible day files with (mtime_ns, size): what a run wrote is what changed."""
    if not directory.is_dir():
        return {}
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in directory.glob("backfill_*.parquet")}


def run_demo(directory: Path, *, days: int = 3, trades_per_day: int = 200_000,
             echo: Callable[[str], None] = print) -> None:
    from store import Settings
    from store.orchestrator import refresh
    from store.report import render_table, run_sql
    from store.schema import open_store
    from store.timeutil import day_start_us

    now = datetime.now(UTC).replace(microsecond=0)
    today = now.date()
    config = demo_config(days, trades_per_day, now)
    directory.mkdir(parents=True, exist_ok=True)
    db_path, cache_dir = directory / "demo.duckdb", directory / "backfill_cache"
    echo(f"Starting the local Bybit emulator (seeded, {trades_per_day:,} trades/day)...")
    began = time.monotonic()
    with run_in_thread(config) as sim:
        echo(f"  emulator at {sim.url}; archive files generated in {time.monotonic() - began:.1f} s")
        settings = Settings(bybit_rest_base_url=sim.url, bybit_archive_base_url=sim.url,
                            backfill_db_path=db_path, backfill_cache_dir=cache_dir,
                            _env_file=None)
        start_us = day_start_us(today - timedelta(days=days))
        end_us = int(config.now_ms or 0) * 1000
        echo(f"Refreshing {DEMO_SYMBOL} from {today - timedelta(days=days)} to now "
             f"({days} archive days + today's REST tail) into {db_path}...")
        before = _files(cache_dir)
        with open_store(db_path) as store:
            summary = asyncio.run(refresh(store, settings.fetch_config(), DEMO_SYMBOL, start_us, end_us,
                                          command="demo", **settings.refresh_arguments()))
    echo(f"  {summary.rows_added:,} rows added, {summary.duplicates_skipped:,} duplicates skipped, "
         f"{summary.requests} requests, {summary.elapsed_s:.1f} s")
    for gap in summary.gaps:
        echo(f"  gap {gap.start:%Y-%m-%d %H:%M:%S} .. {gap.end:%Y-%m-%d %H:%M:%S} UTC: {gap.reason}")
    after = _files(cache_dir)
    written = sorted(name for name, stamp in after.items() if before.get(name) != stamp)
    kept = sorted(set(after) - set(written))
    echo(f"Parquet cache in {cache_dir}: {len(written)} files written"
         + (f" ({', '.join(written)})" if written else "")
         + (f", {len(kept)} already up to date ({', '.join(kept)})" if kept else ""))
    echo("Analyst query (the `daily` view):")
    names, rows = run_sql(db_path, DEMO_QUERY)
    echo(render_table(names, rows, indent="  "))
    echo("Try next:")
    echo(f"  bybit-backfill status --db {db_path}")
    echo(f"  bybit-backfill gaps {DEMO_SYMBOL} --db {db_path} --days {days + 1}")
    echo(f"  bybit-backfill sql \"SELECT side, count(*), sum(qty) FROM trades WHERE category = 'linear' AND symbol = 'BTCUSDT' GROUP BY side\" --db {db_path}")
    echo(f"  bybit-backfill verify --db {db_path}")
