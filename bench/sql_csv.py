"""`python -m bench.sql_csv [ROWS] [--json]`: `bybit-backfill sql --format csv` against DuckDB's own COPY.

Fills a fresh store with ROWS (default 1,000,000) synthetic trades, then writes the same query as
CSV twice, each to a file on the same disk: once with `COPY (query) TO 'file.csv' (HEADER)` on a
plain DuckDB connection (the floor), once through `store.sql_output.stream_sql` (what `sql` runs,
on the sandboxed connection). Prints the medians of 3 runs, the ratio (goal <= 1.5x) and the peak
RSS of a process streaming it. Our side holds one Arrow batch at a time; what RSS still grows with
ROWS is DuckDB's buffer cache of the table's blocks (capped by the store's memory_limit, 2 GB), not
the answer (fetchall of 1M rows held ~1 GB of Python tuples). Runs alone, in ~15 s, or as
`python -m bench --only sql` (a row of RESULTS.md).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TypedDict

QUERY = "SELECT * FROM trades_v WHERE category = 'linear' AND symbol = 'BTCUSDT'"
GOAL = 1.5

FILL_SQL = """
    INSERT INTO trades
    SELECT 'linear', 'BTCUSDT', uuid()::VARCHAR, i, 1704067200000000 + i * 80000,
           50000 + (i % 1000) * 0.1, (i % 97) * 0.001 + 0.001, CASE WHEN i % 2 = 0 THEN 'buy' ELSE 'sell' END,
           i % 2 = 1, NULL, 'archive'
    FROM range(?) r(i)"""


class Measured(TypedDict):
    rows: int
    copy_s: list[float]
    stream_s: list[float]
    copy_bytes: int
    stream_bytes: int
    rss_mb: float


def measure(rows: int, runs: int = 3) -> Measured:
    """COPY and `stream_sql` of the same answer, `runs` times each, alternating; seconds of each run."""
    import duckdb

    from store.schema import open_store
    from store.sql_output import stream_sql

    with tempfile.TemporaryDirectory(prefix="bench-sql-") as tmp:
        db = Path(tmp) / "bench.duckdb"
        with open_store(db) as store:
            store.execute(FILL_SQL, [rows])
        copy_s: list[float] = []
        stream_s: list[float] = []
        copy_size = stream_size = 0
        for _ in range(runs):
            target = Path(tmp) / "copy.csv"
            connection = duckdb.connect(str(db), read_only=True)
            began = time.perf_counter()
            connection.execute(f"COPY ({QUERY}) TO '{target}' (HEADER)")
            copy_s.append(time.perf_counter() - began)
            connection.close()
            copy_size = target.stat().st_size
            target.unlink()
            began = time.perf_counter()
            with (Path(tmp) / "sql.csv").open("wb") as out:
                written = stream_sql(db, QUERY, "csv", out)
            stream_s.append(time.perf_counter() - began)
            stream_size = (Path(tmp) / "sql.csv").stat().st_size
            os.unlink(Path(tmp) / "sql.csv")
            assert written.rows == [rows], written
        rss_mb = _streamed_rss_mb(db, Path(tmp) / "rss.csv")
    return Measured(rows=rows, copy_s=copy_s, stream_s=stream_s, copy_bytes=copy_size,
                    stream_bytes=stream_size, rss_mb=rss_mb)


def main(argv: list[str]) -> None:
    as_json = "--json" in argv
    numbers = [a for a in argv if a != "--json"]
    result = measure(int(numbers[0]) if numbers else 1_000_000)
    if as_json:
        print(json.dumps(result))
        return
    copy_m, stream_m = statistics.median(result["copy_s"]), statistics.median(result["stream_s"])
    ratio = stream_m / copy_m
    print(f"{result['rows']:,} rows as CSV: DuckDB COPY {copy_m:.2f} s ({result['copy_bytes'] / 1e6:.0f} MB), "
          f"`sql --format csv` {stream_m:.2f} s ({result['stream_bytes'] / 1e6:.0f} MB): {ratio:.2f}x "
          f"(goal <= {GOAL}x: {'met' if ratio <= GOAL else 'MISSED'}); peak RSS of a process "
          f"streaming it: {result['rss_mb']:.0f} MB")


def _streamed_rss_mb(db: Path, target: Path) -> float:
    """Peak RSS of a fresh process that streams the answer to a file (bounded: one batch at a time)."""
    import subprocess

    code = ("import resource, sys; from store.sql_output import stream_sql; "
            f"stream_sql({str(db)!r}, {QUERY!r}, 'csv', open({str(target)!r}, 'wb')); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout
    return int(out.split()[-1]) / 1024


if __name__ == "__main__":
    main(sys.argv[1:])
