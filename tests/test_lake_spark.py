"""Optional: the lake read by PySpark in local mode (`spark.read.parquet`), counts per day equal to
the store's. Skipped without pyspark or Java (neither is in the `test` extra: Spark is ~300 MB)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from storeutil import day, sim_fetch_config, us

from store import refresh

from store.schema import open_store
from store.lake import open_location, write_lake

pyspark_sql = pytest.importorskip("pyspark.sql", reason="pyspark is not installed")
if shutil.which("java") is None:
    pytest.skip("PySpark needs Java, which is not installed", allow_module_level=True)


async def test_spark_reads_the_lake_with_the_stores_counts_per_day(sim, tmp_path: Path) -> None:
    with open_store(tmp_path / "store.duckdb") as store:
        config = sim_fetch_config(sim.url)
        await refresh(store, config, "BTCUSDT", us(day(2)), us(day(5)))
        await refresh(store, config, "ETHUSDT", us(day(3)), us(day(5)))
        write_lake(store, open_location(str(tmp_path / "lake")))
        expected = {(s, d): int(n) for s, d, n in store.query("SELECT symbol, day, trades FROM day_summary")}
    spark = (pyspark_sql.SparkSession.builder.master("local[1]").appName("lake-test")
             .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1").config("spark.sql.session.timeZone", "UTC")
             .getOrCreate())
    try:
        frame = spark.read.parquet(str(tmp_path / "lake" / "trades"))
        rows = frame.groupBy("symbol", "date").count().collect()
        got = {(r["symbol"], r["date"]): r["count"] for r in rows}
        fields = {f.name: f.dataType.simpleString() for f in frame.schema.fields}
    finally:
        spark.stop()
    assert got == expected
    assert fields["ts"] == "timestamp" and fields["date"] == "date" and fields["tick_id"] == "bigint"
