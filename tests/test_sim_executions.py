"""/v5/execution/list: the 7-day window rule, cursor paging (every fill exactly once), filters."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from conftest import SIM_NOW_MS
from simutil import signed_get

from sim.fills import WEEK_MS, ParamError, expected_fills, paginate, resolve_window

PATH = "/v5/execution/list"
DAY = 86_400_000


async def fetch_all(session: aiohttp.ClientSession, url: str, query: str, max_pages: int = 200) -> tuple[
        list[dict[str, Any]], list[str]]:
    """Follow nextPageCursor, sending it back exactly as received."""
    rows: list[dict[str, Any]] = []
    cursors: list[str] = []
    cursor = ""
    for _ in range(max_pages):
        q = query + (f"&cursor={cursor}" if cursor else "")
        _, body = await signed_get(session, url, PATH, q)
        assert body["retCode"] == 0, body
        rows += body["result"]["list"]
        cursor = body["result"]["nextPageCursor"]
        if not cursor:
            return rows, cursors
        cursors.append(cursor)
    raise AssertionError("pagination did not end")


async def test_paging_a_seven_day_window_returns_every_fill_exactly_once_newest_first(sim, sim_config):
    start, end = SIM_NOW_MS - WEEK_MS, SIM_NOW_MS
    async with aiohttp.ClientSession() as s:
        rows, cursors = await fetch_all(s, sim.url, f"category=linear&startTime={start}&endTime={end}&limit=7")
    expected = expected_fills(sim_config, start, end, category="linear")
    assert len(expected) > 50
    assert [r["execId"] for r in rows] == [r["execId"] for r in expected]
    assert len({r["execId"] for r in rows}) == len(rows)
    times = [int(r["execTime"]) for r in rows]
    assert times == sorted(times, reverse=True) and start <= min(times) and max(times) <= end
    assert cursors and all("%3A" in c and "%2C" in c for c in cursors)


async def test_fill_records_carry_bybits_fields_and_types(sim):
    async with aiohttp.ClientSession() as s:
        _, body = await signed_get(s, sim.url, PATH, "category=linear&limit=100")
    fields = {"symbol", "orderId", "orderLinkId", "side", "orderPrice", "orderQty", "leavesQty", "orderType",
              "stopOrderType", "execFee", "feeCurrency", "execId", "execPrice", "execQty", "execType",
              "execValue", "execTime", "isMaker", "feeRate", "tradeIv", "markIv", "markPrice", "indexPrice",
              "underlyingPrice", "blockTradeId", "closedSize", "seq"}
    result = body["result"]
    assert result["category"] == "linear" and 50 < len(result["list"]) <= 100
    for rec in result["list"]:
        assert fields <= rec.keys()
        assert isinstance(rec["isMaker"], bool) and isinstance(rec["execTime"], str)
        assert len(rec["execId"].split("-")) == 5
    assert {r["execType"] for r in result["list"]} >= {"Trade", "Funding"}


async def test_the_window_rule_rejects_more_than_seven_days_and_fills_in_missing_ends(sim, sim_config):
    end = SIM_NOW_MS - 3 * DAY
    async with aiohttp.ClientSession() as s:
        _, too_wide = await signed_get(s, sim.url, PATH, f"category=linear&startTime={end - WEEK_MS - 1}&endTime={end}")
        _, exact = await signed_get(s, sim.url, PATH, f"category=linear&startTime={end - WEEK_MS}&endTime={end}")
        only_start, _ = await fetch_all(s, sim.url, f"category=linear&startTime={end - 20 * DAY}&limit=100")
        only_end, _ = await fetch_all(s, sim.url, f"category=linear&endTime={end}&limit=100")
        neither, _ = await fetch_all(s, sim.url, "category=linear&limit=100")
    assert too_wide["retCode"] == 10001 and "7 days" in too_wide["retMsg"]
    assert exact["retCode"] == 0
    ids = lambda rows: [r["execId"] for r in rows]
    assert ids(only_start) == ids(expected_fills(sim_config, end - 20 * DAY, end - 13 * DAY, category="linear"))
    assert ids(only_end) == ids(expected_fills(sim_config, end - WEEK_MS, end, category="linear"))
    assert ids(neither) == ids(expected_fills(sim_config, SIM_NOW_MS - WEEK_MS, SIM_NOW_MS, category="linear"))


async def test_exec_type_and_symbol_filters_are_honoured(sim, sim_config):
    async with aiohttp.ClientSession() as s:
        funding, _ = await fetch_all(s, sim.url, "category=linear&execType=Funding&limit=100")
        trades, _ = await fetch_all(s, sim.url, "category=linear&execType=Trade&symbol=ETHUSDT&limit=100")
    assert funding and {r["execType"] for r in funding} == {"Funding"}
    assert len(funding) == len(expected_fills(sim_config, SIM_NOW_MS - WEEK_MS, SIM_NOW_MS, "Funding",
                                              category="linear"))
    assert trades and {(r["execType"], r["symbol"]) for r in trades} == {("Trade", "ETHUSDT")}


async def test_bad_parameters_get_10001(sim):
    async with aiohttp.ClientSession() as s:
        _, no_category = await signed_get(s, sim.url, PATH, "limit=10")
        _, big_limit = await signed_get(s, sim.url, PATH, "category=linear&limit=101")
        _, bad_cursor = await signed_get(s, sim.url, PATH, "category=linear&cursor=garbage")
        _, reversed_window = await signed_get(s, sim.url, PATH, "category=linear&startTime=2000&endTime=1000")
    assert [b["retCode"] for b in (no_category, big_limit, bad_cursor, reversed_window)] == [10001] * 4


def test_fills_exist_only_within_the_history_and_before_now(sim_config):
    history = sim_config.fills_history_days * DAY
    assert expected_fills(sim_config, SIM_NOW_MS + 1, SIM_NOW_MS + DAY) == []
    old = expected_fills(sim_config, SIM_NOW_MS - history - 3 * DAY, SIM_NOW_MS - history + 3 * DAY)
    assert old and min(int(r["execTime"]) for r in old) >= SIM_NOW_MS - history
    assert expected_fills(sim_config, 0, SIM_NOW_MS - history - 1) == []


def test_window_resolution_and_pagination_are_pure():
    assert resolve_window(None, None, 10 * WEEK_MS) == (9 * WEEK_MS, 10 * WEEK_MS)
    assert resolve_window(5, None, 0) == (5, 5 + WEEK_MS)
    assert resolve_window(None, WEEK_MS, 0) == (0, WEEK_MS)
    with pytest.raises(ParamError):
        resolve_window(0, WEEK_MS + 1, 0)
    items = [{"execId": f"id{k}"} for k in range(5)]
    page, cursor = paginate(items, "", 2)
    assert page == items[:2] and unquote(cursor) == "2:id2,2:id2"
    page, cursor = paginate(items, unquote(cursor), 2)
    assert page == items[2:4]
    page, cursor = paginate(items, unquote(cursor), 2)
    assert page == items[4:] and cursor == ""
