"""The lake on S3: written to and verified on a local S3-compatible server (moto's server mode on
127.0.0.1), read back by pyarrow over S3 exactly as from a local directory."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from fetch.market_span import Market
from storeutil import day, sim_fetch_config, us

from store import refresh

from store.schema import open_store
from store.lake import DATA_NAME, open_location, partition_dir, verify_lake, write_lake

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")

BUCKET = "lake-bucket"


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
        pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                          endpoint_override=f"{host}:{port}", scheme="http",
                          allow_bucket_creation=True).create_dir(BUCKET)
        yield env
    finally:
        server.stop()


@pytest.fixture
def store(tmp_path):
    opened = open_store(tmp_path / "store.duckdb")
    yield opened
    opened.close()


async def test_the_lake_on_s3_reads_back_like_the_store_and_verifies(sim, store, s3_env, tmp_path) -> None:
    await refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(2)), us(day(5)))
    location = open_location(f"s3://{BUCKET}/run1/", s3_env)
    assert not location.atomic_rename and location.root == f"{BUCKET}/run1"
    report = write_lake(store, location)
    assert len(report.written) == 3
    counts = {d: n for d, n in store.query("SELECT day, trades FROM day_summary")}
    dataset = ds.dataset(f"{BUCKET}/run1/trades", filesystem=location.filesystem, format="parquet",
                         partitioning="hive")
    table = dataset.to_table()
    assert table.num_rows == sum(counts.values())
    by_day = {}
    for d in counts:
        part = pq.read_table(f"{BUCKET}/run1/{partition_dir(Market('linear', 'BTCUSDT'), d)}/{DATA_NAME}",
                             filesystem=location.filesystem)
        by_day[d] = part.num_rows
        stored = [r[0] for r in store.query("SELECT trade_id FROM trades WHERE time_us >= ? AND time_us < ? "
                                            "ORDER BY time_us, trade_id", [us(d), us(d) + 86_400_000_000])]
        assert part.column("trade_id").to_pylist() == stored
    assert by_day == counts
    assert write_lake(store, location).unchanged == 3, "a second update rewrites nothing"
    assert verify_lake(location).ok
    # tamper: overwrite one partition's object with fewer rows
    target = f"{BUCKET}/run1/{partition_dir(Market('linear', 'BTCUSDT'), day(3))}/{DATA_NAME}"
    tampered = pq.read_table(target, filesystem=location.filesystem).slice(3)
    pq.write_table(tampered, target, filesystem=location.filesystem)
    failed = verify_lake(location)
    assert not failed.ok and len(failed.failures) == 2 and "date=2024-01-03" in failed.failures[0]


async def test_the_cli_writes_and_verifies_an_s3_lake_from_the_aws_variables(sim, s3_env, tmp_path) -> None:
    from click.testing import CliRunner

    import cli

    with open_store(tmp_path / "cli.duckdb") as store:
        await refresh(store, sim_fetch_config(sim.url), "ETHUSDT", us(day(3)), us(day(5)))
    env = {**s3_env, "BACKFILL_DB_PATH": str(tmp_path / "cli.duckdb")}
    runner = CliRunner()
    written = runner.invoke(cli.main, ["lake", f"s3://{BUCKET}/cli"], env=env, catch_exceptions=False)
    assert written.exit_code == 0 and "2 partitions written" in written.stdout
    checked = runner.invoke(cli.main, ["lake", "verify", f"s3://{BUCKET}/cli"], env=env, catch_exceptions=False)
    assert checked.exit_code == 0 and "2 partitions checked" in checked.stdout
