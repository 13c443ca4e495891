"""The cache directory's bookkeeping: where a day's file goes, whether it is up to date, which
symbol owns a directory, and the temp files a killed writer left. No pyarrow here: a refresh whose
files are all current decides that without loading the writer (`store.export`).

Two symbols in one directory would silently overwrite each other's days (the file name carries no
symbol), so the `exports` table remembers who wrote each file and a second symbol is refused.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from datetime import date
from pathlib import Path

from store.db import Store
from store.errors import ExportError


def cache_path(cache_dir: Path, day: date) -> Path:
    return Path(cache_dir) / f"backfill_{day.isoformat()}.parquet"


def _owner(store: Store, path: Path) -> tuple[str, str] | None:
    row = store.query_one("SELECT category, symbol FROM exports WHERE path = ? "
                          "ORDER BY exported_at DESC LIMIT 1", [str(path)])
    return (str(row[0]), str(row[1])) if row else None


def check_cache_dir(cache_dir: Path) -> Path:
    """Create the directory and prove it writable before any work starts; remove the temp files a
    killed run left behind."""
    directory = Path(cache_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-", delete=True)
        probe.close()
    except OSError as error:
        raise ExportError(f"cannot write to the cache dir {directory}: {error.strerror or error}; "
                          "choose another --cache-dir / BACKFILL_CACHE_DIR") from None
    _remove_orphan_temps(directory)
    return directory


# `.backfill_2024-01-02.parquet.<pid>.<random>.tmp`, and DuckDB's own `tmp_` copy of it while COPY runs.
_TEMP_NAME = re.compile(r"^(?:tmp_)?\.backfill_\d{4}-\d{2}-\d{2}\.parquet\.(\d+)\.[^./]+\.tmp$")


def temp_prefix(target: Path) -> str:
    """The start of a writer's temp name: hidden, and naming its process so a dead one's are found."""
    return f".{target.name}.{os.getpid()}."


def _remove_orphan_temps(directory: Path) -> None:
    """Temp files whose writing process is gone (killed mid-write); a live writer's are kept."""
    for path in directory.iterdir():
        match = _TEMP_NAME.match(path.name)
        if match is None or _alive(int(match[1])):
            continue
        with contextlib.suppress(OSError):
            path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: alive
        return True
    return True


def check_owner(store: Store, target: Path, category: str, symbol: str) -> None:
    """Refuse to overwrite a file another symbol exported into the same directory."""
    owner = _owner(store, target)
    if owner is not None and owner != (category, symbol):
        raise ExportError(f"{target} belongs to {owner[1]} ({owner[0]}); give each symbol its own "
                          "--cache-dir (the file name carries no symbol)")


def check_dir_owner(store: Store, cache_dir: Path, category: str, symbol: str) -> None:
    """Before any work: refuse a directory that already holds another symbol's files."""
    directory = Path(cache_dir).resolve()
    for path, owner_category, owner_symbol in store.query(
            "SELECT DISTINCT path, category, symbol FROM exports WHERE category <> ? OR symbol <> ?",
            [category, symbol]):
        if Path(path).resolve().parent == directory:
            raise ExportError(f"{cache_dir} holds {owner_symbol} ({owner_category}) files; give each "
                              "symbol its own --cache-dir (the file name carries no symbol)")


def record_export(store: Store, *, category: str, symbol: str, day: date, target: Path, rows: int,
                  id_mode: str) -> None:
    if not store.read_only:
        store.execute("DELETE FROM exports WHERE path = ?", [str(target)])
        store.execute("INSERT INTO exports (category, symbol, day, path, rows, id_mode) "
                      "VALUES (?, ?, ?, ?, ?, ?)", [category, symbol, day, str(target), rows, id_mode])


def days_needing_export(store: Store, *, category: str, symbol: str, days: list[date],
                        cache_dir: Path, id_mode: str) -> list[date]:
    """Days whose file is missing or whose recorded row count differs from the store's."""
    stale = []
    for day in days:
        target = cache_path(cache_dir, day)
        row = store.query_one("SELECT rows, id_mode FROM exports WHERE path = ? AND category = ? "
                              "AND symbol = ?", [str(target), category, symbol])
        stored = store.query_one("SELECT trades FROM day_summary WHERE category = ? AND symbol = ? "
                                 "AND day = ?", [category, symbol, day])
        count = int(stored[0]) if stored else 0
        if row is None or not target.exists() or int(row[0]) != count or row[1] != id_mode:
            stale.append(day)
    return stale
