"""`ExecutionSource`: the account's own fills from the signed `GET /v5/execution/list`.

Bybit serves at most 7 days per query and at most 100 fills per page, newest first, with an opaque
`nextPageCursor` ('' on the last page). So a crawl is: split the range into contiguous 7-day
windows (`plan_windows`, pure), page through each window with a small pure state machine
(`Pager`), and fetch several windows at once within the client's limits. Each window is yielded
whole, as `(window, executions)`, so a caller can commit window by window and resume after a crash.

Boundaries: windows are half-open [start, end). Whether Bybit's endTime is inclusive is not
documented precisely, so each query asks for startTime=start, endTime=end and keeps only fills with
start <= execTime < end (a fill at exactly `end` belongs to the next window); fills are also
de-duplicated by execId within a window. Every fill is therefore yielded exactly once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass

from .client import BybitClient
from .errors import BadResponse, InputError
from .market_span import Category, check_category
from .models import Execution
from .ordered_map import ordered_map
from .parse import parse_execution_page
from .signing import ParamValue

EXECUTION_PATH = "/v5/execution/list"
MAX_SPAN_MS = 7 * 24 * 3600 * 1000
PAGE_LIMIT = 100

Window = tuple[int, int]


def plan_windows(start_ms: int, end_ms: int, max_span_ms: int = MAX_SPAN_MS) -> list[Window]:
    """Contiguous, non-overlapping half-open windows of at most `max_span_ms` covering [start, end)."""
    if max_span_ms <= 0:
        raise ValueError("max_span_ms must be positive")
    return [(s, min(s + max_span_ms, end_ms)) for s in range(start_ms, end_ms, max_span_ms)]


@dataclass(frozen=True, slots=True)
class Pager:
    """Where the paging of one window stands: `cursor` None before the first page; `done` after the last."""

    window: Window
    cursor: str | None = None
    pages: int = 0
    done: bool = False

    def params(self, category: Category, symbol: str | None = None, exec_type: str | None = None,
               limit: int = PAGE_LIMIT) -> dict[str, ParamValue]:
        """The query for the next page (the cursor goes last and verbatim: it is already encoded)."""
        return {"category": category, "symbol": symbol, "execType": exec_type,
                "startTime": self.window[0], "endTime": self.window[1], "limit": limit,
                "cursor": self.cursor or None}

    def advance(self, next_cursor: str) -> Pager:
        """The state after a page whose `nextPageCursor` was `next_cursor` ('' = that was the last)."""
        if self.done:
            raise ValueError("the window is already fully paged")
        if next_cursor and next_cursor == self.cursor:
            raise BadResponse(f"{EXECUTION_PATH} returned the same nextPageCursor twice for window "
                              f"{self.window}: stopping instead of looping forever")
        return Pager(self.window, next_cursor or None, self.pages + 1, done=not next_cursor)


def in_window(executions: list[Execution], window: Window) -> list[Execution]:
    """The fills of `window` (start <= time < end), unique by execId, ascending by (time, execId)."""
    low, high = window[0] * 1000, window[1] * 1000
    unique = {e.exec_id: e for e in executions if low <= e.time_us < high}
    return sorted(unique.values(), key=lambda e: (e.time_us, e.exec_id))


class ExecutionSource:
    """Crawls /v5/execution/list window by window (needs credentials)."""

    def __init__(self, client: BybitClient, *, concurrency: int | None = None) -> None:
        self.client = client
        self.concurrency = max(1, concurrency or client.config.limits.max_concurrency)

    async def fetch(self, category: str, start_ms: int, end_ms: int, symbol: str | None = None,
                    exec_type: str | None = None,
                    on_window: Callable[[Window, int], None] | None = None,
                    ) -> AsyncIterator[tuple[Window, list[Execution]]]:
        """Yield `((start_ms, end_ms), executions)` per 7-day window, in window order.

        `executions` holds that window's fills ascending by (time, execId), each exactly once; an empty
        list means the window has none. `on_window(window, count)` is called as each is yielded.
        Up to `concurrency` windows are fetched at once; an error stops the crawl (windows already
        yielded stay valid).
        """
        if start_ms >= end_ms:
            raise InputError(f"execution range start {start_ms} is not before end {end_ms}")
        cat = check_category(category)

        async def crawl(window: Window) -> list[Execution]:
            return await self.fetch_window(cat, window, symbol=symbol, exec_type=exec_type)

        async with aclosing(ordered_map(plan_windows(start_ms, end_ms), crawl, self.concurrency)) as results:
            async for window, executions in results:
                if on_window is not None:
                    on_window(window, len(executions))
                yield window, executions

    async def fetch_window(self, category: str, window: Window, *, symbol: str | None = None,
                           exec_type: str | None = None) -> list[Execution]:
        """Every fill of one window (at most 7 days), following nextPageCursor to the end."""
        cat = check_category(category)
        pager = Pager(window)
        collected: list[Execution] = []
        while not pager.done:
            result = await self.client.get_private(EXECUTION_PATH, pager.params(cat, symbol, exec_type))
            page = parse_execution_page(result, category=cat)
            collected.extend(page.executions)
            pager = pager.advance(page.next_cursor)
        return in_window(collected, window)
