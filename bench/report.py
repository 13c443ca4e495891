"""The results table on the terminal and in bench/RESULTS.md."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from .simhost import LATENCY_MS, Scale
from .util import Row

# Why a goal is missed and what would close it, written from the measurements (see RESULTS.md).
ANALYSIS: dict[str, str] = {}

_SECTIONS = [("busy", "Busy day ingest"), ("serve", "The emulator is not the bottleneck"),
             ("export", "Export"), ("12h", "The guide's 12 hours"), ("warm", "Warm cache"),
             ("week", "Week"), ("executions", "Executions"), ("scale", "Scale"),
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
                  quick: bool) -> None:
    out = ["# Benchmark results", ""]
    if quick:
        out += ["**Quick mode** (tiny days, one run): a smoke test of the harness, not a measurement.", ""]
    out += [f"Command: `{command}` (run from the repository root), finished {when:%Y-%m-%d %H:%M} UTC "
            f"in {elapsed_s / 60:.1f} min.", ""]
    out += ["## Machine", "", "| " + " | ".join(info) + " |", "|" + "---|" * len(info),
            "| " + " | ".join(info.values()) + " |", ""]
    out += ["## Setup", "",
            f"- Everything runs against `sim/` on 127.0.0.1 with {LATENCY_MS:.0f} ms added latency per request: "
            f"one linear market, BTCUSDT, {scale.trades_per_day:,} trades a day.",
            "- Each tool run is `bybit-backfill ...` in a fresh process (wall time includes interpreter "
            "start-up; peak RSS is that process's `ru_maxrss` from `wait4`). Tool runs and their floor or "
            "peer alternate, so a slow moment of the machine hits both.",
            f"- {scale.runs} run(s) per figure; figures show the median with min-max."]
    out += [f"- {line}" for line in setup]
    out += [""]
    out += ["## Results", "", *_table(rows), ""]
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
