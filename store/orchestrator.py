"""The main job: make the store complete over a range, fetching only what it lacks.

plan (SQL coverage + archive index) -> archive days downloaded concurrently, each stream-parsed and
staged outside the store, then committed with its coverage row in one transaction (the store file
is held for that alone, or kept across a run of short commits: `Store.keeping`) -> the REST tail for
what lies past the newest file (asked before any day is written, stored after them) -> gaps recorded
with their reasons -> touched days exported -> a summary, folded once from what each step returned.
A range the store already covers sends no request, and loads neither the network stack nor the
ingest (`store.pipeline`, imported only when something is missing): it starts as fast as a
read-only command. A day whose file is unusable fails alone: it is listed in `days_failed`, the
rest complete.

`refresh` is one symbol; its steps (`plan_parts`, `fetch_part`, `conclude`) take many parts, so a
whole-market run (`store.market`) asks the store its plan and its gaps once for many symbols.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from fetch.market_span import Market, Span
from store.cache_dir import IdMode, check_cache_dir, days_needing_export
from store.coverage import TRADE_SOURCES, Ask, Gap, incomplete_days_many
from store.coverage_many import gaps_many, record_gaps_many, unverified_many
from store.db import Store
from store.refresh_summary import Progress, ProgressCallback, RefreshSummary, copy_client_counters
from store.timeutil import days_touching, us_to_dt

if TYPE_CHECKING:
    from fetch.client import BybitClient
    from fetch.config import FetchConfig
    from store.pipeline import Fetched
    from store.staging_budget import StagingBudget
    from store.writer_state import WriterNote

__all__ = ["Part", "conclude", "fetch_part", "plan_parts", "refresh"]

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
    after that takes it back, waiting for the lock. A run of small commits keeps it across commits
    (`Store.keeping`), for up to `store.file_pool.HOLD_BOUND_S` when another process waits.
    `command` names this writer in the note other processes see (`status`, a lock error).

    `sources` are the coverage sources that count as "has it": `follow` passes ('archive',) so a day
    it captured live is still fetched from the archive, which then replaces the live rows."""
    market = Market.parse(category, symbol)
    if cache_dir is not None:
        check_cache_dir(cache_dir)
    with store.keeping():
        [part] = plan_parts(store, [Ask(market, Span(start_us, end_us))], sources=sources,
                            cache_dirs=[cache_dir], id_mode=id_mode)
        note = None
        try:
            if part.missing:
                from store.writer_state import WriterNote

                note = WriterNote(Path(store.path), command or f"refresh {market.category} {market.symbol}")
                await fetch_part(store, config, part, progress=progress, client=client, work_dir=work_dir,
                                 note=note)
            conclude(store, [part], progress=progress)
        finally:
            if note is not None:
                note.close()
    return part.summary


@dataclass
class Part:
    """One refresh under way: its range, what the store lacked of it, and what its fetch did."""

    ask: Ask
    summary: RefreshSummary
    missing: list[Span]
    all_days: list[date]
    cache_dir: Path | None = None
    id_mode: IdMode = "tick"
    fetched: Fetched | None = None
    began: float = field(default_factory=time.monotonic)


def plan_parts(store: Store, asks: list[Ask], *, sources: tuple[str, ...] = TRADE_SOURCES,
               cache_dirs: list[Path | None] | None = None, id_mode: IdMode = "tick") -> list[Part]:
    """What each ask's range lacks (`store.coverage_many`: two statements for all of them)."""
    parts = []
    dirs = cache_dirs or [None] * len(asks)
    for ask, missing, cache_dir in zip(asks, unverified_many(store, asks, sources), dirs, strict=True):
        market, span = ask
        summary = RefreshSummary(market.category, market.symbol, us_to_dt(span.start_us).isoformat(),
                                 us_to_dt(span.end_us).isoformat())
        all_days = days_touching([span])
        summary.days_in_range = len(all_days)
        summary.days_from_store = len(set(all_days) - set(days_touching(missing)))
        log.debug("plan %s %s: %d of %d days already stored, %d spans to fetch", market.category, market.symbol,
                  summary.days_from_store, len(all_days), len(missing))
        parts.append(Part(ask, summary, missing, all_days, cache_dir, id_mode))
    return parts


async def fetch_part(store: Store, config: FetchConfig, part: Part, *, progress: ProgressCallback | None = None,
                     client: BybitClient | None = None, work_dir: Path | None = None,
                     staging: Store | None = None, note: WriterNote | None = None,
                     budget: StagingBudget | None = None, downloaded: Callable[[], None] | None = None) -> None:
    """Fetch what `part` lacks into the store (the file let go meanwhile). `staging`: a private
    database shared by the run's refreshes, `client`, `work_dir` and the `budget` of staged bytes
    too (else each its own); `downloaded` is called once the last archive file has arrived."""
    if not part.missing:
        return
    from store.pipeline import Job, fetch_missing

    store.release()
    job = Job(store, part.ask.market, part.ask.span, progress or _noop,
              cache_dir=Path(part.cache_dir) if part.cache_dir is not None else None, id_mode=part.id_mode,
              note=note, budget=budget, downloaded=downloaded)
    part.fetched = await fetch_missing(job, config, part.missing, client=client, work_dir=work_dir,
                                       staging=staging)


def conclude(store: Store, parts: list[Part], *, progress: ProgressCallback | None = None) -> None:
    """The gaps each part leaves, with this run's reasons, recorded in one transaction for all of
    them; stale days exported; the summaries completed."""
    report = progress or _noop
    asks = [part.ask for part in parts]
    with store.held():
        for part, gaps in zip(parts, gaps_many(store, asks), strict=True):
            part.summary.gaps = _with_reasons(gaps, part.fetched.reasons if part.fetched else [])
        with store.atomic():
            record_gaps_many(store, asks, [part.summary.gaps for part in parts])
        exporting = [part for part in parts if part.cache_dir is not None]
        for part, days in zip(exporting, _exportable_days(store, exporting), strict=True):
            assert part.cache_dir is not None
            _export_stale(store, part.ask.market, part.summary, part.cache_dir, days, part.id_mode,
                          part.fetched, report)
    for part in parts:
        summary = part.summary
        if part.fetched is not None:
            _fold(summary, part.fetched)
        summary.elapsed_s = time.monotonic() - part.began
        log.info("Bybit backfill complete: %s %s, %d rows added, %d duplicates skipped, %d conflicts, "
                 "%d gaps left, %d requests in %.1f s", summary.category, summary.symbol, summary.rows_added,
                 summary.duplicates_skipped, summary.conflicts, len(summary.gaps), summary.requests,
                 summary.elapsed_s)


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


def _export_stale(store: Store, market: Market, summary: RefreshSummary, cache_dir: Path, days: list[date],
                  id_mode: IdMode, fetched: Fetched | None, report: ProgressCallback) -> None:
    """Write every one of `days` (the range's exportable days) whose file is missing or out of date
    (the background exporter has done most of them already); pyarrow's writer loads only if one is."""
    stale = days_needing_export(store, market=market, cache_dir=cache_dir, days=days, id_mode=id_mode)
    earlier = fetched.exported if fetched is not None else []
    rows = sum(e.rows for e in earlier)
    files = len(earlier)
    if stale:
        from store.export import export_days

        exported = export_days(store, market=market, days=stale, cache_dir=cache_dir, id_mode=id_mode)
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


_EXPORTABLE_DAYS_SQL = """
    WITH parts AS (
        SELECT unnest(?::INTEGER[]) AS k, unnest(?::VARCHAR[]) AS category, unnest(?::VARCHAR[]) AS symbol,
               unnest(?::DATE[]) AS first_day, unnest(?::DATE[]) AS last_day
    )
    SELECT p.k, s.day FROM parts p JOIN day_summary s
        ON s.category = p.category AND s.symbol = p.symbol AND s.day BETWEEN p.first_day AND p.last_day
    ORDER BY p.k, s.day"""


def _exportable_days(store: Store, parts: list[Part]) -> list[list[date]]:
    """Per part: the days of its range with any stored trade that are complete in the store (a
    reader takes a file as the whole day, so today, still going on, or a day with a hole gets none).
    Two statements for all the parts: a whole market concludes hundreds at once."""
    stored: list[list[date]] = [[] for _ in parts]
    ranged = [(k, part) for k, part in enumerate(parts) if part.all_days]
    if ranged:
        params = [[k for k, _ in ranged], [p.ask.market.category for _, p in ranged],
                  [p.ask.market.symbol for _, p in ranged], [p.all_days[0] for _, p in ranged],
                  [p.all_days[-1] for _, p in ranged]]
        for k, day in store.query(_EXPORTABLE_DAYS_SQL, params):
            stored[int(k)].append(day)
    incomplete = incomplete_days_many(store, [(part.ask.market, days) for part, days in zip(parts, stored)])
    return [[day for day in days if day not in holes] for days, holes in zip(stored, incomplete, strict=True)]
