"""How much of the archive a run's refreshes may hold staged and not yet committed.

A whole market runs many refreshes at once (`refresh --all --concurrency 32`), and each holds its
day staged as Arrow until the commit thread has taken it (~1.4x the compressed file: ~110 MB for a
busy day of 1.5M trades). Small symbols need many in flight to keep the commit thread fed (its
transactions take every day waiting); busy ones must not all stage at once. So the run shares one
budget of archive bytes: a refresh takes its file's size before staging and gives it back once the
day is committed (or failed), and waits while the budget is spent. A file larger than the whole
budget goes alone, so nothing waits forever.
"""

from __future__ import annotations

import asyncio

# ~3 busy days of compressed archive staged at once (~350 MB of Arrow), or hundreds of small ones.
DEFAULT_BYTES = 256 << 20


class StagingBudget:
    """Archive bytes staged and not yet committed, for the refreshes of one event loop."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = DEFAULT_BYTES if limit is None else limit
        self.used = 0
        self._waiters: list[asyncio.Future[None]] = []

    async def take(self, size: int) -> None:
        """Wait until `size` more bytes fit (or nothing else is staged), and take them."""
        while self.used and self.used + size > self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
        self.used += size

    def give(self, size: int) -> None:
        """Give back what `take` took; every waiter looks again."""
        self.used -= size
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
