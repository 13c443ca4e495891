"""Daily archive files exactly as public.bybit.com lays them out, generated once and cached on disk.

A busy day is ~1.5M rows, so files are produced by DuckDB (`COPY (query) TO csv`) and compressed
with zlib level 1: DuckDB's own gzip writer was measured ~4x slower, and the emulator must never be
the bottleneck of a benchmark. Files are immutable and keyed by everything that shapes their
bytes, and are published with temp file + `os.replace`, so several processes may share a cache
directory safely.

Fault variants are just other cached files of the same day: `shuffle`, `drift`, `dup` are generated
by SQL; the hostile ones (`wrong_day`, `header_only`, `foreign_symbol`, `zero_price`, `nan_price`,
`negative_qty`, `reuse_id`) rewrite the plain file line by line (`hostile_lines`).
"""

from __future__ import annotations

import os
import re
import threading
import uuid
import zlib
from collections.abc import Callable
from datetime import date, timedelta
from html import escape
from pathlib import Path

from .config import MarketSpec, SimConfig
from .market import FORMAT_VERSION, GOLDEN, DayModel, connection, core_sql, value_columns_sql

SQL_VARIANTS = ("shuffle", "drift", "dup")  # shuffled rows, renamed/reordered header, next day's head
# Files that parse but cannot be the day's trades: every row a day late, no rows, one row of another
# market, one row priced 0 or NaN, one row of negative size, one id of a trade three days earlier.
HOSTILE_VARIANTS = ("wrong_day", "header_only", "foreign_symbol", "zero_price", "nan_price",
                    "negative_qty", "reuse_id")
VARIANTS = SQL_VARIANTS + HOSTILE_VARIANTS
REUSED_ID_DAYS_BACK = 3
DUP_ROWS = 10
GZIP_LEVEL = 1

_DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.csv\.gz$")


def folder(spec: MarketSpec) -> str:
    """URL folder of a market: '/trading' for derivatives, '/spot' for spot."""
    return "/spot" if spec.category == "spot" else "/trading"


def file_name(spec: MarketSpec, day: date) -> str:
    if spec.category == "spot":
        return f"{spec.symbol}_{day.isoformat()}.csv.gz"
    return f"{spec.symbol}{day.isoformat()}.csv.gz"


def parse_file_name(root: str, symbol: str, name: str) -> date | None:
    """The day named by an archive file name in folder `root` for `symbol`, or None."""
    prefix = f"{symbol}_" if root == "/spot" else symbol
    match = _DAY_FILE.match(name[len(prefix):]) if name.startswith(prefix) else None
    if match is None:
        return None
    try:
        return date.fromisoformat(match[1])
    except ValueError:
        return None


def published_days(config: SimConfig, spec: MarketSpec) -> list[date]:
    """Days with a file: from listing up to, not including, the market's today."""
    first, today = spec.listed, config.archive_horizon()
    return [first + timedelta(days=k) for k in range(max(0, (today - first).days))]


def is_published(config: SimConfig, spec: MarketSpec, day: date) -> bool:
    return spec.listed <= day < config.archive_horizon()


def index_html(url_path: str, names: list[str]) -> str:
    """An autoindex-style listing, with the '../' link real listings have."""
    title = escape(url_path)
    links = "\n".join(f'<a href="{escape(n)}">{escape(n)}</a>' for n in names)
    return (f"<html>\n<head><title>Index of {title}</title></head>\n<body>\n<h1>Index of {title}</h1>"
            f'<hr><pre><a href="../">../</a>\n{links}\n</pre><hr></body>\n</html>\n')


def _derivative_columns(m: DayModel, drift: bool, rpi: bool) -> str:
    price, qty = value_columns_sql(m.spec.category)
    if m.spec.category == "inverse":
        home, foreign = f"{qty}", f"round({qty} / {price}, 8)"
        gross = f"CAST(round({qty} / {price} * 100000000) AS BIGINT)"
    else:
        home, foreign = f"{qty}", f"CAST({price} * {qty} AS DOUBLE)"
        gross = f"CAST(round({price} * {qty} * 100000000) AS BIGINT)"
    ts = ("CASE WHEN is_int THEN CAST(time_us // 1000000 AS VARCHAR) ELSE CAST(time_us // 1000000 AS VARCHAR)"
          " || '.' || lpad(CAST((time_us // 100) % 10000 AS VARCHAR), 4, '0') END")
    tick = ("CASE WHEN p_units > prev_units THEN 'PlusTick' WHEN p_units < prev_units THEN 'MinusTick'"
            " WHEN h_td % 2 = 0 THEN 'ZeroPlusTick' ELSE 'ZeroMinusTick' END")
    gv = f"CASE WHEN h_gv % 4 = 0 THEN printf('%.6g', CAST({gross} AS DOUBLE)) ELSE CAST({gross} AS VARCHAR) END"
    names = (["ts", "symbol", "side", "px", "qty"] if drift else ["timestamp", "symbol", "side", "size", "price"])
    values = [ts, f"'{m.spec.symbol}'", "side", price if drift else qty, qty if drift else price]
    names += ["tickDirection", "trade_id" if drift else "trdMatchID", "grossValue", "homeNotional",
              "foreignNotional"]
    values += [tick, "trade_id", gv, home, foreign]
    if rpi:
        names, values = names + ["RPI"], values + ["CAST(rpi AS INTEGER)"]
    return ", ".join(f'{v} AS "{k}"' for k, v in zip(names, values))


def _spot_columns(m: DayModel, drift: bool, rpi: bool) -> str:
    price, qty = value_columns_sql("spot")
    ts, side = "CAST(time_us // 1000 AS BIGINT)", "lower(side)"
    if drift:
        pairs = [("ts", ts), ("id", "CAST(trade_id AS BIGINT)"), ("px", price), ("qty", qty), ("side", side)]
    else:
        pairs = [("id", "CAST(trade_id AS BIGINT)"), ("timestamp", ts), ("price", price), ("volume", qty),
                 ("side", side)]
    if rpi:
        pairs.append(("rpi", "CAST(rpi AS INTEGER)"))
    return ", ".join(f'{v} AS "{k}"' for k, v in pairs)


def archive_sql(m: DayModel, variant: frozenset[str] = frozenset()) -> str:
    """The SELECT whose CSV output is the archive file of `m` (optionally a fault variant)."""
    rows = core_sql(m, 0, m.n)
    if "dup" in variant:
        nxt = m.next_day()
        rows = f"{rows} UNION ALL {core_sql(nxt, 0, min(DUP_ROWS, nxt.n))}"
    rpi = m.spec.has_rpi(m.day)
    cols = (_spot_columns if m.spec.category == "spot" else _derivative_columns)(m, "drift" in variant, rpi)
    order = "time_us, i"
    if "shuffle" in variant:
        order = f"mix32((i + day_ord) * {GOLDEN} + {m.salt('shuffle')}), time_us, i"
    return f"SELECT {cols} FROM ({rows}) ORDER BY {order}"


def cache_path(config: SimConfig, spec: MarketSpec, day: date, variant: frozenset[str] = frozenset()) -> Path:
    """Cache file name: every input that changes the file's bytes is in it."""
    tag = "+".join(sorted(variant)) or "plain"
    name = (f"v{FORMAT_VERSION}-s{config.seed}-{spec.category}-{spec.symbol}-{day.isoformat()}"
            f"-n{spec.trades_per_day}-p{spec.base_price!r}-rpi{int(spec.has_rpi(day))}-{tag}.csv.gz")
    return config.resolved_cache_dir() / name


_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def ensure_file(config: SimConfig, spec: MarketSpec, day: date,
                variant: frozenset[str] = frozenset()) -> tuple[Path, bool]:
    """Path of the (cached) archive file and whether this call generated it. Blocking: run in a thread."""
    unknown = set(variant) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown archive variants {sorted(unknown)}; known: {VARIANTS}")
    path = cache_path(config, spec, day, variant)
    if path.exists():
        return path, False
    with _lock(path):
        if path.exists():
            return path, False
        path.parent.mkdir(parents=True, exist_ok=True)
        hostile = sorted(set(variant) & set(HOSTILE_VARIANTS))
        if hostile:
            plain, _ = ensure_file(config, spec, day, variant - set(hostile))
            donor = None
            if "reuse_id" in hostile:
                donor, _ = ensure_file(config, spec, day - timedelta(days=REUSED_ID_DAYS_BACK))
            _rewrite(plain, path, lambda lines: hostile_lines(lines, hostile, spec, _first_id(donor)))
        else:
            write_file(archive_sql(DayModel(config.seed, spec, day), variant), path)
    return path, True


def _read_lines(path: Path) -> list[str]:
    return zlib.decompress(path.read_bytes(), 31).decode().splitlines()


def _first_id(path: Path | None) -> str | None:
    if path is None:
        return None
    header, first = _read_lines(path)[:2]
    names = header.split(",")
    column = "trdMatchID" if "trdMatchID" in names else "id"
    return first.split(",")[names.index(column)]


def hostile_lines(lines: list[str], hostile: list[str], spec: MarketSpec, donor_id: str | None) -> list[str]:
    """The plain file's lines made hostile: pure, so a test can say exactly what was served."""
    header, rows = lines[0], [row.split(",") for row in lines[1:]]
    names = header.split(",")
    spot = spec.category == "spot"
    col = {name: names.index(name) for name in names}
    middle = len(rows) // 2
    for kind in hostile:
        if kind == "header_only":
            rows = []
        elif kind == "wrong_day":
            for row in rows:  # a day later: seconds (derivatives) or milliseconds (spot)
                stamp = row[col["timestamp"]]
                whole, _, frac = stamp.partition(".")
                shifted = str(int(whole) + (86_400_000 if spot else 86_400))
                row[col["timestamp"]] = shifted + (f".{frac}" if frac else "")
        elif kind == "foreign_symbol" and not spot:
            rows[middle][col["symbol"]] = "XYZUSDT"
        elif kind == "zero_price":
            rows[middle][col["price"]] = "0"
        elif kind == "nan_price":
            rows[middle][col["price"]] = "nan"
        elif kind == "negative_qty":
            rows[middle][col["volume" if spot else "size"]] = "-1"
        elif kind == "reuse_id" and donor_id is not None:
            rows[middle][col["id" if spot else "trdMatchID"]] = donor_id
    return [header] + [",".join(row) for row in rows]


def _rewrite(src: Path, dst: Path, transform: Callable[[list[str]], list[str]]) -> None:
    """`dst` = gzip(transform(lines of src)), published atomically."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        data = ("\n".join(transform(_read_lines(src))) + "\n").encode()
        tmp.write_bytes(packer.compress(data) + packer.flush())
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def write_file(sql: str, path: Path) -> None:
    """CSV via DuckDB, gzip via zlib, published atomically; temp files never outlive the call."""
    stem = f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}"
    csv_tmp, gz_tmp = path.with_name(stem + ".csv"), path.with_name(stem + ".gz.tmp")
    try:
        target = str(csv_tmp).replace("'", "''")
        connection().execute(f"COPY ({sql}) TO '{target}' (FORMAT csv, HEADER)")
        _gzip(csv_tmp, gz_tmp)
        os.replace(gz_tmp, path)
    finally:
        csv_tmp.unlink(missing_ok=True)
        gz_tmp.unlink(missing_ok=True)


def _gzip(src: Path, dst: Path) -> None:
    packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: gzip container
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(1 << 20):
            fout.write(packer.compress(chunk))
        fout.write(packer.flush())
