"""The cache directory's bookkeeping: where a day's file goes, who owns the directory, whether a
file is current, which days may be exported at all, and the temp files a killed writer left. No
pyarrow here: a refresh whose files are all current decides that without loading the writer
(`store.export`); file footers are read by DuckDB.

* **Ownership.** The file name carries no symbol, so two symbols, two stores or two id modes in one
  directory would silently overwrite each other's days. A hidden marker file (`OWNER_FILE`) names
  the store, category, symbol and id mode that own the directory; it lives *in* the directory, so
  every spelling of the path (symlinks, `..`) finds the same marker. It is checked, and written on
  first use, before any file is written.
* **Temp files** go into a hidden directory (`TEMP_DIR`) inside the cache dir and are renamed into
  place: pyarrow, polars, DuckDB and Spark skip names starting with `.`, including DuckDB's own
  `tmp_`-prefixed copy that COPY writes beside its target. Names carry the writer's pid, so the
  next start removes a dead writer's leftovers and keeps a live one's.
* **Staleness is judged by content**: a file is rewritten when it is missing, its size differs from
  what was written, its footer is unreadable or counts other rows, its recorded fingerprint differs
  from `day_summary.fingerprint`, or it was written in another id mode.
* **Only complete days** (covered for the whole UTC day) are exported: a reader takes a file as the
  whole day, so an in-progress today or a day with a hole gets no file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal, cast

from fetch.errors import InputError
from fetch.market_span import Market, Span
from store.coverage import uncovered_gaps
from store.db import Store
from store.errors import ExportError, StoreError
from store.timeutil import day_start_us, days_touching

# What a file's `i` column holds: the TradeTick id (the service's reader) or the exchange's own id.
IdMode = Literal["tick", "raw"]
ID_MODES: tuple[IdMode, ...] = ("tick", "raw")


def as_id_mode(value: str) -> IdMode:
    """A caller's id mode, checked: 'tick' or 'raw'."""
    if value not in ID_MODES:
        raise InputError(f"unknown id mode {value!r}: use 'tick' (TradeTick ids) or 'raw' (the exchange's ids)")
    return value

OWNER_FILE = ".bybit-backfill-owner.json"
TEMP_DIR = ".bybit-backfill-tmp"


def cache_path(cache_dir: Path, day: date) -> Path:
    return Path(cache_dir) / f"backfill_{day.isoformat()}.parquet"


def check_cache_dir(cache_dir: Path) -> Path:
    """Create the directory and prove it writable before any work starts; remove the temp files a
    killed run left behind."""
    directory = Path(cache_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / TEMP_DIR).mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory / TEMP_DIR, prefix=".probe-", delete=True):
            pass
    except OSError as error:
        raise ExportError(f"cannot write to the cache dir {directory}: {error.strerror or error}; "
                          "choose another --cache-dir / BACKFILL_CACHE_DIR") from None
    _remove_orphan_temps(directory)
    return directory


def temp_dir(target: Path) -> Path:
    """Where a writer's temp files for `target` go: hidden, in the same file system as `target`."""
    directory = target.parent / TEMP_DIR
    directory.mkdir(exist_ok=True)
    return directory


def temp_prefix(target: Path) -> str:
    """The start of a writer's temp name: naming its process so a dead one's are found."""
    return f"{target.name}.{os.getpid()}."


# In TEMP_DIR: `backfill_2024-01-02.parquet.<pid>.<random>.tmp` and DuckDB's `tmp_` copy of it.
_TEMP_NAME = re.compile(r"^(?:tmp_)?\.?backfill_\d{4}-\d{2}-\d{2}\.parquet\.(\d+)\.[^/]+\.tmp$")


def _remove_orphan_temps(directory: Path) -> None:
    """Temp files whose writing process is gone (killed mid-write); a live writer's are kept. The
    cache dir itself is swept too: an earlier release wrote its temp files there."""
    for folder in (directory, directory / TEMP_DIR):
        with contextlib.suppress(OSError):
            for path in folder.iterdir():
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


@dataclass(frozen=True, slots=True)
class Owner:
    """What the marker file says: the store that writes a cache directory, and what it writes."""

    store: str
    category: str
    symbol: str
    id_mode: IdMode

    def same_as(self, other: Owner) -> bool:
        return (self.category, self.symbol, self.id_mode) == (other.category, other.symbol,
                                                              other.id_mode) and _same_file(self.store,
                                                                                            other.store)

    def describe(self) -> str:
        return f"{self.symbol} ({self.category}, id mode {self.id_mode}) of the store {self.store}"


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def read_owner(cache_dir: Path) -> Owner | None:
    """The directory's owner, None when it has no marker yet; an unreadable marker is refused."""
    marker = Path(cache_dir) / OWNER_FILE
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
        return Owner(str(data["store"]), str(data["category"]), str(data["symbol"]),
                     cast(IdMode, str(data["id_mode"])))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ExportError(f"cannot read the owner marker {marker} ({error}): if no other store writes "
                          f"{cache_dir}, delete the marker; otherwise choose another --cache-dir") from None


def claim_cache_dir(store: Store, cache_dir: Path, market: Market, id_mode: IdMode) -> Path:
    """Before any file is written: refuse a directory owned by another store, symbol or id mode
    (exit 4, naming the owner); mark an unowned one as ours."""
    directory = check_cache_dir(cache_dir)
    wanted = Owner(os.path.realpath(store.path), market.category, market.symbol, id_mode)
    found = read_owner(directory)
    if found is not None and not found.same_as(wanted):
        raise ExportError(f"the cache dir {cache_dir} belongs to {found.describe()}, not to "
                          f"{wanted.describe()}: give each symbol, store and id mode its own --cache-dir "
                          "(the file name carries no symbol)")
    if found is None:
        _check_export_log(store, directory, market)
        _write_owner(directory, wanted)
    return directory


_CHECK_EXPORT_LOG_SQL = "SELECT DISTINCT path, category, symbol FROM exports WHERE category <> ? OR symbol <> ?"


def _check_export_log(store: Store, directory: Path, market: Market) -> None:
    """A directory an earlier release wrote has no marker: this store's export log still knows."""
    resolved = directory.resolve()
    for path, owner_category, owner_symbol in store.query(_CHECK_EXPORT_LOG_SQL, [market.category, market.symbol]):
        if Path(path).resolve().parent == resolved:
            raise ExportError(f"the cache dir {directory} holds {owner_symbol} ({owner_category}) files; "
                              "give each symbol its own --cache-dir (the file name carries no symbol)")


def _write_owner(directory: Path, owner: Owner) -> None:
    handle, name = tempfile.mkstemp(dir=directory / TEMP_DIR, prefix=f"owner.{os.getpid()}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump({**asdict(owner), "written_by": "bybit-backfill"}, out, indent=2)
        os.replace(name, directory / OWNER_FILE)
    except OSError as error:
        raise ExportError(f"cannot write to the cache dir {directory}: {error.strerror or error}; "
                          "choose another --cache-dir / BACKFILL_CACHE_DIR") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


LAST_EXPORT_OF_PATH_SQL = ("SELECT category, symbol FROM exports WHERE path = ? "
                   "ORDER BY exported_at DESC LIMIT 1")


def check_owner(store: Store, target: Path, market: Market) -> None:
    """Refuse to overwrite a file another symbol exported into the same directory."""
    row = store.query_one(LAST_EXPORT_OF_PATH_SQL, [str(target)])
    if row is not None and (str(row[0]), str(row[1])) != (market.category, market.symbol):
        raise ExportError(f"{target} belongs to {row[1]} ({row[0]}); give each symbol its own "
                          "--cache-dir (the file name carries no symbol)")


class Written(int):
    """The rows a file was written with (an int, what callers count), carrying the fingerprint of
    the store's rows read in the same snapshot as the rows themselves, and the file's size."""

    fingerprint: str | None
    size_bytes: int | None

    def __new__(cls, rows: int, fingerprint: str | None = None,  # noqa: PYI034
                size_bytes: int | None = None) -> Written:
        made = super().__new__(cls, rows)
        made.fingerprint = fingerprint
        made.size_bytes = size_bytes
        return made


EMPTY_FINGERPRINT = "0:0:0"  # a day with no trades has no day_summary row
DAY_FINGERPRINT_SQL = "SELECT fingerprint FROM day_summary WHERE category = ? AND symbol = ? AND day = ?"


def day_fingerprint(store: Store, market: Market, day: date) -> str:
    """What the store holds for a day, as `day_summary.fingerprint` (`EMPTY_FINGERPRINT`: no trades)."""
    row = store.query_one(DAY_FINGERPRINT_SQL, [market.category, market.symbol, day])
    return str(row[0]) if row else EMPTY_FINGERPRINT


FORGET_EXPORT_SQL = "DELETE FROM exports WHERE path = ?"
RECORD_EXPORT_SQL = ("INSERT INTO exports (category, symbol, day, path, rows, id_mode, fingerprint, size_bytes) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


def record_export(store: Store, *, market: Market, day: date, target: Path, rows: int,
                  id_mode: IdMode, fingerprint: str | None = None, size_bytes: int | None = None) -> None:
    """Log a written file with what it was written from. A plain `rows` (no `Written`) takes the
    fingerprint now, and only if it counts the same rows: otherwise none, so the file is stale."""
    if store.read_only:
        return
    if isinstance(rows, Written):
        fingerprint = fingerprint or rows.fingerprint
        size_bytes = size_bytes or rows.size_bytes
    if fingerprint is None:
        now = day_fingerprint(store, market, day)
        fingerprint = now if now.split(":")[0] == str(int(rows)) else None
    if size_bytes is None:
        with contextlib.suppress(OSError):
            size_bytes = target.stat().st_size
    store.execute(FORGET_EXPORT_SQL, [str(target)])
    store.execute(RECORD_EXPORT_SQL,
                  [market.category, market.symbol, day, str(target), int(rows), id_mode, fingerprint, size_bytes])


_RECORD_SQL = """
    SELECT e.rows, e.id_mode, e.fingerprint, e.size_bytes, s.fingerprint
    FROM exports e LEFT JOIN day_summary s ON s.category = e.category AND s.symbol = e.symbol AND s.day = e.day
    WHERE e.path = ? AND e.category = ? AND e.symbol = ?"""

FOOTER_ROWS_SQL = "SELECT sum(num_rows) FROM parquet_file_metadata(?)"


def footer_rows(store: Store, path: Path) -> int | None:
    """The row count in a parquet file's footer; None when the footer cannot be read (truncated,
    not parquet)."""
    try:
        row = store.query_one(FOOTER_ROWS_SQL, [str(path)])
    except StoreError:
        return None
    return int(row[0]) if row and row[0] is not None else None


def stale_reason(store: Store, *, market: Market, day: date, cache_dir: Path, id_mode: IdMode) -> str | None:
    """Why a day's file must be (re)written, None when it is current."""
    target = cache_path(cache_dir, day)
    record = store.query_one(_RECORD_SQL, [str(target), market.category, market.symbol])
    why = _record_reason(record, target, id_mode)
    if why is None and record is not None and footer_rows(store, target) != int(record[0]):
        return _FOOTER_REASON
    return why


_FOOTER_REASON = "the file's footer is unreadable or counts other rows"


def _record_reason(record: Sequence[Any] | None, target: Path, id_mode: IdMode) -> str | None:
    """`stale_reason` from the file's export record (`_RECORD_SQL`'s row) and its size, before its
    footer is read (the dearest check, left to the caller)."""
    if record is None:
        return "never exported here"
    _, mode, fingerprint, size_bytes, now = record
    try:
        size = target.stat().st_size
    except OSError:
        return "the file is missing"
    if mode != id_mode:
        return f"written in id mode {mode}"
    if fingerprint is None or fingerprint != (now or EMPTY_FINGERPRINT):
        return "the store's rows for the day changed"
    if size_bytes is None or size != int(size_bytes):
        return f"the file has {size} bytes, {size_bytes} were written"
    return None


# `_RECORD_SQL` for many files of one market at once (k: the file's place in the list).
_RECORDS_SQL = """
    WITH files AS (SELECT unnest(?::INTEGER[]) AS k, unnest(?::VARCHAR[]) AS path)
    SELECT f.k, e.rows, e.id_mode, e.fingerprint, e.size_bytes, s.fingerprint
    FROM files f
    JOIN exports e ON e.path = f.path AND e.category = ? AND e.symbol = ?
    LEFT JOIN day_summary s ON s.category = e.category AND s.symbol = e.symbol AND s.day = e.day"""

FOOTERS_ROWS_SQL = "SELECT file_name, sum(num_rows) FROM parquet_file_metadata(?::VARCHAR[]) GROUP BY file_name"


def _footers_rows(store: Store, paths: list[Path]) -> dict[str, int | None]:
    """`footer_rows` of many files in one statement; one by one if any footer is unreadable (the
    statement then fails whole)."""
    if not paths:
        return {}
    try:
        rows = store.query(FOOTERS_ROWS_SQL, [[str(p) for p in paths]])
    except StoreError:
        return {str(p): footer_rows(store, p) for p in paths}
    found: dict[str, int | None] = {str(p): None for p in paths}
    found.update({str(name): int(count) if count is not None else None for name, count in rows})
    return found


def days_needing_export(store: Store, *, market: Market, days: list[date],
                        cache_dir: Path, id_mode: IdMode) -> list[date]:
    """Days whose file is missing, damaged or written from other rows or in another id mode:
    `stale_reason` of each, with the records read in one statement and the footers in another (a
    whole market checks hundreds of files)."""
    targets = [cache_path(cache_dir, day) for day in days]
    records: list[Sequence[Any] | None] = [None] * len(days)
    if targets:
        for k, *record in store.query(_RECORDS_SQL, [list(range(len(targets))), [str(t) for t in targets],
                                                     market.category, market.symbol]):
            records[int(k)] = record
    reasons = [_record_reason(record, target, id_mode) for record, target in zip(records, targets, strict=True)]
    footers = _footers_rows(store, [t for t, why in zip(targets, reasons, strict=True) if why is None])
    return [day for day, record, target, why in zip(days, records, targets, reasons, strict=True)
            if why is not None or record is None or footers[str(target)] != int(record[0])]


@dataclass(frozen=True, slots=True)
class SkippedDay:
    day: date
    reason: str


def complete_days(store: Store, market: Market, days: list[date], *,
                  live_through_us: int | None = None) -> tuple[list[date], list[SkippedDay]]:
    """Split `days` into those covered for the whole UTC day and the others, with why: a file is
    read as the whole day, so a day with a hole (or today, still going on) gets none.

    `live_through_us` (the follower's last commit) makes the day holding it complete *so far*: the
    one hole allowed is the one after it, where nothing has been stored yet (the future, for the
    service reading today's file as it grows); any hole before it still refuses the day."""
    if not days:
        return [], []
    start, end = day_start_us(days[0]), day_start_us(days[-1] + timedelta(days=1))
    holes = [g for g in uncovered_gaps(store, market, Span(start, end))
             if not (live_through_us is not None and g.start_us >= live_through_us
                     and g.end_us >= day_start_us(_day_of(live_through_us) + timedelta(days=1)))]
    incomplete: dict[date, str] = {}
    for gap in holes:
        for day in days_touching([(gap.start_us, gap.end_us)]):
            incomplete.setdefault(day, f"not complete in the store ({gap.start.isoformat()} .. "
                                       f"{gap.end.isoformat()} is not covered: {gap.reason})")
    wanted = set(days)
    return ([d for d in days if d not in incomplete],
            [SkippedDay(d, reason) for d, reason in sorted(incomplete.items()) if d in wanted])


def _day_of(time_us: int) -> date:
    return date(1970, 1, 1) + timedelta(microseconds=time_us)
