"""Imports flow one way (cli -> store -> fetch; sim beside them) and the pure modules stay light.

The load checks run in a fresh interpreter each, since this test process has long imported everything;
the one-way checks read the source, so an import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def loaded_by(statement: str) -> set[str]:
    """The modules a fresh interpreter has imported after `statement`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def heavy(loaded: set[str], *roots: str) -> list[str]:
    return sorted(name for name in loaded if name.split(".")[0] in roots)


@pytest.mark.parametrize("module", ["fetch.retry", "fetch.breaker", "fetch.limiter", "fetch.wire"])
def test_the_retry_breaker_and_limiter_layers_load_neither_aiohttp_nor_pyarrow(module: str) -> None:
    assert heavy(loaded_by(f"import {module}"), "aiohttp", "pyarrow") == []


@pytest.mark.parametrize("module", ["store.plan", "store.timeutil", "store.timerange"])
def test_refresh_planning_and_the_time_helpers_load_no_duckdb(module: str) -> None:
    assert heavy(loaded_by(f"import {module}"), "duckdb", "pyarrow", "aiohttp") == []


def test_opening_a_store_does_not_load_its_schema() -> None:
    assert "store.schema" not in loaded_by("import store.db")


def test_the_emulator_loads_no_store() -> None:
    modules = sorted(f"sim.{path.stem}" for path in (ROOT / "sim").glob("*.py") if path.stem != "__init__")
    assert heavy(loaded_by("; ".join(f"import {m}" for m in ["sim", *modules])), "store", "cli", "demo") == []


def imports_of(package: str) -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its source (`TYPE_CHECKING` blocks aside)."""
    graph: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).glob("*.py")):
        name = package if path.stem == "__init__" else f"{package}.{path.stem}"
        tree = ast.parse(path.read_text())
        typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                       for node in ast.walk(block)}
        found: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom):
                base = (package + (f".{node.module}" if node.module else "")) if node.level else node.module or ""
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    found.add(candidate if (ROOT / (candidate.replace(".", "/") + ".py")).exists() else base)
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        graph[name] = {m for m in found if m.split(".")[0] in {"cli", "demo", "fetch", "sim", "store"}}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found = []

    def walk(path: list[str]) -> None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt in path:
                found.append(path[path.index(nxt):] + [nxt])
            else:
                walk([*path, nxt])

    for start in sorted(graph):
        walk([start])
    return found


def test_fetch_and_store_have_no_import_cycle() -> None:
    graph = {**imports_of("fetch"), **imports_of("store")}
    assert cycles(graph) == []


@pytest.mark.parametrize(("package", "forbidden"), [("fetch", {"store", "sim", "cli", "demo"}),
                                                    ("store", {"sim", "cli", "demo"}),
                                                    ("sim", {"store", "cli", "demo"})])
def test_imports_flow_one_way(package: str, forbidden: set[str]) -> None:
    crossing = {module: sorted(m for m in deps if m.split(".")[0] in forbidden)
                for module, deps in imports_of(package).items()}
    assert {module: deps for module, deps in crossing.items() if deps} == {}
