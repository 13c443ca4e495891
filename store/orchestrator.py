"""The main job: make the store complete over a range, fetching only what it lacks.

plan (SQL coverage + archive index) -> archive days downloaded concurrently, each stream-parsed and
staged outside the store, then committed with its coverage row in one transaction (the store file
is held for that alone) -> the REST tail for what lies past the newest file (asked before any day is
written, stored after them) -> gaps recorded with their reasons -> touched days exported -> a
summary, folded once from what each step returned. A range the store
already covers sends no request, and loads neither the network stack nor the ingest
(`store.pipeline`, imported only when something is missing): it starts as fast as a read-only
command. A day whose file is unusable fails alone: it is listed in `days_failed`, the rest complete.
"""

from __future__ import annotations

import logging
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from fetch.symbols import normalize_symbol
from store.cache_dir import IdMode, check_cache_dir, complete_days, days_needing_export
from store.coverage import TRADE_SOURCES, Gap, find_gaps, record_open_gaps, unverified
from store.db import Store
from store.refresh_summary import Progress, ProgressCallback, RefreshSummary, copy_client_counters
from store.timeutil import days_touching, us_to_dt

if TYPE_CHECKING:
    from fetch.client import BybitClient
    from fetch.config import FetchConfig
    from store.pipeline import Fetched

__all__ = ["refresh"]

log = logging.getLogger("context.backfill")


def _noop(_: Progress) -> None:
    return None


async def refresh(store: Store, config: FetchConfig, symbol: str, start_us: int, end_us: int, *,
                  category: str = "linear", cache_dir: Path | None = None, id_mode: IdMode = "tick",
                  progress: ProgressCallback | None = None, client: BybitClient | None = None,
                  work_dir: Path | None = None, sources: tuple[str, ...] = TRADE_SOURCES,
                  command: str | None = None) -> RefreshSummary:
    """Fetch what [start_us, end_us) lacks, export touched days, and say what could not be had.

    The store file is held only while something commits: between commits it is let go (`Store.release`),
    so `sql`, `status`, another refresh or an analyst's DuckDB session can open it; each statement
    after that takes it back, waiting for the lock. `command` names this writer in the note other
    processes see (`status`, a lock error).

    `sources` are the coverage sources that count as "has it": `follow` passes ('archive',) so a day
    it captured live is still fetched from the archive, which then replaces the live rows."""
    began = time.monotonic()
    symbol = normalize_symbol(symbol)
    report = progress or _noop
    summary = RefreshSummary(category, symbol, us_to_dt(start_us).isoformat(), us_to_dt(end_us).isoformat())
    if cache_dir is not None:
        check_cache_dir(cache_dir)
    all_days = days_touching([(start_us, end_us)])
    summary.days_in_range = len(all_days)
    missing = unverified(store, category, symbol, start_us, end_us, sources)
    summary.days_from_store = len(set(all_days) - set(days_touching(missing)))
    log.debug("plan %s %s: %d of %d days already stored, %d spans to fetch", category, symbol,
              summary.days_from_store, len(all_days), len(missing))
    fetched: Fetched | None = None
    note = None
    try:
        if missing:
            from store.pipeline import Job, fetch_missing
            from store.writer_state import WriterNote

            note = WriterNote(Path(store.path), command or f"refresh {category} {symbol}")
            store.release()
            job = Job(store, category, symbol, start_us, end_us, report,
                      cache_dir=Path(cache_dir) if cache_dir is not None else None, id_mode=id_mode, note=note)
            fetched = await fetch_missing(job, config, missing, client=client, work_dir=work_dir)
        with store.held():
            gaps = find_gaps(store, category, symbol, start_us, end_us)
            summary.gaps = _with_reasons(gaps, fetched.reasons if fetched else [])
            with store.atomic():
                record_open_gaps(store, category, symbol, start_us, end_us, summary.gaps)
            if cache_dir is not None:
                _export_stale(store, summary, cache_dir, all_days, id_mode, fetched, report)
    finally:
        if note is not None:
            note.close()
    if fetched is not None:
        _fold(summary, fetched)
    summary.elapsed_s = time.monotonic() - began
    log.info("Bybit backfill complete: %s %s, %d rows added, %d duplicates skipped, %d conflicts, "
             "%d gaps left, %d requests in %.1f s", category, symbol, summary.rows_added,
             summary.duplicates_skipped, summary.conflicts, len(summary.gaps), summary.requests,
             summary.elapsed_s)
    return summary


def _fold(summary: RefreshSummary, fetched: Fetched) -> None:
    """What the fetch did, into the summary, once."""
    totals = fetched.totals
    summary.rows_added, summary.duplicates_skipped = totals.added, totals.duplicates
    summary.conflicts, summary.rest_rows_replaced = totals.conflicts, totals.replaced
    summary.days_fetched = sum(1 for d in fetched.days if d.result is not None)
    summary.days_failed = [d.day.isoformat() for d in fetched.days if d.failed]
    summary.tail_rows = fetched.tail.rows if fetched.tail is not None else 0
    copy_client_counters(summary, fetched.stats)
    # Unusable files and untrue answers fail past the client's counters.
    for name, count in (("ArchiveError", len(summary.days_failed)), ("Implausible", fetched.implausible)):
        if count:
            summary.errors_by_type[name] = summary.errors_by_type.get(name, 0) + count


def _export_stale(store: Store, summary: RefreshSummary, cache_dir: Path, all_days: list[date],
                  id_mode: IdMode, fetched: Fetched | None, report: ProgressCallback) -> None:
    """Write every day of the range whose file is missing or out of date (the background exporter
    has done most of them already); pyarrow's writer loads only if one is."""
    category, symbol = summary.category, summary.symbol
    stale = days_needing_export(store, category=category, symbol=symbol, cache_dir=cache_dir,
                                days=_exportable_days(store, category, symbol, all_days), id_mode=id_mode)
    earlier = fetched.exported if fetched is not None else []
    rows = sum(e.rows for e in earlier)
    files = len(earlier)
    if stale:
        from store.export import export_days

        exported = export_days(store, category=category, symbol=symbol, days=stale, cache_dir=cache_dir,
                               id_mode=id_mode)
        files += len(exported)
        rows += sum(e.rows for e in exported)
    summary.files_exported = files
    report(Progress("export", rows=rows, message=f"{files} files"))


def _with_reasons(gaps: list[Gap], reasons: list[Gap]) -> list[Gap]:
    """Give each uncovered interval the reason of this run that overlaps it most."""
    result = []
    for gap in gaps:
        def overlap(reason: Gap, gap: Gap = gap) -> int:
            return min(reason.end_us, gap.end_us) - max(reason.start_us, gap.start_us)

        candidates = [r for r in reasons if overlap(r) > 0]
        if gap.kind == "uncovered" and candidates:
            best = max(candidates, key=overlap)
            gap = Gap(gap.kind, gap.start_us, gap.end_us, best.reason, gap.detail)
        result.append(gap)
    return result


_EXPORTABLE_DAYS_SQL = ("SELECT day FROM day_summary WHERE category = ? AND symbol = ? "
                        "AND day >= ? AND day <= ?")


def _exportable_days(store: Store, category: str, symbol: str, days: list[date]) -> list[date]:
    """Days with any stored trade that are complete in the store: a reader takes a file as the whole
    day, so today (still going on) or a day with a hole gets none."""
    if not days:
        return []
    rows = store.query(_EXPORTABLE_DAYS_SQL, [category, symbol, days[0], days[-1]])
    return complete_days(store, category, symbol, sorted(row[0] for row in rows))[0]
