"""The peers we compare against, each run as its own process (`python -m bench.peers NAME ...`).

* `pandas`: what a careful analyst would write without this tool: download each day's archive file
  from the emulator, parse it with pandas, drop duplicate ids, sort by time and write the daily
  parquet file (temp file, then rename). It writes the raw trade id as `i` and converts time through
  a float: both are less work than the tool does (exact integer times, the 63-bit tick id), so the
  comparison favours the peer.
* `polars`: the same script in polars (the 6-line version users write): `read_csv` of the gzip file
  (multi-threaded), `unique` by id keeping the first, `sort` by time, `write_parquet` of the same
  columns; same raw `i` and float time, same temp file and rename.
* `sequential`: a signed loop like pybit's `get_executions`: one request at a time, window after
  window, page after page, over one keep-alive connection, sleeping until the reset timestamp on
  10006. Our own code: HMAC signing as Bybit documents it, no SDK.

Each prints one JSON line with its own timings (measured inside, after imports).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

WEEK_MS = 7 * 86_400_000


def _download_day(base_url: str, symbol: str, day: date, out_dir: Path) -> Path:
    """One archive day file to disk, as a script would fetch it (each peer times this too)."""
    url = f"{base_url}/trading/{symbol}/{symbol}{day.isoformat()}.csv.gz"
    local = out_dir / f"{symbol}{day.isoformat()}.csv.gz"
    with urllib.request.urlopen(url) as response, open(local, "wb") as sink:
        shutil.copyfileobj(response, sink, 1 << 20)
    return local


def _each_day(base_url: str, symbol: str, first: date, days: int, out_dir: Path,
              convert: Callable[[Path, Path], int]) -> dict[str, object]:
    """The loop both peers share: download each day, `convert(day_file, temp_parquet)` (-> rows), rename."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = 0
    for k in range(days):
        day = first + timedelta(days=k)
        local = _download_day(base_url, symbol, day, out_dir)
        target = out_dir / f"backfill_{day.isoformat()}.parquet"
        temp = target.with_name(f".{target.name}.tmp")
        rows += convert(local, temp)
        os.replace(temp, target)
    return {"seconds": time.perf_counter() - started, "rows": rows, "days": days}


def pandas_days(base_url: str, symbol: str, first: date, days: int, out_dir: Path) -> dict[str, object]:
    import pandas as pd  # type: ignore[import-untyped]

    def convert(local: Path, temp: Path) -> int:
        frame = pd.read_csv(local, usecols=["timestamp", "side", "size", "price", "trdMatchID"],
                            dtype={"timestamp": "float64", "side": "str", "size": "float64",
                                   "price": "float64", "trdMatchID": "str"})
        local.unlink()
        frame = frame.drop_duplicates(subset="trdMatchID", keep="first")
        frame = frame.sort_values("timestamp", kind="stable")
        side = frame["side"]
        out = pd.DataFrame({
            "T": (frame["timestamp"] * 1000).astype("int64"),
            "i": frame["trdMatchID"],
            "p": frame["price"],
            "q": frame["size"],
            "s": side.str.lower(),
            "m": side == "Sell",
        })
        out.to_parquet(temp, index=False, engine="pyarrow", compression="snappy")
        return len(out)

    return _each_day(base_url, symbol, first, days, out_dir, convert)


def polars_days(base_url: str, symbol: str, first: date, days: int, out_dir: Path) -> dict[str, object]:
    import polars as pl

    def convert(local: Path, temp: Path) -> int:
        frame = pl.read_csv(local, columns=["timestamp", "side", "size", "price", "trdMatchID"],
                            schema_overrides={"timestamp": pl.Float64, "side": pl.String, "size": pl.Float64,
                                              "price": pl.Float64, "trdMatchID": pl.String})
        local.unlink()
        # polars' defaults, as users write it: the order `unique` leaves is undone by the sort.
        out = (frame.unique(subset="trdMatchID", keep="first")
               .sort("timestamp")
               .select((pl.col("timestamp") * 1000).cast(pl.Int64).alias("T"), pl.col("trdMatchID").alias("i"),
                       pl.col("price").alias("p"), pl.col("size").alias("q"),
                       pl.col("side").str.to_lowercase().alias("s"), (pl.col("side") == "Sell").alias("m")))
        out.write_parquet(temp, compression="snappy")
        return int(out.height)

    return _each_day(base_url, symbol, first, days, out_dir, convert)


class _Signed:
    """One keep-alive HTTP connection and Bybit's v5 HMAC-SHA256 GET signing."""

    def __init__(self, base_url: str, key: str, secret: str, recv_window: int = 5000) -> None:
        parts = urlsplit(base_url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)
        self.key, self.secret, self.recv_window = key, secret.encode(), str(recv_window)
        self.requests = self.rate_limited = self.forbidden = 0

    def get(self, path: str, query: str) -> dict[str, Any]:
        while True:
            ts = str(int(time.time() * 1000))
            payload = ts + self.key + self.recv_window + query
            sign = hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest()
            headers = {"X-BAPI-API-KEY": self.key, "X-BAPI-TIMESTAMP": ts, "X-BAPI-SIGN": sign,
                       "X-BAPI-RECV-WINDOW": self.recv_window}
            self.conn.request("GET", f"{path}?{query}", headers=headers)
            response = self.conn.getresponse()
            body = response.read()
            self.requests += 1
            if response.status == 403:
                self.forbidden += 1
                raise RuntimeError("HTTP 403: IP banned")
            data = json.loads(body)
            if data["retCode"] == 10006:  # pybit: sleep until the reset timestamp, then retry
                self.rate_limited += 1
                reset_ms = int(response.getheader("X-Bapi-Limit-Reset-Timestamp") or 0)
                time.sleep(max(0.0, reset_ms / 1000 - time.time()) + 0.001)
                continue
            if data["retCode"] != 0:
                raise RuntimeError(f"retCode {data['retCode']}: {data['retMsg']}")
            result: dict[str, Any] = data["result"]
            return result


def sequential_executions(base_url: str, key: str, secret: str, start_ms: int, end_ms: int,
                          category: str = "linear") -> dict[str, object]:
    client = _Signed(base_url, key, secret)
    started = time.perf_counter()
    fills: dict[str, object] = {}
    for window_start in range(start_ms, end_ms, WEEK_MS):
        window_end = min(window_start + WEEK_MS, end_ms)
        cursor = ""
        while True:
            query = f"category={category}&startTime={window_start}&endTime={window_end}&limit=100"
            if cursor:
                query += f"&cursor={cursor}"  # nextPageCursor is already percent-encoded
            result = client.get("/v5/execution/list", query)
            for item in result["list"]:
                if window_start <= int(item["execTime"]) < window_end:
                    fills[item["execId"]] = item
            cursor = str(result.get("nextPageCursor") or "")
            if not cursor:
                break
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "requests": client.requests, "fills": len(fills),
            "rate_limited": client.rate_limited, "forbidden": client.forbidden,
            "rate": client.requests / seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers")
    sub = parser.add_subparsers(dest="name", required=True)
    for name in ("pandas", "polars"):
        p = sub.add_parser(name)
        p.add_argument("url")
        p.add_argument("symbol")
        p.add_argument("first", type=date.fromisoformat)
        p.add_argument("days", type=int)
        p.add_argument("out", type=Path)
    s = sub.add_parser("sequential", help="key and secret from BYBIT_API_KEY / BYBIT_API_SECRET")
    s.add_argument("url")
    s.add_argument("start_ms", type=int)
    s.add_argument("end_ms", type=int)
    args = parser.parse_args(argv)
    if args.name in ("pandas", "polars"):
        days = pandas_days if args.name == "pandas" else polars_days
        result = days(args.url, args.symbol, args.first, args.days, args.out)
    else:
        result = sequential_executions(args.url, os.environ["BYBIT_API_KEY"], os.environ["BYBIT_API_SECRET"],
                                       args.start_ms, args.end_ms)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
