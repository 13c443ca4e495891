"""`follow` and `status` through CliRunner: option checks, and the follower columns of `status`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from fetch.market_span import Market
from fetch.models import Trade, trades_to_table
from store.atomic import write_json_atomic
from store.follow_state import state_dir
from store.ingest import ingest_batch
from store.schema import open_store


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    return {"BACKFILL_DB_PATH": str(tmp_path / "s.duckdb"), "BACKFILL_CACHE_DIR": str(tmp_path / "cache"),
            "BYBIT_WS_BASE_URL": "ws://127.0.0.1:9", "BYBIT_REST_BASE_URL": "http://127.0.0.1:9"}


def test_follow_refuses_non_positive_intervals_before_connecting(env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli.main, ["follow", "BTCUSDT", "--commit-every", "0"], env=env)
    assert result.exit_code == 2 and "intervals must be positive" in result.stderr


def test_follow_needs_a_symbol(env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli.main, ["follow"], env=env)
    assert result.exit_code == 2


def test_status_shows_whether_a_follower_is_active_its_last_trade_and_lag(env: dict[str, str]) -> None:
    db = Path(env["BACKFILL_DB_PATH"])
    trade = Trade("linear", "BTCUSDT", "a", 1_704_931_200_000_000, 1.0, 1.0, "buy", None, "ws")
    with open_store(db) as store, store.atomic():
        ingest_batch(store, trades_to_table([trade]), market=Market("linear", "BTCUSDT"))
    state_dir(db).mkdir()
    write_json_atomic(state_dir(db) / "linear.BTCUSDT.json",
                      {"pid": os.getpid(), "active": True, "category": "linear", "symbol": "BTCUSDT",
                       "last_trade_us": trade.time_us, "committed_at": 0})
    result = CliRunner().invoke(cli.main, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["follower"] == f"active (pid {os.getpid()})"
    assert row["live_last_trade"].startswith("2024-01-11T00:00:00") and row["live_lag_s"] > 0
    result = CliRunner().invoke(cli.main, ["status"], env=env)
    assert "follower" in result.stdout and "active (pid" in result.stdout


def test_sim_refuses_an_unreadable_clock_start(env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli.main, ["sim", "--clock-start", "yesterday-ish"], env=env)
    assert result.exit_code == 2 and "--clock-start" in result.stderr
