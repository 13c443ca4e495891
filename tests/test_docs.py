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
