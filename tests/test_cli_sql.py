"""`sql` output streams and is correct: LF endings, JSON without NaN, floats as stored, wide cells cut."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from store import Store, open_store
from store.sql_output import stream_sql


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "sql.duckdb"
    open_store(path).close()  # an empty, migrated store
    return path


def sql(db: Path, *args: str) -> tuple[int, bytes]:
    result = CliRunner().invoke(cli.main, ["sql", *args, "--db", str(db)])
    return result.exit_code, result.stdout_bytes


def test_csv_has_lf_line_endings_and_quotes_only_what_csv_needs(db: Path) -> None:
    code, out = sql(db, "SELECT 1 AS n, 'a,b' AS s, 0.1 + 0.2 AS d UNION ALL SELECT 2, 'x', 1.5", "--format", "csv")
    assert code == 0
    assert b"\r" not in out
    lines = out.decode().split("\n")
    assert lines[0] == "n,s,d" and lines[1].startswith('1,"a,b",') and lines[-1] == ""


def test_json_has_null_for_nan_and_infinity(db: Path) -> None:
    code, out = sql(db, "SELECT 'nan'::DOUBLE AS x, 'inf'::DOUBLE AS y, 1.5::DOUBLE AS z", "--json")
    assert code == 0 and b"NaN" not in out and b"Infinity" not in out
    assert json.loads(out) == [{"x": None, "y": None, "z": 1.5}]
    code, out = sql(db, "SELECT 1 AS a; SELECT 2 AS b", "--format", "json")
    assert json.loads(out) == [[{"a": 1}], [{"b": 2}]]


def test_table_shows_floats_as_stored_and_cuts_wide_cells(db: Path) -> None:
    code, out = sql(db, "SELECT 11.408::REAL AS r, 11.408::DOUBLE AS d, repeat('x', 200) AS wide")
    text = out.decode()
    assert code == 0
    assert "11.408 " in text and "11.407999" not in text and "11.408000000000001" not in text
    assert "x" * 39 + "…" in text and "x" * 41 not in text


def test_answers_stream_in_batches_and_every_row_arrives(db: Path) -> None:
    out = io.BytesIO()
    written = stream_sql(db, "SELECT range AS i FROM range(1000)", "csv", out, batch_rows=64)
    assert written.rows == [1000]
    lines = out.getvalue().decode().splitlines()
    assert lines[0] == "i" and lines[1:] == [str(i) for i in range(1000)]
    table = io.BytesIO()
    stream_sql(db, "SELECT range AS i FROM range(100)", "table", table, batch_rows=8)
    assert len(table.getvalue().decode().splitlines()) == 102


def test_output_file_and_the_sandbox_stay(db: Path, tmp_path: Path) -> None:
    code, _ = sql(db, "SELECT 1 AS n", "--format", "parquet", "--output", str(tmp_path / "one.parquet"))
    assert code == 0
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "one.parquet").to_pylist() == [{"n": 1}]
    result = CliRunner().invoke(cli.main, ["sql", f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'", "--db", str(db)])
    assert result.exit_code == 2 and not (tmp_path / "x.csv").exists()
