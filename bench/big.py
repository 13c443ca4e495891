"""Ingest into a 100M-row store: does global uniqueness keep the cost of a day flat?

The ingest checks every staged id against all of the market's stored rows (a semi-join on the
BIGINT `tick_id` column, `store.ingest.existing_sql`), so its cost could grow with the store. This
figure times one busy day's `refresh` (with export) into a store that already holds ~100M rows of
the same market, against the same day into an empty store, alternating.

Building 100M rows through the tool would take ~4 minutes of refreshes and ~5 GB of generated
files, so the store is built once, cheaply, in SQL (`build`): the tool's own schema (`Store.open`
runs the migrations), then one `INSERT ... SELECT FROM range(N)` of synthetic trades of the same
market in the days before the bench's first day (1.5M a day, in time order), with random UUIDs as
36-character ids (Bybit's and the emulator's are UUID-shaped) and a 63-bit hash of each id as its
tick id (DuckDB's `hash`, not the tool's md5: the same spread of values for the semi-join, at less
than half the build time; this store is never verified), so the stored columns look like real ones
to DuckDB's compression and to the semi-join. No coverage or day-summary rows: the ingest of day 1 reads
neither for other days. The file is cached in `bench/.cache` (keyed by row count and schema
version) and copied afresh before each timed run, untimed.

    python -m bench.big build PATH ROWS    # build (prints one JSON line: seconds, rows, bytes)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .simhost import CATEGORY, FIRST_DAY, SYMBOL
from .util import ROOT

DAY_US = 86_400_000_000
PER_DAY = 1_500_000



def build(path: Path, rows: int) -> dict[str, float]:
    """The store at `path`, with `rows` synthetic trades before FIRST_DAY (see the module docstring)."""
    from store import id_filter
    from store.schema import open_store

    path.unlink(missing_ok=True)
    first_us = (FIRST_DAY.toordinal() - 719163) * DAY_US - (-(-rows // PER_DAY)) * DAY_US
    step_us = DAY_US // PER_DAY
    started = time.perf_counter()
    with open_store(path) as store:
        store.connection.execute("SET enable_progress_bar = false")
        store.connection.execute("""
            INSERT INTO trades (category, symbol, trade_id, tick_id, time_us, price, qty, side,
                                is_buyer_maker, is_block_trade, source)
            SELECT ?, ?, trade_id, CAST(hash(trade_id) & 9223372036854775807 AS BIGINT), time_us, price,
                   qty, CASE WHEN is_sell THEN 'sell' ELSE 'buy' END, is_sell, NULL, 'archive'
            FROM (SELECT CAST(gen_random_uuid() AS VARCHAR) AS trade_id, ? + r * ? AS time_us,
                         50000.0 + (r % 10007) * 0.1 AS price, 0.001 * (1 + r % 997) AS qty,
                         r % 2 = 1 AS is_sell
                  FROM range(?) t(r))""",
                                 [CATEGORY, SYMBOL, first_us, step_us, rows])
        store.connection.execute("CHECKPOINT")
        # The id filter a store built through the tool would have (store.id_filter), built the way
        # a writer rebuilds a missing one; it is copied with the store, at the generation it names.
        ids_dir = Path(f"{path}.ids")
        shutil.rmtree(ids_dir, ignore_errors=True)
        with store.atomic():
            id_filter.market_filter(store, CATEGORY, SYMBOL, rebuild=True, extra=PER_DAY)
    return {"seconds": time.perf_counter() - started, "rows": rows, "bytes": path.stat().st_size}


def cached_store(cache: Path, rows: int, schema_version: int) -> tuple[Path, dict[str, float] | None]:
    """The built store for `rows` in `cache`, built now if missing (None: it was already there)."""
    target = cache / f"big-{rows}-v{schema_version}.duckdb"
    if target.exists() and with_ids(target).exists():
        return target, None
    for stale in cache.glob("big-*.duckdb"):
        stale.unlink()
        shutil.rmtree(with_ids(stale), ignore_errors=True)
    partial = target.with_suffix(".partial")
    # In a process of its own: the harness stays small (a child inherits its parent's peak RSS).
    done = subprocess.run([sys.executable, "-m", "bench.big", "build", str(partial), str(rows)], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building the {rows:,}-row store failed: {done.stderr[-2000:]}")
    built: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    shutil.move(with_ids(partial), with_ids(target))
    shutil.move(partial, target)
    return target, built


def with_ids(db: Path) -> Path:
    """The id filters' directory of the store at `db` (`store.id_filter.filter_path`)."""
    return Path(f"{db}.ids")


def copy_store(source: Path, target: Path) -> None:
    """A store file and its id filters, as a backup would copy them (either alone is another store)."""
    shutil.copyfile(source, target)
    shutil.rmtree(with_ids(target), ignore_errors=True)
    if with_ids(source).exists():
        shutil.copytree(with_ids(source), with_ids(target))


def remove_store(db: Path) -> None:
    db.unlink(missing_ok=True)
    shutil.rmtree(with_ids(db), ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "build":
        raise SystemExit("usage: python -m bench.big build PATH ROWS")
    print(json.dumps(build(Path(sys.argv[2]), int(sys.argv[3]))))
