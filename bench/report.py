"""The results table on the terminal and in bench/RESULTS.md."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from .simhost import LATENCY_MS, Scale
from .util import Quiet, Row

# Why a goal is missed and what would close it, from the profiles and phase timings taken while
# optimizing (bench/RESULTS.md shows the run's own numbers). Keyed by the start of a row's figure.
_DAY_CPU = (
    "Where a busy day's CPU goes in the tool (in-process, one day into an empty store, on a quiet "
    "machine, CPU-seconds of both cores): staging 1.5 (inflate + CSV parse + conversions + plausibility "
    "checks ~0.9 in the parse thread; DuckDB staging with the 63-bit tick ids ~0.6, of which md5 ~0.4), "
    "commit 1.5 (the insert into the compressed `trades` table ~1.0, the repeated-id check "
    "`count(DISTINCT tick_id)` ~0.17, the Arrow hop from the private staging database ~0.24, the rest "
    "~0.07), export 0.73 (the sort by time and id, the tick ids as strings, the parquet writer): ~3.8 "
    "CPU-s, plus ~0.35 s of interpreter start-up. ")
_PEER_WORK = (
    "The polars peer does a subset of that work in one multi-threaded engine: it parses the file, hashes "
    "the raw id once for `unique`, sorts and writes; it keeps no store, no exact integer times, no tick "
    "ids (it writes the raw id as `i`), no per-row validation, no coverage, no day summary. ")
_LEVERS = (
    "Levers measured this round, none beyond noise: the Arrow hop as a streamed reader (128k-row "
    "batches) instead of one table: 0.24 s against 0.13-0.18 s, peak RSS the same; "
    "`preserve_insertion_order = false` around the insert and the export COPY: identical files, the same "
    "CPU (0.83 and 0.49 CPU-s either way, 4 alternating runs) and, on a quiet machine, the same wall; "
    "skipping the anti-join when no stored row shares an id: 1.08 against 1.10 CPU-s (DuckDB already "
    "short-cuts an empty build side); polars' CSV reader as the parser: reading alone (no conversions) "
    "takes 0.84 CPU-s against 0.98 for our whole parse with exact times and validation, and it inflates "
    "the whole file into memory first (+~200 MB), so it would not earn a runtime dependency; the tick id "
    "is md5-bound (0.42 of the 0.43 s expression over 1.5M UUIDs), and its value must stay; FSST and "
    "dictionary compression disabled for the insert: the same CPU (1.13-1.15 CPU-s) and size. One lever "
    "is real but not taken: the export's sort is 0.27 of its 0.73 CPU-s (0.15 of it the id tie-breaker), "
    "and a day inserted in time order would not need it, but proving the stored order in SQL costs a "
    "sort of its own; it wants a flag kept at ingest (rows of the day inserted by one sorted INSERT). ")

ANALYSIS: dict[str, str] = {
    "busy day vs the polars peer": (
        "Why: " + _DAY_CPU + _PEER_WORK + "On 2 cores the day is CPU-bound, so the ratio follows the "
        "ratio of CPU-seconds: in a quiet run of this figure alone (`python -m bench --only busy --runs "
        "3`), the tool 3.32 s and 4.84 CPU-s, the peer 1.18 s and 1.80 CPU-s (2.81x wall, 2.69x CPU); "
        "in this run the busy machine slowed the multi-threaded peer more than the tool. " + _LEVERS + "Close it: no single statement is large enough; it needs less "
        "work per row: ids kept as 128-bit UUIDs with the tick id derived on read (the insert's id column "
        "is ~0.5 of the ~1.0), side and source as ENUMs (~0.2 of a lone insert), the export written from "
        "the staged rows while the day commits (needs proof that the day's stored rows equal the staged "
        "ones: no id reused, no REST rows replaced), and a resident process for the ~0.35 s of start-up; "
        "each is a schema or flow change for its own issue. Even all of them leave the tool ~1.5-2x a "
        "peer that does not keep a store."),
    "week (7 busy days): time vs polars": (
        "Why: the busy day's work (~3.8 CPU-s a day, see the busy day's entry) seven times, against "
        "the peer's one-engine read, unique, sort and write. The tool already "
        "overlaps each day's export with the next day's staging; staging day N+1 while day N commits "
        "could lift both cores from ~87% to ~95% busy (~-8%), far from the gap. Close it: less work per "
        "row (see the busy day), not more overlap."),
    "week (7 busy days): peak RSS vs polars": (
        "Why: the peak is DuckDB's working memory: a day staged in the private database (~+300 MB), its "
        "Arrow hop into the store (~+150 MB, measured), and the background export's sort of the previous "
        "day plus the parquet writer (~+400 MB) at the same time; the peer holds one day's frame. Close "
        "it: export from rows stored in time order without a sort, stream the hop, and stage under a "
        "tighter memory limit; each costs speed (lowering the limits alone left the peak unchanged)."),
    "busy day": (
        'Why: the tool needs more CPU-seconds than the floor (5.0 against 3.3 in this run, both cores '
        'busy), for work the floor does not do. Round 1 measured 1.09x (2.90 s); since then staging in a '
        'private database and hopping the day into the store (~0.24 CPU-s, what lets readers in during a '
        "refresh), the per-batch plausibility checks, the global id check (now the id filter's probe, "
        "~0.1 s) and the day's content fingerprints were added. In-process, one busy day's commit is ~1.5"
        ' s, of which the INSERT into the compressed `trades` table is ~1.0 s (measured per statement '
        'this round); the repeated-id count and the time span now run in the private database before the '
        'store is held. The rest is interpreter start-up (pyarrow, duckdb, numpy, pydantic, aiohttp: '
        "~0.35 s against ~0.15 s for the floor's `import duckdb`). Close it: a leaner insert (ids as "
        'UUIDs with the tick id derived, side and source as ENUMs: schema changes), insert from the '
        'hopped Arrow table without the temp copy, and a resident process for the start-up.'),
    "export": (
        "Why: `write_day` is the same DuckDB COPY plus a schema check and a rename; the ranges overlap "
        "(a busy machine, see Setup), and earlier runs on a quieter machine measured 1.05x. Close it: "
        "nothing left in our code."),
    "the guide's 12 h": (
        "Why: coverage is whole archive days, so 12 hours cost what a whole busy day costs: download, "
        "parse and stage 1.5M rows, insert them into the compressed table, export the day, plus "
        "interpreter start-up. Both cores are busy in each step, so the run is CPU-bound. Close it: "
        "less work per row (see the week below)."),
    "warm cache": "Why: the warm path is three small SQL queries; a miss is start-up noise.",
    "week (7 busy days): longest reader wait": (
        "Why: DuckDB's file lock is exclusive, so a reader waits for the longest single hold of the "
        "store: one day's commit (the hop from the private staging database, the repeated-id check, the "
        "semi-join against every stored tick id, the insert, the day summary and COMMIT: ~1.3 s "
        "in-process on a quiet machine), stretched here by other processes on the two cores (see Setup), "
        "and the semi-join's share grows with the store. Close it: shorter holds: do the repeated-id "
        "check and the time span in the private database before the hop (~0.15 s less), take the "
        "global id check out of the hold with a compact filter of the stored ids (see day 30), and rerun "
        "on an idle machine; a day must stay one transaction."),
    "week (7 busy days): time vs pandas": (
        "Why: the tool does more work per day than the peer, and the week is CPU-bound on two cores. "
        "Per day: inflating and parsing ~0.85 CPU-s (ISA-L gzip; with zlib it was ~0.5 more), staging with "
        "the 63-bit tick ids (md5 per trade) ~0.5, the repeat check and the ±1-day window match ~0.2, "
        "the insert into the compressed table ~1.1 (0.5 of it for the 36-character ids, ~0.2 for the "
        "low-cardinality VARCHAR columns), the daily summary ~0.1, the export ~0.75: ~3.6 CPU-s "
        "against ~2.5 for the single-threaded peer, which keeps no store, no ids and no summary. With "
        "both cores ~85-90% busy it runs at ~2.2 s a day; 0.7x of this peer needs ~1.85 s, i.e. "
        "~3.2 CPU-s a day. Measured levers: side and source as ENUMs save ~0.2 CPU-s of a lone insert, "
        "but in the whole pipeline the difference stayed within run-to-run noise (4 days, 3 "
        "alternating runs each); UUID ids stored as UUID save ~0.37 of insert but proving each id "
        "canonical before the cast costs ~0.5 at staging (a net loss); the rest is DuckDB's own insert "
        "and sort. Both cores are ~87% busy over the week (25.8 CPU-s in 14.9 s, measured with "
        "/proc): staging the next day on a second connection while a day commits could lift that to "
        "~95% (~-8%). That would reach ~0.76x, so the goal needs more cores "
        "(every stage but gzip scales) or a leaner store format than exact ids kept per row."),
    "week (7 busy days): peak RSS vs pandas": (
        "Why: the peak is DuckDB's working memory, not its block cache: staging a day (~+300 MB over "
        "the ~135 MB of an idle process) and above all the export, whose sort of the day's 1.5M rows "
        "plus the parquet writer take ~+400 MB on their own (measured alone; with a 200 MB memory "
        "limit still +200 MB, a 318 MB process against a goal of ~240 MB, at 1.8x the time, as "
        "DuckDB spills). Lowering the refresh's memory "
        "limit from 1 GB to 128-256 MB left the 3-day peak unchanged (~0.9 GB). Even the floor, "
        "DuckDB alone reading one day into a table and writing it, peaks near 0.6x the peer (see "
        "Details): 1/3 is below what DuckDB itself needs at this size. Close it: stream the ingest "
        "(no whole-day staging) and export from rows stored in time order without a sort, under a "
        "tight memory limit; each costs speed, the week's other goal."),
    "200 small symbols": (
        'Why: per-commit fixed costs. This round took it from ~26-30 s (13-17x) to ~8 s: the store is '
        'kept open across a run of short commits (`Store.keeping`, let go at most every second and when '
        'idle, so readers still get in), one private staging database per run, the plan and gaps of all '
        'symbols in one statement each, and days committed in one thread off the event loop (each lever '
        'measured alone: 17.5, 15.1, 11-14 and 9.4-10.9 s without it). What is left is the one commit '
        'thread: ~30 ms per small day, 200 in a row, of which ~22 ms are the ingest statements (day '
        'summary 3.7 ms, the insert 2.9, moving the staged rows from the private database ~4, the '
        "id-filter and conflict queries ~2 each) and ~5 ms COMMIT's log flush; plus ~0.5 s of start-up "
        'and the checkpoints at each let-go. Close it: commit several small days (of one or more symbols)'
        ' in one transaction, each still with its coverage row, and move more of the per-day statements '
        'into the private database.'),
    "executions: request rate": (
        "Why: the crawl is paced at 47.4/s (a 50/s limit, counted on arrival in fixed seconds, with 50 ms "
        "of latency jitter absorbed); a miss means event-loop stalls. Close it: check that nothing "
        "blocking runs on the event loop during the crawl."),
    "scale: day": (
        'Why: a busy machine, or the larger file: the id check no longer reads the stored ids '
        "(`store/id_filter.py`: a persisted blocked Bloom filter of the market's tick ids probes the "
        "day's 1.5M ids in ~0.1 s whatever the store's size; only its hits are looked up). What still "
        'grows with the store is the first large append into a large table and the export from the bigger'
        ' file.'),
    "ingest at": (
        "Why: the id filter of 100M ids is a 914 MB memory-mapped file, and one busy day's 1.5M probes "
        'and adds touch nearly every one of its pages: mapping them in and dirtying them costs ~0.5-1 s '
        'in a fresh process, and the bench copies the store and its filter afresh before each run, so '
        'their pages are still being written back while the run reads them. The figure moved between '
        'runs: 1.13x, 1.24x, 1.29x and 1.45x in four runs this round (it was 1.63x with the whole-column '
        'semi-join). Close it: probe in block order (sorted by block, so the pages are read in sequence),'
        ' or a filter in segments by tick-id range so a day dirties only what it adds to.'),
    "scale: peak RSS": (
        "Why: the private staging database (1 GB limit) and the store connection, plus the id filter's "
        'mapped pages (~6-9 bytes a stored row). Close it: a lower memory limit for the staging database.'),
    "scale: `status`": (
        "Why: `status` reads `day_summary` and `coverage` (a row a day), so a miss is start-up "
        "(pydantic and duckdb imports, ~0.25 s) or machine noise."),
    "scale: `gaps`": (
        "Why: the gap SQL scans the range's trades for silences (~0.2 s at 30 days) plus start-up. "
        "Close it: keep per-bucket first/last times at ingest, as `day_summary` does for days."),
    "scale: `per-day VWAP`": (
        "Why: the `daily` view reads `day_summary` (a row a day), so a miss is start-up or noise."),
}

_SECTIONS = [("busy", "Busy day ingest"), ("serve", "The emulator is not the bottleneck"),
             ("export", "Export"), ("12h", "The guide's 12 hours"), ("warm", "Warm cache"),
             ("week", "Week"), ("executions", "Executions"), ("scale", "Scale"),
             ("big", "Ingest at 100M rows"),
             ("profile", "Profile of the busy-day path (top costs)")]


def _table(rows: list[Row]) -> list[str]:
    lines = ["| figure | goal | measured: median (min-max, runs) | ratio | verdict |",
             "|---|---|---|---|---|"]
    lines += [f"| {r.figure} | {r.goal} | {r.measured} | {r.ratio} | **{r.verdict}** |" for r in rows]
    return lines


def print_table(rows: list[Row]) -> None:
    cells = [("figure", "goal", "measured", "ratio", "verdict")]
    cells += [(r.figure, r.goal, r.measured, r.ratio, r.verdict) for r in rows]
    widths = [min(60, max(len(c[i]) for c in cells)) for i in range(5)]
    print()
    for k, row in enumerate(cells):
        print("  ".join(c[:60].ljust(w) for c, w in zip(row, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print()


def write_results(path: Path, *, rows: list[Row], details: dict[str, list[str]], setup: list[str],
                  info: dict[str, str], command: str, elapsed_s: float, scale: Scale, when: datetime,
                  quick: bool, quiet: str | None = None) -> None:
    """RESULTS.md; the run's measurements also go to `measured.json` beside it, so the text (the
    analysis of missed goals) can be rendered again from them (`python -m bench.report JSON`)."""
    if quiet is None:
        quiet = _quiet()
    _dump(path, rows=rows, details=details, setup=setup, info=info, command=command, elapsed_s=elapsed_s,
          scale=scale, when=when, quick=quick, quiet=quiet)
    _write(path, rows=rows, details=details, setup=setup, info=info, command=command, elapsed_s=elapsed_s,
           scale=scale, when=when, quick=quick, quiet=quiet)


def _quiet() -> str:
    if not Quiet.enabled:
        return "disabled (--no-wait)"
    return (f"{Quiet.runs} runs, {Quiet.waited_s:.0f} s spent waiting"
            + (f", {Quiet.gave_up} measured on a busy machine after {Quiet.max_wait_s:.0f} s"
               if Quiet.gave_up else "")
            + (f"; {Quiet.describe()}" if Quiet.seen else ""))


def _dump(path: Path, **run: Any) -> None:
    data = {**run, "rows": [asdict(r) for r in run["rows"]], "scale": asdict(run["scale"]),
            "when": run["when"].isoformat()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_name(path.stem + ".json").write_text(json.dumps(data, indent=1))


def render(measured: Path, out: Path) -> None:
    """RESULTS.md again from a run's recorded measurements, with the current analysis text."""
    data = json.loads(measured.read_text())
    data["rows"] = [Row(**r) for r in data["rows"]]
    data["scale"] = Scale(**data["scale"])
    data["when"] = datetime.fromisoformat(data["when"])
    _write(out, **data)


def _write(path: Path, *, rows: list[Row], details: dict[str, list[str]], setup: list[str],
           info: dict[str, str], command: str, elapsed_s: float, scale: Scale, when: datetime,
           quick: bool, quiet: str) -> None:
    out = ["# Benchmark results", ""]
    if quick:
        out += ["**Quick mode** (tiny days, one run): a smoke test of the harness, not a measurement.", ""]
    out += [(f"Command: `{command}` (run from the repository root), finished {when:%Y-%m-%d %H:%M} UTC "
            f"in {elapsed_s / 60:.1f} min."), ""]
    out += ["## Machine", "", "| " + " | ".join(info) + " |", "|" + "---|" * len(info),
            "| " + " | ".join(info.values()) + " |", ""]
    out += ["## Setup", "",
            (f"- Everything runs against `sim/` on 127.0.0.1 with {LATENCY_MS:.0f} ms added latency per "
             f"request: one linear market, BTCUSDT, {scale.trades_per_day:,} trades a day."),
            ("- Each tool run is `bybit-backfill ...` in a fresh process (wall time includes interpreter "
             "start-up; peak RSS is that process's `ru_maxrss` from `wait4`, forked by a small launcher). "
             "Tool runs and their floor or peer alternate, so a slow moment of the machine hits both."),
            (f"- {scale.runs} runs per figure ({scale.short_runs} for the busy day, 12 h and warm figures, "
             f"{scale.export_runs} for export; the 30-day build once); figures show the median with "
             f"min-max. Before each run the harness waits until other processes leave the machine idle: "
             f"{quiet}.")]
    out += [f"- {line}" for line in setup]
    out += [""]
    out += ["## Results", "", *_table(rows), ""]
    out += [("The follower's figures (freshness, CPU, RSS while following live) need minutes of wall "
             "clock each and are measured apart: `python -m bench.follow --seconds 600` writes "
             "[FOLLOW.md](FOLLOW.md)."), ""]
    out += [("Figures within ~5% of their goal (the 12 h run, day 30 against day 1) have come out on "
             "either side of it from one full run to the next on this shared 2-core VM: the harness "
             "waits for an idle machine before each run, but cannot stop another process from "
             "starting during one. Floors and peers run interleaved with the tool, so ratios move "
             "less than absolute times."), ""]
    missed = [r for r in rows if r.ok is False]
    if missed:
        out += ["## Goals missed", ""]
        for row in missed:
            text = next((v for k, v in ANALYSIS.items() if row.figure.startswith(k)), "")
            out += [f"- **{row.figure}**: goal {row.goal}, measured {row.measured} ({row.ratio}). {text}"]
        out += [""]
    out += ["## Details", ""]
    for key, title in _SECTIONS:
        if details.get(key):
            out += [f"### {title}", ""]
            out += [f"- {line}" for line in details[key]]
            out += [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))


if __name__ == "__main__":
    # python -m bench.report bench/RESULTS.json [bench/RESULTS.md]
    source = Path(sys.argv[1])
    render(source, Path(sys.argv[2]) if len(sys.argv) > 2 else source.with_suffix(".md"))
