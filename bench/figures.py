"""One function per figure of the issue; each runs the tool in fresh processes against the emulator
and returns table rows plus the details RESULTS.md shows.

Every tool run is `bybit-backfill ...` in a new process: wall time is what a user waits (interpreter
start-up included) and peak RSS is that process's own. Runs of the tool and of its floor or peer
are interleaved, so a slow moment of the machine hits both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import simhost
from .big import copy_store, remove_store
from .simhost import CATEGORY, SYMBOL, Scale, day
from .util import CLI, ROOT, Row, Run, fmt_ratio, run, stats

PY = sys.executable


@dataclass
class Context:
    scale: Scale
    url: str
    state: Any  # sim.SimState
    config: Any  # sim.SimConfig
    work: Path
    details: dict[str, list[str]] = field(default_factory=dict)
    facts: dict[str, float] = field(default_factory=dict)

    def fresh(self, name: str) -> Path:
        path = self.work / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def note(self, figure: str, line: str) -> None:
        self.details.setdefault(figure, []).append(line)
        print(f"    {line}", flush=True)


def _refresh(ctx: Context, db: Path, cache: Path, start: str, end: str, *extra: str) -> Run:
    cmd = [*CLI, "refresh", SYMBOL, "--category", CATEGORY, "--start", start, "--end", end,
           "--db", str(db), "--cache-dir", str(cache), "--json", *extra]
    return run(cmd, env=simhost.tool_env(ctx.url), parse_json=True)


def _days_arg(first: int, count: int) -> tuple[str, str]:
    return day(first).isoformat(), (day(first) + timedelta(days=count)).isoformat()


def _check_rows(summary: dict[str, Any], expected: int, what: str) -> None:
    if summary["rows_added"] != expected or summary["days_failed"] or summary["conflicts"]:
        raise RuntimeError(f"{what}: expected {expected} rows added, got {summary}")


# --- busy day ----------------------------------------------------------------------------------------

def busy_day(ctx: Context) -> list[Row]:
    """`refresh` of one busy day into an empty store with export, vs DuckDB csv.gz -> table -> parquet."""
    n = ctx.scale.trades_per_day
    csv_gz = simhost.day_file(ctx.config, 1)
    tool, floor, peer = [], [], []
    for k in range(ctx.scale.short_runs):
        work = ctx.fresh(f"busy-{k}")
        start, end = _days_arg(1, 1)
        # The three alternate, and which goes first rotates, so a slow moment hits each alike.
        for which in _rotated(("tool", "floor", "polars"), k):
            if which == "tool":
                result = _refresh(ctx, work / "store.duckdb", work / "cache", start, end)
                _check_rows(result.data, n, "busy day")
                tool.append(result)
            elif which == "floor":
                floor.append(run([PY, "-m", "bench.floors", "day", str(csv_gz), str(work / "floor")],
                                 parse_json=True))
                shutil.rmtree(work / "floor", ignore_errors=True)
            else:
                peer.append(_peer(ctx, "polars", 1, work / "polars", n))
        shutil.rmtree(work, ignore_errors=True)
    ctx.facts["busy_wall"] = stats([r.wall_s for r in tool]).median
    ctx.facts["busy_inner"] = stats([r.data["elapsed_s"] for r in tool]).median
    wall = stats([r.wall_s for r in tool])
    inner = stats([r.data["elapsed_s"] for r in tool])
    f_wall = stats([r.wall_s for r in floor])
    f_inner = stats([r.data["seconds"] for r in floor])
    ratio = wall.median / f_wall.median
    ctx.note("busy", f"tool `refresh` (process wall): {wall.show()}; inside the process: {inner.show()}; "
                     f"peak RSS {stats([r.rss_mb for r in tool]).show('MB', 0)}")
    ctx.note("busy", f"floor (DuckDB read_csv into a keyless table + COPY to parquet, process wall): "
                     f"{f_wall.show()}, peak RSS {stats([r.rss_mb for r in floor]).show('MB', 0)}; "
                     f"inside: {f_inner.show()} (read "
                     f"{stats([r.data['read_s'] for r in floor]).show()}, COPY "
                     f"{stats([r.data['copy_s'] for r in floor]).show()})")
    ctx.note("busy", f"ratio of process walls {fmt_ratio(ratio)}; of in-process times "
                     f"{fmt_ratio(inner.median / f_inner.median)}")
    p_wall, p_inner = stats([r.wall_s for r in peer]), stats([r.data["seconds"] for r in peer])
    p_ratio = wall.median / p_wall.median
    ctx.note("busy", f"polars peer (download, `read_csv`, `unique` by id, `sort`, `write_parquet`; process "
                     f"wall): {p_wall.show()}, peak RSS {stats([r.rss_mb for r in peer]).show('MB', 0)}; "
                     f"inside: {p_inner.show()}; ratio of process walls {fmt_ratio(p_ratio)}, of in-process "
                     f"times {fmt_ratio(inner.median / p_inner.median)}")
    cpu, f_cpu, p_cpu = (stats([r.cpu_s for r in runs]) for runs in (tool, floor, peer))
    ctx.note("busy", f"CPU seconds (user + system, all threads; what a busy machine distorts least): tool "
                     f"{cpu.show()}, floor {f_cpu.show()}, polars peer {p_cpu.show()}: "
                     f"{fmt_ratio(cpu.median / f_cpu.median)} the floor, {fmt_ratio(cpu.median / p_cpu.median)} "
                     f"the peer")
    return [Row(f"busy day ingest (1 day, {n:,} trades)", "<= 1.3x floor",
                f"{wall.show()} vs floor {f_wall.show()}", fmt_ratio(ratio), ratio <= 1.3),
            Row("busy day vs the polars peer", "<= 1.0x polars peer",
                f"{wall.show()} vs peer {p_wall.show()}", fmt_ratio(p_ratio), p_ratio <= 1.0)]


def _rotated(names: tuple[str, ...], k: int) -> list[str]:
    """`names` starting at the k-th: each goes first in turn."""
    return [names[(k + j) % len(names)] for j in range(len(names))]


def _peer(ctx: Context, name: str, days: int, out: Path, expected: int) -> Run:
    """One run of a peer script (`bench.peers`) over the first `days` days; checks its row count."""
    result = run([PY, "-m", "bench.peers", name, ctx.url, SYMBOL, day(1).isoformat(), str(days), str(out)],
                 parse_json=True)
    if result.data["rows"] != expected:
        raise RuntimeError(f"{name} peer: expected {expected} rows, got {result.data}")
    shutil.rmtree(out, ignore_errors=True)
    return result


# --- week ----------------------------------------------------------------------------------------------

def week(ctx: Context) -> list[Row]:
    days = ctx.scale.week_days
    rows_expected = days * ctx.scale.trades_per_day
    tool, probes = [], []
    peers: dict[str, list[Run]] = {"pandas": [], "polars": []}
    for k in range(ctx.scale.runs):
        work = ctx.fresh(f"week-{k}")
        start, end = _days_arg(1, days)
        for which in _rotated(("tool", "pandas", "polars"), k):
            if which != "tool":
                peers[which].append(_peer(ctx, which, days, work / which, rows_expected))
                continue
            # A reader beside the refresh: the longest it waits to get into the store (issue: readers
            # and writers). It runs beside every run, so each of them pays for it alike.
            stop = work / "stop"
            reader = subprocess.Popen([PY, "-m", "bench.reader_probe", str(work / "store.duckdb"), str(stop)],
                                      cwd=ROOT, stdout=subprocess.PIPE, text=True)
            try:
                result = _refresh(ctx, work / "store.duckdb", work / "cache", start, end)
            finally:
                stop.touch()
                out, _ = reader.communicate(timeout=60)
            probes.append(json.loads(out.strip().splitlines()[-1]))
            _check_rows(result.data, rows_expected, "week")
            tool.append(result)
        shutil.rmtree(work, ignore_errors=True)
    wall, rss = stats([r.wall_s for r in tool]), stats([r.rss_mb for r in tool])
    p_wall, p_rss = stats([r.wall_s for r in peers["pandas"]]), stats([r.rss_mb for r in peers["pandas"]])
    q_wall, q_rss = stats([r.wall_s for r in peers["polars"]]), stats([r.rss_mb for r in peers["polars"]])
    time_ratio = wall.median / p_wall.median
    rss_ratio = rss.high / p_rss.median
    q_time_ratio = wall.median / q_wall.median
    q_rss_ratio = rss.high / q_rss.median
    ctx.facts["week_per_day"] = wall.median / days
    ctx.note("week", f"tool `refresh` of {days} days: {wall.show()}, peak RSS {rss.show('MB', 0)}")
    ctx.note("week", f"polars peer: {q_wall.show()}, peak RSS {q_rss.show('MB', 0)}")
    ctx.note("week", f"pandas peer: {p_wall.show()}, peak RSS {p_rss.show('MB', 0)}")
    cpu, p_cpu, q_cpu = (stats([r.cpu_s for r in runs]) for runs in (tool, peers["pandas"], peers["polars"]))
    ctx.note("week", f"CPU seconds (user + system, all threads): tool {cpu.show()}, polars peer "
                     f"{q_cpu.show()} ({fmt_ratio(cpu.median / q_cpu.median)}), pandas peer {p_cpu.show()} "
                     f"({fmt_ratio(cpu.median / p_cpu.median)})")
    longest = max(p["max_wait_s"] for p in probes)
    ctx.note("week", "a reader beside each refresh: " + ", ".join(
        f"{p['opens']} opens, longest wait {p['max_wait_s']:.2f} s (p99 {p['p99_wait_s']:.2f} s)" for p in probes))
    return [
        Row(f"week ({days} busy days): longest reader wait", "<= 2 s (one day's commit)",
            f"{longest:.2f} s over {sum(p['opens'] for p in probes)} opens", f"{longest:.2f} s", longest <= 2.0),
        Row(f"week ({days} busy days): time vs polars", "<= 1.0x polars peer",
            f"{wall.show()} vs peer {q_wall.show()}", fmt_ratio(q_time_ratio), q_time_ratio <= 1.0),
        Row(f"week ({days} busy days): peak RSS vs polars", "<= the polars peer's",
            f"max {rss.high:.0f} MB vs peer median {q_rss.median:.0f} MB", fmt_ratio(q_rss_ratio),
            q_rss_ratio <= 1.0),
        Row(f"week ({days} busy days): time vs pandas", "reported (was <= 0.7x; issue 18 sets polars)",
            f"{wall.show()} vs peer {p_wall.show()}", fmt_ratio(time_ratio), None),
        Row(f"week ({days} busy days): peak RSS vs pandas", "reported (was <= 1/3; issue 18 sets polars)",
            f"max {rss.high:.0f} MB vs peer median {p_rss.median:.0f} MB", fmt_ratio(rss_ratio), None),
    ]


# --- the guide's 12 hours, then the warm cache -------------------------------------------------------

def twelve_hours(ctx: Context) -> list[Row]:
    start, end = f"{day(1).isoformat()}T00:00", f"{day(1).isoformat()}T12:00"
    cold, warm, version, warm_requests = [], [], [], []
    for k in range(ctx.scale.short_runs):
        work = ctx.fresh(f"12h-{k}")
        cold.append(_refresh(ctx, work / "store.duckdb", work / "cache", start, end))
        before = len(ctx.state.log)
        again = _refresh(ctx, work / "store.duckdb", work / "cache", start, end)
        warm_requests.append(len(ctx.state.log) - before + again.data["requests"])
        warm.append(again)
        version.append(run([*CLI, "--version"]))
        shutil.rmtree(work, ignore_errors=True)
    c_wall = stats([r.wall_s for r in cold])
    w_wall, v_wall = stats([r.wall_s for r in warm]), stats([r.wall_s for r in version])
    extra = w_wall.median - v_wall.median
    ctx.note("12h", f"cold `refresh --start {start} --end {end}` (process wall): {c_wall.show()}; inside: "
                    f"{stats([r.data['elapsed_s'] for r in cold]).show()}; the whole archive day is "
                    f"ingested ({cold[0].data['rows_added']:,} rows) because coverage is whole days")
    ctx.note("warm", f"same command again: {w_wall.show()}; `bybit-backfill --version`: {v_wall.show()}; "
                     f"requests seen by the emulator and counted by the tool: {warm_requests}")
    return [
        Row("the guide's 12 h (cold store)", "<= 3 s wall (guide: 8-12 s)", c_wall.show(),
            f"{c_wall.median / 3.0:.2f}x of 3 s", c_wall.median <= 3.0, key="12h"),
        Row("warm cache (same command again)", "0 requests; <= +0.3 s over --version",
            f"{w_wall.show()}, {max(warm_requests)} requests", f"+{extra:.2f} s",
            max(warm_requests) == 0 and extra <= 0.3, key="warm"),
    ]


# --- scale ---------------------------------------------------------------------------------------------

# The README's analyst example: daily VWAP and taker-buy share, from the `daily` view.
VWAP_QUERY = "SELECT day, trades, vwap, taker_buy_volume / volume AS taker_buy_share FROM daily ORDER BY day"


def scale(ctx: Context) -> list[Row]:
    n = ctx.scale.scale_days
    per_day = ctx.scale.trades_per_day
    work = ctx.fresh("scale")
    db, cache = work / "store.duckdb", work / "cache"
    first: list[Run] = []
    for k in range(ctx.scale.runs):
        target = db if k == ctx.scale.runs - 1 else work / f"first-{k}.duckdb"
        first.append(_refresh(ctx, target, work / f"cache-{k}", *_days_arg(1, 1)))
        if target != db:
            remove_store(target)
    _check_rows(first[-1].data, per_day, "scale day 1")
    middle = _refresh(ctx, db, cache, *_days_arg(2, n - 2))
    _check_rows(middle.data, (n - 2) * per_day, "scale middle days")
    last: list[Run] = []
    keep = work / f"store-{n - 1}-days.duckdb"
    copy_store(db, keep)
    for k in range(ctx.scale.runs):
        copy_store(keep, db)
        last.append(_refresh(ctx, db, cache, *_days_arg(n, 1)))
        _check_rows(last[-1].data, per_day, f"scale day {n}")
        if k != ctx.scale.runs - 1:
            remove_store(db)
    remove_store(keep)
    rows_total = n * per_day
    d1, dn = stats([r.wall_s for r in first]), stats([r.wall_s for r in last])
    growth = dn.median / d1.median
    peak = max(r.rss_mb for r in [*first, middle, *last])
    ctx.note("scale", f"day 1 into an empty store: {d1.show()}; days 2-{n - 1} in one `refresh`: "
                      f"{middle.wall_s:.1f} s ({middle.wall_s / (n - 2):.2f} s/day), peak RSS "
                      f"{middle.rss_mb:.0f} MB; day {n} into the {n - 1}-day store: {dn.show()}")
    d1_in, dn_in = stats([r.data["elapsed_s"] for r in first]), stats([r.data["elapsed_s"] for r in last])
    ctx.note("scale", f"inside the process (no start-up): day 1 {d1_in.show()}, day {n} {dn_in.show()}: "
                      f"{fmt_ratio(dn_in.median / d1_in.median)}; each day's ids are matched against all "
                      f"{(n - 1) * per_day:,} stored rows of the market (global uniqueness), not a time window")
    ctx.note("scale", f"store file: {db.stat().st_size / 1e9:.2f} GB for {rows_total:,} rows")
    queries = {
        "status": [*CLI, "status", SYMBOL, "--db", str(db)],
        "gaps": [*CLI, "gaps", SYMBOL, "--start", day(1).isoformat(),
                 "--end", (day(n) + timedelta(days=1)).isoformat(), "--db", str(db)],
        "per-day VWAP": [*CLI, "sql", VWAP_QUERY, "--db", str(db)],
    }
    version = stats([run([*CLI, "--version"]).wall_s for _ in range(ctx.scale.runs)])
    query_rows = []
    for name, cmd in queries.items():
        walls = stats([run(cmd).wall_s for _ in range(ctx.scale.runs)])
        ctx.note("scale", f"`{name}` at {rows_total:,} rows: {walls.show()} (process wall; "
                          f"`--version` alone {version.show()})")
        query_rows.append(Row(f"scale: `{name}` at {_count(rows_total)} rows", "<= 1 s", walls.show(),
                              f"{walls.median:.2f} s", walls.median <= 1.0))
    shutil.rmtree(work, ignore_errors=True)
    return [
        Row(f"scale: day {n} vs day 1 ingest (global uniqueness)", "<= 1.25x", f"day {n} {dn.show()} vs day 1 {d1.show()}",
            fmt_ratio(growth), growth <= 1.25),
        Row(f"scale: peak RSS over {n} days", "<= 2 GB", f"{peak:.0f} MB", f"{peak / 2048:.2f}x of 2 GB",
            peak <= 2048),
        *query_rows,
    ]


# --- 100M rows -------------------------------------------------------------------------------------------

def big(ctx: Context) -> list[Row]:
    """One busy day's `refresh` (with export) into a ~100M-row store of the same market vs into an
    empty store, alternating; the large store is built once in SQL and cached (`bench/big.py`)."""
    from store.schema import SCHEMA_VERSION

    from .big import cached_store

    rows = ctx.scale.big_rows
    per_day = ctx.scale.trades_per_day
    cache = Path(ctx.config.resolved_cache_dir()).parent
    cache.mkdir(parents=True, exist_ok=True)
    source, built = cached_store(cache, rows, SCHEMA_VERSION)
    size_gb = source.stat().st_size / 1e9
    how = (f"built now in {built['seconds']:.0f} s" if built else "cached from an earlier run")
    ctx.note("big", f"the large store: {rows:,} synthetic rows of {SYMBOL} in the days before day 1, inserted "
                    f"by one SQL `INSERT ... SELECT FROM range()` into the tool's schema (random UUID ids, a "
                    f"63-bit hash of each as tick id; see bench/big.py), {size_gb:.2f} GB, {how}; copied "
                    f"afresh (untimed) before each run")
    into_big: list[Run] = []
    into_empty: list[Run] = []
    for k in range(ctx.scale.runs):
        work = ctx.fresh(f"big-{k}")
        for which in _rotated(("big", "empty"), k):
            db = work / f"{which}.duckdb"
            if which == "big":
                copy_store(source, db)
            result = _refresh(ctx, db, work / f"cache-{which}", *_days_arg(1, 1))
            _check_rows(result.data, per_day, f"day 1 into the {which} store")
            (into_big if which == "big" else into_empty).append(result)
            remove_store(db)
        shutil.rmtree(work, ignore_errors=True)
    b_wall, e_wall = stats([r.wall_s for r in into_big]), stats([r.wall_s for r in into_empty])
    b_in = stats([r.data["elapsed_s"] for r in into_big])
    e_in = stats([r.data["elapsed_s"] for r in into_empty])
    ratio = b_wall.median / e_wall.median
    ctx.note("big", f"day 1 ({per_day:,} trades) into the {_count(rows)}-row store: {b_wall.show()} (inside "
                    f"{b_in.show()}), peak RSS {stats([r.rss_mb for r in into_big]).show('MB', 0)}; into an "
                    f"empty store: {e_wall.show()} (inside {e_in.show()}), peak RSS "
                    f"{stats([r.rss_mb for r in into_empty]).show('MB', 0)}; in-process ratio "
                    f"{fmt_ratio(b_in.median / e_in.median)}")
    return [Row(f"ingest at {_count(rows)} rows vs an empty store (1 busy day, global uniqueness)", "<= 1.25x",
                f"{b_wall.show()} vs empty {e_wall.show()}", fmt_ratio(ratio), ratio <= 1.25)]


def _count(n: int) -> str:
    return f"{n / 1e6:.0f}M" if n >= 1_000_000 else f"{n / 1e3:.0f}k"


# --- executions ----------------------------------------------------------------------------------------

def executions(ctx: Context) -> list[Row]:
    end_ms = ctx.config.market_now_ms()
    start_ms = end_ms - ctx.scale.exec_days * 86_400_000
    start, end = _iso_ms(start_ms), _iso_ms(end_ms)
    windows = ctx.scale.exec_days // 7
    limit = ctx.config.endpoint_limits["/v5/execution/list"]
    ours, seq, limited, banned = [], [], [], []
    for k in range(ctx.scale.runs):
        work = ctx.fresh(f"exec-{k}")
        before = (ctx.state.rate_limited, ctx.state.forbidden)
        result = run([*CLI, "executions", "--start", start, "--end", end, "--db", str(work / "x.duckdb"),
                      "--json"], env=simhost.tool_env(ctx.url), parse_json=True)
        limited.append(ctx.state.rate_limited - before[0])
        banned.append(ctx.state.forbidden - before[1])
        ours.append(result)
        seq.append(run([PY, "-m", "bench.peers", "sequential", ctx.url, str(start_ms), str(end_ms)],
                       env=simhost.tool_env(ctx.url), parse_json=True))
        shutil.rmtree(work, ignore_errors=True)
    if any(r.data["windows_fetched"] != windows for r in ours):
        raise RuntimeError(f"executions: expected {windows} windows, got {[r.data for r in ours]}")
    rate = stats([r.data["requests"] / r.data["elapsed_s"] for r in ours])
    crawl = stats([r.data["elapsed_s"] for r in ours])
    s_time = stats([r.data["seconds"] for r in seq])
    s_rate = stats([r.data["rate"] for r in seq])
    speedup = s_time.median / crawl.median
    share = rate.median / limit
    ctx.note("executions", f"{windows} windows, {ours[0].data['requests']} requests, "
                           f"{ours[0].data['rows_added']:,} fills; crawl {crawl.show()} at "
                           f"{rate.show('req/s', 1)} of {limit}/s allowed; process wall "
                           f"{stats([r.wall_s for r in ours]).show()}")
    ctx.note("executions", f"10006 answers per run: {limited}; 403 answers per run: {banned}")
    ctx.note("executions", f"sequential signed loop (pybit-like): {s_time.show()} at {s_rate.show('req/s', 1)}, "
                           f"{seq[0].data['fills']:,} fills; speed-up {speedup:.2f}x")
    return [
        Row(f"executions: request rate ({windows} windows)", f">= 90% of {limit}/s; 0x 10006, 0x 403",
            f"{rate.show('req/s', 1)}; 10006: {sum(limited)}, 403: {sum(banned)}", f"{share:.0%} of allowed",
            share >= 0.9 and sum(limited) == 0 and sum(banned) == 0),
        Row("executions: vs sequential signed loop", "speed-up reported",
            f"{crawl.show()} vs {s_time.show()}", f"{speedup:.2f}x faster", None),
    ]


def _iso_ms(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


# --- export --------------------------------------------------------------------------------------------

def export(ctx: Context) -> list[Row]:
    work = ctx.fresh("export")
    db = work / "store.duckdb"
    _refresh(ctx, db, work / "cache", *_days_arg(1, 1), "--no-export")
    result = run([PY, "-m", "bench.floors", "export", str(db), SYMBOL, CATEGORY, day(1).isoformat(),
                  str(work / "out"), str(ctx.scale.export_runs)], parse_json=True)
    ours, copy = stats(result.data["ours"]), stats(result.data["copy"])
    ratio = ours.median / copy.median
    ctx.note("export", f"`export_days` of one day: {ours.show()}; DuckDB `COPY (same rows, same order) TO "
                       f"parquet` in the same process: {copy.show()}")
    shutil.rmtree(work, ignore_errors=True)
    return [Row("export (1 busy day to parquet)", "<= 1.2x DuckDB COPY", f"{ours.show()} vs COPY {copy.show()}",
                fmt_ratio(ratio), ratio <= 1.2)]


# --- the emulator is not the bottleneck ----------------------------------------------------------------

def serve(ctx: Context) -> list[Row]:
    spec = ctx.config.markets[0]
    from sim.archive import file_name, folder

    url = f"{ctx.url}{folder(spec)}/{spec.symbol}/{file_name(spec, day(1))}"
    result = run([PY, "-m", "bench.floors", "serve", url, str(max(3, ctx.scale.runs))], parse_json=True)
    secs = stats(result.data["seconds"])
    mb = result.data["bytes"] / 1e6
    ctx.facts["serve_s"] = secs.median
    ctx.note("serve", f"the emulator alone serves one day file ({mb:.1f} MB, 20 ms latency included) in "
                      f"{secs.show()} = {mb / secs.median:.0f} MB/s")
    consume = ctx.facts.get("busy_inner") or ctx.facts.get("week_per_day")
    if consume:
        ctx.note("serve", f"the tool consumes a day in {consume:.2f} s: the emulator is "
                          f"{consume / secs.median:.0f}x faster than its consumer")
    return []


def sql_csv(ctx: Context) -> list[Row]:
    """`sql --format csv` of 1M rows against DuckDB's own COPY of the same query (`bench/sql_csv.py`,
    which also runs alone): both in one fresh process, alternating."""
    rows = 1_000_000 if ctx.scale.trades_per_day >= 1_000_000 else 50_000  # --quick: a smoke run
    result = run([PY, "-m", "bench.sql_csv", str(rows), "--json"], parse_json=True)
    copy, ours = stats(result.data["copy_s"]), stats(result.data["stream_s"])
    ratio = ours.median / copy.median
    ctx.note("sql", f"{rows:,} synthetic trades in a fresh store; `COPY (query) TO 'file.csv' (HEADER)` on a "
                    f"plain read-only connection: {copy.show()} ({result.data['copy_bytes'] / 1e6:.0f} MB); "
                    f"`store.sql_output.stream_sql` (what `sql --format csv` runs, on the sandboxed "
                    f"connection): {ours.show()} ({result.data['stream_bytes'] / 1e6:.0f} MB); peak RSS of a "
                    f"fresh process streaming it: {result.data['rss_mb']:.0f} MB")
    return [Row(f"`sql --format csv` of {rows:,} rows", "<= 1.5x DuckDB COPY to CSV",
                f"{ours.show()} vs COPY {copy.show()}", fmt_ratio(ratio), ratio <= 1.5)]


def market(ctx: Context) -> list[Row]:
    """200 small symbols x 1 day vs DuckDB's read_csv of the 200 files; the whole-market refresh
    (`bench/market.py`, which also runs alone)."""
    from .market import run_figure

    return run_figure(ctx)


FIGURES: dict[str, Callable[[Context], list[Row]]] = {
    "busy": busy_day,
    "export": export,
    "12h": twelve_hours,
    "week": week,
    "executions": executions,
    "scale": scale,
    "market": market,
    "sql": sql_csv,
    "big": big,
}
ROOT_DIR = ROOT
