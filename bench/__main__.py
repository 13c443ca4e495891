"""`python -m bench`: every figure of the performance issue, against the emulator, into RESULTS.md.

    python -m bench                      # all figures, 3-7 runs each (~6 minutes on 2 cores)
    python -m bench --quick              # tiny days, one run each: a smoke test of the harness
    python -m bench --only busy,export   # some figures (busy export 12h warm week executions scale big market sql profile)
"""

from __future__ import annotations

import argparse
import compileall
import os
import shlex
import shutil
import sys
import time
import traceback
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from . import simhost
from .figures import FIGURES, Context, serve
from .profile import profile
from .report import print_table, write_results
from .util import ROOT, Quiet, Row, machine

ORDER = ["busy", "serve", "export", "12h", "week", "executions", "scale", "big", "market", "sql", "profile"]
ALIASES = {"warm": "12h", "12h": "12h"}
NAMES = ["busy", "export", "12h", "warm", "week", "executions", "scale", "big", "market", "sql", "profile", "serve"]


def _selected(only: str | None) -> list[str]:
    if not only:
        return list(ORDER)
    wanted = set()
    for name in only.split(","):
        name = name.strip()
        if name not in NAMES:
            raise SystemExit(f"unknown figure {name!r}; choose from {', '.join(NAMES)}")
        wanted.add(ALIASES.get(name, name))
    return [name for name in ORDER if name in wanted]


def _days_needed(names: list[str], scale: simhost.Scale) -> int:
    need = {"week": scale.week_days, "scale": scale.scale_days}
    return max([need.get(name, 1) for name in names] or [1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny days and one run: a fast smoke test")
    parser.add_argument("--only", help="comma-separated figures: " + ", ".join(NAMES))
    parser.add_argument("--runs", type=int, help="runs per figure (default 3, 5 for the single-day "
                                                 "figures, 7 for export; 1 with --quick)")
    parser.add_argument("--out", type=Path, help="results file, Markdown (default bench/RESULTS.md; "
                                                 "bench/.cache/RESULTS-quick.md with --quick); the "
                                                 "measurements go beside it as <stem>.json")
    parser.add_argument("--sim-cache", type=Path, default=simhost.DEFAULT_CACHE,
                        help="where the emulator's generated day files are cached")
    parser.add_argument("--no-wait", action="store_true",
                        help="do not wait for an idle machine before each run (default with --quick)")
    parser.add_argument("--max-wait", type=float, default=Quiet.max_wait_s,
                        help=f"longest wait for an idle machine before one run, in seconds (default "
                             f"{Quiet.max_wait_s:.0f}); on a machine shared with others a shorter wait keeps "
                             "the whole run within its time, at the cost of noisier absolute times")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.suffix == ".json":  # its measurements would overwrite it
        parser.error(f"--out names the Markdown file; the measurements are written beside it as "
                     f"<stem>.json, so give e.g. {args.out.with_suffix('.md')}")
    Quiet.enabled = not (args.no_wait or args.quick)
    Quiet.max_wait_s = args.max_wait
    began = time.perf_counter()
    scale = simhost.QUICK if args.quick else simhost.FULL
    if args.runs:
        scale = replace(scale, runs=args.runs, short_runs=max(args.runs, 1), export_runs=max(args.runs, 3))
    names = _selected(args.only)
    requested = {n.strip() for n in (args.only or "").split(",")}
    out = args.out or (ROOT / "bench" / ".cache" / "RESULTS-quick.md" if args.quick else ROOT / "bench" / "RESULTS.md")
    command = "python -m bench" + (" " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])) if (argv or sys.argv[1:]) else "")
    info = machine()
    print(f"bench: {', '.join(names)}; {scale.runs} run(s) each; "
          f"{info['nproc']} cores, {info['memory']}, {info['cpu']}", flush=True)

    config = simhost.sim_config(scale, args.sim_cache)
    setup: list[str] = []
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        # The tool's own modules are compiled once, as an install would: here nothing writes .pyc.
        compileall.compile_dir(ROOT / "store", quiet=1)
        compileall.compile_dir(ROOT / "fetch", quiet=1)
        compileall.compile_file(ROOT / "cli.py", quiet=1)
        setup.append("PYTHONDONTWRITEBYTECODE is set on this machine: the tool's modules were compiled "
                     "to .pyc once before timing, as a package install does")
    prepared = simhost.prepare_days(config, _days_needed(names, scale))
    if prepared.generated:
        setup.append(f"day files: {prepared.generated} of {prepared.days} generated in {prepared.seconds:.1f} s "
                     f"(two at a time; {prepared.per_day_s:.1f} s per file), {prepared.total_mb:.0f} MB, "
                     f"cached in `{_shown(args.sim_cache)}` before anything is timed")
    else:
        last = simhost.last_generation(config)
        when = (f"the last generation made {last['days']:.0f} files in {last['seconds']:.0f} s "
                f"({last['per_day_s']:.1f} s per file, two at a time)" if last and last.get("per_day_s")
                else "generation time not recorded")
        setup.append(f"day files: all {prepared.days} were already cached in `{_shown(args.sim_cache)}` "
                     f"({prepared.total_mb:.0f} MB); {when}, before anything was timed")
    print(f"  {setup[-1]}", flush=True)
    if "executions" in names:
        seconds = simhost.warm_fills(config, scale)
        setup.append(f"the emulator's fills ({scale.exec_days} days x {scale.fills_per_day}/day) computed "
                     f"once before timing, in {seconds:.1f} s")

    rows: list[Row] = []
    work = ROOT / "bench" / ".cache" / "work"
    shutil.rmtree(work, ignore_errors=True)
    with simhost.serving(config) as sim:
        ctx = Context(scale, sim.url, sim.state, config, work)
        for name in names:
            print(f"[{name}]", flush=True)
            started = time.perf_counter()
            try:
                figure = {"serve": serve, "profile": profile}.get(name) or FIGURES[name]
                rows.extend(r for r in figure(ctx) if not r.key or not args.only or r.key in requested)
            except Exception as error:  # noqa: BLE001 - a failed figure is reported, the others still run
                traceback.print_exc()
                rows.append(Row(name, "-", f"failed: {str(error).splitlines()[0][:200]}", "-", False))
            print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - began
    print_table(rows)
    write_results(out, rows=rows, details=ctx.details, setup=setup, info=info, command=command,
                  elapsed_s=elapsed, scale=scale, when=datetime.now(UTC), quick=args.quick)
    print(f"wrote {_shown(out)} in {elapsed / 60:.1f} min", flush=True)
    return 0 if all(r.ok is not False for r in rows) else 1


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
