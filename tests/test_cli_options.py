"""Options behave as documented on every command: -v, --version, --db, --json (errors too), `config`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli


def all_commands() -> list[tuple[list[str], object]]:
    found = []
    for name, command in cli.main.commands.items():
        found.append(([name], command))
        for sub, subcommand in getattr(command, "commands", {}).items():
            found.append(([name, sub], subcommand))
    return found


def test_every_command_takes_v_and_version() -> None:
    for path, command in all_commands():
        opts = {opt for param in command.params for opt in param.opts}  # type: ignore[attr-defined]
        assert {"-v", "--version"} <= opts, path
        result = CliRunner().invoke(cli.main, [*path, "--version"])
        assert result.exit_code == 0 and "bybit-backfill, version" in result.output, path


def test_every_command_that_prints_a_result_takes_json() -> None:
    without = {("demo",), ("sim",)}  # a narrative and a server, see the README
    for path, command in all_commands():
        if isinstance(command, cli.click.Group) or tuple(path) in without:
            continue
        opts = {opt for param in command.params for opt in param.opts}  # type: ignore[attr-defined]
        assert "--json" in opts, path


def test_v_after_the_command_shows_requests_plan_and_commits(env: dict[str, str]) -> None:
    args = ["refresh", "BTCUSDT", "--start", "2024-01-08", "--days", "1", "--no-export"]
    quiet = CliRunner().invoke(cli.main, args, env=env)
    assert quiet.exit_code == 0 and "DEBUG" not in quiet.stderr
    for verbose in (["-v", *args, "--start", "2024-01-07"], [*args[:3], "2024-01-06", *args[4:], "-v"]):
        result = CliRunner().invoke(cli.main, verbose, env=env)
        assert result.exit_code == 0, result.output
        debug = [line for line in result.stderr.splitlines() if " DEBUG " in line]
        assert any("/trading/BTCUSDT" in line and " ms" in line for line in debug), debug
        assert any("plan linear BTCUSDT" in line for line in debug), debug
        assert any("commit on" in line for line in debug), debug
    assert logging.getLogger("context.backfill").level != logging.DEBUG  # restored after the command


def test_group_db_is_used_by_the_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "group.duckdb"
    result = CliRunner().invoke(cli.main, ["--db", str(target), "status"])
    assert result.exit_code == 4 and str(target) in result.stderr  # no store there: a store problem


def test_errors_with_json_are_json_on_stdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli.main, ["status", "--json", "--db", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 4  # no store there: a store problem (README's exit codes)
    data = json.loads(result.stdout)
    assert data["exit_code"] == 4 and "no store at" in data["error"]
    result = CliRunner().invoke(cli.main, ["gaps", "BTCUSDT", "--json", "--days", "nan"])
    assert result.exit_code == 2 and json.loads(result.stdout)["exit_code"] == 2
    result = CliRunner().invoke(cli.main, ["--json-typo", "status"])
    assert result.exit_code == 2 and "error:" in result.stderr


def test_days_with_start_and_end_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli.main, ["gaps", "BTCUSDT", "--start", "2024-01-01", "--end", "2024-01-03",
                                           "--days", "1", "--db", str(tmp_path / "x.duckdb")])
    assert result.exit_code == 2 and "--days cannot be combined" in result.stderr


def test_help_states_the_range_default() -> None:
    for name in ("refresh", "gaps", "export"):
        result = CliRunner().invoke(cli.main, [name, "--help"])
        assert "last 3 days" in result.output, name


def test_config_shows_every_variable_its_source_and_masks_secrets(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("BYBIT_API_TIMEOUT=12\nBYBIT_API_KEY=file-key-123\n")
    env = {"BYBIT_API_SECRET": "very-secret-value", "BYBIT_BACKFILL_MAX_RETRIES": "3", "BYBIT_API_KEY": None}
    result = CliRunner().invoke(cli.main, ["config", "--json"], env=env)  # type: ignore[arg-type]
    assert result.exit_code == 0, result.output
    rows = {r["variable"]: r for r in json.loads(result.stdout)}
    from store.settings import Settings

    assert set(rows) == {name.upper() for name in Settings.model_fields}
    assert (rows["BYBIT_BACKFILL_MAX_RETRIES"]["value"], rows["BYBIT_BACKFILL_MAX_RETRIES"]["source"]) == ("3", "env")
    assert (rows["BYBIT_API_TIMEOUT"]["value"], rows["BYBIT_API_TIMEOUT"]["source"]) == ("12.0", ".env")
    assert rows["BYBIT_RECV_WINDOW_MS"]["source"] == "default"
    assert rows["BYBIT_API_SECRET"] == {**rows["BYBIT_API_SECRET"], "value": "****", "set": True, "source": "env"}
    assert rows["BYBIT_API_KEY"]["value"] == "****" and rows["BYBIT_API_KEY"]["source"] == ".env"
    text = CliRunner().invoke(cli.main, ["config"], env=env).output  # type: ignore[arg-type]
    assert "very-secret-value" not in text and "file-key-123" not in text and "very-secret-value" not in result.output
    flagged = CliRunner().invoke(cli.main, ["--db", "x.duckdb", "config", "--json"], env=env)  # type: ignore[arg-type]
    assert {r["variable"]: r for r in json.loads(flagged.stdout)}["BACKFILL_DB_PATH"]["source"] == "flag"


def test_every_option_states_its_default() -> None:
    for path, command in all_commands():
        for param in command.params:  # type: ignore[attr-defined]
            if isinstance(param, cli.click.Option) and not param.is_flag and not param.show_default:
                assert "default" in (param.help or "").lower(), (path, param.opts)


def test_refresh_concurrency_defaults_to_the_librarys() -> None:
    from store.market import DEFAULT_CONCURRENCY

    option = next(p for p in cli.main.commands["refresh"].params if p.name == "concurrency")  # type: ignore[attr-defined]
    assert option.default == DEFAULT_CONCURRENCY
