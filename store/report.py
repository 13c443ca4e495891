"""Read-only views of a store: status per symbol, integrity checks, and analysts' own SQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from fetch.market_span import Market, Span
from store import day_summary
from store.cache_dir import IdMode
from store.coverage import all_count_mismatches
from store.db import Store
from store.errors import StoreError
from store.schema import open_store
from store.tick_ids import TICK_ID_OF_PARTS_SQL, md5_low_sql, tick_number_sql
from store.timeutil import DAY_US, day_of_us

# One row per market the store knows of (trades, coverage, open gaps or the account's fills); the
# gaps and holes are computed next, with the very SQL `gaps` runs, so the two always agree.
STATUS_SQL = """
    WITH t AS (
        SELECT category, symbol, sum(trades) AS rows, min(first_us) AS first_us, max(last_us) AS last_us
        FROM day_summary GROUP BY ALL
    ),
    c AS (
        SELECT category, symbol, count(DISTINCT start_us) FILTER (WHERE source = 'archive') AS days,
               min(start_us) AS covered_from_us, max(end_us) AS covered_to_us, max(fetched_at) AS last_refresh
        FROM coverage WHERE source IN ('archive', 'rest', 'ws') GROUP BY ALL
    ),
    g AS (SELECT category, symbol, min(start_us) AS gaps_from_us, max(end_us) AS gaps_to_us
          FROM open_gaps GROUP BY ALL),
    x AS (SELECT category, symbol, count(*) AS executions, max(time_us) AS last_execution_us
          FROM executions GROUP BY ALL),
    m AS (SELECT category, symbol FROM t UNION SELECT category, symbol FROM c
          UNION SELECT category, symbol FROM g UNION SELECT category, symbol FROM x)
    SELECT m.category, m.symbol, coalesce(c.days, 0) AS days_covered, t.first_us, t.last_us,
           coalesce(t.rows, 0) AS rows, c.covered_from_us, c.covered_to_us, g.gaps_from_us, g.gaps_to_us,
           c.last_refresh, coalesce(x.executions, 0) AS executions, x.last_execution_us
    FROM m LEFT JOIN t USING (category, symbol) LEFT JOIN c USING (category, symbol)
           LEFT JOIN g USING (category, symbol) LEFT JOIN x USING (category, symbol)
    WHERE ? IS NULL OR m.symbol = ?
    ORDER BY m.category, m.symbol"""

SYMBOLS_SQL = """
    SELECT DISTINCT symbol FROM (SELECT symbol FROM day_summary UNION SELECT symbol FROM coverage
                                 WHERE source <> 'executions')
    ORDER BY symbol"""


def iso_utc(value: Any) -> Any:
    """Every time `status` shows is ISO-8601 UTC ending in Z (TIMESTAMPTZ values come back in the
    session's zone, TIMESTAMP values naive: both are the same instants)."""
    from datetime import UTC, datetime

    if isinstance(value, datetime):
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return aware.isoformat().replace("+00:00", "Z")
    if isinstance(value, str) and value.endswith("+00:00") and "T" in value:
        return value.removesuffix("+00:00") + "Z"
    return value


def _iso_us(value: Any) -> str | None:
    from store.timeutil import us_to_dt

    return None if value is None else str(iso_utc(us_to_dt(int(value))))


def status(store: Store, symbol: str | None = None) -> list[dict[str, Any]]:
    """Per market: what is stored, the holes inside the stored range and the open gaps (the ones
    `gaps` reports over `gaps_range`), the account's fills, and when it was last refreshed.

    A dict per market, so fields added later (the follower, the writer) render without changes."""
    from store.coverage import find_gaps, uncovered

    wanted = symbol.upper() if symbol else None
    rows = []
    for row in store.query_dicts(STATUS_SQL, [wanted, wanted]):
        category, name = row["category"], row["symbol"]
        covered = (row["covered_from_us"], row["covered_to_us"])
        holes = uncovered(store, Market.of(category, name), Span(*covered)) if covered[0] is not None else []
        lo = min(v for v in (row["covered_from_us"], row["gaps_from_us"]) if v is not None) if (
            row["covered_from_us"] is not None or row["gaps_from_us"] is not None) else None
        hi = max(v for v in (row["covered_to_us"], row["gaps_to_us"]) if v is not None) if lo is not None else None
        gaps = find_gaps(store, Market.of(category, name), Span(lo, hi)) if lo is not None and hi is not None else []
        rows.append({
            "category": category, "symbol": name, "days_covered": int(row["days_covered"]),
            "first_trade": _iso_us(row["first_us"]), "last_trade": _iso_us(row["last_us"]),
            "rows": int(row["rows"]),
            "holes": [f"{_iso_us(a)} .. {_iso_us(b)}" for a, b in holes],
            "open_gaps": len(gaps),
            "gaps_range": [_iso_us(lo), _iso_us(hi)] if lo is not None else None,
            "last_refresh": iso_utc(row["last_refresh"]),
            "executions": int(row["executions"]), "last_execution": _iso_us(row["last_execution_us"]),
        })
    return rows


def stored_symbols(store: Store) -> list[str]:
    """Every symbol with trades or trade coverage (for "no trades for X; the store has ...")."""
    return [str(name) for (name,) in store.query(SYMBOLS_SQL)]


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

# Every stored tick id must be its trade id's TradeTick.id: the dedup matches stored rows by it and
# the service keys trades by it, and three paths compute it (DuckDB in one expression or in two
# parts, Python for a small batch).
WRONG_TICK_IDS_SQL = f"""
    SELECT category, symbol, trade_id, tick_id, time_us
    FROM (SELECT *, {md5_low_sql("trade_id")} AS md5_low
          FROM (SELECT *, {tick_number_sql("trade_id")} AS tick_number FROM trades))
    WHERE tick_id <> {TICK_ID_OF_PARTS_SQL}
    ORDER BY category, symbol, time_us
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
    report.add("stored tick ids are their trade ids' TradeTick.id", [
        f"{c} {s} {i}: tick id {t}; `bybit-backfill forget {s} --category {c} --start {day_of_us(u)} "
        f"--end {day_of_us(u) + timedelta(days=1)}`, then `refresh` the day"
        for c, s, i, t, u in store.query(WRONG_TICK_IDS_SQL)])
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
        problem = _file_problem(store, Path(path), Market.of(category, symbol), day, id_mode, size_bytes,
                                int(stored))
        if problem is not None:
            problems.append(f"{symbol} {day}: {path} {problem}; `bybit-backfill export` rewrites it")
    return problems


def _file_problem(store: Store, target: Path, market: Market, day: Any, id_mode: IdMode,
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
    params = [market.category, market.symbol, day_start_us(day), day_start_us(day) + DAY_US]
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


def render_table(names: Sequence[str], rows: Sequence[Sequence[Any]], *, indent: str = "",
                 wrap: dict[int, int] | None = None) -> str:
    """Aligned columns under a dashed header line, NULL as blank: the one table the CLI and the demo
    print. The columns in `wrap` (index -> width) are wrapped onto continuation lines (long gap
    reasons), so no line runs off a terminal."""
    import textwrap

    wrap = wrap or {}
    cells = [[str(name) for name in names]] + [["" if v is None else str(v) for v in row] for row in rows]
    split = [[textwrap.wrap(c, wrap[i]) or [""] if i in wrap else [c] for i, c in enumerate(row)] for row in cells]
    widths = [max(len(part) for row in split for part in row[i]) for i in range(len(names))]
    lines = []
    for row in split:
        for depth in range(max(len(parts) for parts in row)):
            parts = [p[depth] if depth < len(p) else "" for p in row]
            lines.append("  ".join(c.ljust(w) for c, w in zip(parts, widths)).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(indent + line for line in lines)
