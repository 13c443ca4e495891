"""The lake: a hive-partitioned parquet copy of the store that Spark, Trino, DuckDB and polars read.

    DEST/trades/category=linear/symbol=BTCUSDT/date=2024-01-01/part-0.parquet
    DEST/trades/category=linear/symbol=BTCUSDT/date=2024-01-01/_manifest.json

The DuckDB store stays each machine's truth; the lake is the shared, engine-neutral copy that N
machines with N stores fill without coordinating. That shapes every choice here:

* one partition per (category, symbol, UTC day), written by whichever machine holds the day
  complete: a day is only ever written from a store whose coverage vouches for the whole day, so
  two machines writing the same partition write the same rows;
* the manifest is one small JSON per partition, beside it (engines skip `_`-prefixed files), not one
  shared file: a shared file would be read-modified-written by every machine at once;
* a partition is rewritten only when the store's `day_summary.fingerprint` differs from the one its
  manifest records, so keeping the lake current costs one small read per day in range;
* locally, files are written under a hidden temp name and renamed (a reader never sees half a
  file); on S3 a rename is a copy, but a PUT is atomic per object, so the object is written
  directly. Either way the data goes first and the manifest last: a crash in between leaves a
  manifest that disagrees with the store, so the next run rewrites the partition, and `verify`
  reports it meanwhile.

The rows go through Arrow (a parameterized query on the store) and pyarrow's writer onto a
`pyarrow.fs` filesystem: DuckDB's COPY could only write local paths given as literals.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fetch.errors import InputError
from fetch.market_span import Market
from store.coverage import incomplete_days_many
from store.db import Store
from store.errors import ExportError, StoreError
from store.timeutil import day_start_us

TABLE = "trades"
DATA_NAME = "part-0.parquet"
MANIFEST_NAME = "_manifest.json"
MANIFEST_FORMAT = 1

# Every stored column but the two the path carries (category, symbol); `ts` is the trade time as a
# UTC instant in microseconds (parquet TIMESTAMP(MICROS, isAdjustedToUTC=true)).
LAKE_SCHEMA = pa.schema([
    pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("trade_id", pa.string(), nullable=False),
    pa.field("price", pa.float64(), nullable=False),
    pa.field("qty", pa.float64(), nullable=False),
    pa.field("side", pa.string(), nullable=False),
    pa.field("is_buyer_maker", pa.bool_(), nullable=False),
    pa.field("is_block_trade", pa.bool_()),
    pa.field("source", pa.string(), nullable=False),
    pa.field("tick_id", pa.int64(), nullable=False),
])


class LakeError(ExportError):
    """The lake cannot be read or written as asked."""


# ---- pure: where things go, what a fingerprint is, what must be written -------------------------

def partition_dir(market: Market, day: date) -> str:
    """The partition's directory, relative to the lake root (hive `key=value` segments)."""
    return f"{TABLE}/category={market.category}/symbol={market.symbol}/date={day.isoformat()}"


def parse_partition_dir(relative: str) -> tuple[str, str, date] | None:
    """(category, symbol, day) of a `partition_dir` path, or None if it is not one."""
    parts = relative.strip("/").split("/")
    if len(parts) != 4 or parts[0] != TABLE:
        return None
    values = []
    for part, key in zip(parts[1:], ("category", "symbol", "date")):
        name, _, value = part.partition("=")
        if name != key or not value:
            return None
        values.append(value)
    try:
        return values[0], values[1], date.fromisoformat(values[2])
    except ValueError:
        return None


def fingerprint(rows: int, id_xor: int, time_sum: int) -> str:
    """`rows:bit_xor(tick_id):sum(time_us)`, as `store.day_summary` writes it for `day_summary`."""
    return f"{rows}:{id_xor}:{time_sum}"


def needs_write(manifest_fingerprint: str | None, store_fingerprint: str) -> bool:
    """Rewrite a partition only when its manifest is missing or names other content."""
    return manifest_fingerprint != store_fingerprint


@dataclass(frozen=True, slots=True)
class Location:
    """Where the lake lives: a `pyarrow.fs` filesystem, the root path on it, and whether renames
    are atomic there (local: yes; S3: no, so objects are PUT directly)."""

    filesystem: pafs.FileSystem
    root: str
    uri: str
    atomic_rename: bool

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts]) if self.root else "/".join(parts)


def s3_options(environ: Mapping[str, str]) -> dict[str, Any]:
    """S3FileSystem arguments from the standard AWS variables of `environ` (without keys there, the
    AWS SDK's own chain applies: profiles, instance roles). The SDK does not read `AWS_ENDPOINT_URL`
    (an S3-compatible store: MinIO, R2, Ceph...), so it becomes `endpoint_override` + `scheme`."""
    options: dict[str, Any] = {}
    if environ.get("AWS_ACCESS_KEY_ID") and environ.get("AWS_SECRET_ACCESS_KEY"):
        options["access_key"] = environ["AWS_ACCESS_KEY_ID"]
        options["secret_key"] = environ["AWS_SECRET_ACCESS_KEY"]
        if environ.get("AWS_SESSION_TOKEN"):
            options["session_token"] = environ["AWS_SESSION_TOKEN"]
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        split = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
        options["endpoint_override"] = split.netloc + split.path.rstrip("/")
        options["scheme"] = split.scheme
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    return options


def open_location(dest: str, environ: Mapping[str, str] | None = None) -> Location:
    """A local directory or `s3://bucket/prefix`; `environ` supplies the AWS variables (the CLI
    passes the process environment: the library reads none itself)."""
    text = str(dest).strip()
    if not text:
        raise InputError("the lake destination is empty: give a directory or s3://bucket/prefix")
    if text.startswith("s3://"):
        split = urlsplit(text)
        if not split.netloc:
            raise InputError(f"{dest!r} names no bucket: use s3://bucket/prefix")
        root = (split.netloc + "/" + split.path.strip("/")).rstrip("/")
        try:
            filesystem = pafs.S3FileSystem(**s3_options(environ or {}))
        except (OSError, ValueError) as error:
            raise LakeError(f"cannot set up S3 for {dest}: {error}; check the AWS_* variables") from None
        return Location(filesystem, root, text.rstrip("/"), atomic_rename=False)
    if "://" in text:
        raise InputError(f"unsupported lake destination {dest!r}: give a directory or s3://bucket/prefix")
    root = os.path.abspath(text)
    return Location(pafs.LocalFileSystem(), root, root, atomic_rename=True)


# ---- what the store holds ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StoredDay:
    category: str
    symbol: str
    day: date
    rows: int
    fingerprint: str

    @property
    def market(self) -> Market:
        return Market.of(self.category, self.symbol)


STORED_DAYS_SQL = """
    SELECT category, symbol, day, trades, fingerprint FROM day_summary
    WHERE (CAST(? AS VARCHAR[]) IS NULL OR list_contains(CAST(? AS VARCHAR[]), category))
      AND (CAST(? AS VARCHAR[]) IS NULL OR list_contains(CAST(? AS VARCHAR[]), symbol))
      AND day >= ? AND day < ?
    ORDER BY category, symbol, day"""


def stored_days(store: Store, *, categories: Sequence[str] | None, symbols: Sequence[str] | None,
                first: date, stop: date) -> list[StoredDay]:
    """Days with trades in [first, stop), per (category, symbol), with their fingerprints."""
    cats = list(categories) if categories else None
    syms = [s.upper() for s in symbols] if symbols else None
    rows = store.query(STORED_DAYS_SQL, [cats, cats, syms, syms, first, stop])
    return [StoredDay(str(c), str(s), d, int(n), str(f)) for c, s, d, n, f in rows]


LAKE_ROWS_SQL = """
    SELECT time_us AS ts, trade_id, price, qty, side, is_buyer_maker,
           is_block_trade, source, tick_id
    FROM trades
    WHERE category = ? AND symbol = ? AND time_us >= ? AND time_us < ?
    ORDER BY time_us, trade_id"""


def day_table(store: Store, market: Market, day: date) -> pa.Table:
    params = [market.category, market.symbol, day_start_us(day), day_start_us(day + timedelta(days=1))]
    table = store.query_arrow(LAKE_ROWS_SQL, params)
    # epoch microseconds become the UTC instant in Arrow, not in SQL: a TIMESTAMPTZ made in DuckDB
    # would pass through the session's time zone.
    ts = table.column("ts").cast(pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return table.set_column(0, LAKE_SCHEMA.field("ts"), ts).cast(LAKE_SCHEMA)


# ---- manifest and files -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Manifest:
    category: str
    symbol: str
    date: str
    file: str
    rows: int
    fingerprint: str
    size_bytes: int
    written_at: str
    format: int = MANIFEST_FORMAT

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        raw = json.loads(data)
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in names})


def _read_bytes(location: Location, path: str) -> bytes | None:
    try:
        with location.filesystem.open_input_stream(path) as stream:
            data: bytes = stream.read()
            return data
    except FileNotFoundError:
        return None
    except OSError as error:
        if "not found" in str(error).lower() or "no such" in str(error).lower():
            return None
        raise LakeError(f"cannot read {location.uri}/{path}: {error}") from None


def read_manifest(location: Location, market: Market, day: date) -> Manifest | None:
    data = _read_bytes(location, location.path(partition_dir(market, day), MANIFEST_NAME))
    if data is None:
        return None
    try:
        return Manifest.from_json(data)
    except (ValueError, TypeError):
        return None  # unreadable: rewritten like a missing one


def _put(location: Location, directory: str, name: str, payload: bytes | pa.Table) -> int:
    """Write one object: hidden temp + rename where renames are atomic, a direct PUT on S3."""
    fs = location.filesystem
    final = f"{directory}/{name}"
    target = f"{directory}/.{name}.{os.getpid()}.{uuid.uuid4().hex}.tmp" if location.atomic_rename else final
    try:
        fs.create_dir(directory, recursive=True)
        with fs.open_output_stream(target) as out:
            if isinstance(payload, pa.Table):
                pq.write_table(payload, out, compression="zstd")
            else:
                out.write(payload)
        if location.atomic_rename:
            fs.move(target, final)
        size: int = fs.get_file_info(final).size or 0
        return size
    except OSError as error:
        raise LakeError(f"cannot write {final}: {error}; check the lake destination is writable") from None
    finally:
        if location.atomic_rename:
            try:
                if fs.get_file_info(target).type != pafs.FileType.NotFound:
                    fs.delete_file(target)
            except OSError:
                pass


# ---- writing -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Written:
    category: str
    symbol: str
    day: date
    rows: int
    path: str


@dataclass
class LakeReport:
    """What one lake update did: partitions written, left as they were, and skipped with why."""

    uri: str
    written: list[Written] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[tuple[str, str, date, str]] = field(default_factory=list)

    def merge(self, other: LakeReport) -> None:
        self.written += other.written
        self.unchanged += other.unchanged
        self.skipped += other.skipped

    def as_dict(self) -> dict[str, Any]:
        return {"lake": self.uri, "written": [dict(asdict(w), day=w.day.isoformat()) for w in self.written],
                "rows_written": sum(w.rows for w in self.written), "unchanged": self.unchanged,
                "skipped": [{"category": c, "symbol": s, "day": d.isoformat(), "reason": r}
                            for c, s, d, r in self.skipped]}


INCOMPLETE = "not complete in this store (coverage does not vouch for the whole UTC day)"


def write_partition(store: Store, location: Location, day: StoredDay) -> Written:
    """Write one partition from the store: data file, then manifest (see the module docstring)."""
    return _write_table(location, day, day_table(store, day.market, day.day))


def _write_table(location: Location, day: StoredDay, table: pa.Table) -> Written:
    directory = location.path(partition_dir(day.market, day.day))
    size = _put(location, directory, DATA_NAME, table)
    manifest = Manifest(day.category, day.symbol, day.day.isoformat(), DATA_NAME, table.num_rows,
                        day.fingerprint, size, datetime.now(UTC).isoformat(timespec="seconds"))
    _put(location, directory, MANIFEST_NAME, manifest.to_json())
    return Written(day.category, day.symbol, day.day, table.num_rows, f"{directory}/{DATA_NAME}")


# On S3 each manifest read and each PUT is a round trip of tens of milliseconds: over years of
# hundreds of symbols, done one by one, they would dominate. Manifests are read `READERS` at once;
# partitions are written by `WRITERS` threads while the next day's rows are queried, with at most
# `WRITERS` tables (each one day in memory) waiting.
READERS = 16
WRITERS = 2


def write_lake(store: Store, location: Location, *, categories: Sequence[str] | None = None,
               symbols: Sequence[str] | None = None, first: date = date(2000, 1, 1),
               stop: date | None = None) -> LakeReport:
    """Bring the lake up to date with the store over days [first, stop): every complete day with
    trades whose manifest fingerprint differs from the store's is (re)written."""
    stop = stop or (datetime.now(UTC).date() + timedelta(days=1))
    if first >= stop:
        raise InputError(f"start {first} is not before end {stop}: the end is exclusive")
    report = LakeReport(location.uri)
    candidates = []
    groups = _by_market(stored_days(store, categories=categories, symbols=symbols, first=first, stop=stop))
    wanted = [(Market.of(category, symbol), [d.day for d in group]) for (category, symbol), group in groups.items()]
    for ((category, symbol), group), incomplete in zip(groups.items(), incomplete_days_many(store, wanted),
                                                        strict=True):
        for day in group:
            if day.day in incomplete:
                report.skipped.append((category, symbol, day.day, INCOMPLETE))
            else:
                candidates.append(day)
    with ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="bybit-lake-read") as readers:
        manifests = list(readers.map(lambda d: read_manifest(location, d.market, d.day), candidates))
    stale = []
    for day, manifest in zip(candidates, manifests, strict=True):
        if needs_write(manifest.fingerprint if manifest else None, day.fingerprint):
            stale.append(day)
        else:
            report.unchanged += 1
    with ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="bybit-lake-write") as writers:
        pending: list[Future[Written]] = []
        for day in stale:
            while len(pending) >= WRITERS:
                report.written.append(pending.pop(0).result())
            table = day_table(store, day.market, day.day)
            pending.append(writers.submit(_write_table, location, day, table))
        for future in pending:
            report.written.append(future.result())
    return report


def _by_market(days: Iterable[StoredDay]) -> dict[tuple[str, str], list[StoredDay]]:
    grouped: dict[tuple[str, str], list[StoredDay]] = {}
    for day in days:
        grouped.setdefault((day.category, day.symbol), []).append(day)
    return grouped


# ---- verifying ---------------------------------------------------------------------------------

@dataclass
class VerifyReport:
    uri: str
    checked: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {"lake": self.uri, "partitions": self.checked, "ok": self.ok, "failures": self.failures}


FILE_FINGERPRINT_SQL = """
    SELECT count(*), coalesce(bit_xor(tick_id), 0), coalesce(sum(epoch_us(ts))::HUGEINT, 0)
    FROM lake_file"""


def file_fingerprint(scratch: Store, table: pa.Table) -> str:
    """The fingerprint of a partition's rows, by the formula of `day_summary` (in DuckDB: the
    sum of 1.5M microsecond times overflows 64 bits)."""
    scratch.register("lake_file", table.select(["ts", "tick_id"]))
    try:
        row = scratch.query_one(FILE_FINGERPRINT_SQL)
    finally:
        scratch.unregister("lake_file")
    assert row is not None
    return fingerprint(int(row[0]), int(row[1]), int(row[2]))


def _listing(location: Location) -> dict[str, set[str]]:
    """Partition directory (relative) -> names of the files in it."""
    base = location.path(TABLE)
    try:
        infos = location.filesystem.get_file_info(pafs.FileSelector(base, recursive=True,
                                                                    allow_not_found=True))
    except OSError as error:
        raise LakeError(f"cannot list {location.uri}/{TABLE}: {error}") from None
    found: dict[str, set[str]] = {}
    prefix = location.path("")
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        relative = info.path.removeprefix(prefix)
        directory, _, name = relative.rpartition("/")
        found.setdefault(directory, set()).add(name)
    return found


def verify_partition(location: Location, scratch: Store, relative: str, names: set[str]) -> list[str]:
    """FAIL lines for one partition directory: manifest, file, schema, row count, fingerprint."""
    where = f"{location.uri}/{relative}"
    key = parse_partition_dir(relative)
    if key is None:
        return [f"{where}: not a category=/symbol=/date= partition directory"]
    manifest_bytes = _read_bytes(location, location.path(relative, MANIFEST_NAME)) if MANIFEST_NAME in names else None
    if manifest_bytes is None:
        return [f"{where}: no {MANIFEST_NAME}"]
    try:
        manifest = Manifest.from_json(manifest_bytes)
    except (ValueError, TypeError) as error:
        return [f"{where}: unreadable {MANIFEST_NAME} ({error})"]
    problems = []
    if (manifest.category, manifest.symbol, manifest.date) != (key[0], key[1], key[2].isoformat()):
        problems.append(f"{where}: the manifest names {manifest.category}/{manifest.symbol}/{manifest.date}")
    visible = {n for n in names if n.endswith(".parquet") and not n.startswith((".", "_"))}
    if visible - {manifest.file}:
        problems.append(f"{where}: files the manifest does not name: {', '.join(sorted(visible - {manifest.file}))}")
    if manifest.file not in names:
        return [*problems, f"{where}: {manifest.file} is missing"]
    try:
        # One open (by path pyarrow opens a file twice: a partition rewritten in between would mix versions).
        with location.filesystem.open_input_file(location.path(relative, manifest.file)) as source:
            table = pq.read_table(source)
    except (OSError, pa.ArrowException) as error:
        return [*problems, f"{where}/{manifest.file}: unreadable ({error})"]
    if not table.schema.remove_metadata().equals(LAKE_SCHEMA):
        problems.append(f"{where}/{manifest.file}: schema differs from the lake's")
        return problems
    if table.num_rows != manifest.rows:
        problems.append(f"{where}/{manifest.file}: {table.num_rows} rows, the manifest says {manifest.rows}")
    found = file_fingerprint(scratch, table)
    if found != manifest.fingerprint:
        problems.append(f"{where}/{manifest.file}: fingerprint {found}, the manifest says {manifest.fingerprint}")
    return problems


def verify_lake(location: Location) -> VerifyReport:
    """Check every partition of the lake against its manifest (rows and fingerprint recomputed
    from the file itself); needs no store, so any machine can check the shared lake."""
    report = VerifyReport(location.uri)
    listing = _listing(location)
    try:
        scratch = Store.open(":memory:")
    except StoreError as error:
        raise LakeError(f"cannot start DuckDB to verify the lake: {error}") from None
    with scratch:
        for relative in sorted(listing):
            names = listing[relative]
            if not any(n == MANIFEST_NAME or (n.endswith(".parquet") and not n.startswith((".", "_")))
                       for n in names):
                continue  # only temp files of a writer: nothing a reader sees
            report.checked += 1
            report.failures += verify_partition(location, scratch, relative, names)
    return report
