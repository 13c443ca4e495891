"""Bounded concurrency that hands results back in input order, as soon as the head is ready.

Both the archive (days) and the execution crawl (windows) need the same thing: work on up to N
items at once, give each result to the caller as soon as it and everything before it are done (so
the caller can commit in order), and cancel what is still running if the caller stops early.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def ordered_map(items: Iterable[T], work: Callable[[T], Awaitable[R]],
                      concurrency: int) -> AsyncGenerator[tuple[T, R], None]:
    """Yield `(item, await work(item))` in input order with at most `concurrency` in flight.

    An exception from `work` propagates when its item's turn comes; pending work is cancelled.
    """
    pending: deque[tuple[T, asyncio.Future[R]]] = deque()
    source = iter(items)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < max(1, concurrency):
                try:
                    item = next(source)
                except StopIteration:
                    exhausted = True
                    break
                pending.append((item, asyncio.ensure_future(work(item))))
            if not pending:
                return
            item, future = pending.popleft()
            yield item, await future
    finally:
        for _, future in pending:
            future.cancel()
        if pending:
            await asyncio.gather(*(future for _, future in pending), return_exceptions=True)
