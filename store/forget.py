"""Forget a market's span: the store afterwards is as if that span had never been fetched.

Why: a refresh with the wrong `--category` (linear and inverse share the archive's folder), a test
run into the production store, or a span to fetch again from scratch. Everything the span put in
the store goes, in one transaction: trades, trade coverage, day summaries, open gaps, conflicts,
reconciliation rows and the `exports` rows of its days; the exported parquet files are deleted
after the commit (a failed transaction leaves them, and the store, as they were). The account's
own fills (`executions` and their coverage) are not market data and stay.

The span is whole UTC days (`[first day, stop day)`), the grain of archive coverage, day
summaries and exported files; coverage or a gap reaching past either end is clipped to what lies
outside, so the neighbouring days keep exactly what they had. Statements are constants with the
values as parameters, in the order they must run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from fetch.market_span import Market, Span
from store.db import Store
from store.timeutil import day_start_us

# Parameters of every statement: category, symbol, start_us, end_us (or the first and stop day).
_MARKET = "category = ? AND symbol = ?"

COUNT_SQL = {
    "trades": f"SELECT count(*) FROM trades WHERE {_MARKET} AND time_us >= ? AND time_us < ?",
    "coverage": (f"SELECT count(*) FROM coverage WHERE {_MARKET} AND source <> 'executions' "
                 "AND start_us < ? AND end_us > ?"),
    "open_gaps": f"SELECT count(*) FROM open_gaps WHERE {_MARKET} AND start_us < ? AND end_us > ?",
    "conflicts": (f"SELECT count(*) FROM conflicts WHERE {_MARKET} AND ((stored_time_us >= ? AND stored_time_us < ?) "
                  "OR (new_time_us >= ? AND new_time_us < ?))"),
    "day_summary": f"SELECT count(*) FROM day_summary WHERE {_MARKET} AND day >= ? AND day < ?",
    "reconciliation": f"SELECT count(*) FROM reconciliation WHERE {_MARKET} AND day >= ? AND day < ?",
    "exports": f"SELECT count(*) FROM exports WHERE {_MARKET} AND day >= ? AND day < ?",
}

EXPORTED_FILES_SQL = f"SELECT DISTINCT path FROM exports WHERE {_MARKET} AND day >= ? AND day < ? ORDER BY path"


def clip_sql(table: str, extra: str = "") -> list[str]:
    """Remove [start, end) from the intervals of `table` (coverage or open_gaps): the part after the
    end is kept as a new row, the part before the start by shortening the row, and every row that
    starts inside the span is dropped. Parameters of each: category, symbol, start_us, end_us."""
    return [
        # the part after the span, of rows reaching past its end
        f"""INSERT INTO {table} SELECT * REPLACE (CAST(?4 AS BIGINT) AS start_us) FROM {table}
            WHERE category = ?1 AND symbol = ?2 {extra} AND start_us < ?4 AND end_us > ?4 AND ?3 < ?4""",
        # the part before the span, of rows starting before it and reaching into it
        f"""UPDATE {table} SET end_us = ?3
            WHERE category = ?1 AND symbol = ?2 {extra} AND start_us < ?3 AND end_us > ?3 AND ?3 < ?4""",
        # the rest starts inside the span (the new right-hand parts start at its end: kept)
        f"DELETE FROM {table} WHERE category = ?1 AND symbol = ?2 {extra} AND start_us >= ?3 AND start_us < ?4",
    ]


DELETE_BY_TIME_SQL = [
    f"DELETE FROM trades WHERE {_MARKET} AND time_us >= ? AND time_us < ?",
]
DELETE_CONFLICTS_SQL = (f"DELETE FROM conflicts WHERE {_MARKET} AND ((stored_time_us >= ? AND stored_time_us < ?) "
                        "OR (new_time_us >= ? AND new_time_us < ?))")
DELETE_BY_DAY_SQL = [
    f"DELETE FROM day_summary WHERE {_MARKET} AND day >= ? AND day < ?",
    f"DELETE FROM reconciliation WHERE {_MARKET} AND day >= ? AND day < ?",
    f"DELETE FROM exports WHERE {_MARKET} AND day >= ? AND day < ?",
]


@dataclass
class Forgotten:
    """What a forget removed (or, with `dry_run`, would remove): rows per table and the files."""

    category: str
    symbol: str
    first_day: str
    stop_day: str
    rows: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    files_deleted: int = 0
    dry_run: bool = False

    @property
    def empty(self) -> bool:
        return not any(self.rows.values()) and not self.files

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _params(market: Market, first: date, stop: date) -> tuple[list[Any], list[Any], list[Any]]:
    span = Span(day_start_us(first), day_start_us(stop))
    by_time = [market.category, market.symbol, *span]
    return by_time, [market.category, market.symbol, first, stop], [*by_time, *span]


def plan_forget(store: Store, market: Market, first: date, stop: date) -> Forgotten:
    """Count what forgetting [first, stop) would remove, changing nothing (the confirmation prompt)."""
    by_time, by_day, conflicts = _params(market, first, stop)
    found = Forgotten(market.category, market.symbol, first.isoformat(), stop.isoformat(), dry_run=True)
    for table, sql in COUNT_SQL.items():
        if table in ("coverage", "open_gaps"):
            params = [market.category, market.symbol, by_time[3], by_time[2]]
        elif table == "conflicts":
            params = conflicts
        elif table == "trades":
            params = by_time
        else:
            params = by_day
        row = store.query_one(sql, params)
        found.rows[table] = int(row[0]) if row else 0
    found.files = [str(path) for (path,) in store.query(EXPORTED_FILES_SQL, by_day)]
    return found


def forget(store: Store, market: Market, first: date, stop: date) -> Forgotten:
    """Remove everything [first, stop) put in the store, in one transaction; then its files."""
    by_time, by_day, conflicts = _params(market, first, stop)
    with store.atomic():
        done = plan_forget(store, market, first, stop)
        done.dry_run = False
        for statement in DELETE_BY_TIME_SQL:
            store.execute(statement, by_time)
        store.execute(DELETE_CONFLICTS_SQL, conflicts)
        for statement in clip_sql("coverage", "AND source <> 'executions'") + clip_sql("open_gaps"):
            store.execute(statement, by_time)
        for statement in DELETE_BY_DAY_SQL:
            store.execute(statement, by_day)
    for name in done.files:
        path = Path(name)
        if path.is_file():
            path.unlink()
            done.files_deleted += 1
    return done


EVERYTHING = (date(1970, 1, 1), date(9999, 1, 1))


def forget_days(start: str | None, end: str | None, parse: Any) -> tuple[date, date]:
    """[first, stop) from `--start`/`--end` (whole UTC days; either may be left out: from the
    beginning, to the end). `parse` reads one value into an aware UTC datetime."""
    from fetch.errors import InputError

    days = []
    for text, default in ((start, EVERYTHING[0]), (end, EVERYTHING[1])):
        if text is None:
            days.append(default)
            continue
        when = parse(text)
        if (when.hour, when.minute, when.second, when.microsecond) != (0, 0, 0, 0):
            raise InputError(f"forget works on whole UTC days: give {text!r} as a date (YYYY-MM-DD)")
        days.append(when.date())
    if days[0] >= days[1]:
        raise InputError(f"--start {days[0]} is not before --end {days[1]} (the end day is exclusive)")
    return days[0], days[1]
