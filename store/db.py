"""The one DuckDB connection of a run, and the only place `duckdb.Error` is caught and translated.

DuckDB already allows a single writing process per file; `Store.open` turns its lock error into
`StoreLocked` naming the file (optionally waiting for the lock), and a foreign file into
`NotADatabase`, before anything is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Self

import duckdb

from fetch.errors import InputError
from store.errors import NotADatabase, QueryError, StoreError, StoreLocked
from store.file_pool import LOCK_POLL_S, FilePool, mark_waiting, unmark_waiting

log = logging.getLogger("context.backfill")

Tracer = Callable[[str, Sequence[Any]], None]

# An analyst's connection (`sql`): no file outside the store is read or written (COPY TO, ATTACH,
# EXPORT, read_csv, glob), no extension installed or loaded, and no SET or PRAGMA can undo it.
# DuckDB enforces this itself, so no SQL text is inspected by us.
SANDBOX = {"enable_external_access": False, "lock_configuration": True}

# DuckDB's file lock keeps out other processes, but connections of one process share the database:
# two threads ingesting the same day in concurrent transactions would both pass the anti-join and
# store the day twice. Write transactions on one file are therefore serialized within the process.
_WRITE_LOCKS: dict[str, threading.RLock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock(path: str) -> threading.RLock:
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(os.path.realpath(path), threading.RLock())


def _translate(error: duckdb.Error, path: str, *, query: bool = False) -> StoreError | KeyboardInterrupt:
    """DuckDB's error as ours. `query`: it came from an analyst's own SQL on an open connection, so it
    is that SQL's fault (`QueryError`), not the file's."""
    if isinstance(error, duckdb.InterruptException):  # Ctrl-C inside a statement: the user's, not ours
        return KeyboardInterrupt()
    text = str(error)
    if query:
        return QueryError(f"query failed: {text.splitlines()[0] if text else error!r}")
    if "Conflicting lock" in text or "Could not set lock" in text:
        return StoreLocked(path, _holder(path, text))
    if "not a valid DuckDB database" in text or "Unable to open database" in text:
        return NotADatabase(path, text.split("\n")[0])
    return StoreError(f"DuckDB error on {path}: {text.splitlines()[0] if text else error!r}")


_POOLS: dict[str, FilePool] = {}


def _pool(path: str) -> FilePool:
    """The file's pool (one per file in the process), opening and closing through `_connect`/`_close`."""
    key = os.path.realpath(path)
    with _WRITE_LOCKS_GUARD:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = FilePool(path, _connect, _close)
        return pool


# A writer that let the file go between its commits waits at least this long to take it back: another
# writer's commit (or a reader's query) holds it for seconds, never minutes.
REACQUIRE_WAIT_S = 60.0
PRIVATE = ":memory:"


# Connections of one process to one file share one DuckDB instance, torn down when the last closes.
# A connection opened while another thread closes the last one can land on the dying instance (its
# Arrow scans are gone): opening and closing a file are therefore serialized within the process.
_OPEN_CLOSE_LOCKS: dict[str, threading.Lock] = {}


def _open_close_lock(path: str) -> threading.Lock:
    with _WRITE_LOCKS_GUARD:
        return _OPEN_CLOSE_LOCKS.setdefault(os.path.realpath(path), threading.Lock())


def _close(connection: duckdb.DuckDBPyConnection, path: str) -> None:
    with _open_close_lock(path), contextlib.suppress(duckdb.Error):
        try:
            connection.close()
        finally:
            if path != PRIVATE:
                _pool(path).closed()


# DuckDB creates a new file before it locks it and writes its headers: another process opening it
# in between finds an empty file, which DuckDB calls "not a valid DuckDB database". For this long an
# empty file is taken for one being created (retried like a lock); after it, it is not a database.
CREATING_GRACE_S = 2.0


# DuckDB checkpoints inside a COMMIT once the log passes 16 MB: a whole market of small days then
# paid a checkpoint (50-120 ms) every few commits, on top of the one each let-go of the file costs
# (closing the last connection checkpoints). A writer lets go at least every UNASKED_HOLD_BOUND_S
# (`store.file_pool`), so the log never holds more than a few seconds of small commits; big inserts
# skip it (written to the file as they go). Measured: 200 small symbols 5.3 -> 4.5 s.
WAL_AUTOCHECKPOINT_SQL = "SET wal_autocheckpoint = '1GB'"
# A writer never draws DuckDB's progress bar: past 2 s of a statement (an id filter's rebuild from a
# big market) it is drawn on stdout, inside `--json` output. Set once per open, not per statement.
NO_PROGRESS_BAR_SQL = "SET enable_progress_bar = false"


def _connect(path: str, read_only: bool, config: dict[str, Any], wait_s: float) -> duckdb.DuckDBPyConnection:
    """Open the file, retrying the lock every LOCK_POLL_S for up to `wait_s` while another process
    holds it (or, briefly, creates it); while waiting, the file's wait mark says so
    (`store.file_pool.mark_waiting`)."""
    began = time.monotonic()
    deadline = began + wait_s
    marked = False
    try:
        while True:
            # Empty before the try: if the creator writes its headers while DuckDB reads the empty
            # file, the file is no longer empty when the refusal comes back, and the next try finds them.
            was_empty = _is_empty(path)
            try:
                with _open_close_lock(path):
                    connection = duckdb.connect(path, read_only=read_only, config=config)
                    if not read_only:
                        connection.execute(WAL_AUTOCHECKPOINT_SQL)
                        connection.execute(NO_PROGRESS_BAR_SQL)
                    _pool(path).opened()
                return connection
            except duckdb.Error as error:
                translated = _translate(error, path)
                now = time.monotonic()
                being_created = (isinstance(translated, NotADatabase)
                                 and now < min(deadline, began + CREATING_GRACE_S)
                                 and (was_empty or _is_empty(path)))
                if isinstance(translated, StoreLocked) and now < deadline:
                    mark_waiting(path)  # a keeping writer lets go at its short bound for a process that waits
                    marked = True
                    time.sleep(LOCK_POLL_S)
                    continue
                if being_created:
                    time.sleep(LOCK_POLL_S)
                    continue
                if isinstance(translated, StoreLocked):
                    translated = StoreLocked(path, translated.holder, wait_s)
                raise translated from None
    finally:
        if marked:  # in, out of patience or interrupted: this process no longer waits
            unmark_waiting(path)


def _is_empty(path: str) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


def _holder(path: str, text: str) -> str:
    """Who holds the file: the writer's own note beside the store if it left one, else DuckDB's pid."""
    from store.writer_state import active_writer

    writer = active_writer(Path(path))
    if writer is not None:
        return f"{writer['command']}, pid {writer['pid']}, since {writer['since']}"
    match = re.search(r"PID (\d+)", text)
    return f"pid {match[1]}" if match else ""


class Store:
    """A DuckDB file opened for this run: parameterized `execute`/`query`, and `atomic()`.

    DuckDB lets one process at a time open a file for writing, and no other process open it at all
    meanwhile. So a long job holds the file only while it commits: `release()` closes the connection
    (other processes may open the file), and the next statement reopens it, waiting for the lock
    (`held()` does both around a block); inside `keeping()` a run of short holds shares one open
    (`store.file_pool`). A store can also be private (`Store.private()`): an in-memory database where a
    refresh stages a day without touching the file, branched for refreshes staging side by side."""

    def __init__(self, connection: duckdb.DuckDBPyConnection | None, path: str, read_only: bool, *,
                 wait_s: float = 0.0, config: dict[str, Any] | None = None) -> None:
        self._connection = connection
        self.path = path
        self.read_only = read_only
        self.tracer: Tracer | None = None
        self.wait_s = wait_s
        self._config = dict(config or {})
        self._write_lock = _write_lock(path)
        self._pool = _pool(path) if path != PRIVATE else None
        self._in_transaction = False
        # Per transaction, for the layers above: work to do right after COMMIT (still holding the
        # file and the write lock: `store.id_filter` writes its header there) and values shared by
        # the statements of one transaction. Both are dropped when it ends either way.
        self.on_commit: list[Callable[[], None]] = []
        self.scope: dict[Any, Any] = {}

    @classmethod
    def private(cls, *, memory_limit: str = "1GB", temp_directory: str | Path | None = None) -> Store:
        """A database of this process alone (in memory, spilling to `temp_directory`)."""
        config: dict[str, Any] = {"memory_limit": memory_limit}
        if temp_directory is not None:
            config["temp_directory"] = str(temp_directory)
        return cls(duckdb.connect(PRIVATE, config=config), PRIVATE, False, config=config)

    def branch(self) -> Store:
        """Another connection to this private database, its temp tables (a staged `incoming`) its
        own: the symbols of a run stage side by side in one database, created once for the run."""
        if self._pool is not None:
            raise StoreError(f"only a private database branches, not {self.path}")
        return Store(self.connection.cursor(), PRIVATE, False, config=self._config)

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The open connection, reopened (waiting for the file's lock) after a `release()`."""
        if self._connection is None:
            assert self._pool is not None  # a private database is never released
            self._connection = self._pool.take(self.read_only, self._config, max(self.wait_s, REACQUIRE_WAIT_S))
        return self._connection

    def sibling(self) -> Store:
        """Another handle on the same file with the same configuration, for another task or thread
        (opened on first use, let go by its own `release`): unlike a cursor, it outlives this one."""
        return Store(None, self.path, self.read_only, wait_s=self.wait_s, config=self._config)

    @property
    def released(self) -> bool:
        return self._connection is None

    def release(self) -> None:
        """Let the file go (other processes may open it) until the next statement needs it."""
        if self._pool is None or self._in_transaction or self._connection is None:
            return
        self._pool.give_back(self._connection, self.read_only, self._config)
        self._connection = None

    @contextlib.contextmanager
    def keeping(self) -> Iterator[Store]:
        """Within the block, a `release()` keeps the file open for the next hold unless this process
        has held it for its bound (`store.file_pool.HOLD_BOUND_S` when another process waits) or
        nothing uses it for a moment: a run of small commits pays for one open, not one per commit,
        and a process waiting for the file still gets it within about a second.
        Handles of this process on the same file share the kept connections; blocks may nest and
        overlap (the file is kept while any runs). Let go, whatever is kept, when the last one ends."""
        if self._pool is None:
            yield self
            return
        self._pool.keep()
        try:
            yield self
        finally:
            self._pool.unkeep()

    @contextlib.contextmanager
    def held(self) -> Iterator[Store]:
        """The file held for the block; let go after it if it was let go before it."""
        was_released = self.released
        try:
            yield self
        finally:
            if was_released:
                self.release()

    @classmethod
    def open(cls, path: str | Path, *, read_only: bool = False, wait_s: float = 0.0,
             memory_limit: str = "2GB", sandbox: bool = False) -> Store:
        """Open the file as it is (creating it unless read-only); wait up to `wait_s` for another
        writer. `sandbox` (read-only only) locks the connection away from every other file (`SANDBOX`).
        Nothing is migrated here: `store.schema.open_store` opens and brings the schema up to date."""
        target = str(path)
        if read_only and not Path(target).exists():
            raise StoreError(f"no store at {target}; run `bybit-backfill refresh` first or pass --db")
        if not read_only:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {"memory_limit": memory_limit}
        if sandbox:
            config.update(SANDBOX)
        connection = _pool(target).take(read_only or sandbox, config, wait_s)
        return cls(connection, target, read_only or sandbox, wait_s=wait_s, config=config)

    def close(self) -> None:
        """Done with the file (inside a `keeping()` block its connection may serve another handle)."""
        if self._connection is None:
            return
        if self._pool is not None and not self._in_transaction:
            self._pool.give_back(self._connection, self.read_only, self._config)
        else:
            _close(self._connection, self.path)
        self._connection = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _trace(self, sql: str, params: Sequence[Any]) -> None:
        if self.tracer is not None:
            self.tracer(sql, params)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._trace(sql, params)
        try:
            self.connection.execute(sql, list(params))
        except duckdb.Error as error:
            raise _translate(error, self.path) from None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._trace(sql, params)
        try:
            return self.connection.execute(sql, list(params)).fetchall()
        except duckdb.Error as error:
            raise _translate(error, self.path) from None

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def query_dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        self._trace(sql, params)
        try:
            cursor = self.connection.execute(sql, list(params))
            names = [d[0] for d in cursor.description or []]
            return [dict(zip(names, row)) for row in cursor.fetchall()]
        except duckdb.Error as error:
            raise _translate(error, self.path) from None

    def user_query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run an analyst's own SQL (only ever on a read-only store): column names and rows."""
        self._trace(sql, ())
        try:
            cursor = self.connection.execute(sql)
            return [d[0] for d in cursor.description or []], cursor.fetchall()
        except duckdb.Error as error:
            raise _translate(error, self.path, query=True) from None

    def user_statements(self, sql: str, *, arrow: bool = False) -> list[tuple[str, list[str], Any]]:
        """Each statement of an analyst's SQL, run in order: (its text, column names, rows or an
        Arrow table). Empty or comment-only SQL is an `InputError`: there is nothing to answer."""
        statements = self.user_statement_texts(sql)
        results = []
        for text in statements:
            self._trace(text, ())
            try:
                if arrow:
                    relation = self.connection.sql(text)
                    table = relation.to_arrow_table() if relation is not None else None
                    results.append((text, list(table.column_names) if table is not None else [], table))
                    continue
                cursor = self.connection.execute(text)
                names = [d[0] for d in cursor.description or []]
                results.append((text, names, cursor.fetchall() if names else []))
            except duckdb.Error as error:
                raise _translate(error, self.path, query=True) from None
        return results

    def user_statement_texts(self, sql: str) -> list[str]:
        """The statements of an analyst's SQL, split by DuckDB's own parser (never by us)."""
        try:
            statements = [str(s.query).strip() for s in self.connection.extract_statements(sql)]
        except duckdb.Error as error:
            raise _translate(error, self.path, query=True) from None
        if not statements:
            raise InputError("the query is empty (or only comments): give a SQL statement, e.g. "
                             "\"SELECT * FROM daily\"")
        return statements

    def user_batches(self, statement: str, rows_per_batch: int = 65_536) -> tuple[Any, Iterator[Any]] | None:
        """Run one analyst statement and stream its answer: (Arrow schema, Arrow record batches), or
        None for a statement without an answer. Only one batch is held at a time, so the memory a
        million-row answer takes is one batch's. Read the batches before the next statement."""
        self._trace(statement, ())
        try:
            relation = self.connection.sql(statement)
            if relation is None:
                return None
            reader = relation.to_arrow_reader(rows_per_batch)
        except duckdb.Error as error:
            raise _translate(error, self.path, query=True) from None

        def batches() -> Iterator[Any]:
            try:
                yield from reader
            except duckdb.Error as error:
                raise _translate(error, self.path, query=True) from None

        return reader.schema, batches()

    def user_row_batches(self, statement: str, rows_per_batch: int = 10_000
                         ) -> tuple[list[tuple[str, str]], Iterator[list[tuple[Any, ...]]]] | None:
        """`user_batches` without pyarrow (the table and JSON outputs render row by row anyway, and
        `sql` then starts without loading it): ((name, DuckDB type) per column, batches of rows)."""
        self._trace(statement, ())
        try:
            cursor = self.connection.execute(statement)
        except duckdb.Error as error:
            raise _translate(error, self.path, query=True) from None
        if not cursor.description:
            return None
        columns = [(str(d[0]), str(d[1])) for d in cursor.description]

        def batches() -> Iterator[list[tuple[Any, ...]]]:
            while True:
                try:
                    rows = cursor.fetchmany(rows_per_batch)
                except duckdb.Error as error:
                    raise _translate(error, self.path, query=True) from None
                if not rows:
                    return
                yield rows

        return columns, batches()

    def query_arrow(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self._trace(sql, params)
        try:
            relation = self.connection.sql(sql, params=list(params))
            # DuckDB 2 names it to_arrow_table; 1.x returns a Table from arrow().
            fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
            return fetch()
        except duckdb.Error as error:
            raise _translate(error, self.path) from None

    def query_batches(self, sql: str, params: Sequence[Any] = (), rows_per_batch: int = 1 << 20) -> Iterator[Any]:
        """The answer as Arrow record batches, one held at a time (a column of 100M ids is 800 MB)."""
        self._trace(sql, params)
        try:
            reader = self.connection.sql(sql, params=list(params)).to_arrow_reader(rows_per_batch)
            yield from reader
        except duckdb.Error as error:
            raise _translate(error, self.path) from None

    def register(self, name: str, table: Any) -> None:
        """Expose an Arrow table to SQL under `name` (a constant identifier, never user input)."""
        self.connection.register(name, table)

    def unregister(self, name: str) -> None:
        with contextlib.suppress(duckdb.Error):
            self.connection.unregister(name)

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """One transaction: everything inside commits together or not at all (and, within this
        process, after any other transaction on the same file has committed). DuckDB has no
        savepoints, so transactions do not nest: opening one inside another is a `StoreError`."""
        with self._write_lock:  # re-entrant: the check below sees this thread's own open transaction
            if self._in_transaction:
                raise StoreError(f"atomic() does not nest: a transaction on {self.path} is already open "
                                 "(DuckDB has no savepoints); do the inner work inside the outer block")
            began = time.monotonic()
            self.execute("BEGIN TRANSACTION")
            self._in_transaction = True
            self.on_commit, self.scope = [], {}
            try:
                yield
            except BaseException:
                with contextlib.suppress(duckdb.Error, StoreError):
                    self.connection.execute("ROLLBACK")
                raise
            finally:
                self._in_transaction = False
                hooks, self.on_commit, self.scope = self.on_commit, [], {}
            self.execute("COMMIT")
            for hook in hooks:
                hook()
            log.debug("commit on %s after %.0f ms", self.path, (time.monotonic() - began) * 1000)
