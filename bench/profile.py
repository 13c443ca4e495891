"""Profile the busy-day path once: py-spy (all threads, sampling) when installed, else cProfile.

py-spy's samples are grouped by the deepest frame that is in our code (the line that called into
DuckDB, pyarrow or aiohttp), so each cost is named by the statement that pays it.
"""

from __future__ import annotations

import linecache
import pstats
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

from . import simhost
from .figures import Context, _days_arg
from .simhost import CATEGORY, SYMBOL
from .util import CLI, ROOT, Row, run

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+):(?P<line>\d+)\)$")
_OURS = ("store/", "fetch/", "cli.py")


def profile(ctx: Context, top: int = 12) -> list[Row]:
    work = ctx.fresh("profile")
    start, end = _days_arg(1, 1)
    args = ["refresh", SYMBOL, "--category", CATEGORY, "--start", start, "--end", end,
            "--db", str(work / "store.duckdb"), "--cache-dir", str(work / "cache"), "--json"]
    spy = shutil.which("py-spy")
    if spy:
        raw = work / "pyspy.txt"
        result = run([spy, "record", "--format", "raw", "--threads", "--rate", "250", "--output", str(raw),
                      "--", *CLI, *args], env=simhost.tool_env(ctx.url))
        lines = _pyspy_top(raw, top)
        ctx.note("profile", f"py-spy, 250 samples/s, all threads, active samples only; run wall "
                            f"{result.wall_s:.2f} s (sampling slows it down)")
    else:
        out = work / "cprofile.out"
        result = run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "cli", *args],
                     env=simhost.tool_env(ctx.url))
        lines = _cprofile_top(out, top)
        ctx.note("profile", f"cProfile (main thread only: the parse worker thread is not seen); run wall "
                            f"{result.wall_s:.2f} s")
    for line in lines:
        ctx.note("profile", line)
    shutil.rmtree(work, ignore_errors=True)
    return []


_WRAPPERS = {"_count"}  # thin helpers around DuckDB calls: their caller names the statement


def _label(frames: list[str]) -> str:
    """The deepest frame of our own code, with its source line; start-up imports get one label."""
    ours = None
    parsed = [m for m in (_FRAME.match(f.strip()) for f in frames) if m]
    for match in parsed:
        path = match["file"]
        if any(part in path for part in _OURS) and "site-packages" not in path \
                and not path.endswith("store/db.py") and match["func"] not in _WRAPPERS:
            ours = match
    if parsed and ((parsed[-1]["func"].endswith("wait") and "threading" in parsed[-1]["file"])
                   or (parsed[-1]["func"] == "_worker" and parsed[-1]["file"].endswith("thread.py"))):
        return "a thread waiting on a lock or queue (an idle worker, or the parser ahead of staging)"
    if ours is None:
        if any("<module>" in f or "_find_and_load" in f for f in frames):
            return "interpreter start-up: imports (duckdb, pyarrow, aiohttp, pydantic...)"
        last = parsed[-1] if parsed else None
        where = f"{Path(last['file']).name} {last['func']}" if last else "native frames"
        return f"outside our code ({where})"
    path = ours["file"]
    rel = next((path[path.index(p):] for p in _OURS if p in path), path)
    source = linecache.getline(str(ROOT / rel), int(ours["line"])).strip()
    if any("_find_and_load" in f for f in frames):
        return "interpreter start-up: imports (duckdb, pyarrow, aiohttp, pydantic...)"
    return f"`{rel}:{ours['line']}` {ours['func']}: `{source[:90]}`"


def _pyspy_top(raw: Path, top: int) -> list[str]:
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")[1:]  # the first element names the thread
        counts[_label(frames)] += int(count)
    total = sum(counts.values()) or 1
    return [f"{100 * n / total:5.1f}%  {label}" for label, n in counts.most_common(top)]


def _cprofile_top(out: Path, top: int) -> list[str]:
    stats = pstats.Stats(str(out))
    rows = []
    for (path, line, func), (_, _, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((tottime, cumtime, f"{Path(path).name}:{line} {func}"))
    rows.sort(reverse=True)
    return [f"{tot:6.3f} s self, {cum:6.3f} s cumulative  {name}" for tot, cum, name in rows[:top]]
