"""Parsing of Bybit's JSON envelope, recent trades, executions, archive index and limit headers."""

from __future__ import annotations

import json
from datetime import date

import pytest

from fetch.errors import (AuthError, BadResponse, ClockSkew, ParameterError, RateLimited, ServerError)
from fetch.market_span import Market
from fetch.parse import (parse_archive_index, parse_envelope, parse_execution_page, parse_recent_trades,
                         parse_server_time_ms, unwrap)
from fetch.wire import LimitStatus, parse_limit_headers


def body(ret_code: object = 0, result: object = None, time: object = 1672053054358, msg: str = "OK") -> bytes:
    return json.dumps({"retCode": ret_code, "retMsg": msg, "result": result or {}, "retExtInfo": {},
                       "time": time}).encode()


@pytest.mark.parametrize("code", [0, "0"])
@pytest.mark.parametrize("time", [1672053054358, "1672053054358"])
def test_envelope_accepts_string_or_number_ret_code_and_time(code: object, time: object) -> None:
    env = parse_envelope(body(code, {"list": []}, time))
    assert (env.ret_code, env.time_ms, env.result) == (0, 1672053054358, {"list": []})


def test_nonzero_ret_code_with_an_empty_list_is_an_error_never_no_trades() -> None:
    with pytest.raises(ParameterError, match="10001"):
        unwrap(body("10001", {"category": "linear", "list": []}, msg="params error: symbol invalid"))


@pytest.mark.parametrize("code,cls", [(10001, ParameterError), (10002, ClockSkew), (10003, AuthError),
                                      (10004, AuthError), (10005, AuthError), (10010, AuthError),
                                      (10006, RateLimited), (10016, ServerError), (10000, ServerError)])
def test_each_ret_code_maps_to_its_error_class(code: int, cls: type) -> None:
    with pytest.raises(cls):
        unwrap(body(code), endpoint="/v5/x")


def test_rate_limit_error_carries_the_reset_timestamp() -> None:
    with pytest.raises(RateLimited) as info:
        unwrap(body(10006, msg="Too many visits!"), reset_at_ms=1700000000123)
    assert info.value.reset_at_ms == 1700000000123


@pytest.mark.parametrize("raw", [b"<html>502 Bad Gateway</html>", b"", b"[1,2]", b'{"result": {}}',
                                 b'{"retCode": "abc"}'])
def test_unreadable_bodies_are_bad_response(raw: bytes) -> None:
    with pytest.raises(BadResponse):
        parse_envelope(raw, endpoint="/v5/market/recent-trade")


def test_server_time_prefers_nanoseconds_then_seconds_then_envelope_time() -> None:
    nano = parse_envelope(body(0, {"timeSecond": "1688639403", "timeNano": "1688639403423213947"}))
    assert parse_server_time_ms(nano) == 1688639403423
    sec = parse_envelope(body(0, {"timeSecond": "1688639403"}))
    assert parse_server_time_ms(sec) == 1688639403000
    top = parse_envelope(body(0, {}, time="1688639403999"))
    assert parse_server_time_ms(top) == 1688639403999


UUID_ROW = {"execId": "2100000000007764263", "symbol": "BTCUSDT", "price": "16618.49", "size": "0.00012",
            "side": "Buy", "time": "1672052955758", "isBlockTrade": False}


def test_recent_trades_normalize_side_time_and_strings() -> None:
    rows = [
        {"execId": "b7c0a8d1-6f8e-5b2c-9c47-3a1d2e4f5a6b", "symbol": "BTCUSDT", "price": "50000.5",
         "size": "0.1", "side": "Sell", "time": "1672052955758", "isBlockTrade": True, "isRPITrade": False,
         "seq": "123"},
        UUID_ROW,
    ]
    trades = parse_recent_trades({"category": "linear", "list": rows}, market=Market("linear", "BTCUSDT"))
    first, second = trades
    assert first.trade_id == "b7c0a8d1-6f8e-5b2c-9c47-3a1d2e4f5a6b"
    assert (first.side, first.is_buyer_maker, first.is_block_trade) == ("sell", True, True)
    assert (first.price, first.qty, first.time_us) == (50000.5, 0.1, 1672052955758000)
    assert first.source == "rest"
    assert second.trade_id == "2100000000007764263" and second.side == "buy"


def test_recent_trades_accept_numeric_fields_and_missing_optional_ones() -> None:
    row = {"execId": 2100000000007764263, "price": 1.5, "size": 2, "side": "Buy", "time": 1672052955758}
    (trade,) = parse_recent_trades({"list": [row]}, market=Market("spot", "BTCUSDT"))
    assert trade.trade_id == "2100000000007764263"  # 19 digits survive
    assert trade.symbol == "BTCUSDT" and trade.is_block_trade is None
    assert trade.time_us == 1672052955758000


@pytest.mark.parametrize("broken", [{"side": "Hold"}, {"price": "abc"}, {"time": None}, {"execId": ""}])
def test_a_broken_recent_trade_row_is_bad_response(broken: dict[str, object]) -> None:
    with pytest.raises(BadResponse):
        parse_recent_trades({"list": [{**UUID_ROW, **broken}]}, market=Market("linear", "BTCUSDT"))


def test_missing_list_is_bad_response_not_empty() -> None:
    with pytest.raises(BadResponse):
        parse_recent_trades({"category": "linear"}, market=Market("linear", "BTCUSDT"))


EXEC_ROW = {"symbol": "BTCUSDT", "orderId": "o-1", "orderLinkId": "", "side": "Sell", "execId": "e-1",
            "execPrice": "50000", "execQty": "0.01", "execFee": "0.3", "feeCurrency": "USDT",
            "execType": "Trade", "execTime": "1700000000123", "isMaker": True, "execValue": "500"}


def test_execution_page_parses_fills_and_cursor() -> None:
    page = parse_execution_page({"category": "linear", "list": [EXEC_ROW], "nextPageCursor": "a%3D1"},
                                category="linear")
    (fill,) = page.executions
    assert page.next_cursor == "a%3D1"
    assert (fill.exec_id, fill.order_id, fill.exec_type, fill.side) == ("e-1", "o-1", "Trade", "sell")
    assert (fill.time_us, fill.price, fill.qty, fill.fee, fill.is_maker) == (
        1700000000123000, 50000.0, 0.01, 0.3, True)


def test_execution_page_with_empty_or_missing_cursor_is_the_last_page() -> None:
    assert parse_execution_page({"list": [], "nextPageCursor": ""}, category="linear").next_cursor == ""
    assert parse_execution_page({"list": []}, category="linear").next_cursor == ""


def test_execution_optional_fields_default() -> None:
    row = {k: v for k, v in EXEC_ROW.items() if k not in ("feeCurrency", "execFee", "isMaker", "execType")}
    (fill,) = parse_execution_page({"list": [row]}, category="spot").executions
    assert (fill.fee, fill.fee_currency, fill.is_maker, fill.exec_type, fill.category) == (
        0.0, "", False, "Trade", "spot")


INDEX = """<html><head><title>Index of /trading/BTCUSDT/</title></head><body><pre>
<a href="../">../</a>
<a href="BTCUSDT2024-01-02.csv.gz">BTCUSDT2024-01-02.csv.gz</a>   02-Jan-2024 00:00  1M
<a href="BTCUSDT2024-01-01.csv.gz">BTCUSDT2024-01-01.csv.gz</a>   01-Jan-2024 00:00  1M
<a href="BTCUSDTPERP2024-01-01.csv.gz">BTCUSDTPERP2024-01-01.csv.gz</a>
<a href='/spot/BTCUSDT/BTCUSDT_2024-01-03.csv.gz'>x</a>
<a href="BTCUSDT-2023-12.csv.gz">monthly</a>
<a href="BTCUSDT2024-13-01.csv.gz">bad date</a>
</pre></body></html>"""


def test_archive_index_lists_daily_files_of_the_symbol_sorted() -> None:
    assert parse_archive_index(INDEX, "BTCUSDT") == [date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)]
    assert parse_archive_index(INDEX, "BTCUSDTPERP") == [date(2024, 1, 1)]
    assert parse_archive_index("<html></html>", "BTCUSDT") == []


def test_limit_headers_any_case_and_optional() -> None:
    headers = {"X-Bapi-Limit": "50", "x-bapi-limit-status": "49", "X-BAPI-LIMIT-RESET-TIMESTAMP": "1700000000999"}
    assert parse_limit_headers(headers) == LimitStatus(50, 49, 1700000000999)
    assert parse_limit_headers({}) == LimitStatus(None, None, None)
    assert parse_limit_headers({"X-Bapi-Limit-Status": "n/a"}) == LimitStatus(None, None, None)


def test_archive_paths_follow_the_hosts_layout() -> None:
    from fetch import ArchiveSource, archive_path

    assert archive_path(Market("linear", "BTCUSDT"), date(2024, 1, 2)) == "/trading/BTCUSDT/BTCUSDT2024-01-02.csv.gz"
    assert archive_path(Market("inverse", "BTCUSD"), date(2024, 1, 2)) == "/trading/BTCUSD/BTCUSD2024-01-02.csv.gz"
    assert ArchiveSource.archive_path(Market("spot", "BTCUSDT"), date(2024, 1, 2)) == (
        "/spot/BTCUSDT/BTCUSDT_2024-01-02.csv.gz")
