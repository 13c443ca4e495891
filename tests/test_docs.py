"""The README, CI and the public surface stay in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

import cli
import fetch
import store
from store.settings import settings_table

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_gives_the_test_command_that_ci_runs() -> None:
    commands = re.findall(r"^(pip install -e '\.\[test\]' && python -m pytest)", README, re.MULTILINE)
    assert commands, "README quickstart must show the test command"
    assert commands[0] in (ROOT / ".ci" / "run").read_text()


def test_readme_quickstart_runs_the_offline_demo() -> None:
    assert re.search(r"^pip install -e \. && bybit-backfill demo", README, re.MULTILINE)


def test_every_setting_is_documented_in_the_readme() -> None:
    for name, _default, meaning in settings_table():
        assert f"`{name}`" in README, name
        assert meaning, f"{name} needs a description"


def test_every_command_has_help_with_an_example_and_is_in_the_readme() -> None:
    runner = CliRunner()
    for name in cli.main.commands:
        result = runner.invoke(cli.main, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Example:" in result.output, name
        assert f"`{name}" in README, name


def test_public_names_are_pinned() -> None:
    assert {"BybitConnectorHistory", "TradeTick", "Settings", "Store", "refresh", "refresh_executions",
            "create_history_provider", "StoreLocked", "NotADatabase"} <= set(store.__all__)
    assert {"BybitClient", "ArchiveSource", "RecentTradeSource", "ExecutionSource", "Trade",
            "BackfillError", "ArchiveError", "AuthError"} <= set(fetch.__all__)
    for module in (store, fetch):
        for name in module.__all__:
            assert hasattr(module, name), name


def readme_sql_examples() -> list[str]:
    block = re.search(r"```sql\n(.*?)```", README, re.S)
    assert block, "README shows example analyst queries"
    statements = [s.strip() for s in block.group(1).split(";") if s.strip()]
    return ["\n".join(line for line in s.splitlines() if not line.startswith("--")) for s in statements]


async def test_readme_analyst_queries_run_against_a_refreshed_store(sim, tmp_path: Path) -> None:
    from storeutil import day, sim_fetch_config, us

    from store import refresh

    from store.schema import open_store
    from store.report import run_sql

    with open_store(tmp_path / "docs.duckdb") as opened:
        await refresh(opened, sim_fetch_config(sim.url), "BTCUSDT", us(day(2)), us(day(3)))
    queries = readme_sql_examples()
    assert len(queries) >= 3
    for query in queries:
        names, rows = run_sql(tmp_path / "docs.duckdb", query)
        assert names and rows, query
