"""Ingest dedup and conflicts, gap SQL, migrations and locking on a real DuckDB file (no server)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from fetch.market_span import Market, Span
from fetch.models import TRADE_SCHEMA
from store import NotADatabase, Store, StoreLocked
from store.schema import open_store
from store.coverage import add_coverage, find_gaps, silences, uncovered
from store.ingest import ingest_batch
from store.schema import MIGRATIONS, SCHEMA_VERSION

SECOND = 1_000_000


def batch(ids: list[str], times: list[int], price: float = 100.0, source: str = "archive") -> pa.Table:
    n = len(ids)
    return pa.table({"category": ["linear"] * n, "symbol": ["BTCUSDT"] * n, "trade_id": ids,
                     "time_us": times, "price": [price] * n, "qty": [1.0] * n, "side": ["sell"] * n,
                     "is_block_trade": [None] * n, "source": [source] * n}, schema=TRADE_SCHEMA)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    opened = open_store(tmp_path / "t.duckdb")
    yield opened
    opened.close()


def ingest(store: Store, table: pa.Table):
    with store.atomic():
        return ingest_batch(store, table, market=Market("linear", "BTCUSDT"))


def count_duplicate_keys(store: Store) -> int:
    row = store.query_one("SELECT count(*) FROM (SELECT trade_id FROM trades GROUP BY ALL "
                          "HAVING count(*) > 1)")
    return int(row[0])


def test_repeating_any_input_never_creates_a_duplicate(store: Store) -> None:
    table = batch(["a", "b", "c"], [1, 2, 3])
    first = ingest(store, table)
    for _ in range(3):
        again = ingest(store, table)
        assert (again.added, again.duplicates, again.conflicts) == (0, 3, 0)
    assert first.added == 3
    assert count_duplicate_keys(store) == 0
    assert store.query_one("SELECT count(*) FROM trades")[0] == 3


def test_ids_repeated_inside_one_batch_are_folded(store: Store) -> None:
    result = ingest(store, batch(["a", "a", "b", "b", "b"], [1, 1, 2, 2, 2]))
    assert (result.received, result.added, result.duplicates, result.conflicts) == (5, 2, 3, 0)


def test_same_id_with_other_values_is_a_reported_conflict(store: Store) -> None:
    ingest(store, batch(["a"], [1], price=100.0))
    result = ingest(store, batch(["a"], [1], price=101.0))
    assert (result.added, result.conflicts) == (0, 1)
    stored = store.query_one("SELECT price FROM trades WHERE trade_id = 'a'")[0]
    assert stored == 100.0, "the stored row is kept"
    logged = store.query("SELECT stored_price, new_price FROM conflicts")
    assert logged == [(100.0, 101.0)]


def test_conflict_inside_one_batch_is_counted(store: Store) -> None:
    table = pa.concat_tables([batch(["a"], [1], price=1.0), batch(["a"], [1], price=2.0)])
    result = ingest(store, table)
    assert (result.added, result.conflicts) == (1, 1)


def test_received_is_added_plus_duplicates_plus_conflicts(store: Store) -> None:
    ingest(store, batch(["a", "b"], [1, 2]))
    table = pa.concat_tables([batch(["a", "c", "c"], [1, 3, 3]), batch(["b"], [2], price=5.0)])
    result = ingest(store, table)
    assert result.received == result.added + result.duplicates + result.conflicts == 4
    assert (result.added, result.duplicates, result.conflicts) == (1, 2, 1)


def test_a_failed_transaction_leaves_nothing_behind(store: Store) -> None:
    with pytest.raises(RuntimeError), store.atomic():
        ingest_batch(store, batch(["a"], [1]), market=Market("linear", "BTCUSDT"))
        add_coverage(store, market=Market("linear", "BTCUSDT"), source="archive", span=Span(0, 10),
                     added_rows=1)
        raise RuntimeError("crash between the rows and the commit")
    assert store.query_one("SELECT count(*) FROM trades")[0] == 0
    assert store.query_one("SELECT count(*) FROM coverage")[0] == 0


def test_uncovered_is_the_range_minus_the_union_of_coverage(store: Store) -> None:
    with store.atomic():
        for start, end in [(10, 20), (15, 30), (40, 50), (50, 55)]:
            add_coverage(store, market=Market("linear", "BTCUSDT"), source="archive",
                         span=Span(start, end), added_rows=0)
        add_coverage(store, market=Market("linear", "ETHUSDT"), source="archive", span=Span(0, 100),
                     added_rows=0)
    assert uncovered(store, Market("linear", "BTCUSDT"), Span(0, 100)) == [(0, 10), (30, 40), (55, 100)]
    assert uncovered(store, Market("linear", "BTCUSDT"), Span(12, 28)) == []
    assert uncovered(store, Market("linear", "BTCUSDT"), Span(60, 70)) == [(60, 70)]
    assert uncovered(store, Market("linear", "ETHUSDT"), Span(0, 100)) == []


def test_silences_are_exact_pairs_of_consecutive_trades(store: Store) -> None:
    times = [0, 5 * SECOND, 10 * SECOND, 100 * SECOND, 101 * SECOND, 300 * SECOND]
    ingest(store, batch([str(i) for i in range(len(times))], times))
    found = silences(store, Market("linear", "BTCUSDT"), Span(0, 400 * SECOND), min_silence_s=60)
    assert found == [(10 * SECOND, 100 * SECOND), (101 * SECOND, 300 * SECOND)]
    assert silences(store, Market("linear", "BTCUSDT"), Span(0, 400 * SECOND), min_silence_s=500) == []


def test_a_day_holding_fewer_rows_than_its_file_is_a_count_mismatch(store: Store) -> None:
    ingest(store, batch(["a", "b"], [1, 2]))
    with store.atomic():
        add_coverage(store, market=Market("linear", "BTCUSDT"), source="archive", span=Span(0, 86_400 * SECOND),
                     added_rows=2, file_rows=3, expected_rows=3)
    kinds = [g.kind for g in find_gaps(store, Market("linear", "BTCUSDT"), Span(0, 86_400 * SECOND))]
    assert kinds == ["count_mismatch"]


def test_a_version_1_file_is_upgraded_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    old = Store.open(path)
    old.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, "
                "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
    for statement in MIGRATIONS[0]:
        old.execute(statement)
    old.execute("INSERT INTO schema_version (version) VALUES (1)")
    old.close()
    with open_store(path) as upgraded:
        assert upgraded.query_one("SELECT max(version) FROM schema_version")[0] == SCHEMA_VERSION
        upgraded.query("SELECT count(*) FROM exports")


def test_tables_and_columns_carry_comments(store: Store) -> None:
    rows = store.query("SELECT comment FROM duckdb_columns() WHERE table_name = 'trades'")
    assert rows and all(comment for (comment,) in rows)


def test_a_file_that_is_not_duckdb_gets_a_clear_error_and_is_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.duckdb"
    path.write_bytes(b"not a database at all\n")
    with pytest.raises(NotADatabase, match="not a DuckDB database"):
        open_store(path)
    assert path.read_bytes() == b"not a database at all\n"


def test_a_second_writer_gets_store_locked_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "busy.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time, duckdb
        c = duckdb.connect({str(path)!r})
        print("ready", flush=True)
        sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLocked) as caught:
            open_store(path)
        assert str(path) in str(caught.value)
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    with open_store(path, wait_s=5) as store:
        assert store.query_one("SELECT 1")[0] == 1
