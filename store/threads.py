"""Store work off the event loop, never abandoned half-way, and done in groups in a thread of its own.

A commit, an export or a lake update on the event loop would stall every request in flight for
its duration; in a worker thread it must still be waited for when the caller is cancelled, however
many times (a second Ctrl-C, `asyncio.run` cancelling every task at the end): it holds a DuckDB
connection or a day's staged rows, and the cancelled run's cleanup (or the next open in this
process) must not find them still in use.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

T = TypeVar("T")
I = TypeVar("I")
R = TypeVar("R")


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


class GroupThread(Generic[I, R]):
    """A thread of its own and the items waiting for it, done a group at a time.

    Each run takes, of the items waiting when it begins, those `_choose` picks (the others wait for
    the next run), and hands each its own result or error from `_process`. It never waits for items
    to gather: a run takes what is waiting. A future is set running when its item is taken, so no
    cancel reaches it after that and every item taken is told its result (an item whose future was
    cancelled before is left out); an error of the whole run goes to every item of it."""

    def __init__(self, thread_name: str) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._lock = threading.Lock()
        self._waiting: list[tuple[I, Future[R]]] = []

    def submit(self, item: I) -> Future[R]:
        future: Future[R] = Future()
        with self._lock:
            self._waiting.append((item, future))
        self._thread.submit(self._run_waiting)  # one call per item: a call may find its item taken
        return future

    def _choose(self, waiting: list[I]) -> list[bool]:
        """Which of the waiting items (in order) this run takes: all of them, unless overridden."""
        return [True] * len(waiting)

    def _process(self, group: list[I]) -> list[R | BaseException]:
        """Each item's result or error, in order."""
        raise NotImplementedError

    def _run_waiting(self) -> None:
        with self._lock:
            chosen = self._choose([item for item, _ in self._waiting])
            group = [entry for entry, take in zip(self._waiting, chosen, strict=True) if take]
            self._waiting = [entry for entry, take in zip(self._waiting, chosen, strict=True) if not take]
        group = [(item, future) for item, future in group if future.set_running_or_notify_cancel()]
        if not group:
            return
        try:
            results = self._process([item for item, _ in group])
        except BaseException as error:  # noqa: BLE001 - handed to everyone waiting on the group
            results = [error] * len(group)
        for (_, future), result in zip(group, results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
