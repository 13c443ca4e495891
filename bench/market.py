"""Many small symbols: `refresh --all` of 200 symbols x 1 day vs DuckDB reading the same 200 files.

    python -m bench.market                 # the figure alone: 200 symbols x 3,000 trades, 3 runs
    python -m bench.market --symbols 50 --runs 1
    python -m bench --only market          # the same, inside the whole bench

A busy symbol's day is one big file, where the tool's per-file costs (an index request, a download,
a transaction with its coverage row and day summary, the gaps recorded) vanish; a whole market is
mostly small symbols, where they could dominate. So the floor is DuckDB reading the same 200 local
`.csv.gz` files in one `read_csv([...])` into a keyless table (no download, no dedup, no coverage),
and the goal is <= 1.5x of it. The tool runs against the emulator with the bench's 20 ms of latency
per request, as every figure does. The whole-market refresh (3 days of every symbol, with the
daily parquet export into `cache/{symbol}` and the lake) is reported beside it, as are the symbol
concurrencies tried.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sim import MarketSpec, SimConfig
from sim.archive import ensure_file

from . import simhost
from .util import ROOT, Row, Run, fmt_ratio, run, stats

PY = sys.executable
# This checkout's CLI, run from the repository (`run` sets the cwd): the installed console script
# may belong to another checkout.
CLI = [PY, "-c", "import cli; cli.run()"]
SYMBOLS = 200
TRADES = 3_000
WHOLE_DAYS = 3
CONCURRENCIES = (4, 16, 32, 64)  # 32 is the default; 1 took 22 s a run and was never the best


def market_config(symbols: int, trades: int, cache_dir: Path = simhost.DEFAULT_CACHE) -> SimConfig:
    markets = [MarketSpec(f"M{k:03d}USDT", "linear", trades_per_day=trades + 7 * k,
                          base_price=10.0 + k, listed=simhost.FIRST_DAY) for k in range(symbols)]
    return replace(simhost.sim_config(simhost.FULL, cache_dir), markets=markets)


def prepare(config: SimConfig, days: int) -> list[Path]:
    """Generate (or find cached) every symbol's first `days` files before anything is timed."""
    jobs = [(spec, simhost.day(n)) for spec in config.markets for n in range(1, days + 1)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        paths = list(pool.map(lambda job: ensure_file(config, job[0], job[1])[0], jobs))
    return paths


def floor(files: list[str], work: Path) -> dict[str, object]:
    """DuckDB alone: the same files in one read_csv into a keyless table of a fresh database."""
    import duckdb

    work.mkdir(parents=True, exist_ok=True)
    db = work / "floor.duckdb"
    db.unlink(missing_ok=True)
    started = time.perf_counter()
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE trades AS SELECT * FROM read_csv(?)", [files])
    rows = con.execute("SELECT count(*) FROM trades").fetchone()[0]  # type: ignore[index]
    con.close()
    return {"seconds": time.perf_counter() - started, "rows": rows}


def _refresh_all(url: str, db: Path, first: date, days: int, concurrency: int, *extra: str) -> Run:
    cmd = [*CLI, "refresh", "--all", "--start", first.isoformat(),
           "--end", (first + timedelta(days=days)).isoformat(), "--db", str(db), "--json",
           "--concurrency", str(concurrency), *extra]
    result = run(cmd, env=simhost.tool_env(url), parse_json=True)
    data = result.data
    if any(s["days_failed"] or s["error"] for s in data["symbols"]):
        raise RuntimeError(f"refresh --all failed for some symbols: {data['symbols'][:3]}")
    return result


def figure(notes: list[str], *, symbols: int = SYMBOLS, trades: int = TRADES, runs: int = 3,
           work: Path | None = None, cache_dir: Path = simhost.DEFAULT_CACHE) -> list[Row]:
    def note(line: str) -> None:
        notes.append(line)
        print(f"    {line}", flush=True)

    work = work or ROOT / "bench" / ".cache" / "work-market"
    shutil.rmtree(work, ignore_errors=True)
    config = market_config(symbols, trades, cache_dir)
    began = time.perf_counter()
    paths = prepare(config, WHOLE_DAYS)
    day_one = [str(p) for p in paths[::WHOLE_DAYS]]
    expected = sum(s.trades_per_day for s in config.markets)
    note(f"{symbols} symbols x {WHOLE_DAYS} days ({len(paths)} files, "
         f"{sum(p.stat().st_size for p in paths) / 1e6:.0f} MB) ready in {time.perf_counter() - began:.0f} s")
    rows: list[Row] = []
    with simhost.serving(config) as sim:
        tool: dict[int, list[Run]] = {c: [] for c in CONCURRENCIES}
        floors: list[Run] = []
        for k in range(runs):
            for c in CONCURRENCIES:
                db = work / f"small-{k}-{c}.duckdb"
                result = _refresh_all(sim.url, db, simhost.day(1), 1, c, "--no-export")
                if result.data["rows_added"] != expected:
                    raise RuntimeError(f"expected {expected} rows, got {result.data['rows_added']}")
                tool[c].append(result)
                db.unlink(missing_ok=True)
            floors.append(run([PY, "-m", "bench.market", "floor", str(work / "floor"), *day_one],
                              parse_json=True))
        f_wall = stats([r.wall_s for r in floors])
        f_inner = stats([r.data["seconds"] for r in floors])
        for c in CONCURRENCIES:
            wall = stats([r.wall_s for r in tool[c]])
            inner = stats([r.data["elapsed_s"] for r in tool[c]])
            note(f"`refresh --all` of {symbols} symbols x 1 day ({expected:,} trades), --concurrency {c}: "
                 f"process wall {wall.show()}, inside {inner.show()}, "
                 f"{tool[c][0].data['requests']} requests; ratio to the floor {fmt_ratio(wall.median / f_wall.median)}")
        best = min(CONCURRENCIES, key=lambda c: stats([r.wall_s for r in tool[c]]).median)
        wall = stats([r.wall_s for r in tool[best]])
        note(f"floor: DuckDB `read_csv` of the same {symbols} local files in one call, process wall "
             f"{f_wall.show()}, inside {f_inner.show()}")
        ratio = wall.median / f_wall.median
        rows.append(Row(f"{symbols} small symbols x 1 day ({expected:,} trades), `refresh --all`",
                        f"<= 1.5x DuckDB read_csv of the {symbols} files", f"{wall.show()} (--concurrency {best}) "
                        f"vs floor {f_wall.show()}", fmt_ratio(ratio), ratio <= 1.5))
        whole = _refresh_all(sim.url, work / "whole.duckdb", simhost.day(1), WHOLE_DAYS, best,
                             "--cache-dir", str(work / "cache" / "{symbol}"), "--lake", str(work / "lake"))
        data = whole.data
        lake = data["lake"] or {}
        note(f"whole market: `refresh --all` of {symbols} symbols x {WHOLE_DAYS} days with the parquet export "
             f"and --lake: {whole.wall_s:.2f} s wall, {data['rows_added']:,} rows "
             f"({data['rows_added'] / whole.wall_s:,.0f} rows/s), {data['requests']} requests, "
             f"{len(lake.get('written', []))} lake partitions, peak RSS {whole.rss_mb:.0f} MB")
        rows.append(Row(f"whole-market refresh ({symbols} symbols x {WHOLE_DAYS} days, export + lake)", "-",
                        f"{whole.wall_s:.2f} s, {data['rows_added'] / whole.wall_s:,.0f} rows/s", "-", None))
    shutil.rmtree(work, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "floor":
        print(json.dumps(floor(args[2:], Path(args[1]))))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.market", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=SYMBOLS)
    parser.add_argument("--trades", type=int, default=TRADES)
    parser.add_argument("--runs", type=int, default=3)
    parsed = parser.parse_args(args)
    notes: list[str] = []
    rows = figure(notes, symbols=parsed.symbols, trades=parsed.trades, runs=parsed.runs)
    for row in rows:
        print(f"{row.figure}: {row.measured}  ratio {row.ratio}  goal {row.goal}  {row.verdict}")
    return 0 if all(r.ok is not False for r in rows) else 1


def run_figure(ctx: Any) -> list[Row]:
    """The `market` figure of `python -m bench` (its own emulator: 200 markets, not the busy one)."""
    notes = ctx.details.setdefault("market", [])
    runs = 1 if ctx.scale.runs == 1 else 3
    symbols = 20 if ctx.scale.runs == 1 else SYMBOLS
    return figure(notes, symbols=symbols, runs=runs, work=ctx.work / "market",
                  cache_dir=Path(ctx.config.resolved_cache_dir()))


if __name__ == "__main__":
    sys.exit(main())
