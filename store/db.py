"""The one DuckDB connection of a run, and the only place `duckdb.Error` is caught and translated.

DuckDB already allows a single writing process per file; `Store.open` turns its lock error into
`StoreLocked` naming the file (optionally waiting for the lock), and a foreign file into
`NotADatabase`, before anything is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb

from fetch.errors import InputError
from store.errors import NotADatabase, StoreError, StoreLocked

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


def _translate(error: duckdb.Error, path: str) -> StoreError | KeyboardInterrupt:
    if isinstance(error, duckdb.InterruptException):  # Ctrl-C inside a statement: the user's, not ours
        return KeyboardInterrupt()
    text = str(error)
    if "Conflicting lock" in text or "Could not set lock" in text:
        return StoreLocked(path)
    if "not a valid DuckDB database" in text or "Unable to open database" in text:
        return NotADatabase(path, text.split("\n")[0])
    return StoreError(f"DuckDB error on {path}: {text.splitlines()[0] if text else error!r}")


class Store:
    """A DuckDB file opened for this run: parameterized `execute`/`query`, and `atomic()`."""

    def __init__(self, connection: duckdb.DuckDBPyConnection, path: str, read_only: bool) -> None:
        self.connection = connection
        self.path = path
        self.read_only = read_only
        self.tracer: Tracer | None = None
        self._write_lock = _write_lock(path)

    @classmethod
    def open(cls, path: str | Path, *, read_only: bool = False, wait_s: float = 0.0,
             memory_limit: str = "2GB", migrate: bool = True, sandbox: bool = False) -> Store:
        """Open (creating and migrating unless read-only); wait up to `wait_s` for another writer.
        `sandbox` (read-only only) locks the connection away from every other file (`SANDBOX`)."""
        target = str(path)
        if read_only and not Path(target).exists():
            raise StoreError(f"no store at {target}; run `bybit-backfill refresh` first or pass --db")
        if not read_only:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                config: dict[str, Any] = {"memory_limit": memory_limit}
                if sandbox:
                    config.update(SANDBOX)
                connection = duckdb.connect(target, read_only=read_only or sandbox, config=config)
                break
            except duckdb.Error as error:
                translated = _translate(error, target)
                if isinstance(translated, StoreLocked) and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise translated from None
        store = cls(connection, target, read_only or sandbox)
        try:
            if migrate:
                from store import schema  # schema needs Store: imported late, no cycle at load time
                if read_only or sandbox:
                    schema.check_readable(store)
                else:
                    schema.migrate(store)
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        with contextlib.suppress(duckdb.Error):
            self.connection.close()

    def __enter__(self) -> Store:
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
        except duckdb.InterruptException:
            raise KeyboardInterrupt from None
        except duckdb.Error as error:
            raise StoreError(f"query failed: {str(error).splitlines()[0]}") from None

    def user_statements(self, sql: str, *, arrow: bool = False) -> list[tuple[str, list[str], Any]]:
        """Each statement of an analyst's SQL, run in order: (its text, column names, rows or an
        Arrow table). Empty or comment-only SQL is an `InputError`: there is nothing to answer."""
        try:
            statements = [str(s.query).strip() for s in self.connection.extract_statements(sql)]
        except duckdb.Error as error:
            raise StoreError(f"query failed: {str(error).splitlines()[0]}") from None
        if not statements:
            raise InputError("the query is empty (or only comments): give a SQL statement, e.g. "
                             "\"SELECT * FROM daily\"")
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
            except duckdb.InterruptException:
                raise KeyboardInterrupt from None
            except duckdb.Error as error:
                raise StoreError(f"query failed: {str(error).splitlines()[0]}") from None
        return results

    def user_statement_texts(self, sql: str) -> list[str]:
        """The statements of an analyst's SQL, split by DuckDB's own parser (never by us)."""
        try:
            statements = [str(s.query).strip() for s in self.connection.extract_statements(sql)]
        except duckdb.Error as error:
            raise StoreError(f"query failed: {str(error).splitlines()[0]}") from None
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
        except duckdb.InterruptException:
            raise KeyboardInterrupt from None
        except duckdb.Error as error:
            raise StoreError(f"query failed: {str(error).splitlines()[0]}") from None

        def batches() -> Iterator[Any]:
            try:
                yield from reader
            except duckdb.InterruptException:
                raise KeyboardInterrupt from None
            except duckdb.Error as error:
                raise StoreError(f"query failed: {str(error).splitlines()[0]}") from None

        return reader.schema, batches()

    def user_row_batches(self, statement: str, rows_per_batch: int = 10_000
                         ) -> tuple[list[tuple[str, str]], Iterator[list[tuple[Any, ...]]]] | None:
        """`user_batches` without pyarrow (the table and JSON outputs render row by row anyway, and
        `sql` then starts without loading it): ((name, DuckDB type) per column, batches of rows)."""
        self._trace(statement, ())
        try:
            cursor = self.connection.execute(statement)
        except duckdb.InterruptException:
            raise KeyboardInterrupt from None
        except duckdb.Error as error:
            raise StoreError(f"query failed: {str(error).splitlines()[0]}") from None
        if not cursor.description:
            return None
        columns = [(str(d[0]), str(d[1])) for d in cursor.description]

        def batches() -> Iterator[list[tuple[Any, ...]]]:
            while True:
                try:
                    rows = cursor.fetchmany(rows_per_batch)
                except duckdb.InterruptException:
                    raise KeyboardInterrupt from None
                except duckdb.Error as error:
                    raise StoreError(f"query failed: {str(error).splitlines()[0]}") from None
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

    def register(self, name: str, table: Any) -> None:
        """Expose an Arrow table to SQL under `name` (a constant identifier, never user input)."""
        self.connection.register(name, table)

    def unregister(self, name: str) -> None:
        with contextlib.suppress(duckdb.Error):
            self.connection.unregister(name)

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """One transaction: everything inside commits together or not at all (and, within this
        process, after any other transaction on the same file has committed)."""
        with self._write_lock:
            began = time.monotonic()
            self.execute("BEGIN TRANSACTION")
            try:
                yield
            except BaseException:
                with contextlib.suppress(duckdb.Error, StoreError):
                    self.connection.execute("ROLLBACK")
                raise
            self.execute("COMMIT")
            log.debug("commit on %s after %.0f ms", self.path, (time.monotonic() - began) * 1000)
