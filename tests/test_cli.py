"""The CLI through CliRunner, checked afterwards through the library."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from cliutil import run
from storeutil import duplicate_keys

import cli
from store.schema import open_store


def test_refresh_prints_the_summary_and_stores_the_days(env) -> None:
    code, out, _ = run(env, "refresh", "BTCUSDT", "--start", "2024-01-02", "--end", "2024-01-04")
    assert code == 0, out
    assert "days: 2 in range, 0 already stored, 2 fetched" in out
    assert "gaps left: 0" in out
    with open_store(env["BACKFILL_DB_PATH"], read_only=True) as store:
        assert store.query_one("SELECT count(*) FROM trades")[0] == 4000
        assert duplicate_keys(store) == []
    assert sorted(p.name for p in Path(env["BACKFILL_CACHE_DIR"]).iterdir()
                  if not p.name.startswith(".")) == ["backfill_2024-01-02.parquet", "backfill_2024-01-03.parquet"]


def test_refresh_json_carries_the_monitoring_figures(env) -> None:
    code, out, _ = run(env, "refresh", "BTCUSDT", "--start", "2024-01-02", "--days", "1", "--json",
                       "--no-export")
    data = json.loads(out)
    assert code == 0
    for key in ("days_from_store", "days_fetched", "rows_added", "duplicates_skipped", "conflicts",
                "requests", "retries", "errors_by_type", "breaker_openings", "peak_throttle", "gaps",
                "elapsed_s", "rows_per_s"):
        assert key in data, key
    assert data["rows_added"] == 2000 and data["files_exported"] == 0


def test_status_gaps_sql_verify_and_export_read_the_store(env, tmp_path: Path) -> None:
    run(env, "refresh", "BTCUSDT", "--start", "2024-01-08", "--end", "2024-01-10T12:00", "--no-export")
    code, out, _ = run(env, "status", "--json")
    [row] = json.loads(out)
    assert code == 0 and row["symbol"] == "BTCUSDT" and row["days_covered"] == 2
    code, out, _ = run(env, "gaps", "BTCUSDT", "--start", "2024-01-08", "--end", "2024-01-10T12:00",
                       "--json")
    gaps = json.loads(out)
    assert code == 0 and gaps and gaps[0]["start"].startswith("2024-01-10")
    code, out, _ = run(env, "sql", "SELECT count(*) AS n FROM trades_v WHERE ts < '2024-01-10'",
                       "--format", "csv")
    assert (code, out) == (0, "n\n4000\n")
    code, out, _ = run(env, "export", "BTCUSDT", "--start", "2024-01-08", "--end", "2024-01-09",
                       "--cache-dir", str(tmp_path / "exported"))
    assert code == 0 and "backfill_2024-01-08.parquet" in out
    code, out, _ = run(env, "verify")
    assert code == 0 and "FAIL" not in out


def test_sql_cannot_change_the_store(env) -> None:
    run(env, "refresh", "BTCUSDT", "--start", "2024-01-08", "--days", "1", "--no-export")
    code, _, err = run(env, "sql", "DELETE FROM trades")
    assert code == 2 and "read-only" in err.lower()
    with open_store(env["BACKFILL_DB_PATH"], read_only=True) as store:
        assert store.query_one("SELECT count(*) FROM trades")[0] == 2000


def test_verify_fails_when_an_export_no_longer_matches(env) -> None:
    run(env, "refresh", "BTCUSDT", "--start", "2024-01-08", "--days", "1")
    target = Path(env["BACKFILL_CACHE_DIR"]) / "backfill_2024-01-08.parquet"
    target.unlink()
    code, out, _ = run(env, "verify")
    assert code == 1 and "FAIL" in out and "missing" in out


def test_executions_needs_credentials(env) -> None:
    code, _, err = run(env, "executions", "--days", "1")
    assert code == 2 and "BYBIT_API_KEY" in err


def test_executions_with_a_key_stores_fills(env) -> None:
    env = {**env, "BYBIT_API_KEY": "test-key", "BYBIT_API_SECRET": "test-secret"}
    code, out, _ = run(env, "executions", "--start", "2023-12-20", "--end", "2024-01-10", "--json")
    assert code == 0, out
    assert json.loads(out)["rows_added"] > 0


def test_version_and_help() -> None:
    result = CliRunner().invoke(cli.main, ["--version"])
    assert result.exit_code == 0 and "bybit-backfill" in result.output
