"""`lake`, `lake verify` and the multi-symbol `refresh` through CliRunner, checked through the library."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from cliutil import run
from storeutil import day

from fetch.market_span import Market
from store.lake import DATA_NAME, partition_dir


def test_lake_writes_the_complete_days_and_verify_passes_then_fails_when_tampered(env, tmp_path) -> None:
    run(env, "refresh", "BTCUSDT", "--start", "2024-01-08", "--end", "2024-01-10T12:00", "--no-export")
    lake = tmp_path / "lake"
    code, out, _ = run(env, "lake", str(lake), "--symbol", "BTCUSDT")
    assert code == 0, out
    assert "2 partitions written" in out and "1 skipped" in out
    assert "skipped linear BTCUSDT 2024-01-10" in out
    code, out, _ = run(env, "lake", str(lake), "--json")
    assert code == 0 and json.loads(out)["unchanged"] == 2 and json.loads(out)["written"] == []
    code, out, _ = run(env, "lake", "verify", str(lake))
    assert code == 0 and "ok    2 partitions checked" in out
    target = lake / partition_dir(Market("linear", "BTCUSDT"), day(8)) / DATA_NAME
    pq.write_table(pq.read_table(target).slice(5), target)
    code, out, _ = run(env, "lake", "verify", str(lake))
    assert code == 1
    assert "FAIL" in out and "date=2024-01-08" in out


def test_lake_refuses_an_unknown_scheme_with_one_line(env) -> None:
    code, _, err = run(env, "lake", "verify", "gs://bucket/x")
    assert code == 2 and err.startswith("error: unsupported lake destination")


def test_refresh_of_several_symbols_prints_one_table_and_fills_the_lake(env, tmp_path) -> None:
    lake = tmp_path / "lake"
    code, out, err = run(env, "refresh", "BTCUSDT", "ETHUSDT", "--start", "2024-01-03", "--end", "2024-01-05",
                         "--cache-dir", str(tmp_path / "c" / "{category}-{symbol}"), "--lake", str(lake))
    assert code == 0, out + err
    assert "2 symbols (linear)" in out and "days fetched" in out
    assert "lake " in out and "4 partitions written" in out
    assert (tmp_path / "c" / "linear-ETHUSDT" / "backfill_2024-01-04.parquet").exists()
    code, out, _ = run(env, "lake", "verify", str(lake))
    assert code == 0 and "4 partitions checked" in out


def test_refresh_all_with_a_shard_json_and_bad_combinations(env) -> None:
    code, out, _ = run(env, "refresh", "--all", "--shard", "1/2", "--start", "2024-01-03", "--end", "2024-01-09",
                       "--no-export", "--json")
    data = json.loads(out)
    assert code == 0 and data["shard"] == "1/2"
    assert [s["symbol"] for s in data["symbols"]] == ["BTCUSDT", "ETHUSDT"]
    assert 0 < sum(s["days_fetched"] for s in data["symbols"]) < 12
    code, _, err = run(env, "refresh", "BTCUSDT", "--all")
    assert code == 2 and "not both" in err
    code, _, err = run(env, "refresh", "--all", "--shard", "3/2")
    assert code == 2 and "K/N" in err
    code, _, err = run(env, "refresh", "BTCUSDT", "ETHUSDT", "--cache-dir", "one-dir")
    assert code == 2 and "cannot share" in err


def test_refresh_of_one_symbol_takes_a_cache_dir_template_and_a_lake(env, tmp_path) -> None:
    code, out, _ = run(env, "refresh", "BTCUSDT", "--start", "2024-01-03", "--end", "2024-01-04",
                       "--cache-dir", str(tmp_path / "t" / "{symbol}"), "--lake", str(tmp_path / "lake"))
    assert code == 0 and "days: 1 in range" in out and "1 partitions written" in out
    assert (tmp_path / "t" / "BTCUSDT" / "backfill_2024-01-03.parquet").exists()


def test_refresh_partly_failed_market_exits_1(env) -> None:
    code, out, err = run(env, "refresh", "BTCUSDT", "NOPEUSDT", "--start", "2024-01-03", "--end", "2024-01-04",
                         "--no-export")
    assert code == 1 and "NOPEUSDT" in out and "1 symbol(s) had failures (NOPEUSDT)" in err
