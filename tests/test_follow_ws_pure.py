"""The WebSocket client's pure parts: subscription batching, push parsing and validation, watchdog."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fetch.ws import (
    MAX_ARGS_CHARS,
    Ignored,
    Pong,
    RejectedMessage,
    SubscribeReply,
    TradesMessage,
    Watchdog,
    parse_message,
    plan_connections,
)
from tests.conftest import FakeClock

SYMBOLS = frozenset({"BTCUSDT"})
TS = 1_704_931_200_000


def push(*items: dict[str, Any], symbol: str = "BTCUSDT", ts: int = TS) -> str:
    return json.dumps({"topic": f"publicTrade.{symbol}", "type": "snapshot", "ts": ts, "data": list(items)})


def item(**over: Any) -> dict[str, Any]:
    base = {"T": TS - 5, "s": "BTCUSDT", "S": "Buy", "v": "0.001", "p": "16578.50", "L": "PlusTick",
            "i": "20f43950-d8dd-5b31-9112-a178eb6023af", "BT": False, "RPI": False, "seq": 1783284617}
    return {**base, **over}


def test_spot_subscriptions_go_ten_args_a_request_on_one_connection() -> None:
    plan = plan_connections("spot", [f"S{i:03d}USDT" for i in range(25)])
    assert len(plan) == 1 and [len(r) for r in plan[0]] == [10, 10, 5]


def test_derivatives_subscribe_in_one_request_until_a_connection_is_full() -> None:
    assert plan_connections("linear", ["BTCUSDT", "ETHUSDT", "BTCUSDT"]) == [[["publicTrade.BTCUSDT",
                                                                              "publicTrade.ETHUSDT"]]]
    many = [f"SYM{i:05d}USDT" for i in range(2000)]  # 23 characters a topic: 913 fit a connection
    plan = plan_connections("linear", many)
    per_connection = [sum(len(a) for r in conn for a in r) for conn in plan]
    assert len(plan) == 3 and max(per_connection) <= MAX_ARGS_CHARS
    assert [a for conn in plan for r in conn for a in r] == [f"publicTrade.{s}" for s in many]


def test_a_push_becomes_normalized_ws_trades() -> None:
    event = parse_message(push(item(), item(i="b", S="Sell", T=TS - 1, BT=True)), category="linear",
                          symbols=SYMBOLS)
    assert isinstance(event, TradesMessage) and event.symbol == "BTCUSDT" and event.ts_ms == TS
    first, second = event.trades
    assert (first.time_us, first.price, first.qty, first.side, first.source) == (
        (TS - 5) * 1000, 16578.5, 0.001, "buy", "ws")
    assert second.side == "sell" and second.is_buyer_maker and second.is_block_trade is True


@pytest.mark.parametrize("bad", [
    {"s": "ETHUSDT"}, {"S": "Hold"}, {"p": "nan"}, {"p": "-1"}, {"v": "0"}, {"v": "inf"}, {"p": None},
    {"i": ""}, {"T": "1"}, {"T": TS - 2 * 3_600_000}, {"T": TS + 60_000},
])
def test_an_implausible_trade_rejects_the_whole_message(bad: dict[str, Any]) -> None:
    with pytest.raises(RejectedMessage):
        parse_message(push(item(), item(**bad)), category="linear", symbols=SYMBOLS)


def test_out_of_order_data_and_unsubscribed_symbols_are_rejected() -> None:
    with pytest.raises(RejectedMessage):
        parse_message(push(item(T=TS - 1), item(T=TS - 9)), category="linear", symbols=SYMBOLS)
    with pytest.raises(RejectedMessage):
        parse_message(push(item(s="ETHUSDT"), symbol="ETHUSDT"), category="linear", symbols=SYMBOLS)
    with pytest.raises(RejectedMessage):
        parse_message("{not json", category="linear", symbols=SYMBOLS)


def test_both_pong_shapes_subscribe_replies_and_other_frames_are_classified() -> None:
    spot = {"success": True, "ret_msg": "pong", "conn_id": "c", "req_id": "", "op": "ping"}
    linear = {"success": True, "ret_msg": "", "conn_id": "c", "op": "pong", "args": ["1"]}
    for frame in (spot, linear):
        assert parse_message(json.dumps(frame), category="spot", symbols=SYMBOLS) == Pong()
    reply = parse_message(json.dumps({"success": False, "ret_msg": "no", "req_id": "r", "op": "subscribe"}),
                          category="linear", symbols=SYMBOLS)
    assert reply == SubscribeReply(False, "no", "r")
    assert isinstance(parse_message('{"topic":"orderbook.1.BTCUSDT"}', category="linear", symbols=SYMBOLS),
                      Ignored)


def test_the_watchdog_pings_every_interval_and_waits_for_the_pong() -> None:
    clock = FakeClock(0)
    dog = Watchdog(clock, ping_interval_s=20, pong_timeout_s=10, stale_after_s=1000)
    assert dog.ping_due_in() <= 0  # the first ping goes out at once
    dog.sent_ping()
    clock.advance(5)
    dog.got_pong()
    assert dog.ping_due_in() == pytest.approx(15)
    clock.advance(15)
    dog.sent_ping()
    clock.advance(10.5)
    assert dog.verdict() is not None and "pong" in str(dog.verdict())


def test_the_watchdog_declares_a_ponging_but_silent_connection_dead() -> None:
    clock = FakeClock(0)
    dog = Watchdog(clock, ping_interval_s=20, pong_timeout_s=10, stale_after_s=60)
    for _ in range(2):
        clock.advance(20)
        dog.sent_ping()
        dog.got_pong()
    assert dog.verdict() is None
    dog.got_data()
    clock.advance(59)
    assert dog.verdict() is None and 0 < dog.wait_s() <= 1.5
    clock.advance(2)
    assert "no trade" in str(dog.verdict())
