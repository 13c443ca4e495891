"""Measuring tools of the benchmarks: fresh subprocesses with their own wall time and peak RSS,
summary statistics, and the machine description that goes at the top of RESULTS.md.

Peak RSS comes from `os.wait4` on the one child (its own `ru_maxrss`), so every run is measured
alone (`resource.getrusage(RUSAGE_CHILDREN)` would only give the maximum over all children so far),
and the child is forked by a small launcher (`bench/rss.py`), never by this large process: Linux
carries a parent's RSS high-water mark into its child's `ru_maxrss`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# This checkout's CLI, run from the repository (`run` sets the cwd). Not the `bybit-backfill` console
# script: it imports whichever checkout is installed (an editable install of another worktree, here),
# and behind a pyenv shim it also pays a bash wrapper; this does the same imports the script does.
CLI = [sys.executable, "-c", "import cli; cli.run()"]


@dataclass(frozen=True)
class Run:
    """One finished subprocess: wall seconds, peak RSS in MB, its output, its JSON (if any) and
    its CPU seconds."""

    wall_s: float
    rss_mb: float
    stdout: str
    stderr: str
    data: Any = None
    cpu_s: float = 0.0  # user + system seconds of the process and its threads


class RunFailed(RuntimeError):
    pass


class Quiet:
    """Waits, before each timed run, until the machine is idle: other processes (a test suite, a
    build) would otherwise be measured as our slowness. Records what it saw for RESULTS.md."""

    threshold = 0.2  # share of all cores busy with something else
    max_wait_s = 90.0
    enabled = True
    waited_s = 0.0
    gave_up = 0
    runs = 0
    seen: list[float] = []  # the machine's busy share when each run was ready to start

    @classmethod
    def describe(cls) -> str:
        """How busy the machine was before the runs, for RESULTS.md."""
        if not cls.seen:
            return ""
        shares = sorted(cls.seen)
        busy = sum(1 for v in shares if v > cls.threshold)
        return (f"the machine was busy with other work (over {cls.threshold:.0%} of its cores) when {busy} of "
                f"{len(shares)} runs were ready to start (median busy share {shares[len(shares) // 2]:.0%}, "
                f"max {shares[-1]:.0%})")

    @classmethod
    def wait(cls) -> None:
        cls.runs += 1
        if not cls.enabled:
            return
        started = time.perf_counter()
        first = True
        while (share := busy_share()) > cls.threshold or first:
            if first:
                cls.seen.append(share)
                first = False
                if share <= cls.threshold:
                    break
            if time.perf_counter() - started > cls.max_wait_s:
                cls.gave_up += 1
                print(f"    (the machine stayed busy for {cls.max_wait_s:.0f} s: measuring anyway)", flush=True)
                break
        waited = time.perf_counter() - started
        cls.waited_s += waited
        if waited > 1.0:
            print(f"    (waited {waited:.0f} s for other processes to finish)", flush=True)


def busy_share(interval_s: float = 0.5) -> float:
    """Share of all CPUs busy (not idle, not waiting on I/O) over `interval_s`, from /proc/stat."""
    def sample() -> tuple[int, int]:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return 0, 0
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    total0, idle0 = sample()
    time.sleep(interval_s)
    total1, idle1 = sample()
    if total1 <= total0:
        return 0.0
    return 1.0 - (idle1 - idle0) / (total1 - total0)


def run(cmd: Sequence[str], *, env: Mapping[str, str] | None = None, parse_json: bool = False,
        timeout_s: float = 900.0) -> Run:
    """Run `cmd` in a fresh process (cwd: the repository) through the small `rss.py` launcher;
    fail loudly on a non-zero exit. Dirty pages are flushed first, so one run's writes do not slow
    the next one's fsyncs."""
    full_env = {**os.environ, **(env or {})}
    scratch = ROOT / "bench" / ".cache"
    scratch.mkdir(parents=True, exist_ok=True)
    out_path, err_path, res_path = (scratch / f"run-{os.getpid()}.{ext}" for ext in ("out", "err", "json"))
    os.sync()
    Quiet.wait()
    launcher = [sys.executable, "-S", str(ROOT / "bench" / "rss.py"), str(res_path), "--", *cmd]
    try:
        with open(out_path, "w+b") as out, open(err_path, "w+b") as err:
            proc = subprocess.run(launcher, cwd=ROOT, env=full_env, stdout=out, stderr=err,
                                  timeout=timeout_s, check=False)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(), err.read().decode()
        measured = json.loads(res_path.read_text()) if res_path.exists() else None
    finally:
        for path in (out_path, err_path, res_path):
            path.unlink(missing_ok=True)
    if proc.returncode != 0 or measured is None:
        raise RunFailed(f"{' '.join(cmd)} exited {proc.returncode}:\n{stderr[-3000:]}")
    data = _last_json(stdout) if parse_json else None
    return Run(measured["wall_s"], measured["maxrss_kb"] / 1024.0, stdout, stderr, data,
               measured.get("cpu_s", 0.0))


def _last_json(text: str) -> Any:
    """The JSON document a command printed (the CLI prints one, indented; our scripts one line)."""
    start = text.find("{")
    if start < 0:
        raise RunFailed(f"no JSON in output: {text[-500:]}")
    return json.loads(text[start:])


@dataclass(frozen=True)
class Stats:
    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def show(self, unit: str = "s", digits: int = 2) -> str:
        """`2.41 s (2.38-2.55, n=3)`."""
        if len(self.values) == 1:
            return f"{self.median:.{digits}f} {unit} (n=1)"
        return (f"{self.median:.{digits}f} {unit} ({self.low:.{digits}f}-{self.high:.{digits}f}, "
                f"n={len(self.values)})")


def stats(values: Sequence[float]) -> Stats:
    return Stats(tuple(values))


@dataclass
class Row:
    """One line of the results table."""

    figure: str
    goal: str
    measured: str
    ratio: str
    ok: bool | None  # None: reported, no pass/fail
    key: str = ""  # the --only name when one figure function yields rows of two names (12h, warm)

    @property
    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: "reported"}[self.ok]


def machine() -> dict[str, str]:
    """nproc, memory, CPU model, OS, Python and library versions."""
    import duckdb
    import pyarrow

    info = {"nproc": str(os.cpu_count()), "memory": _memory(), "cpu": _cpu_model(),
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "duckdb": duckdb.__version__,
            "pyarrow": pyarrow.__version__}
    try:
        import pandas  # type: ignore[import-untyped]

        info["pandas"] = pandas.__version__
    except ImportError:
        info["pandas"] = "not installed"
    try:
        import aiohttp

        info["aiohttp"] = aiohttp.__version__
    except ImportError:
        pass
    return info


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GB"
    except OSError:
        pass
    return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"
