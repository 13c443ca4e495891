"""`status` tells the truth: holes listed, gap counts that agree with `gaps`, the stored symbols
named when the one asked for has none, the account's fills, and every time ISO-8601 UTC."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

import cli


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """conftest's CLI environment, with the emulator's API key (status shows the executions crawl)."""
    return {**env, "BYBIT_API_KEY": "test-key", "BYBIT_API_SECRET": "test-secret"}


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout


ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def test_status_lists_holes_counts_gaps_as_gaps_does_and_uses_iso_utc(env: dict[str, str]) -> None:
    for start, end in (("2024-01-02", "2024-01-03"), ("2024-01-05", "2024-01-06"),
                       ("2024-01-09", "2024-01-10T12:00")):
        assert run(env, "refresh", "BTCUSDT", "--start", start, "--end", end, "--no-export")[0] == 0
    assert run(env, "executions", "--start", "2024-01-03", "--end", "2024-01-09")[0] == 0
    code, out = run(env, "status", "BTCUSDT", "--json")
    assert code == 0
    [row] = [r for r in json.loads(out) if r["category"] == "linear"]
    assert row["days_covered"] == 3
    assert row["holes"][0] == "2024-01-03T00:00:00Z .. 2024-01-05T00:00:00Z"
    assert any(h.startswith("2024-01-06T00:00:00Z .. 2024-01-09T00:00:00Z") for h in row["holes"])
    lo, hi = row["gaps_range"]
    code, gaps = run(env, "gaps", "BTCUSDT", "--start", lo, "--end", hi, "--json")
    assert code == 0 and row["open_gaps"] == len(json.loads(gaps)) >= 3
    assert row["executions"] > 0
    for key in ("first_trade", "last_trade", "last_refresh", "last_execution"):
        assert ISO_Z.match(row[key]), (key, row[key])
    code, text = run(env, "status", "BTCUSDT")
    assert code == 0
    assert "2024-01-03T00:00:00Z .. 2024-01-05T00:00:00Z" in text and f"open_gaps: {row['open_gaps']}" in text
    assert f"--start {lo} --end {hi}" in text and "executions:" in text
    stamps = re.findall(r"\b\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d\S*", text)
    assert stamps and all(s.rstrip("`),").endswith("Z") for s in stamps), stamps


def test_status_of_a_symbol_without_trades_names_the_stored_ones(env: dict[str, str]) -> None:
    assert run(env, "refresh", "BTCUSDT", "--start", "2024-01-02", "--days", "1", "--no-export")[0] == 0
    code, out = run(env, "status", "ETHUSDT")
    assert code == 0 and "no trades for ETHUSDT (the store has BTCUSDT)" in out
