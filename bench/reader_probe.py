"""A reader beside a writer: how long does it wait to get into the store?

`python -m bench.reader_probe DB STOP_FILE` opens the store read-only again and again (as an analyst's
session or `sql` would, retrying the lock), until STOP_FILE exists; each open's wait is the time from
its first try to its success. Prints one JSON line: the longest wait, the 99th percentile, how many
opens succeeded. A writer that held the store for its whole run would show one wait as long as the run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import duckdb


def probe(db: Path, stop: Path) -> dict[str, float]:
    waits: list[float] = []
    while not stop.exists():
        if not db.exists():
            time.sleep(0.01)
            continue
        began = time.monotonic()
        while not stop.exists():
            try:
                duckdb.connect(str(db), read_only=True).execute("SELECT count(*) FROM coverage").fetchall()
                break
            except duckdb.Error:
                time.sleep(0.005)
        else:
            break
        waits.append(time.monotonic() - began)
        time.sleep(0.02)
    waits.sort()
    p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))] if waits else 0.0
    return {"opens": len(waits), "max_wait_s": waits[-1] if waits else 0.0, "p99_wait_s": p99}


if __name__ == "__main__":
    print(json.dumps(probe(Path(sys.argv[1]), Path(sys.argv[2]))))
