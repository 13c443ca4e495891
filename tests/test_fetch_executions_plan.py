"""Pure parts of the execution crawl: 7-day windows and the nextPageCursor state machine."""

from __future__ import annotations

import pytest

from fetch.errors import BadResponse
from fetch.executions import MAX_SPAN_MS, Pager, in_window, plan_windows
from fetch.models import Execution

DAY = 86_400_000


def test_windows_are_contiguous_non_overlapping_and_cover_the_range_exactly() -> None:
    start, end = 1_700_000_000_123, 1_700_000_000_123 + 60 * DAY + 17
    windows = plan_windows(start, end)
    assert windows[0][0] == start and windows[-1][1] == end
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))
    assert all(0 < e - s <= MAX_SPAN_MS for s, e in windows)
    assert len(windows) == 9


@pytest.mark.parametrize("start,end,expected", [
    (0, 7 * DAY, [(0, 7 * DAY)]),
    (0, 7 * DAY + 1, [(0, 7 * DAY), (7 * DAY, 7 * DAY + 1)]),
    (5, 6, [(5, 6)]),
    (10, 10, []),
    (10, 5, []),
])
def test_window_edges(start: int, end: int, expected: list[tuple[int, int]]) -> None:
    assert plan_windows(start, end) == expected


def test_custom_span() -> None:
    assert plan_windows(0, 10, max_span_ms=4) == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(ValueError):
        plan_windows(0, 10, max_span_ms=0)


def test_pager_walks_cursors_until_an_empty_one() -> None:
    pager = Pager((0, 100))
    first = pager.params("linear", "BTCUSDT", "Trade")
    assert first == {"category": "linear", "symbol": "BTCUSDT", "execType": "Trade", "startTime": 0,
                     "endTime": 100, "limit": 100, "cursor": None}
    pager = pager.advance("c%3D1")
    assert (pager.cursor, pager.pages, pager.done) == ("c%3D1", 1, False)
    assert pager.params("linear")["cursor"] == "c%3D1"
    pager = pager.advance("")
    assert (pager.pages, pager.done) == (2, True)
    with pytest.raises(ValueError):
        pager.advance("")


def test_pager_refuses_a_repeated_cursor() -> None:
    with pytest.raises(BadResponse, match="same nextPageCursor"):
        Pager((0, 1)).advance("a").advance("a")


def fill(exec_id: str, ms: int) -> Execution:
    return Execution("linear", "BTCUSDT", exec_id, "o", "Trade", ms * 1000, 1.0, 1.0, "buy", 0.0, "USDT", False)


def test_in_window_keeps_half_open_range_dedups_and_sorts() -> None:
    fills = [fill("c", 50), fill("a", 10), fill("end", 100), fill("a", 10), fill("before", 9), fill("b", 10)]
    assert [f.exec_id for f in in_window(fills, (10, 100))] == ["a", "b", "c"]
