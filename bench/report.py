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
    "machine, CPU-seconds of both cores): staging 1.4 (inflate + CSV parse + conversions + plausibility "
    "checks ~1.1 in the parse thread, of which pyarrow's reader ~0.6 and the exact-time conversion "
    "~0.12; DuckDB computing the 63-bit tick ids from md5 ~0.3; the day's summary ~0.1), commit 1.5 "
    "(the insert into the compressed `trades` table ~1.0 of it, 0.6 s wall; the id filter's probe "
    "and add of 1.5M ids ~0.2; the day summary from the staged rows ~0.05; COMMIT 0.03), export 0.7 "
    "(the sort by time and id, the tick ids as strings, the parquet writer): ~3.6 CPU-s, plus ~0.35 s "
    "of interpreter start-up. ")
_PEER_WORK = (
    "The polars peer does a subset of that work in one multi-threaded engine: it parses the file, hashes "
    "the raw id once for `unique`, sorts and writes; it keeps no store, no exact integer times, no tick "
    "ids (it writes the raw id as `i`), no per-row validation, no coverage, no day summary. ")
_LEVERS = (
    "Levers taken in round 3: a day shown fresh (nothing stored on it, no id the filter or a look near "
    "it has seen, no repeats: `store/ingest_many.py`) is inserted without the match, the REST "
    "replacement and the per-day summary scan, by an insert free to write in any order "
    "(`preserve_insertion_order = false`: the order-keeping insert left partly filled row groups that "
    "the checkpoint at let-go merged and compressed again, 0.4 s against 0.03 s); the day is staged as "
    "Arrow, its repeated-id count done by DuckDB (pyarrow's `count_distinct` took 0.4 s of one core). "
    "Together 1.43x -> 1.34-1.45x the floor over five runs of this figure: within its run-to-run "
    "spread. Measured and not taken: writing the day's file from the staged rows while the day "
    "commits (proof of equality: the day was fresh): +0.36 CPU-s and +0.2 s wall, both cores are "
    "already busy during the commit; `preserve_insertion_order = false` for the staging query: the "
    "same time; polars' CSV reader as the parser (round 2: 0.84 CPU-s for reading alone against "
    "0.98 for our whole parse, and the whole file inflated in memory first). Round 5: the installed "
    "command ends with `os._exit` once its work is done and its threads are waited for (`cli.run`: "
    "the interpreter's teardown freed DuckDB's and Arrow's memory for ~0.15 s after a busy day, 3.63 -> "
    "3.45 s median of 12 alternating runs), and the CSV reader parses timestamps as decimals at "
    "microsecond scale (their unscaled integers are the times: ~0.1 CPU-s less than cutting text). "
    "Measured and not taken in round 5: `trade_id` stored uncompressed (the insert -0.23 s of 0.67 s, "
    "but the store +51%) or ZSTD-compressed (-0.08 s, +6%, and DuckDB >= 1.2 only). ")

ANALYSIS: dict[str, str] = {
    "busy day vs the polars peer": (
        "Why: " + _DAY_CPU + _PEER_WORK + "On 2 cores the day is CPU-bound, so the ratio follows the "
        "ratio of CPU-seconds (~2.7-2.9x both in quiet runs of this figure alone, `python -m bench --only "
        "busy --runs 3`). " + _LEVERS + "Close it: no single statement is large enough; it needs less "
        "work per row: ids kept as 128-bit UUIDs with the tick id derived on read (the insert's id column "
        "is ~0.5 of the ~1.0), side and source as ENUMs (~0.2 of a lone insert), and a resident process "
        "for the ~0.35 s of start-up; each is a schema or flow change for its own issue. Measured apart "
        "this round (1.5M staged rows inserted into an empty `trades` and committed, 5 alternating runs "
        "each): 0.84 s wall and 1.54 CPU-s as stored today, 0.78 s and 1.42 with side and source as "
        "ENUMs, 0.56 s and 1.01 with the id as a UUID as well (and a 10% smaller file). Not taken: "
        "spot ids are numbers, not UUIDs, so the id would need a second column and `trades` a view "
        "over both, with every store migrated and every statement on the key rewritten; ENUMs alone "
        "are ~0.1 s of a day. Even all of "
        "them leave the tool ~1.5-2x a peer that does not keep a store."),
    "week (7 busy days): time vs polars": (
        "Why: the busy day's work (~3.6 CPU-s a day, see the busy day's entry) seven times, against "
        "the peer's one-engine read, unique, sort and write. The tool already "
        "overlaps each day's export with the next day's staging; staging day N+1 while day N commits, "
        "built and measured in round 5, took 4 busy days from 12.45 s to 12.09 s (medians of 5 "
        "alternating runs, -3%: the next day's staging already overlaps the export, so the cores were "
        "mostly busy) at the cost of a second staged day in memory, and was not kept. Close it: less "
        "work per row (see the busy day), not more overlap."),
    "week (7 busy days): peak RSS vs polars": (
        "Why: the peak is DuckDB's working memory beside the day's rows: a day staged as Arrow (~110 MB "
        "of columns for 1.5M trades; since round 3 it no longer sits in a private database's temp table and "
        "then in an Arrow copy of it), the insert's working memory in the store, and the background "
        "export's sort of the previous day plus the parquet writer (~+400 MB, measured in round 2) at "
        "the same time; the peer holds one day's frame. The peak did not move in rounds 3 and 4 (998 -> 1003 -> 1006 "
        "MB): the export's share dominates it. Close it: export from rows stored in time order without "
        "a sort, and stage under a tighter memory limit; each costs speed (lowering the limits alone "
        "left the peak unchanged in round 2)."),
    "busy day": (
        'Why: the tool needs ~1.5x the floor\'s CPU-seconds, for work the floor does not do (see the next '
        'entry for where it goes). Round 1 measured 1.09x (2.90 s); since then staging outside the store '
        '(what lets readers in during a refresh), the per-batch plausibility checks, the global id check '
        "(the id filter's probe and add, ~0.2 CPU-s) and the day's fingerprints were added; round 3's "
        'fresh-day path took back ~0.1-0.15 s, within the figure\'s run-to-run spread (1.34x-1.45x in five '
        'runs). Round 5\'s two levers (no interpreter teardown, timestamps read as decimals), measured '
        'against the round\'s starting commit (1b5f4ec) in one alternating run of 8 refreshes each on '
        'this machine: 4.08 -> 3.76 s median wall, 5.82 -> 5.54 CPU-s; this run\'s floor and peers '
        'were themselves ~13% slower than the last RESULTS\' (a slower shared host), so the ratio above '
        'moves less than the paired figure. The rest is interpreter start-up (pyarrow, duckdb, numpy, pydantic, aiohttp: ~0.35 s '
        "against ~0.15 s for the floor's `import duckdb`). Close it: a leaner insert (ids as UUIDs with "
        'the tick id derived, side and source as ENUMs: schema changes) and a resident process for the '
        'start-up.'),
    "export": (
        "Why: `write_day` is the same DuckDB COPY plus a schema check and a rename; the ranges overlap "
        "(a busy machine, see Setup), and earlier runs on a quieter machine measured 1.05x. Close it: "
        "nothing left in our code."),
    "the guide's 12 h": (
        "Why: coverage is whole archive days, so 12 hours cost what a whole busy day costs: download, "
        "parse and stage 1.5M rows, insert them into the compressed table, export the day, plus "
        "interpreter start-up. Both cores are busy in each step, so the run is CPU-bound. Close it: "
        "less work per row (see the week below)."),
    "warm cache": (
        "Why: the warm path is three small SQL queries; a miss is start-up noise. The two full runs "
        "before this one, the same day and with the same warm path (this round changed no code on it), "
        "measured +0.29 s and +0.26 s (met), with `status` at 45M rows at 0.28 and 0.36 s against this "
        "run's 0.38 s: the host's speed moved between runs. Close it: a resident process (interpreter "
        "start-up and `import duckdb` are most of the 0.3 s)."),
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
        "Why: on 2 cores the run is CPU-bound, and it does more than the floor's one multi-threaded "
        "`read_csv`: ~4.9 CPU-s against the floor's ~2. Measured in-process this round "
        "(`--concurrency 32`, 3.44 s): the event loop 1.23 CPU-s (401 requests and downloads, the "
        "files written and removed, and the last let-go of the file, whose checkpoint of the run's rows "
        "takes ~0.36 s at the end), the staging thread 1.12, the commit thread 0.92 (six group commits), "
        "DuckDB's own threads 0.64; and outside the refresh ~0.75 s of process (imports take 0.62 s "
        "against 0.20 s for the floor's `import duckdb`: pyarrow with its compute and CSV modules, "
        "aiohttp, whose import builds two TLS contexts, ~45 ms, numpy, click, pydantic). Taken this "
        "round (2.46x -> the figure above, on a host whose floor took 1.59 s against 1.47 s then): a "
        "process waiting for the store marks it (`<db>.wait`), and a writer lets go at 1 s only "
        "while someone does, else at 5 s (every let-go is a checkpoint and a reopen: 4.05 -> 3.73 s "
        "in 6 alternating runs), and a refresh gives its slot to the next symbol once its files have "
        "arrived instead of when its commits are done (the commit thread then finds more days waiting: "
        "3.97 -> 3.59 s wall, 5.76 -> 5.07 CPU-s). Measured and not taken: DuckDB's WAL "
        "auto-checkpoint at 16 or 64 MB instead of 1 GB (3.57 s all three), a GIL switch interval of "
        "1 or 0.5 ms (3.46 and 3.60 s against 3.39 s), fewer file calls on the event loop (a realpath "
        "per private branch, a mkdir per download: 3.71 against 3.66 s). Close it: a resident "
        "process (the start-up alone is ~0.4 s over the floor's) and less CPU per small day (the "
        "download written to a file and read back, the id-filter file created per new market, the "
        "group's Python side); more overlap does not help a machine whose cores are already busy."),
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
        'runs: 1.13x, 1.24x, 1.29x and 1.45x in four runs of round 2, 1.36x and 1.43x in the last two full runs (it was 1.63x with '
        'the whole-column semi-join); since round 3 a fresh day probes the filter once (probe and add in one '
        'pass) and skips the match. In round 5 two runs of this figure alone (`--only big`), minutes apart, '
        'measured 1.09x (in-process 1.11x) with the copy as it is and 1.23x with the copy synced to disk '
        'before each run (clean pages take a write fault each; dirty ones do not): the figure follows '
        'the state of the page cache more than the code. Close it: probe in block order (sorted by block, so the pages are read in sequence),'
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
             ("big", "Ingest at 100M rows"), ("market", "Many small symbols and the whole market"),
             ("sql", "`sql` to CSV"), ("profile", "Profile of the busy-day path (top costs)")]


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
