"""The README, CI and the public surface stay in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

import click
from click.testing import CliRunner

import cli
import fetch
import store
from store.schema import open_store
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


def _command(path: list[str]) -> click.Command | None:
    command: click.Command = cli.main
    for name in path:
        if not isinstance(command, click.Group) or name not in command.commands:
            return None
        command = command.commands[name]
    return command


def _options(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}


def _resolve(words: list[str]) -> tuple[list[str], click.Command | None]:
    """The longest command path the words start with (`lake verify DEST` -> ['lake', 'verify'])."""
    path: list[str] = []
    for word in words:
        if _command([*path, word]) is None:
            break
        path.append(word)
    if path and isinstance(_command(path), cli._LakeGroup):
        path.append("write")  # `lake DEST ...` is `lake write DEST ...`
    return path, _command(path) if path else None


def readme_invocations() -> list[str]:
    """Every command the README shows: its command table's first column and each `bybit-backfill`
    line of its code blocks and prose."""
    table = re.findall(r"^\| `([a-z][^`]*)` \|", README, re.MULTILINE)
    lines = re.findall(r"(?<![=\w/.-])bybit-backfill ((?:[a-z-]+)(?: [^`\n#|]*)?)", README)
    return table + lines


def test_every_command_and_option_in_the_readme_exists() -> None:
    group_options = _options(cli.main)
    for text in readme_invocations():
        words = text.replace("[", " ").replace("]", " ").replace("|", " ").split()
        path, command = _resolve(words)
        if command is None and words[0].startswith("-"):
            continue  # `bybit-backfill --version` and the like: group options, checked below
        assert command is not None, f"README names an unknown command: {text!r}"
        known = _options(command) | group_options
        for word in words:
            option = word.split("=")[0]
            if re.fullmatch(r"--?[a-z][a-z-]*", option):
                assert option in known, f"README: {' '.join(path)} has no option {option} ({text!r})"


def test_every_command_and_subcommand_has_an_example() -> None:
    for name, command in cli.main.commands.items():
        paths = [[name]] + [[name, sub] for sub in getattr(command, "commands", {})]
        for path in paths:
            result = CliRunner().invoke(cli.main, [*path, "--help"])
            assert result.exit_code == 0 and "Example:" in result.output, path


def test_every_table_view_and_column_has_a_comment(tmp_path: Path) -> None:
    from store import Store

    with open_store(tmp_path / "comments.duckdb") as opened:
        missing = opened.query("""
            SELECT table_name, column_name FROM duckdb_columns()
            WHERE database_name = current_database() AND NOT internal AND coalesce(comment, '') = ''
            UNION ALL SELECT table_name, NULL FROM duckdb_tables()
            WHERE database_name = current_database() AND coalesce(comment, '') = ''
            UNION ALL SELECT view_name, NULL FROM duckdb_views()
            WHERE database_name = current_database() AND NOT internal AND coalesce(comment, '') = ''""")
    assert missing == []


def test_the_readme_shows_how_to_read_the_comments() -> None:
    assert "SELECT table_name, column_name, comment FROM duckdb_columns()" in README
    assert "so `DESCRIBE` explains it" not in README


def test_the_readme_analyst_queries_filter_on_category_and_symbol() -> None:
    for query in readme_sql_examples():
        assert "category = 'linear'" in query and "symbol = 'BTCUSDT'" in query, query


def test_a_version_5_store_stays_readable_and_gains_the_comments_when_written(tmp_path: Path) -> None:
    from store import Store
    from store.schema import MIGRATIONS

    path = tmp_path / "v5.duckdb"
    old = Store.open(path)
    old.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
    for number, steps in enumerate(MIGRATIONS[:5], start=1):
        for statement in steps:
            old.execute(statement)
        old.execute("INSERT INTO schema_version (version) VALUES (?)", [number])
    old.close()
    result = CliRunner().invoke(cli.main, ["status", "--db", str(path)])
    assert result.exit_code == 0, result.output
    with open_store(path) as upgraded:
        comment = upgraded.query_one("SELECT comment FROM duckdb_columns() WHERE table_name = 'coverage' "
                                     "AND column_name = 'start_us'")
    assert comment and comment[0]
