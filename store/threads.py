"""Store work off the event loop, and never abandoned half-way.

A commit, an export or a lake update on the event loop would stall every request in flight for
its duration; in a worker thread it must still be waited for when the caller is cancelled: it
holds a DuckDB connection, and the cancelled run's cleanup (or the next open in this process)
must not find that connection busy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` in a worker thread; a cancelled caller waits for it to finish, then is cancelled."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await work
        raise
