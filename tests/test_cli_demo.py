"""The demo's output, run twice as a newcomer does: the files named, each gap with its own reason,
and the `gaps` table wrapping long reasons."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli


def demo(tmp_path: Path) -> str:
    result = CliRunner().invoke(cli.main, ["demo", "--dir", "demo", "--days", "2", "--trades-per-day", "3000"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_demo_rerun_names_the_files_and_gives_each_gap_its_reason(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = demo(tmp_path)
    names = sorted(p.name for p in (tmp_path / "demo" / "backfill_cache").glob("backfill_*.parquet"))
    assert len(names) == 2
    assert f"2 files written ({', '.join(names)})" in first
    again = demo(tmp_path)
    assert f"0 files written, 2 already up to date ({', '.join(names)})" in again
    reasons = re.findall(r"^  gap .*? UTC: (.*)$", again, re.MULTILINE)
    assert reasons and len(set(reasons)) == len(reasons)


def test_the_gaps_table_wraps_long_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    demo(tmp_path)
    result = CliRunner().invoke(cli.main, ["gaps", "BTCUSDT", "--db", "demo/demo.duckdb", "--days", "3"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) > 4 and max(len(line) for line in lines) <= 140, lines
    assert "recent-trade" in result.stdout
