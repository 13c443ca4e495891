"""/v5/market/recent-trade: only the newest trades, Bybit's limits, and ids shared with the archive."""

from __future__ import annotations

from datetime import date

import aiohttp
from conftest import SIM_NOW_MS
from simutil import get_json, parse_gz_csv

from sim.market import expected_trades

PATH = "/v5/market/recent-trade"


async def test_limits_and_defaults_depend_on_the_category(sim):
    async with aiohttp.ClientSession() as s:
        url = sim.url + PATH
        _, linear = await get_json(s, url, category="linear", symbol="BTCUSDT")
        _, spot = await get_json(s, url, category="spot", symbol="BTCUSDT")
        _, inverse_max = await get_json(s, url, category="inverse", symbol="BTCUSD", limit=1000)
        _, spot_max = await get_json(s, url, category="spot", symbol="BTCUSDT", limit=60)
        too_big = [await get_json(s, url, category=c, symbol=sym, limit=lim)
                   for c, sym, lim in [("spot", "BTCUSDT", 61), ("linear", "BTCUSDT", 1001), ("linear", "BTCUSDT", 0)]]
    assert len(linear["result"]["list"]) == 500 and linear["result"]["category"] == "linear"
    assert len(spot["result"]["list"]) == 60
    assert len(inverse_max["result"]["list"]) == 1000
    assert len(spot_max["result"]["list"]) == 60
    assert [body["retCode"] for _, body in too_big] == [10001, 10001, 10001]


async def test_trades_are_newest_first_up_to_now_as_strings_and_ignore_start_end(sim, sim_config):
    async with aiohttp.ClientSession() as s:
        _, plain = await get_json(s, sim.url + PATH, category="linear", symbol="BTCUSDT", limit=200)
        _, ranged = await get_json(s, sim.url + PATH, category="linear", symbol="BTCUSDT", limit=200,
                                   start=SIM_NOW_MS - 10 * 86_400_000, end=SIM_NOW_MS - 9 * 86_400_000)
    items = plain["result"]["list"]
    assert ranged["result"]["list"] == items
    times = [int(t["time"]) for t in items]
    assert times == sorted(times, reverse=True) and max(times) <= SIM_NOW_MS
    first = items[0]
    assert set(first) == {"execId", "symbol", "price", "size", "side", "time", "isBlockTrade", "isRPITrade", "seq"}
    assert all(isinstance(first[k], str) for k in ("price", "size", "time", "seq"))
    assert first["side"] in ("Buy", "Sell") and first["isBlockTrade"] is False
    truth = expected_trades(sim_config, "BTCUSDT", date(2024, 1, 10), "linear").to_pylist()
    assert [t["execId"] for t in items] == [r["exec_id"] for r in reversed(truth[-200:])]
    assert [float(t["price"]) for t in items] == [r["price"] for r in reversed(truth[-200:])]


async def test_an_unknown_symbol_or_wrong_category_is_10001_with_an_empty_list(sim):
    async with aiohttp.ClientSession() as s:
        bodies = [await get_json(s, sim.url + PATH, category=c, symbol=sym)
                  for c, sym in [("linear", "NOPEUSDT"), ("linear", "BTCUSD"), ("option", "BTCUSDT"), ("x", "BTCUSDT")]]
    for _, body in bodies:
        assert body["retCode"] == 10001
        assert body["result"] == {"category": "", "list": []}
    assert bodies[0][1]["retMsg"] == "params error: symbol invalid"


async def test_a_tail_reaching_into_yesterday_shares_ids_with_yesterdays_archive_file(sim, sim_config):
    """ETHUSDT trades 500 a day: 1000 recent trades span today, all of 2024-01-09 and the end of -08."""
    async with aiohttp.ClientSession() as s:
        _, body = await get_json(s, sim.url + PATH, category="linear", symbol="ETHUSDT", limit=1000)
        async with s.get(f"{sim.url}/trading/ETHUSDT/ETHUSDT2024-01-09.csv.gz") as resp:
            header, rows = parse_gz_csv(await resp.read())
    items = body["result"]["list"]
    today = expected_trades(sim_config, "ETHUSDT", date(2024, 1, 10))
    id_col = header.index("trdMatchID")
    archive = {row[id_col]: row for row in rows}
    from_archive = [t for t in items if t["execId"] in archive]
    older = expected_trades(sim_config, "ETHUSDT", date(2024, 1, 8))["exec_id"].to_pylist()
    assert len(items) == 1000 and len(from_archive) == len(rows) == 500
    assert [t["execId"] for t in items] == (today["exec_id"].to_pylist()[::-1] + [r[id_col] for r in rows][::-1]
                                            + older[::-1][: 1000 - 500 - today.num_rows])
    for t in from_archive:
        row = archive[t["execId"]]
        assert row[header.index("price")] == t["price"] and row[header.index("size")] == t["size"]
        seconds, _, frac = row[0].partition(".")
        assert int(t["time"]) == int(seconds) * 1000 + int(frac.ljust(4, "0")) // 10


async def test_spot_exec_ids_are_long_numbers_and_differ_from_archive_ids(sim):
    async with aiohttp.ClientSession() as s:
        _, body = await get_json(s, sim.url + PATH, category="spot", symbol="BTCUSDT", limit=5)
    ids = [t["execId"] for t in body["result"]["list"]]
    assert all(i.isdigit() and len(i) == 19 and int(i) < 2**63 for i in ids)
    assert len(set(ids)) == 5
