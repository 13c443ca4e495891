"""Store work off the event loop, and never abandoned half-way.

A commit, an export or a lake update on the event loop would stall every request in flight for
its duration; in a worker thread it must still be waited for when the caller is cancelled, however
many times (a second Ctrl-C, `asyncio.run` cancelling every task at the end): it holds a DuckDB
connection or a day's staged rows, and the cancelled run's cleanup (or the next open in this
process) must not find them still in use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` in a worker thread; a cancelled caller waits for it to finish, then is cancelled."""
    return await finish(asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs)))


async def finish(work: asyncio.Future[T]) -> T:
    """`work`'s result. If the caller is cancelled meanwhile (once or more), `work` is still waited
    for, shielded each time, and then the cancellation goes on (its result or error dropped)."""
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(work)
        except asyncio.CancelledError:
            if work.done():  # `work` itself was cancelled (no cancel of ours reaches it: shielded)
                raise
            cancelled = True
            continue
        except BaseException:
            if cancelled:
                raise asyncio.CancelledError from None
            raise
        if cancelled:
            raise asyncio.CancelledError
        return result
