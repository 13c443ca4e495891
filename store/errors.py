"""Store errors: the `StoreError` branch of the one tree rooted in `fetch.errors.BackfillError`."""

from __future__ import annotations

from fetch.errors import BackfillError, InputError, Terminal


class StoreError(BackfillError, Terminal):
    """The DuckDB file or the cache directory cannot be used as asked."""


class QueryError(StoreError, InputError):
    """An analyst's own SQL failed (it does not parse, it writes, it reaches outside the sandbox): the
    store refused it, and the input is what to fix."""


class StoreLocked(StoreError):
    """Another process held the DuckDB file for longer than this one was willing to wait."""

    def __init__(self, path: str, holder: str = "", waited_s: float = 0.0) -> None:
        who = f" ({holder})" if holder else ""
        waited = f" for {waited_s:g} s" if waited_s else ""
        super().__init__(f"the store {path} is in use by another process{who} and stayed so{waited} (DuckDB "
                         "lets one process open it at a time); wait for it to finish, give --wait-lock / "
                         "BACKFILL_LOCK_WAIT_S more seconds, or use another --db")
        self.path = path
        self.holder = holder
        self.waited_s = waited_s


class NotADatabase(StoreError):
    """The path exists but is not a DuckDB database."""

    def __init__(self, path: str, detail: str = "") -> None:
        super().__init__(f"{path} is not a DuckDB database{': ' + detail if detail else ''}; "
                         "point --db / BACKFILL_DB_PATH at a new or existing store file")
        self.path = path


class ExportError(StoreError):
    """A parquet cache file could not be written."""
