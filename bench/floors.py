"""Floors: the least work that produces the same result, run as processes (`python -m bench.floors`).

* `day`: DuckDB alone reads the same local `.csv.gz` into a keyless table of a fresh database file
  and COPYs it to parquet: no download, no dedup, no coverage, no id hashing.
* `export`: in one process, alternately, our `export_days` for one stored day and DuckDB's own
  `COPY (the same rows, same order) TO parquet`.
* `serve`: the emulator alone: download one day's file over HTTP and discard it, to show it serves
  faster than the tool consumes.

Each prints one JSON line with timings measured inside the process (after imports).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from fetch.market_span import Market


def _literal(path: Path) -> str:
    """A path as a DuckDB string literal (COPY's target cannot be a parameter on every version)."""
    return "'" + str(Path(path).absolute()).replace("'", "''") + "'"


def day_floor(csv_gz: Path, work: Path) -> dict[str, object]:
    import duckdb

    work.mkdir(parents=True, exist_ok=True)
    db, out = work / "floor.duckdb", work / "floor.parquet"
    for stale in (db, out):
        stale.unlink(missing_ok=True)
    started = time.perf_counter()
    con = duckdb.connect(str(db))
    con.execute(f"CREATE TABLE trades AS SELECT * FROM read_csv({_literal(csv_gz)})")
    loaded = time.perf_counter()
    con.execute(f"COPY trades TO {_literal(out)} (FORMAT parquet)")
    copied = time.perf_counter()
    rows = con.execute("SELECT count(*) FROM trades").fetchone()[0]  # type: ignore[index]
    con.close()
    return {"read_s": loaded - started, "copy_s": copied - loaded, "seconds": copied - started,
            "rows": rows}


def export_pair(db: Path, symbol: str, category: str, day: date, work: Path, runs: int) -> dict[str, object]:
    from store.export import day_rows_sql, export_days
    from store.schema import open_store
    from store.timeutil import day_start_us

    work.mkdir(parents=True, exist_ok=True)
    ours, copy = [], []
    params = [category, symbol, day_start_us(day), day_start_us(day + timedelta(days=1))]
    with open_store(db) as store:
        for k in range(runs):
            for which in (("ours", "copy") if k % 2 == 0 else ("copy", "ours")):
                started = time.perf_counter()
                if which == "ours":
                    written = export_days(store, market=Market(category, symbol), days=[day],
                                          cache_dir=work / "ours")
                    assert written and written[0].rows > 0
                    ours.append(time.perf_counter() - started)
                else:
                    target = work / "copy.parquet"
                    store.connection.execute(f"COPY ({day_rows_sql('tick')}) TO {_literal(target)} "
                                             "(FORMAT parquet)", params)
                    copy.append(time.perf_counter() - started)
    return {"ours": ours, "copy": copy}


def serve(url: str, times: int) -> dict[str, object]:
    parts = urlsplit(url)
    seconds, size = [], 0
    for _ in range(times):
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=60)
        started = time.perf_counter()
        conn.request("GET", parts.path)
        response = conn.getresponse()
        size = 0
        while chunk := response.read(1 << 20):
            size += len(chunk)
        seconds.append(time.perf_counter() - started)
        conn.close()
    return {"seconds": seconds, "bytes": size}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floors")
    sub = parser.add_subparsers(dest="name", required=True)
    d = sub.add_parser("day")
    d.add_argument("csv_gz", type=Path)
    d.add_argument("work", type=Path)
    e = sub.add_parser("export")
    e.add_argument("db", type=Path)
    e.add_argument("symbol")
    e.add_argument("category")
    e.add_argument("day", type=date.fromisoformat)
    e.add_argument("work", type=Path)
    e.add_argument("runs", type=int)
    s = sub.add_parser("serve")
    s.add_argument("url")
    s.add_argument("times", type=int)
    args = parser.parse_args(argv)
    if args.name == "day":
        result = day_floor(args.csv_gz, args.work)
    elif args.name == "export":
        result = export_pair(args.db, args.symbol, args.category, args.day, args.work, args.runs)
    else:
        result = serve(args.url, args.times)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
