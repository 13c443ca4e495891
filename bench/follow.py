"""`python -m bench.follow`: freshness, CPU share and RSS of `bybit-backfill follow` on a busy symbol.

The emulator (a thread of this process) runs its market on the wall clock with a busy BTCUSDT
(1.5M trades a day, about 17 a second, as Bybit's busiest days); the follower is a child process,
so its CPU and RSS are its own (read from /proc). Every 0.25 s it samples:

* freshness: wall clock minus the newest trade the store holds (the follower's state file is
  rewritten right after each commit, so it names the newest committed trade);
* CPU: the child's user + system time over the wall time since the first commit;
* RSS: the child's resident set.

    python -m bench.follow --seconds 600     # the issue's 10-minute run
    python -m bench.follow --seconds 60      # a quick look

Goals (issue 14): freshness p99 <= 1 s; RSS flat (< 200 MB growth). Results go to bench/FOLLOW.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fetch.market_span import Market
from sim import MarketClock, MarketSpec, SimConfig, run_in_thread
from sim.market import expected_trades
from tests.crashutil import start_cli

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def prefill(config: SimConfig, db: Path, hours: float) -> int:
    """Store the `hours` before now as if followed already (source 'ws'): what a commit costs late in
    a busy day, when the day's summary and the ingest's id match span a day of rows."""
    import pyarrow as pa

    from fetch.models import TRADE_SCHEMA
    from store.ingest import ingest_batch
    from store.schema import open_store

    now_ms = config.market_now_ms()
    frozen = SimConfig(seed=config.seed, markets=config.markets, now_ms=now_ms - 30_000)
    rows = 0
    for day in sorted({datetime.fromtimestamp((now_ms - hours * 3_600_000) / 1000, UTC).date(),
                       datetime.fromtimestamp(now_ms / 1000, UTC).date()}):
        table = expected_trades(frozen, "BTCUSDT", day, "linear")
        keep = [k for k, t in enumerate(table.column("time_us").to_pylist()) if t >= (now_ms - hours * 3_600_000) * 1000]
        table = table.take(keep)
        n = table.num_rows
        batch = pa.table({"category": ["linear"] * n, "symbol": ["BTCUSDT"] * n, "trade_id": table.column("exec_id"),
                          "time_us": table.column("time_us"), "price": table.column("price"),
                          "qty": table.column("qty"), "side": table.column("side"),
                          "is_block_trade": pa.nulls(n, pa.bool_()), "source": ["ws"] * n}, schema=TRADE_SCHEMA)
        with open_store(db) as store, store.atomic():
            rows += ingest_batch(store, batch, market=Market("linear", "BTCUSDT")).added
    return rows


def run(seconds: float, trades_per_day: int, commit_every: float, work: Path,
        prefill_hours: float = 0.0) -> dict[str, float]:
    config = SimConfig(markets=[MarketSpec("BTCUSDT", "linear", trades_per_day=trades_per_day,
                                           listed=date(2020, 1, 1))],
                       cache_dir=work / "sim", clock=MarketClock(), ws_tick_ms=20)
    db, state = work / "follow.duckdb", work / "follow.duckdb.follow" / "linear.BTCUSDT.json"
    prefilled = prefill(config, db, prefill_hours) if prefill_hours > 0 else 0
    with run_in_thread(config) as sim:
        child = start_cli(sim.url, db, work / "cache", ["follow", "BTCUSDT", "--commit-every", str(commit_every),
                                                        "--export-every", "60"],
                          BYBIT_WS_BASE_URL=sim.url.replace("http://", "ws://"))
        try:
            deadline = time.monotonic() + 120
            while not state.exists():
                if time.monotonic() > deadline or child.poll() is not None:
                    raise SystemExit("the follower never committed")
                time.sleep(0.1)
            began, cpu0, rss0 = time.monotonic(), cpu_seconds(child.pid), rss_mb(child.pid)
            fresh, rss = [], [rss0]
            while time.monotonic() - began < seconds:
                time.sleep(0.25)
                try:
                    newest_us = json.loads(state.read_text())["last_trade_us"]
                except (OSError, ValueError):
                    continue
                fresh.append(time.time() - newest_us / 1e6)
                rss.append(rss_mb(child.pid))
            cpu = (cpu_seconds(child.pid) - cpu0) / (time.monotonic() - began)
        finally:
            child.send_signal(signal.SIGTERM)
            child.wait(timeout=60)
    third = max(1, len(rss) // 3)
    return {"seconds": seconds, "samples": len(fresh), "fresh_p50": statistics.median(fresh),
            "fresh_p99": percentile(fresh, 0.99), "fresh_max": max(fresh), "cpu_share": cpu,
            "rss_start_mb": statistics.median(rss[:third]), "rss_end_mb": statistics.median(rss[-third:]),
            "rss_peak_mb": max(rss), "trades_per_s": trades_per_day / 86_400, "commit_every": commit_every,
            "exit_code": float(child.returncode), "prefilled": float(prefilled)}


def report(r: dict[str, float]) -> str:
    growth = r["rss_end_mb"] - r["rss_start_mb"]
    return "\n".join([
        "# `follow` on a busy symbol",
        "",
        f"`python -m bench.follow --seconds {r['seconds']:g}`: BTCUSDT at {r['trades_per_s']:.1f} trades/s on the "
        f"emulator's wall-clock market, commits every {r['commit_every']:g} s, {int(r['samples'])} samples"
        + (f", {int(r['prefilled']):,} trades already stored before it started." if r["prefilled"] else "."),
        "",
        "| figure | measured | goal |",
        "|---|---|---|",
        (f"| freshness (wall clock minus newest stored trade) p50 / p99 / max | {r['fresh_p50']:.2f} s / "
        f"{r['fresh_p99']:.2f} s / {r['fresh_max']:.2f} s | p99 <= 1 s: "
        f"**{'met' if r['fresh_p99'] <= 1.0 else 'missed'}** |"),
        f"| CPU share of the follower process | {100 * r['cpu_share']:.1f} % of one core | small |",
        (f"| RSS first third / last third / peak (median) | {r['rss_start_mb']:.0f} / {r['rss_end_mb']:.0f} / "
        f"{r['rss_peak_mb']:.0f} MB (growth {growth:+.0f} MB) | flat, < 200 MB growth: "
        f"**{'met' if growth < 200 else 'missed'}** |"),
        f"| exit code after SIGTERM | {int(r['exit_code'])} | 0 |",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.follow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--trades-per-day", type=int, default=1_500_000)
    parser.add_argument("--commit-every", type=float, default=0.5)
    parser.add_argument("--prefill-hours", type=float, default=0.0,
                        help="store the hours before now first: a commit late in a busy day")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "FOLLOW.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-follow-") as work:
        result = run(args.seconds, args.trades_per_day, args.commit_every, Path(work), args.prefill_hours)
    text = report(result)
    print(text)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
