"""The `daily` view reads `day_summary`, which every ingest keeps equal to the trades it summarises."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pytest

from fetch.market_span import Market, Span
from fetch.models import TRADE_SCHEMA
from store import Store
from store.schema import open_store
from store.ingest import ingest_batch
from store.report import verify
from store.tick_ids import tick_id
from store.schema import MIGRATIONS

DAY = 86_400_000_000
# Day 0 of these tests is 2024-01-01: `verify` refuses trades timed before Bybit existed.
BASE = 19_723 * DAY

# The `daily` view as it was before the summary table: an aggregate over every trade.
FROM_TRADES = """
    SELECT category, symbol, CAST(make_timestamp(time_us) AS DATE) AS day, count(*) AS trades,
           make_timestamp(min(time_us)) AS first_ts, make_timestamp(max(time_us)) AS last_ts,
           min(price) AS low, max(price) AS high, sum(qty) AS volume,
           sum(price * qty) / nullif(sum(qty), 0) AS vwap,
           sum(CASE WHEN side = 'buy' THEN qty ELSE 0 END) AS taker_buy_volume
    FROM trades GROUP BY ALL ORDER BY ALL"""
FROM_VIEW = """
    SELECT category, symbol, day, trades, first_ts, last_ts, low, high, volume, vwap, taker_buy_volume
    FROM daily ORDER BY ALL"""


def trades(ids: list[str], times: list[int], *, source: str = "archive", seed: int = 0) -> pa.Table:
    rng = random.Random(seed)
    n = len(ids)
    return pa.table({"category": ["linear"] * n, "symbol": ["BTCUSDT"] * n, "trade_id": ids,
                     "time_us": [BASE + t for t in times], "price": [round(rng.uniform(90, 110), 1) for _ in range(n)],
                     "qty": [round(rng.uniform(0.001, 3), 3) for _ in range(n)],
                     "side": [rng.choice(("buy", "sell")) for _ in range(n)],
                     "is_block_trade": [None] * n, "source": [source] * n}, schema=TRADE_SCHEMA)


def ingest(store: Store, table: pa.Table, **options: object) -> None:
    if options.get("replace_rest") is not None:
        low, high = options["replace_rest"]  # type: ignore[misc]
        options["replace_rest"] = Span(BASE + low, BASE + high)
    with store.atomic():
        ingest_batch(store, table, market=Market("linear", "BTCUSDT"), **options)  # type: ignore[arg-type]


def same_rows(store: Store) -> None:
    view, truth = store.query(FROM_VIEW), store.query(FROM_TRADES)
    assert len(view) == len(truth)
    for got, want in zip(view, truth, strict=True):
        assert got[:8] == want[:8]
        assert got[8:] == pytest.approx(want[8:], rel=1e-12)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    opened = open_store(tmp_path / "t.duckdb")
    yield opened
    opened.close()


def test_the_daily_view_equals_an_aggregate_over_the_trades_after_every_kind_of_ingest(store: Store) -> None:
    rng = random.Random(7)
    ids = [f"id-{k}" for k in range(3000)]
    times = sorted(rng.randrange(0, 3 * DAY) for _ in ids)
    ingest(store, trades(ids[:1000], times[:1000], seed=1))              # day 0
    same_rows(store)
    ingest(store, trades(ids[500:2000], times[500:2000], seed=1))        # overlaps: duplicates + new
    same_rows(store)
    tail = [t for t in times[2000:] if t >= 2 * DAY]
    ingest(store, trades([f"rest-{k}" for k in range(len(tail))], tail, source="rest", seed=3))
    same_rows(store)
    # the archive arrives for day 2: its REST rows give way, in the same transaction
    day2 = [(i, t) for i, t in zip(ids, times, strict=True) if t >= 2 * DAY]
    ingest(store, trades([i for i, _ in day2], [t for _, t in day2], seed=4), replace_rest=Span(2 * DAY, 3 * DAY))
    same_rows(store)
    assert store.query_one("SELECT count(*) FROM trades WHERE source = 'rest'")[0] == 0
    assert verify(store).ok


def test_rest_rows_that_give_way_to_an_empty_archive_day_leave_the_summary_too(store: Store) -> None:
    ingest(store, trades(["r1", "r2"], [DAY + 1, DAY + 2], source="rest"))
    assert store.query_one("SELECT count(*) FROM daily")[0] == 1
    ingest(store, trades([], []), replace_rest=Span(DAY, 2 * DAY))
    assert store.query_one("SELECT count(*) FROM daily")[0] == 0
    same_rows(store)


def test_a_rolled_back_ingest_leaves_the_summary_as_it_was(store: Store) -> None:
    ingest(store, trades(["a", "b"], [1, 2]))
    before = store.query(FROM_VIEW)
    with pytest.raises(RuntimeError), store.atomic():
        ingest_batch(store, trades(["c", "d"], [DAY + 1, DAY + 2]), market=Market("linear", "BTCUSDT"))
        raise RuntimeError("killed mid-transaction")
    assert store.query(FROM_VIEW) == before
    same_rows(store)


def test_verify_reports_a_summary_that_disagrees_with_the_trades(store: Store) -> None:
    ingest(store, trades(["a", "b", "c"], [1, 2, DAY + 3]))
    assert verify(store).ok
    store.execute("UPDATE day_summary SET trades = trades + 1 WHERE day = DATE '2024-01-02'")
    report = verify(store)
    assert not report.ok
    (detail,) = [d for name, ok, d in report.checks if not ok]
    assert "2024-01-02" in detail and "trades say 1 rows, the summary 2" in detail


def test_a_version_2_file_gains_a_summary_of_the_trades_it_already_holds(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "v2.duckdb"
    old = Store.open(path)
    old.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, "
                "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
    for number, steps in enumerate(MIGRATIONS[:2], start=1):
        for statement in steps:
            old.execute(statement)
        old.execute("INSERT INTO schema_version (version) VALUES (?)", [number])
    old.register("rows", trades([f"t{k}" for k in range(500)], [k * DAY // 100 for k in range(500)]))
    old.execute("INSERT INTO trades SELECT category, symbol, trade_id, 0, time_us, price, qty, side, "
                "side = 'sell', is_block_trade, source FROM rows")
    old.close()
    with caplog.at_level("INFO", logger="context.backfill"), open_store(path) as upgraded:
        assert upgraded.query_one("SELECT count(*) FROM daily")[0] == 5
        same_rows(upgraded)
    assert f"from schema version 2 to {len(MIGRATIONS)}" in caplog.text


def test_verify_reports_a_stored_tick_id_that_is_not_its_trade_ids(store: Store) -> None:
    """Three paths compute tick ids (DuckDB in one expression or two parts, Python for a small
    batch): a row whose tick id is not its id's TradeTick.id is named, with the commands that mend
    its day."""
    ingest(store, trades(["3f1c9e2a-8b4d-4e6f-9a0b-1c2d3e4f5a6b", "12345", "x"], [1, 2, DAY + 3]))
    assert verify(store).ok
    store.execute("UPDATE trades SET tick_id = tick_id + 1 WHERE trade_id IN ('12345', 'x')")
    report = verify(store)
    assert not report.ok
    (detail,) = [d for name, ok, d in report.checks if not ok and "tick ids" in name]
    assert "linear BTCUSDT 12345: tick id 12346" in detail
    assert f"linear BTCUSDT x: tick id {tick_id('x') + 1}" in detail, "a hashed id too"
    assert "3f1c9e2a" not in detail
    assert "forget BTCUSDT --category linear --start 2024-01-01 --end 2024-01-02" in detail
