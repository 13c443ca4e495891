"""The follower's pure bookkeeping: what a session and a bridge may claim, which holes are gaps,
what a commit takes and forgets; plus the reconnect backoff and the status of state files."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from fetch.market_span import Market, Span
from fetch.models import RecentTail, Trade
from store.atomic import write_json_atomic
from store.follow import reconnect_delay
from store.follow_state import follower_status, state_dir
from store.spans import SpanBook, subtract

MS = 1000


def trade(n: int, ms: int, source: str = "ws") -> Trade:
    return Trade("linear", "BTCUSDT", f"id{n}", ms * MS, 100.0, 1.0, "buy", None, source)


def tail(*trades: Trade, limit: int = 1000) -> RecentTail:
    ordered = sorted(trades, key=lambda t: t.time_us)
    return RecentTail(tuple(ordered), ordered[0].time_us, ordered[-1].time_us, limit)


def claims(book: SpanBook) -> dict[str, tuple[int, int]]:
    return {c.source: (c.start_us, c.end_us) for c in book.take().claims}


def test_subtract_leaves_the_uncovered_pieces_in_order() -> None:
    assert subtract(Span(0, 100), [Span(10, 20), Span(15, 30), Span(50, 60)]) == [(0, 10), (30, 50), (60, 100)]
    assert subtract(Span(0, 100), [Span(-5, 200)]) == []
    assert subtract(Span(0, 10), []) == [Span(0, 10)]


def test_a_session_claims_strictly_after_its_first_millisecond_and_before_its_newest() -> None:
    book = SpanBook(Market("linear", "BTCUSDT"))
    book.start_session()
    assert book.on_trades([trade(1, 10), trade(2, 12)]) is True  # opens the session: bridge it
    assert book.on_trades([trade(3, 15)]) is False
    assert claims(book)["ws"] == (10 * MS + 1, 15 * MS)


def test_a_bridge_holding_the_first_trade_and_the_previous_last_one_joins_sessions_exactly() -> None:
    book = SpanBook(Market("linear", "BTCUSDT"))
    book.start_session()
    book.on_trades([trade(1, 10), trade(2, 20)])
    book.end_session("dropped")
    session = book.start_session()
    book.on_trades([trade(5, 40)])
    gaps = book.on_bridge(session, tail(trade(2, 20, "rest"), trade(3, 25, "rest"), trade(5, 40, "rest")))
    assert gaps == []
    rest = [c for c in book.take().claims if c.source == "rest"]
    assert [(c.start_us, c.end_us) for c in rest] == [(20 * MS, 40 * MS + 1)]


def test_what_the_bridge_cannot_reach_is_a_gap_with_the_reason() -> None:
    book = SpanBook(Market("linear", "BTCUSDT"))
    book.start_session()
    book.on_trades([trade(1, 10), trade(2, 20)])
    book.end_session("the server closed the connection")
    session = book.start_session()
    book.on_trades([trade(9, 900)])
    [gap] = book.on_bridge(session, tail(trade(7, 500, "rest"), trade(9, 900, "rest")))
    assert (gap.start_us, gap.end_us) == (20 * MS, 500 * MS + 1)
    assert "reach back only to" in gap.reason and "the server closed the connection" in gap.reason
    assert book.take().gaps == [gap]


def test_a_failed_bridge_leaves_the_whole_hole_as_a_gap() -> None:
    book = SpanBook(Market("linear", "BTCUSDT"), prev_end_us=5 * MS)
    session = book.start_session()
    book.on_trades([trade(1, 10)])
    [gap] = book.on_bridge(session, None, failure="HTTP 502")
    assert (gap.start_us, gap.end_us) == (5 * MS, 10 * MS + 1)
    assert "HTTP 502" in gap.reason and "not running" in gap.reason


def test_commits_take_everything_and_forget_only_what_they_wrote() -> None:
    book = SpanBook(Market("linear", "BTCUSDT"))
    book.start_session()
    book.on_trades([trade(1, 10), trade(2, 20)])
    work = book.take()
    book.on_trades([trade(3, 30)])  # arrives while the commit runs
    book.committed(work)
    left = book.take()
    assert [t.trade_id for t in left.ws] == ["id3"]
    assert [(c.start_us, c.end_us) for c in left.claims] == [(10 * MS + 1, 30 * MS)]
    assert book.committed_newest_us == 20 * MS
    assert work.claims[0].key in book.committed_keys  # the next write of that claim extends the row


def test_a_failed_commit_loses_nothing() -> None:
    book = SpanBook(Market("linear", "BTCUSDT"))
    book.start_session()
    book.on_trades([trade(1, 10), trade(2, 20)])
    first = book.take()
    again = book.take()  # the commit failed: nothing was forgotten
    assert again.ws == first.ws and again.claims == first.claims


def test_reconnect_delays_grow_with_full_jitter_up_to_the_cap() -> None:
    rng = random.Random(1)
    delays = [reconnect_delay(n, 0.5, 30.0, rng) for n in range(12)]
    assert all(0 <= d <= min(30.0, 0.5 * 2 ** n) for n, d in enumerate(delays))
    assert max(delays[6:]) > 4  # it does grow
    assert len(set(delays)) == len(delays)  # and it is jittered


def test_status_says_active_only_for_a_live_pid(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    state_dir(db).mkdir()
    write_json_atomic(state_dir(db) / "linear.BTCUSDT.json",
                      {"pid": os.getpid(), "active": True, "category": "linear", "symbol": "BTCUSDT",
                       "last_trade_us": 1_000_000_000_000, "committed_at": 0})
    (state_dir(db) / "linear.ETHUSDT.json").write_text(json.dumps(
        {"pid": 2 ** 22 + 12345, "active": True, "category": "linear", "symbol": "ETHUSDT",
         "last_trade_us": None, "committed_at": 0}))
    found = follower_status(db, now_s=1_000_010.0)
    assert found[("linear", "BTCUSDT")]["follower"].startswith("active")
    assert found[("linear", "BTCUSDT")]["live_lag_s"] == 10.0
    assert found[("linear", "ETHUSDT")]["follower"] == "not running"
