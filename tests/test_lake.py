"""The parquet lake: written from the store, read back by DuckDB, pyarrow and polars, verified."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from fetch.market_span import Market, Span
from storeutil import day, sim_fetch_config, us

from store import Store, refresh

from store.schema import open_store
from store.lake import (
    DATA_NAME,
    LAKE_SCHEMA,
    MANIFEST_NAME,
    fingerprint,
    needs_write,
    open_location,
    parse_partition_dir,
    partition_dir,
    s3_options,
    verify_lake,
    write_lake,
)


@pytest.fixture
def store(tmp_path: Path):
    opened = open_store(tmp_path / "store.duckdb")
    yield opened
    opened.close()


def store_counts(store: Store) -> dict[tuple[str, str, date], int]:
    return {(c, s, d): int(n) for c, s, d, n in store.query(
        "SELECT category, symbol, day, trades FROM day_summary")}


def store_rows(store: Store, category: str, symbol: str, d: date) -> list[tuple]:
    return store.query(
        "SELECT time_us, trade_id, price, qty, side, is_buyer_maker, is_block_trade, source, tick_id "
        "FROM trades WHERE category = ? AND symbol = ? AND time_us >= ? AND time_us < ? "
        "ORDER BY time_us, trade_id", [category, symbol, us(d), us(d) + 86_400_000_000])


async def filled(sim, store: Store) -> None:
    config = sim_fetch_config(sim.url)
    await refresh(store, config, "BTCUSDT", us(day(2)), us(day(5)))
    await refresh(store, config, "ETHUSDT", us(day(3)), us(day(5)))


# ---- pure ------------------------------------------------------------------------------------

def test_partition_paths_are_hive_segments_and_parse_back() -> None:
    path = partition_dir(Market("linear", "BTCUSDT"), date(2024, 1, 2))
    assert path == "trades/category=linear/symbol=BTCUSDT/date=2024-01-02"
    assert parse_partition_dir(path) == ("linear", "BTCUSDT", date(2024, 1, 2))
    assert parse_partition_dir("trades/category=linear/symbol=BTCUSDT") is None
    assert parse_partition_dir("trades/category=linear/symbol=BTCUSDT/date=2024-13-40") is None
    assert parse_partition_dir("other/category=linear/symbol=X/date=2024-01-02") is None


def test_a_partition_is_rewritten_only_when_its_fingerprint_changed() -> None:
    assert fingerprint(3, -5, 12) == "3:-5:12"
    assert needs_write(None, "3:-5:12")
    assert needs_write("3:-5:11", "3:-5:12")
    assert not needs_write("3:-5:12", "3:-5:12")


def test_s3_options_come_from_the_standard_aws_variables() -> None:
    assert s3_options({}) == {}
    assert s3_options({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-1"}) == {
        "endpoint_override": "127.0.0.1:9000", "scheme": "http", "region": "eu-west-1"}


# ---- against the emulator ----------------------------------------------------------------------

async def test_the_lake_read_by_duckdb_pyarrow_and_polars_equals_the_store(sim, store, tmp_path) -> None:
    await filled(sim, store)
    lake = tmp_path / "lake"
    report = write_lake(store, open_location(str(lake)))
    counts = store_counts(store)
    assert len(report.written) == len(counts) == 5 and not report.skipped
    glob = str(lake / "trades" / "**" / "*.parquet")
    by_duckdb = {(c, s, d): n for c, s, d, n in duckdb.sql(
        f"SELECT category, symbol, date, count(*) FROM read_parquet('{glob}', hive_partitioning=true) "
        "GROUP BY ALL").fetchall()}
    assert by_duckdb == counts
    dataset = ds.dataset(str(lake / "trades"), format="parquet", partitioning="hive")
    table = dataset.to_table()
    assert table.num_rows == sum(counts.values())
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    for (category, symbol, d), rows in counts.items():
        part = pq.read_table(lake / partition_dir(Market(category, symbol), d) / DATA_NAME)
        assert part.schema.remove_metadata().equals(LAKE_SCHEMA)
        got = list(zip(part.column("ts").cast(pa.int64()).to_pylist(),
                       *(part.column(n).to_pylist() for n in LAKE_SCHEMA.names[1:])))
        assert got == store_rows(store, category, symbol, d), f"{symbol} {d} differs from the store"
        assert len(got) == rows
    meta = pq.read_metadata(lake / partition_dir(Market("linear", "BTCUSDT"), day(2)) / DATA_NAME)
    assert meta.row_group(0).column(0).compression == "ZSTD"
    polars = pytest.importorskip("polars")
    frame = polars.scan_parquet(glob, hive_partitioning=True).group_by(["symbol", "date"]).len().collect()
    by_polars = {(s, d if isinstance(d, date) else date.fromisoformat(str(d))): n
                 for s, d, n in frame.iter_rows()}
    assert by_polars == {(s, d): n for (_c, s, d), n in counts.items()}


async def test_an_unchanged_store_rewrites_nothing_and_a_changed_day_is_rewritten(sim, store, tmp_path) -> None:
    await filled(sim, store)
    location = open_location(str(tmp_path / "lake"))
    write_lake(store, location)
    again = write_lake(store, location)
    assert again.written == [] and again.unchanged == 5
    with store.atomic():  # one trade of 2024-01-03 goes missing from the store: its fingerprint changes
        store.execute("DELETE FROM trades WHERE trade_id = (SELECT min(trade_id) FROM trades WHERE "
                      "symbol = 'BTCUSDT' AND time_us >= ? AND time_us < ?)", [us(day(3)), us(day(4))])
        from store.day_summary import resummarize
        resummarize(store, Market("linear", "BTCUSDT"), Span(us(day(3)), us(day(4))))
    third = write_lake(store, location)
    assert [(w.symbol, w.day) for w in third.written] == [("BTCUSDT", day(3))]
    assert verify_lake(location).ok


async def test_only_days_covered_whole_are_written_and_the_rest_are_named(sim, store, tmp_path) -> None:
    config = sim_fetch_config(sim.url)
    await refresh(store, config, "BTCUSDT", us(day(9)), us(day(10)) + 3_600_000_000)  # today: REST tail only
    report = write_lake(store, open_location(str(tmp_path / "lake")))
    assert [(w.symbol, w.day) for w in report.written] == [("BTCUSDT", day(9))]
    assert [(s, d) for _c, s, d, _r in report.skipped] == [("BTCUSDT", day(10))]
    assert "not complete" in report.skipped[0][3]


async def test_a_filtered_lake_update_writes_only_what_was_asked(sim, store, tmp_path) -> None:
    await filled(sim, store)
    report = write_lake(store, open_location(str(tmp_path / "lake")), symbols=["ethusdt"], first=day(4),
                        stop=day(5))
    assert [(w.symbol, w.day) for w in report.written] == [("ETHUSDT", day(4))]


async def test_verify_fails_on_a_tampered_partition(sim, store, tmp_path) -> None:
    await filled(sim, store)
    lake = tmp_path / "lake"
    location = open_location(str(lake))
    write_lake(store, location)
    assert verify_lake(location).ok and verify_lake(location).checked == 5
    target = lake / partition_dir(Market("linear", "BTCUSDT"), day(3)) / DATA_NAME
    table = pq.read_table(target)
    pq.write_table(table.slice(1), target, compression="zstd")  # one row dropped
    manifest = lake / partition_dir(Market("linear", "ETHUSDT"), day(4)) / MANIFEST_NAME
    data = json.loads(manifest.read_text())
    data["fingerprint"] = "1:2:3"
    manifest.write_text(json.dumps(data))
    (lake / partition_dir(Market("linear", "BTCUSDT"), day(2)) / "extra.parquet").write_bytes(target.read_bytes())
    report = verify_lake(location)
    assert not report.ok
    text = "\n".join(report.failures)
    assert "date=2024-01-03" in text and "rows" in text
    assert "date=2024-01-04" in text and "fingerprint" in text
    assert "extra.parquet" in text
    assert len(report.failures) == 4, text  # 01-03: rows and fingerprint; 01-04; 01-02's stray file


def test_verify_of_an_empty_lake_checks_nothing(tmp_path) -> None:
    report = verify_lake(open_location(str(tmp_path / "nothing")))
    assert report.ok and report.checked == 0


async def test_a_crash_between_data_and_manifest_is_reported_then_repaired(sim, store, tmp_path,
                                                                           monkeypatch) -> None:
    await filled(sim, store)
    location = open_location(str(tmp_path / "lake"))
    write_lake(store, location)
    with store.atomic():  # the store learns of a change to 2024-01-03 ...
        store.execute("DELETE FROM trades WHERE trade_id = (SELECT max(trade_id) FROM trades WHERE "
                      "symbol = 'BTCUSDT' AND time_us >= ? AND time_us < ?)", [us(day(3)), us(day(4))])
        from store.day_summary import resummarize
        resummarize(store, Market("linear", "BTCUSDT"), Span(us(day(3)), us(day(4))))
    import store.lake as lake_module

    real_put = lake_module._put

    def crash_on_manifest(location, directory, name, payload):
        if name == MANIFEST_NAME:
            raise lake_module.LakeError("killed")
        return real_put(location, directory, name, payload)

    monkeypatch.setattr(lake_module, "_put", crash_on_manifest)
    with pytest.raises(lake_module.LakeError):
        write_lake(store, location)  # ... and the update dies after the data file, before the manifest
    monkeypatch.setattr(lake_module, "_put", real_put)
    broken = verify_lake(location)
    assert not broken.ok and "date=2024-01-03" in broken.failures[0]
    repaired = write_lake(store, location)
    assert [(w.symbol, w.day) for w in repaired.written] == [("BTCUSDT", day(3))]
    assert verify_lake(location).ok


async def test_verify_fails_on_a_partition_without_its_manifest(sim, store, tmp_path) -> None:
    await filled(sim, store)
    lake = tmp_path / "lake"
    location = open_location(str(lake))
    write_lake(store, location)
    (lake / partition_dir(Market("linear", "ETHUSDT"), day(3)) / MANIFEST_NAME).unlink()
    (lake / partition_dir(Market("linear", "ETHUSDT"), day(4)) / ".part-0.parquet.1.x.tmp").write_bytes(b"half")
    report = verify_lake(location)
    assert report.failures == [f"{location.uri}/{partition_dir(Market('linear', 'ETHUSDT'), day(3))}: no {MANIFEST_NAME}"]
