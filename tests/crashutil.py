"""Run the installed command in a child process aimed at the emulator, and SIGKILL it at a moment.

Shared by the crash tests (tests/test_store_crash.py, tests/reliability/test_crash.py) and the
concurrency tests: a child process is the only honest way to lose the process mid-transaction.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment with the repository first on the child's import path, then `extra`
    (a hook's own PYTHONPATH among them wins)."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **extra}


def cli_env(url: str, db: Path, cache: Path, **extra: str) -> dict[str, str]:
    """The environment of a child `bybit-backfill`: both base URLs at the emulator, test-sized waits."""
    return child_env(**{"BYBIT_REST_BASE_URL": url, "BYBIT_ARCHIVE_BASE_URL": url,
                        "BACKFILL_DB_PATH": str(db), "BACKFILL_CACHE_DIR": str(cache),
                        "BYBIT_BACKFILL_RETRY_BASE": "0.01", "BYBIT_BACKFILL_MAX_CONCURRENT_CHUNKS": "2",
                        "BYBIT_API_KEY": "", "BYBIT_API_SECRET": "", **extra})


def start_cli(url: str, db: Path, cache: Path, args: list[str], *, capture: bool = False,
              **extra: str) -> subprocess.Popen:
    """Start `bybit-backfill ARGS` in the DuckDB file's directory (so no stray .env is read)."""
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-c", "import cli; cli.run()", *args], cwd=db.parent,
                            env=cli_env(url, db, cache, **extra), stdout=out, stderr=out, text=True)


def start_refresh(url: str, db: Path, cache: Path, args: list[str]) -> subprocess.Popen:
    return start_cli(url, db, cache, args)


def kill_at(process: subprocess.Popen, after_s: float) -> bool:
    """SIGKILL after `after_s` unless it finished first; True when it was killed."""
    try:
        process.wait(timeout=after_s)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        return True


def kill_when(process: subprocess.Popen, condition: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    """SIGKILL as soon as `condition()` holds (polled every 10 ms) unless the process finished first."""
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition to kill never came true")
        time.sleep(0.01)
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return True
