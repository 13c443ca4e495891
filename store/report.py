"""Read-only views of a store: status per symbol, integrity checks, and analysts' own SQL."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fetch.errors import InputError
from store import day_summary
from store.cache_dir import IdMode
from store.coverage import all_count_mismatches
from store.db import Store
from store.errors import StoreError
from store.schema import open_store
from store.timeutil import DAY_US, day_of_us

STATUS_SQL = """
    WITH t AS (
        SELECT category, symbol, sum(trades) AS rows, min(first_us) AS first_us, max(last_us) AS last_us
        FROM day_summary GROUP BY ALL
    ),
    c AS (
        SELECT category, symbol, count(DISTINCT start_us) FILTER (WHERE source = 'archive') AS days,
               max(fetched_at) AS last_refresh
        FROM coverage WHERE source IN ('archive', 'rest') GROUP BY ALL
    ),
    g AS (SELECT category, symbol, count(*) AS open_gaps FROM open_gaps GROUP BY ALL)
    SELECT coalesce(t.category, c.category) AS category, coalesce(t.symbol, c.symbol) AS symbol,
           coalesce(c.days, 0) AS days_covered, make_timestamp(t.first_us) AS first_trade,
           make_timestamp(t.last_us) AS last_trade, coalesce(t.rows, 0) AS rows,
           coalesce(g.open_gaps, 0) AS open_gaps, c.last_refresh
    FROM t FULL JOIN c USING (category, symbol) LEFT JOIN g
      ON g.category = coalesce(t.category, c.category) AND g.symbol = coalesce(t.symbol, c.symbol)
    WHERE ? IS NULL OR coalesce(t.symbol, c.symbol) = ?
    ORDER BY category, symbol"""


def status(store: Store, symbol: str | None = None) -> list[dict[str, Any]]:
    wanted = symbol.upper() if symbol else None
    return store.query_dicts(STATUS_SQL, [wanted, wanted])


@dataclass
class VerifyReport:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(passed for _, passed, _ in self.checks)

    def add(self, name: str, problems: list[str]) -> None:
        self.checks.append((name, not problems, "; ".join(problems[:10]) or "ok"))

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [{"check": n, "ok": p, "detail": d} for n, p, d in self.checks]}


DUPLICATE_KEYS_SQL = """
    SELECT category, symbol, trade_id, count(*) AS copies
    FROM trades GROUP BY ALL HAVING count(*) > 1 ORDER BY copies DESC LIMIT 10"""

PARTIAL_DAYS_SQL = """
    SELECT category, symbol, start_us, end_us FROM coverage
    WHERE source = 'archive' AND (start_us % ? <> 0 OR end_us - start_us <> ?)"""

EXPORT_COUNTS_SQL = """
    SELECT e.category, e.symbol, e.day, e.path, e.rows, e.id_mode, e.size_bytes,
           (SELECT count(*) FROM trades t WHERE t.category = e.category AND t.symbol = e.symbol
              AND t.time_us >= epoch_us(CAST(e.day AS TIMESTAMP))
              AND t.time_us < epoch_us(CAST(e.day AS TIMESTAMP)) + ?) AS stored
    FROM exports e ORDER BY e.day, e.path"""

# What a file holds, reduced to (rows, sum of T, xor of a hash of every row): computed the same way
# over the file and over the store's rows for the day, so any changed value shows (a tampered file).
_DIGEST = 'count(*), sum("T"), bit_xor(hash("T"::BIGINT, i::VARCHAR, p::DOUBLE, q::DOUBLE, s::VARCHAR, m::BOOLEAN))'
FILE_DIGEST_SQL = f"SELECT {_DIGEST} FROM read_parquet(?)"
FILE_COLUMNS_SQL = "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?))"
CACHE_COLUMNS = [("T", "BIGINT"), ("i", "VARCHAR"), ("p", "DOUBLE"), ("q", "DOUBLE"), ("s", "VARCHAR"),
                 ("m", "BOOLEAN")]


def store_digest_sql(id_mode: IdMode) -> str:
    from store.export import day_rows_sql  # the exporter's own query: the file must hold exactly it

    return f"SELECT {_DIGEST} FROM ({day_rows_sql(id_mode)})"


# A coverage row may not claim time before Bybit existed, nor past the moment it was written
# (plus a minute of clock slack): either means it was derived from an answer that was not true.
_EARLIEST_US = 1_514_764_800_000_000  # 2018-01-01, fetch.plausible.EARLIEST_US
_SLACK_US = 60_000_000

UNBACKED_COVERAGE_SQL = """
    SELECT category, symbol, source, start_us, end_us FROM coverage
    WHERE end_us <= start_us OR start_us < ? OR end_us > epoch_us(fetched_at) + ?
       OR (source = 'archive' AND coalesce(expected_rows, 1) = 0)
    ORDER BY category, symbol, start_us"""

IMPLAUSIBLE_TRADES_SQL = """
    SELECT category, symbol, trade_id, time_us, price, qty FROM trades
    WHERE time_us < ? OR time_us > epoch_us(now()) + ? OR NOT (price > 0 AND isfinite(price))
       OR NOT (qty > 0 AND isfinite(qty)) OR side NOT IN ('buy', 'sell') OR symbol <> upper(symbol)
    LIMIT 10"""

UNNORMALIZED_SYMBOLS_SQL = """
    SELECT DISTINCT 'coverage', symbol FROM coverage WHERE symbol <> upper(symbol)
    UNION ALL SELECT DISTINCT 'executions', symbol FROM executions WHERE symbol <> upper(symbol)"""

_REPAIR = "run `bybit-backfill verify --repair`, then `bybit-backfill refresh` over the range"


def verify(store: Store) -> VerifyReport:
    """No duplicate key; coverage only where the store can back it; archive coverage is whole days
    matching their rows; stored trades are plausible; exports and the daily summary match the store.
    Each failure says which command repairs it."""
    report = VerifyReport()
    report.add("no duplicate trade keys", [f"{s} {i} stored {n} times"
                                           for _, s, i, n in store.query(DUPLICATE_KEYS_SQL)])
    report.add("archive coverage is whole UTC days", [f"{s}: [{a}, {b})" for _, s, a, b in
                                                      store.query(PARTIAL_DAYS_SQL, [DAY_US, DAY_US])])
    report.add("archive days hold what their files held", [
        f"{s} {day_of_us(a)}: file {e}, store {n}" for _, s, a, _, e, n in all_count_mismatches(store)])
    report.add("coverage claims nothing before Bybit existed, nothing past when it was fetched, no empty "
               "archive day", [f"{s} {src} [{_iso(a)}, {_iso(b)}): {_REPAIR}"
                               for _, s, src, a, b in store.query(UNBACKED_COVERAGE_SQL, [_EARLIEST_US, _SLACK_US])])
    report.add("stored trades are plausible (time, price, size, side, symbol)", [
        f"{s} {i} at {_iso(t)} price {p} size {q}: {_REPAIR}"
        for _, s, i, t, p, q in store.query(IMPLAUSIBLE_TRADES_SQL, [_EARLIEST_US, _SLACK_US])])
    report.add("symbols are spelled as Bybit does", [
        f"{table}: {symbol!r}: {_REPAIR}" for table, symbol in store.query(UNNORMALIZED_SYMBOLS_SQL)])
    report.add("exports match the store", _export_problems(store))
    report.add("the daily summary matches the trades", day_summary.mismatches(store))
    return report


def _iso(value_us: int) -> str:
    from store.timeutil import us_to_dt

    try:
        return us_to_dt(int(value_us)).isoformat()
    except (OverflowError, ValueError):
        return f"{value_us} µs"


@dataclass(frozen=True, slots=True)
class Repaired:
    coverage_rows: int
    trades: int


REPAIR_STATEMENTS = (
    # Coverage of the days holding implausible trades goes first (the trades name the days) ...
    """DELETE FROM coverage c WHERE EXISTS (
           SELECT 1 FROM trades t
           WHERE t.category = c.category AND t.symbol = c.symbol AND t.time_us >= c.start_us
             AND t.time_us < c.end_us
             AND (t.time_us < ? OR t.time_us > epoch_us(now()) + ? OR NOT (t.price > 0 AND isfinite(t.price))
                  OR NOT (t.qty > 0 AND isfinite(t.qty)) OR t.side NOT IN ('buy', 'sell')))""",
    """DELETE FROM trades
       WHERE time_us < ? OR time_us > epoch_us(now()) + ? OR NOT (price > 0 AND isfinite(price))
          OR NOT (qty > 0 AND isfinite(qty)) OR side NOT IN ('buy', 'sell')""",
    # ... then every coverage row the store cannot back, and the archive days whose rows disagree
    # with their file (the next refresh fetches them again).
    """DELETE FROM coverage
       WHERE end_us <= start_us OR start_us < ? OR end_us > epoch_us(fetched_at) + ?
          OR (source = 'archive' AND coalesce(expected_rows, 1) = 0)""",
)


CLEAR_DAY_SUMMARY_SQL = "DELETE FROM day_summary"


def repair(store: Store) -> Repaired:
    """Drop what the store cannot back, in one transaction: implausible trades with the coverage of
    their spans, and coverage that claims the impossible. Nothing true is lost: every span dropped
    is fetched again by the next `refresh`, which checks what it gets."""
    from store import day_summary

    counts = []
    with store.atomic():
        for statement in REPAIR_STATEMENTS:
            row = store.query_one(statement, [_EARLIEST_US, _SLACK_US])
            counts.append(int(row[0]) if row and row[0] is not None else 0)
        store.execute(CLEAR_DAY_SUMMARY_SQL)
        store.execute(day_summary.FILL_ALL_SQL)
    return Repaired(coverage_rows=counts[0] + counts[2], trades=counts[1])


def _export_problems(store: Store) -> list[str]:
    """Every exported file checked against the store: present, the size written, a readable footer,
    the cache columns, and the very rows of the day (a truncated, foreign or tampered file fails)."""
    problems = []
    for category, symbol, day, path, _rows, id_mode, size_bytes, stored in store.query(EXPORT_COUNTS_SQL, [DAY_US]):
        problem = _file_problem(store, Path(path), category, symbol, day, id_mode, size_bytes, int(stored))
        if problem is not None:
            problems.append(f"{symbol} {day}: {path} {problem}; `bybit-backfill export` rewrites it")
    return problems


def _file_problem(store: Store, target: Path, category: str, symbol: str, day: Any, id_mode: IdMode,
                  size_bytes: int | None, stored: int) -> str | None:
    from store.cache_dir import footer_rows
    from store.timeutil import day_start_us

    try:
        size = target.stat().st_size
    except OSError:
        return "is missing"
    if footer_rows(store, target) is None:
        return "is not a readable parquet file (truncated or foreign)"
    if size_bytes is not None and size != int(size_bytes):
        return f"has {size} bytes, {size_bytes} were written"
    try:
        columns = [(str(a), str(b)) for a, b in store.query(FILE_COLUMNS_SQL, [str(target)])]
        if columns != CACHE_COLUMNS:
            return f"does not have the cache columns ({', '.join(f'{a} {b}' for a, b in columns)})"
        found = store.query_one(FILE_DIGEST_SQL, [str(target)])
    except StoreError as error:
        return f"cannot be read ({error})"
    params = [category, symbol, day_start_us(day), day_start_us(day) + DAY_US]
    expected = store.query_one(store_digest_sql(id_mode), params)
    if found is None or int(found[0]) != stored:
        return f"has {found[0] if found else 0} rows, the store {stored}"
    if found != expected:
        return "holds other rows than the store (changed after it was written)"
    return None


@dataclass(frozen=True, slots=True)
class QueryResult:
    """One statement's answer: its text, column names and rows (an Arrow table for parquet)."""

    statement: str
    names: list[str]
    rows: Any


def run_queries(path: str | Path, query: str, *, arrow: bool = False, wait_s: float = 0.0) -> list[QueryResult]:
    """Every statement of an analyst's SQL, on a sandboxed read-only connection (`store.db.SANDBOX`):
    it can neither change the store nor read or write any other file. Waits up to `wait_s` while a
    writer commits."""
    with open_store(path, read_only=True, sandbox=True, wait_s=wait_s) as store:
        return [QueryResult(text, names, rows) for text, names, rows in
                store.user_statements(query, arrow=arrow)]


def run_sql(path: str | Path, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The answer of the last statement of an analyst's SQL (see `run_queries`)."""
    last = run_queries(path, query)[-1]
    return last.names, last.rows


def render_table(names: Sequence[str], rows: Sequence[Sequence[Any]], *, indent: str = "") -> str:
    """Aligned columns under a dashed header line, NULL as blank: the one table the CLI and the
    demo print."""
    cells = [[str(name) for name in names]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(names))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(indent + line for line in lines)


def render_csv(result: QueryResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(result.names)
    writer.writerows(result.rows)
    return buffer.getvalue()


def render_json(results: list[QueryResult]) -> str:
    """One statement: a list of row objects; several: a list of those lists, one per statement."""
    lists = [[dict(zip(r.names, row)) for row in r.rows] for r in results]
    return json.dumps(lists[0] if len(lists) == 1 else lists, indent=2, default=str)


def write_result(path: str | Path, query: str, fmt: str, output: Path, *, wait_s: float = 0.0) -> QueryResult:
    """Write a one-statement query's answer to `output` as csv, json or parquet: the tool writes the
    file (the analyst's connection cannot), via a hidden temp name and a rename."""
    results = run_queries(path, query, arrow=fmt == "parquet", wait_s=wait_s)
    if len(results) != 1:
        raise InputError(f"--output takes the answer of one statement, the query has {len(results)}: "
                         "run them one at a time")
    result = results[0]
    target = Path(output)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            if result.rows is None:
                raise InputError("the statement returns no rows to write: give a query")
            pq.write_table(result.rows, temp)
        else:
            temp.write_text(render_csv(result) if fmt == "csv" else render_json([result]) + "\n",
                            encoding="utf-8")
        os.replace(temp, target)
    except OSError as error:
        raise InputError(f"cannot write {target}: {error.strerror or error}; choose another --output") from None
    finally:
        temp.unlink(missing_ok=True)
    rows = result.rows.num_rows if fmt == "parquet" else len(result.rows)
    return QueryResult(result.statement, result.names, rows)
