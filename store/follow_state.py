"""The followers' state files: which process follows which symbol of a store, and how far it got.

`<db>.follow/<category>.<SYMBOL>.json`, rewritten atomically after each commit by `store.follow`, read
by `status`. Deliberately light (no aiohttp, no pyarrow): `status` is a read-only command and stays
fast. A state file whose pid is gone, or that its follower marked inactive on a clean stop, means
"not running".
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from store.timeutil import us_to_dt


def state_dir(db_path: Path) -> Path:
    """Where followers of this store leave their state files."""
    return Path(str(db_path) + ".follow")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def follower_status(db_path: Path, now_s: float | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (category, symbol): whether a follower is active (its pid alive and not stopped), its last
    committed trade and the lag (now minus that trade's time, seconds)."""
    now = time.time() if now_s is None else now_s
    found: dict[tuple[str, str], dict[str, Any]] = {}
    directory = state_dir(db_path)
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            state = json.loads(path.read_text())
            last = state.get("last_trade_us")
            active = bool(state["active"]) and _alive(int(state["pid"]))
            found[(str(state["category"]), str(state["symbol"]))] = {
                "follower": f"active (pid {state['pid']})" if active else "not running",
                "live_last_trade": us_to_dt(int(last)).isoformat() if last is not None else None,
                "live_lag_s": round(now - int(last) / 1e6, 1) if last is not None and active else None,
            }
    return found
