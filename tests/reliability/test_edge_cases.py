"""Recorded edge cases of Bybit's formats, as the exchange writes them, through the pure parsers and
then end to end through the store: string retCode and time, missing optional fields, an empty
nextPageCursor, UUID and 19-digit execIds, archive timestamps as integers or with 4 decimals (exact
to the microsecond), grossValue in scientific notation, RPI columns, rows out of order.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fetch import BybitClient, Endpoints, FetchConfig, RetryPolicy
from fetch.errors import ParameterError
from fetch.executions import Pager
from fetch.market_span import Market
from fetch.models import trades_to_table
from fetch.parse import (
    check_envelope,
    parse_envelope,
    parse_execution_page,
    parse_recent_trades,
    read_archive,
)
from fetch.wire import Request, Response
from store import Store, read_cache, refresh, tick_id
from store.schema import open_store
from store.timeutil import dt_to_us
from store.ingest import ingest_batch
from store.report import verify

# --- recorded payloads ----------------------------------------------------------------------------

# recent-trade as Bybit sends it for linear (docs/v5/market/recent-trade.mdx), with the variants seen
# on the wire: retCode and time as strings, a row without isBlockTrade/isRPITrade/seq, a numeric time.
RECENT_LINEAR = json.dumps({
    "retCode": "0", "retMsg": "OK", "time": "1742039999000",
    "result": {"category": "linear", "list": [
        {"execId": "f4d7a0f1-3c3e-5a6e-9a8f-0b1c2d3e4f50", "symbol": "BTCUSDT", "price": "83950.10",
         "size": "0.015", "side": "Buy", "time": "1742039998765", "isBlockTrade": False, "isRPITrade": False,
         "seq": "81923471123"},
        {"execId": "0a1b2c3d-4e5f-5a6b-8c7d-9e0f1a2b3c4d", "symbol": "BTCUSDT", "price": "83950.0",
         "size": "1.2", "side": "Sell", "time": "1742039990001"},
        {"execId": "9f8e7d6c-5b4a-5392-8170-6f5e4d3c2b1a", "symbol": "BTCUSDT", "price": "83949.9",
         "size": "0.001", "side": "Sell", "time": 1742039990001, "isBlockTrade": "true", "isRPITrade": True},
    ]},
    "retExtInfo": {},
})

# Spot: execIds are 19-digit numbers, limit 60; options add mP/iP/mIv/iv, ignored here.
RECENT_SPOT = json.dumps({
    "retCode": 0, "retMsg": "OK", "time": 1742039999000,
    "result": {"category": "spot", "list": [
        {"execId": "2290000000718592011", "symbol": "BTCUSDT", "price": "83951.52", "size": "0.000119",
         "side": "Buy", "time": "1742039998000", "isBlockTrade": False},
        {"execId": "2290000000718592010", "symbol": "BTCUSDT", "price": "83951.51", "size": "0.05",
         "side": "Sell", "time": "1742039997000", "mP": "", "iP": ""},
    ]},
})

EXECUTION_LAST_PAGE = {
    "nextPageCursor": "", "category": "linear",
    "list": [{"symbol": "BTCUSDT", "execId": "7e2a3f4b-aaaa-5bbb-8ccc-123456789abc", "execPrice": "83950.1",
              "execQty": "0.010", "execType": "Trade", "execTime": "1742039998765", "side": "Buy",
              "isMaker": False, "execFee": "0.46172555", "feeCurrency": "", "orderId": "1b2c-order"},
             {"symbol": "BTCUSDT", "execId": "0c5f2a9e-bbbb-5ccc-8ddd-abcdef012345", "execPrice": "83900",
              "execQty": "0.500", "execType": "Funding", "execTime": "1742025600000", "side": "Sell"}],
}

ARCHIVE_DAY = date(2025, 3, 14)
LINEAR_HEADER = ("timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,"
                 "foreignNotional")
# The day's file, rows as Bybit writes them, in no particular order: 4-decimal and integer seconds,
# grossValue in scientific notation, two trades identical but for their id, the RPI column.
ARCHIVE_ROWS = [
    "1741996799,BTCUSDT,Sell,2,83100,MinusTick,c3c1a7e2-0e83-5d7b-9b51-5f0c1e9a8d70,1.662e+10,2,166200,1",
    ("1741910443.7357,BTCUSDT,Buy,0.001,83000.5,PlusTick,1f0e2b43-8b44-5a2f-a1e5-5d2c6b7a8e90,8.30005E+06,0.001,"
     "83.0005,0"),
    ("1741910443.7357,BTCUSDT,Buy,0.001,83000.5,ZeroPlusTick,2a9d3c54-7c55-5b3e-b2f6-6e3d7c8b9fa1,8300050,0.001,"
     "83.0005,0"),
    ("1741910400.0001,BTCUSDT,Sell,0.25,82990.0,MinusTick,3b8e4d65-6d66-5c4f-83a7-7f4e8d9cafb2,2074750000,0.25,"
     "20747.5,0"),
]
ARCHIVE_TIMES_US = {  # what each id's timestamp is, exactly
    "c3c1a7e2-0e83-5d7b-9b51-5f0c1e9a8d70": 1741996799_000000,
    "1f0e2b43-8b44-5a2f-a1e5-5d2c6b7a8e90": 1741910443_735700,
    "2a9d3c54-7c55-5b3e-b2f6-6e3d7c8b9fa1": 1741910443_735700,
    "3b8e4d65-6d66-5c4f-83a7-7f4e8d9cafb2": 1741910400_000100,
}


def gz_csv(header: str, rows: list[str], newline: str = "\n") -> bytes:
    return gzip.compress((newline.join([header, *rows]) + newline).encode())


# --- the pure functions ---------------------------------------------------------------------------

def test_string_ret_code_and_time_missing_optional_fields_are_normalized() -> None:
    envelope = parse_envelope(RECENT_LINEAR, endpoint="/v5/market/recent-trade")
    assert (envelope.ret_code, envelope.time_ms) == (0, 1742039999000)
    trades = parse_recent_trades(check_envelope(envelope), market=Market("linear", "BTCUSDT"))
    assert [(t.time_us, t.side, t.price, t.qty, t.is_block_trade) for t in trades] == [
        (1742039998765000, "buy", 83950.1, 0.015, False),
        (1742039990001000, "sell", 83950.0, 1.2, None),       # no isBlockTrade: unknown, not False
        (1742039990001000, "sell", 83949.9, 0.001, True),     # "true" as a string, time as a number
    ]
    assert [t.is_buyer_maker for t in trades] == [False, True, True], "the side is the taker's"
    assert all(t.source == "rest" and t.symbol == "BTCUSDT" for t in trades)


def test_a_string_10001_with_an_empty_list_is_a_parameter_error() -> None:
    body = json.dumps({"retCode": "10001", "retMsg": "params error: symbol invalid",
                       "result": {"category": "", "list": []}, "retExtInfo": {}, "time": "1742039999000"})
    with pytest.raises(ParameterError, match="symbol invalid"):
        check_envelope(parse_envelope(body))


@pytest.mark.parametrize("cursor_field", [{"nextPageCursor": ""}, {}], ids=["empty string", "absent"])
def test_an_empty_or_absent_next_page_cursor_ends_the_window(cursor_field: dict[str, str]) -> None:
    result = {k: v for k, v in EXECUTION_LAST_PAGE.items() if k != "nextPageCursor"} | cursor_field
    page = parse_execution_page(result, category="linear")
    assert page.next_cursor == ""
    assert Pager((0, 1)).advance(page.next_cursor).done
    funding = page.executions[1]
    assert (funding.exec_type, funding.order_id, funding.fee, funding.fee_currency, funding.is_maker) == (
        "Funding", "", 0.0, "", False), "optional fields default, they do not fail the page"
    assert page.executions[0].time_us == 1742039998765000 and page.executions[0].fee == 0.46172555


def test_an_encoded_cursor_is_kept_verbatim() -> None:
    page = parse_execution_page(EXECUTION_LAST_PAGE | {"nextPageCursor": "3%3A1742039998765%2C3%3A1742"},
                                category="linear")
    pager = Pager((0, 1)).advance(page.next_cursor)
    assert not pager.done and pager.params("linear")["cursor"] == "3%3A1742039998765%2C3%3A1742"


@pytest.mark.parametrize("exec_id, expected", [
    ("2290000000718592011", 2290000000718592011),             # spot: the number itself
    ("0000000000000000042", 42),                              # leading zeros: still that number
    ("9223372036854775807", 9223372036854775807),             # the largest int64
    ("9999999999999999999", None),                            # 19 digits past int64: hashed
    ("f4d7a0f1-3c3e-5a6e-9a8f-0b1c2d3e4f50", None),           # linear UUID: hashed
])
def test_exec_ids_become_stable_63_bit_tick_ids_in_python_and_sql(tmp_path: Path, exec_id: str,
                                                                   expected: int | None) -> None:
    value = tick_id(exec_id)
    assert 0 <= value < 2**63
    if expected is not None:
        assert value == expected
    trades = parse_recent_trades({"list": [{"execId": exec_id, "price": "1", "size": "1", "side": "Buy",
                                            "time": "1742039998765"}]}, market=Market("spot", "BTCUSDT"))
    with open_store(tmp_path / "ids.duckdb") as store:
        with store.atomic():
            ingest_batch(store, trades_to_table(trades), market=Market("spot", "BTCUSDT"))
        assert store.query_one("SELECT trade_id, tick_id FROM trades") == (exec_id, value)


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["LF", "CRLF"])
def test_archive_timestamps_are_exact_microseconds_and_scientific_gross_values_parse(
        tmp_path: Path, newline: str) -> None:
    path = tmp_path / "BTCUSDT2025-03-14.csv.gz"
    path.write_bytes(gz_csv(LINEAR_HEADER + ",RPI", ARCHIVE_ROWS, newline))
    table = read_archive(path, Market("linear", "BTCUSDT"), ARCHIVE_DAY)
    got = dict(zip(table.column("trade_id").to_pylist(), table.column("time_us").to_pylist(), strict=True))
    assert got == ARCHIVE_TIMES_US
    assert table.column("side").to_pylist() == ["sell", "buy", "buy", "sell"]
    assert table.column("qty").to_pylist() == [2.0, 0.001, 0.001, 0.25]


def test_a_spot_archive_in_milliseconds_with_lower_case_sides(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT_2025-03-14.csv.gz"
    path.write_bytes(gz_csv("id,timestamp,price,volume,side,rpi",
                            ["2,1741910443736,83000.51,0.000119,sell,0",
                             "1,1741910400000,82990.00,0.05,buy,1"]))
    table = read_archive(path, Market("spot", "BTCUSDT"), ARCHIVE_DAY)
    assert table.column("trade_id").to_pylist() == ["202503140000000002", "202503140000000001"]
    assert table.column("time_us").to_pylist() == [1741910443736000, 1741910400000000]


# --- end to end through the store -----------------------------------------------------------------

class Recorded:
    """A transport that answers from recorded payloads (no network at all), by URL path."""

    def __init__(self, pages: dict[str, bytes]) -> None:
        self.pages = pages
        self.paths: list[str] = []

    async def send(self, request: Request) -> Response:
        self.paths.append(request.path)
        body = self.pages.get(request.path)
        if body is None:
            return Response(404, {}, b"<html>404 Not Found</html>")
        if request.dest is not None:
            request.dest.parent.mkdir(parents=True, exist_ok=True)
            request.dest.write_bytes(body)
            return Response(200, {}, b"", path=request.dest, size_bytes=len(body))
        return Response(200, {"content-type": "application/json"}, body)


def index(folder: str, names: list[str]) -> bytes:
    links = "\n".join(f'<a href="{n}">{n}</a>' for n in names)
    page = f'<html><body><h1>Index of {folder}</h1><pre><a href="../">../</a>\n{links}\n</pre></body></html>'
    return page.encode()


def run_recorded(store: Store, pages: dict[str, bytes], symbol: str, category: str, end: datetime,
                 cache: Path) -> Callable[[], list[str]]:
    now_ms = int(time.time() * 1000)
    clock = {"/v5/market/time": json.dumps({"retCode": 0, "retMsg": "OK", "time": now_ms, "result": {
        "timeSecond": str(now_ms // 1000), "timeNano": str(now_ms * 1_000_000)}}).encode()}
    transport = Recorded({**clock, **pages})
    config = FetchConfig(endpoints=Endpoints("http://recorded", "http://recorded"),
                         retry=RetryPolicy(max_retries=0))

    async def go() -> None:
        async with BybitClient(config, transport=transport) as client:
            summary = await refresh(store, config, symbol, dt_to_us(datetime(2025, 3, 14, tzinfo=UTC)),
                                    dt_to_us(end), category=category, cache_dir=cache, client=client)
        assert summary.days_failed == [] and summary.days_fetched == 1

    asyncio.run(go())
    return lambda: transport.paths


def test_recorded_linear_payloads_end_to_end_through_the_store(tmp_path: Path) -> None:
    listed = ["BTCUSDT2025-03-13.csv.gz", "BTCUSDT2025-03-14.csv.gz"]
    pages = {"/trading/BTCUSDT/": index("/trading/BTCUSDT/", listed),
             "/trading/BTCUSDT/BTCUSDT2025-03-14.csv.gz": gz_csv(LINEAR_HEADER + ",RPI", ARCHIVE_ROWS),
             "/v5/market/recent-trade": RECENT_LINEAR.encode()}
    cache = tmp_path / "cache"
    with open_store(tmp_path / "e2e.duckdb") as store:
        run_recorded(store, pages, "BTCUSDT", "linear", datetime(2025, 3, 15, 12, tzinfo=UTC), cache)
        rows = store.query("SELECT trade_id, time_us, tick_id, source, is_block_trade FROM trades "
                           "ORDER BY time_us, trade_id")
        assert verify(store).ok
    archive = {r[0]: r[1] for r in rows if r[3] == "archive"}
    assert archive == ARCHIVE_TIMES_US, "every archive row, exact to the microsecond, once"
    rest = [(r[0], r[1], r[4]) for r in rows if r[3] == "rest"]
    assert rest == [("0a1b2c3d-4e5f-5a6b-8c7d-9e0f1a2b3c4d", 1742039990001000, None),
                    ("9f8e7d6c-5b4a-5392-8170-6f5e4d3c2b1a", 1742039990001000, True),
                    ("f4d7a0f1-3c3e-5a6e-9a8f-0b1c2d3e4f50", 1742039998765000, False)]
    assert all(r[2] == tick_id(r[0]) for r in rows), "SQL and Python agree on every TradeTick.id"
    table = pq.read_table(cache / "backfill_2025-03-14.parquet")
    assert table.column("T").to_pylist() == sorted(t // 1000 for t in ARCHIVE_TIMES_US.values())
    ticks = read_cache(cache, datetime(2025, 3, 14, tzinfo=UTC), datetime(2025, 3, 16, tzinfo=UTC))
    # Only the complete archive day has a file; today's REST rows stay in the store (no partial file).
    assert not (cache / "backfill_2025-03-15.parquet").exists()
    assert len(ticks) == len(ARCHIVE_TIMES_US) and len({t.id for t in ticks}) == len(ticks)
    assert {t.id for t in ticks} == {tick_id(r[0]) for r in rows if r[3] == "archive"}


def test_recorded_spot_payloads_end_to_end_keep_19_digit_ids_as_tick_ids(tmp_path: Path) -> None:
    pages = {"/spot/BTCUSDT/": index("/spot/BTCUSDT/", ["BTCUSDT_2025-03-14.csv.gz"]),
             "/spot/BTCUSDT/BTCUSDT_2025-03-14.csv.gz": gz_csv(
                 "id,timestamp,price,volume,side,rpi",
                 ["2,1741910443736,83000.51,0.000119,sell,0", "1,1741910400000,82990.00,0.05,buy,1"]),
             "/v5/market/recent-trade": RECENT_SPOT.encode()}
    cache = tmp_path / "cache"
    with open_store(tmp_path / "spot.duckdb") as store:
        run_recorded(store, pages, "BTCUSDT", "spot", datetime(2025, 3, 15, 12, tzinfo=UTC), cache)
        rows = dict(store.query("SELECT trade_id, tick_id FROM trades"))
        assert verify(store).ok
    assert rows == {"202503140000000001": 202503140000000001, "202503140000000002": 202503140000000002,
                    "2290000000718592010": 2290000000718592010, "2290000000718592011": 2290000000718592011}
    ticks = read_cache(cache, datetime(2025, 3, 14, tzinfo=UTC), datetime(2025, 3, 16, tzinfo=UTC))
    assert sorted(t.id for t in ticks) == [202503140000000001, 202503140000000002], "the archive day's file"
    assert not (cache / "backfill_2025-03-15.parquet").exists(), "today (REST rows only) gets no file"
