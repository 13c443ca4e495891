"""The store's own errors: DuckDB's are translated in store/db.py, staging refuses with ours, and a
transaction cannot be opened inside another; the file kept open across a run of short holds and
let go at the bound or when idle (`store.file_pool`); private databases branched apart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fetch.market_span import Market
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
    staging = Staging(private, market=Market("linear", "BTCUSDT"))
    other = trades_to_table([Trade("linear", "ETHUSDT", "a", 1, 1.0, 1.0, "buy", None, "rest")])
    with pytest.raises(InputError, match="holds another symbol"):
        staging.append(other)
    private.close()


def _opens_of(monkeypatch: pytest.MonkeyPatch, path: Path) -> list[str]:
    """Every time this process opens `path` (DuckDB's own connect, counted)."""
    import store.db

    opened: list[str] = []
    connect = store.db.duckdb.connect

    def counting(database: str = ":memory:", *args: object, **kwargs: object) -> object:
        if database == str(path):
            opened.append(database)
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(store.db.duckdb, "connect", counting)
    return opened


def _commit_many(store: Store, count: int) -> None:
    for k in range(count):
        with store.held(), store.atomic():
            store.execute("INSERT INTO t VALUES (?)", [k])


def test_a_run_of_short_commits_in_a_keeping_block_opens_the_file_once(tmp_path: Path, monkeypatch) -> None:
    import store.file_pool

    path = tmp_path / "s.duckdb"
    monkeypatch.setattr(store.file_pool, "IDLE_RELEASE_S", 60.0)  # never idle here: only the bound may let go
    monkeypatch.setattr(store.file_pool, "HOLD_BOUND_S", 60.0)
    monkeypatch.setattr(store.file_pool, "UNASKED_HOLD_BOUND_S", 60.0)
    with open_store(path) as opened:
        opened.execute("CREATE TABLE t (x INTEGER)")
        opened.release()
        opens = _opens_of(monkeypatch, path)
        _commit_many(opened, 20)
        assert len(opens) == 20, "outside a keeping block each commit takes the file anew"
        opens.clear()
        with opened.keeping():
            siblings = [opened.sibling() for _ in range(3)]
            for handle in (opened, *siblings):
                _commit_many(handle, 10)
            for handle in siblings:
                handle.close()
        assert len(opens) == 1, "the handles of a keeping block share the kept connection"
        assert opened.query("SELECT count(*) FROM t") == [(60,)]


def test_a_keeping_block_lets_the_file_go_once_held_for_the_bound(tmp_path: Path, monkeypatch) -> None:
    import store.file_pool

    path = tmp_path / "s.duckdb"
    monkeypatch.setattr(store.file_pool, "IDLE_RELEASE_S", 60.0)
    monkeypatch.setattr(store.file_pool, "HOLD_BOUND_S", 60.0)
    monkeypatch.setattr(store.file_pool, "UNASKED_HOLD_BOUND_S", 0.0)  # always past the bound
    monkeypatch.setattr(store.file_pool, "RESUME_PAUSE_S", 0.0)
    with open_store(path) as opened:
        opened.execute("CREATE TABLE t (x INTEGER)")
        opened.release()
        opens = _opens_of(monkeypatch, path)
        with opened.keeping():
            _commit_many(opened, 10)
        assert len(opens) == 10, "held past the bound, the file is let go after each commit"


def test_a_keeping_block_lets_the_file_go_at_the_short_bound_only_while_someone_waits(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    import os

    import store.db
    import store.file_pool

    path = tmp_path / "s.duckdb"
    monkeypatch.setattr(store.file_pool, "IDLE_RELEASE_S", 60.0)
    monkeypatch.setattr(store.file_pool, "HOLD_BOUND_S", 1.0)  # far above a tiny commit, even on a slow host
    monkeypatch.setattr(store.file_pool, "UNASKED_HOLD_BOUND_S", 60.0)
    monkeypatch.setattr(store.file_pool, "RESUME_PAUSE_S", 0.0)
    with open_store(path) as opened:
        opened.execute("CREATE TABLE t (x INTEGER)")
        opened.release()
        with opened.keeping():
            _commit_many(opened, 1)
            pool = store.db._pool(str(path))
            while time.monotonic() - pool.taken_at <= store.file_pool.HOLD_BOUND_S:
                time.sleep(0.05)  # past the short bound; each commit below is a hold of a few ms
            opens = _opens_of(monkeypatch, path)
            _commit_many(opened, 10)
            assert len(opens) == 0 and pool.open == 1, "nobody waits: the file is kept past the short bound"
            for _ in range(3):
                _commit_many(opened, 1)
                for _ in range(1000):  # what a process waiting for the lock does: touch the mark, try again
                    store.file_pool.mark_waiting(str(path))
                    if pool.open == 0:
                        break
                    time.sleep(0.02)
                assert pool.open == 0, "someone waits: the file is let go within the short bound"
            store.file_pool.unmark_waiting(str(path))
            opens.clear()
            _commit_many(opened, 10)
            assert len(opens) == 1, "the mark gone, the file is kept again"
        stale = path.with_name(path.name + ".wait")
        stale.touch()
        old = time.time() - 10 * store.file_pool.WAIT_MARK_FRESH_S
        os.utime(stale, (old, old))
        assert not store.file_pool.someone_waits(str(path)), "a mark nobody touched for long is no one waiting"
    assert opened.query("SELECT count(*) FROM t") == [(24,)]


def test_one_hold_as_long_as_the_short_bound_is_let_go_after_though_nobody_waits(tmp_path: Path,
                                                                               monkeypatch) -> None:
    """A busy day's commit lasts longer than the bound by itself: the file is let go after it, so a
    plain DuckDB session (which cannot mark) gets its turn between busy days."""
    import store.db
    import store.file_pool

    path = tmp_path / "s.duckdb"
    monkeypatch.setattr(store.file_pool, "IDLE_RELEASE_S", 60.0)
    monkeypatch.setattr(store.file_pool, "HOLD_BOUND_S", 0.2)
    monkeypatch.setattr(store.file_pool, "UNASKED_HOLD_BOUND_S", 60.0)
    monkeypatch.setattr(store.file_pool, "RESUME_PAUSE_S", 0.0)
    with open_store(path) as opened:
        opened.execute("CREATE TABLE t (x INTEGER)")
        opened.release()
        pool = store.db._pool(str(path))
        with opened.keeping():
            for k in range(3):
                with opened.held(), opened.atomic():
                    opened.execute("INSERT INTO t VALUES (?)", [k])
                    time.sleep(0.25)  # the hold outlasts the short bound
                assert pool.open == 0, "let go after a hold as long as the bound"
    assert opened.query("SELECT count(*) FROM t") == [(3,)]


def test_a_process_waiting_through_the_store_gets_in_although_the_writer_never_pauses(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    """A keeping writer committing without a break holds the file for its unasked bound (here for
    ever), yet a process waiting through `Store.open` marks the file and gets in within the short
    bound; the mark is gone once it has."""
    import subprocess
    import sys
    import threading

    import store.file_pool

    path = tmp_path / "s.duckdb"
    monkeypatch.setattr(store.file_pool, "IDLE_RELEASE_S", 3600.0)
    monkeypatch.setattr(store.file_pool, "HOLD_BOUND_S", 0.2)
    monkeypatch.setattr(store.file_pool, "UNASKED_HOLD_BOUND_S", 3600.0)
    reader = ("import sys\nfrom store.schema import open_store\n"
              "with open_store(sys.argv[1], read_only=True, wait_s=60) as s:\n"
              "    print(s.query_one('SELECT count(*) FROM t')[0])")
    with open_store(path) as opened:
        opened.execute("CREATE TABLE t (x INTEGER)")
        opened.release()  # each commit takes it back: a writer between commits
        stop = threading.Event()

        def commit_until_stopped() -> None:
            with opened.keeping():
                while not stop.is_set():
                    _commit_many(opened, 1)

        writer = threading.Thread(target=commit_until_stopped)
        writer.start()
        try:
            done = subprocess.run([sys.executable, "-c", reader, str(path)], capture_output=True, text=True,
                                  timeout=120, cwd=Path(__file__).resolve().parents[1])
        finally:
            stop.set()
            writer.join(timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        assert int(done.stdout) >= 1
        assert not path.with_name(path.name + ".wait").exists(), "the reader took its mark away"


def test_an_idle_keeping_block_lets_the_file_go_for_another_process(tmp_path: Path, monkeypatch) -> None:
    import subprocess
    import sys

    import store.file_pool

    path = tmp_path / "s.duckdb"
    monkeypatch.setattr(store.file_pool, "HOLD_BOUND_S", 3600.0)  # only idleness can let it go
    monkeypatch.setattr(store.file_pool, "UNASKED_HOLD_BOUND_S", 3600.0)
    probe = ("import duckdb, sys\ntry:\n    duckdb.connect(sys.argv[1], read_only=True).close()\n"
             "except duckdb.Error:\n    sys.exit(3)")
    with open_store(path) as opened:
        opened.execute("CREATE TABLE t (x INTEGER)")
        with opened.keeping():
            _commit_many(opened, 1)
            opened.release()
            for _ in range(600):  # each probe is a new process: a few seconds at most
                if subprocess.run([sys.executable, "-c", probe, str(path)], check=False).returncode == 0:
                    break
            else:
                raise AssertionError("an idle writer never let the file go")
            _commit_many(opened, 1)  # and it takes the file back for its next commit
        assert opened.query("SELECT count(*) FROM t") == [(2,)]


def test_a_read_only_open_in_a_keeping_block_replaces_the_kept_writer_connection(tmp_path: Path,
                                                                               monkeypatch) -> None:
    import store.file_pool

    monkeypatch.setattr(store.file_pool, "IDLE_RELEASE_S", 60.0)
    path = tmp_path / "s.duckdb"
    with open_store(path) as opened, opened.keeping():
        opened.execute("CREATE TABLE t (x INTEGER)")
        _commit_many(opened, 1)
        opened.release()  # kept: DuckDB refuses a second configuration of the file in one process
        with open_store(path, read_only=True) as reader:
            assert reader.query("SELECT count(*) FROM t") == [(1,)]
        _commit_many(opened, 1)
        assert opened.query("SELECT count(*) FROM t") == [(2,)]


def test_branches_of_one_private_database_stage_apart(tmp_path: Path) -> None:
    """A whole-market run stages its symbols in branches of one private database, several at once
    in threads: each branch stages its own symbol's rows only (its tick-id queries apart), and each
    commits into the store as its own symbol."""
    import threading

    import pyarrow.compute as pc

    from store.ingest import ingest_staged

    symbols = [f"S{k}USDT" for k in range(6)]
    with Store.private() as private, open_store(tmp_path / "s.duckdb") as store:
        branches = [private.branch() for _ in symbols]
        stagings = [Staging(b, market=Market("linear", s)) for b, s in zip(branches, symbols, strict=True)]

        def stage(k: int) -> None:
            for batch in range(5):
                rows = [Trade("linear", symbols[k], f"{symbols[k]}-{batch}-{n}", 1_000 * n + k, 1.0 + k, 1.0,
                              "buy", None, "archive") for n in range(50 + k)]
                stagings[k].append(trades_to_table(rows))

        threads = [threading.Thread(target=stage, args=(k,)) for k in range(len(symbols))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        for k, staging in enumerate(stagings):  # each branch staged its own symbol's rows only
            staging.detach()
            assert staging.table is not None
            ids = staging.table.column("trade_id")
            assert (ids.length(), pc.count_distinct(ids).as_py()) == (5 * (50 + k),) * 2
            assert pc.all(pc.starts_with(ids, f"{symbols[k]}-")).as_py()
        for staging in stagings:
            with store.atomic():
                ingest_staged(store, staging)
        got = store.query("SELECT symbol, count(*), count(*) FILTER (WHERE NOT starts_with(trade_id, symbol)) "
                          "FROM trades GROUP BY symbol ORDER BY symbol")
        assert got == [(s, 5 * (50 + k), 0) for k, s in enumerate(symbols)]
        for branch in branches:
            branch.close()


def test_headers_that_land_while_duckdb_reads_the_empty_file_are_found_by_the_next_try(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The creator can finish while DuckDB reads the file it found empty: the refusal then comes back
    when the file is no longer empty, and is still a store being created (a busy machine found it)."""
    import duckdb

    path = tmp_path / "s.duckdb"
    path.write_bytes(b"")
    made = tmp_path / "made.duckdb"
    duckdb.connect(str(made)).close()
    real, calls = duckdb.connect, []

    def connect(database: str, *args: object, **kwargs: object) -> object:
        calls.append(database)
        if len(calls) > 1:
            return real(database, *args, **kwargs)
        try:
            return real(database, *args, **kwargs)  # reads the empty file, and refuses it
        finally:
            made.replace(path)  # meanwhile the creator's headers land

    monkeypatch.setattr(duckdb, "connect", connect)
    with Store.open(path, wait_s=5) as opened:
        assert opened.query_one("SELECT 1") == (1,)
    assert len(calls) == 2


def test_a_store_file_another_process_is_creating_is_waited_for_not_refused(tmp_path: Path) -> None:
    """DuckDB creates a new file before it locks it and writes its headers: a process opening it in
    between finds it empty. That is a store being created (waited for, like a lock), while a file
    that stays empty is not a database."""
    import subprocess
    import sys
    import threading

    from store.errors import NotADatabase

    path = tmp_path / "s.duckdb"
    path.write_bytes(b"")

    # The headers land after a moment (here: a whole database made by another process beforehand,
    # swapped in 0.3 s after the open began; made first, since a busy machine can take longer than
    # the grace just to start a Python).
    made = tmp_path / "made.duckdb"
    subprocess.run([sys.executable, "-c", "import duckdb, sys; duckdb.connect(sys.argv[1]).close()", str(made)],
                   check=True)

    def create() -> None:
        time.sleep(0.3)
        made.replace(path)

    creator = threading.Thread(target=create)
    creator.start()
    with Store.open(path, wait_s=30) as opened:
        assert opened.query_one("SELECT 1") == (1,)
    creator.join()
    other = tmp_path / "empty.duckdb"
    other.write_bytes(b"")
    with pytest.raises(NotADatabase):
        Store.open(other, wait_s=30)
