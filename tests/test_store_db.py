"""The store's own errors: DuckDB's are translated in store/db.py, staging refuses with ours, and a
transaction cannot be opened inside another."""

from __future__ import annotations

from pathlib import Path

import pytest

from fetch.errors import InputError
from fetch.models import Trade, trades_to_table
from store.db import Store
from store.errors import QueryError, StoreError
from store.ingest import Staging
from store.schema import open_store


def test_a_nested_transaction_is_refused_and_the_outer_one_rolls_back(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.duckdb") as store:
        store.execute("CREATE TABLE t (x INTEGER)")
        with pytest.raises(StoreError, match="does not nest"), store.atomic():
            store.execute("INSERT INTO t VALUES (1)")
            with store.atomic():
                store.execute("INSERT INTO t VALUES (2)")
        assert store.query("SELECT count(*) FROM t") == [(0,)]
        with store.atomic():  # and the store is usable afterwards
            store.execute("INSERT INTO t VALUES (3)")
        assert store.query("SELECT x FROM t") == [(3,)]


def test_an_analysts_failing_sql_is_a_query_error_of_the_one_translator(tmp_path: Path) -> None:
    open_store(tmp_path / "s.duckdb").close()
    with open_store(tmp_path / "s.duckdb", read_only=True, sandbox=True) as store:
        with pytest.raises(QueryError, match="query failed") as failed:
            store.user_query("SELEKT 1")
        assert isinstance(failed.value, InputError) and isinstance(failed.value, StoreError)
        with pytest.raises(QueryError, match="query failed.*read-only"):
            store.user_statements("SELECT 1; DELETE FROM trades")


def test_staging_refuses_a_batch_of_another_symbol_with_an_input_error() -> None:
    private = Store.private()
    staging = Staging(private, category="linear", symbol="BTCUSDT")
    other = trades_to_table([Trade("linear", "ETHUSDT", "a", 1, 1.0, 1.0, "buy", None, "rest")])
    with pytest.raises(InputError, match="holds another symbol"):
        staging.append(other)
    private.close()
