"""Store errors: the `StoreError` branch of the one tree rooted in `fetch.errors.BackfillError`."""

from __future__ import annotations

from fetch.errors import BackfillError, Terminal


class StoreError(BackfillError, Terminal):
    """The DuckDB file or the cache directory cannot be used as asked."""


class StoreLocked(StoreError):
    """Another process holds the DuckDB file for writing."""

    def __init__(self, path: str) -> None:
        super().__init__(f"the store {path} is in use by another process (DuckDB allows one writer); "
                         "wait for it to finish or use another --db")
        self.path = path


class NotADatabase(StoreError):
    """The path exists but is not a DuckDB database."""

    def __init__(self, path: str, detail: str = "") -> None:
        super().__init__(f"{path} is not a DuckDB database{': ' + detail if detail else ''}; "
                         "point --db / BACKFILL_DB_PATH at a new or existing store file")
        self.path = path


class ExportError(StoreError):
    """A parquet cache file could not be written."""
