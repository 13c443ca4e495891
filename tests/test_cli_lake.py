"""`lake`, `lake verify` and the multi-symbol `refresh` through CliRunner, checked through the library."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import cli
from store.lake import DATA_NAME, partition_dir
from storeutil import day


@pytest.fixture
def env(sim_thread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    return {"BYBIT_REST_BASE_URL": sim_thread.url, "BYBIT_ARCHIVE_BASE_URL": sim_thread.url,
            "BACKFILL_DB_PATH": str(tmp_path / "cli.duckdb"),
            "BACKFILL_CACHE_DIR": str(tmp_path / "cache"), "BYBIT_BACKFILL_RETRY_BASE": "0.01",
            "BYBIT_API_KEY": "", "BYBIT_API_SECRET": ""}


def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


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
    target = lake / partition_dir("linear", "BTCUSDT", day(8)) / DATA_NAME
    pq.write_table(pq.read_table(target).slice(5), target)
    code, out, _ = run(env, "lake", "verify", str(lake))
    assert code == 1
    assert "FAIL" in out and "date=2024-01-08" in out


def test_lake_refuses_an_unknown_scheme_with_one_line(env) -> None:
    code, _, err = run(env, "lake", "verify", "gs://bucket/x")
    assert code == 2 and err.startswith("error: unsupported lake destination")
