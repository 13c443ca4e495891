"""Start-up: read-only commands never load the fetch client or the refresh machinery, and `store` and
`fetch` import a submodule only when one of its names is used. Each check runs in a fresh interpreter,
since this test process has long imported everything."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import fetch
import store
from store.schema import open_store

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ["aiohttp", "fetch.client", "fetch.transport", "store.orchestrator", "store.pipeline", "store.executions",
         "store.history"]

RUN_COMMANDS = """
import json, sys
from click.testing import CliRunner
import cli
for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(cli.main, args, catch_exceptions=False)
    assert result.exit_code == 0, (args, result.output)
print(json.dumps(sorted(sys.modules)))
"""


def loaded_after(code: str, tmp_path: Path, *args: str, extra_env: dict[str, str] | None = None) -> set[str]:
    """The modules a fresh interpreter has imported after running `code` (which prints them as JSON)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           **(extra_env or {})}
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_read_only_commands_never_import_aiohttp_the_client_or_refresh(tmp_path: Path) -> None:
    db = str(tmp_path / "s.duckdb")
    open_store(db).close()
    commands = [["status", "--db", db], ["sql", "SELECT 1", "--db", db],
                ["gaps", "BTCUSDT", "--start", "2024-01-01", "--end", "2024-01-03", "--db", db],
                ["verify", "--db", db],
                ["export", "BTCUSDT", "--start", "2024-01-01", "--end", "2024-01-02", "--db", db,
                 "--cache-dir", str(tmp_path / "cache")]]
    loaded = loaded_after(RUN_COMMANDS, tmp_path, json.dumps(commands))
    assert "store.report" in loaded and "store.coverage" in loaded, "the commands did run"
    assert sorted(loaded & set(HEAVY)) == []


def test_sql_status_and_gaps_start_without_pyarrow(tmp_path: Path) -> None:
    db = str(tmp_path / "s.duckdb")
    open_store(db).close()
    commands = [["status", "--db", db], ["sql", "SELECT 1", "--db", db],
                ["gaps", "BTCUSDT", "--start", "2024-01-01", "--end", "2024-01-03", "--db", db]]
    loaded = loaded_after(RUN_COMMANDS, tmp_path, json.dumps(commands))
    assert "duckdb" in loaded and "pyarrow" not in loaded


def test_help_and_version_load_neither_pydantic_nor_duckdb(tmp_path: Path) -> None:
    loaded = loaded_after(RUN_COMMANDS, tmp_path, json.dumps([["--help"], ["--version"]]))
    assert sorted(loaded & {"pydantic", "duckdb", "pyarrow", *HEAVY}) == []


def test_importing_the_packages_imports_no_submodule_until_a_name_is_used(tmp_path: Path) -> None:
    code = ("import json, sys; import fetch, store; from fetch.errors import InputError; "
            "from store.settings import Settings; print(json.dumps(sorted(sys.modules)))")
    loaded = loaded_after(code, tmp_path)
    assert sorted(loaded & {"duckdb", "pyarrow", "store.db", "fetch.models", *HEAVY}) == []


def test_store_refresh_stays_the_function_when_its_module_is_imported_first(tmp_path: Path) -> None:
    code = ("import json, sys; import store.history; from store import refresh; "
            "print(json.dumps([refresh is sys.modules['store.orchestrator'].refresh]))")
    assert loaded_after(code, tmp_path) == {True}


def type_checking_imports(package: ModuleType) -> dict[str, str]:
    """Name -> module of the imports in the package's `if TYPE_CHECKING:` block."""
    tree = ast.parse(Path(str(package.__file__)).read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If)
                 and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
    return {alias.name: importlib.util.resolve_name("." * node.level + (node.module or ""), package.__name__)
            for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names}


@pytest.mark.parametrize("package", [fetch, store], ids=["fetch", "store"])
def test_lazy_names_are_the_real_objects_mypy_sees(package: ModuleType) -> None:
    typed = type_checking_imports(package)
    assert sorted(typed) == sorted(package.__all__)
    for name, module in typed.items():
        assert getattr(package, name) is getattr(importlib.import_module(module), name), name
    assert set(package.__all__) <= set(dir(package))
    assert not hasattr(package, "no_such_name")


def test_a_refresh_of_a_covered_range_loads_neither_the_network_stack_nor_pyarrow(sim_thread, tmp_path: Path) -> None:
    db, cache = str(tmp_path / "s.duckdb"), str(tmp_path / "cache")
    env = {"BYBIT_REST_BASE_URL": sim_thread.url, "BYBIT_ARCHIVE_BASE_URL": sim_thread.url,
           "BYBIT_API_KEY": "", "BYBIT_API_SECRET": ""}
    refresh = ["refresh", "BTCUSDT", "--start", "2024-01-02", "--end", "2024-01-04", "--db", db, "--cache-dir", cache]
    cold = loaded_after(RUN_COMMANDS, tmp_path, json.dumps([refresh]), extra_env=env)
    warm = loaded_after(RUN_COMMANDS, tmp_path, json.dumps([refresh]), extra_env=env)
    assert "aiohttp" in cold, "the first run did fetch"
    assert "store.orchestrator" in warm
    assert sorted(warm & {"aiohttp", "fetch.client", "fetch.transport", "store.pipeline", "pyarrow"}) == []
