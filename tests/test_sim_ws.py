"""The emulator's public WebSocket: Bybit's protocol, the archive's trades, pushed on the market clock."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sim import MarketClock, MarketSpec, SimConfig, running_sim
from sim.market import expected_trades
from sim.server import RunningSim

MIDNIGHT = datetime(2024, 1, 11, tzinfo=UTC)
MIDNIGHT_MS = int(MIDNIGHT.timestamp() * 1000)


def ws_config(cache: Path, clock: MarketClock, **kw: Any) -> SimConfig:
    markets = [MarketSpec("BTCUSDT", "linear", trades_per_day=200_000, listed=date(2024, 1, 1)),
               MarketSpec("ETHUSDT", "linear", trades_per_day=50_000, listed=date(2024, 1, 1)),
               MarketSpec("BTCUSDT", "spot", trades_per_day=100_000, listed=date(2024, 1, 1))]
    return SimConfig(markets=markets, cache_dir=cache, clock=clock, ws_tick_ms=10, **kw)


def ws_url(sim: RunningSim, category: str = "linear") -> str:
    return sim.url.replace("http://", "ws://") + f"/v5/public/{category}"


async def receive_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 20.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    data = json.loads(msg.data)
    assert isinstance(data, dict)
    return data


async def subscribe(ws: aiohttp.ClientWebSocketResponse, *symbols: str) -> dict[str, Any]:
    await ws.send_json({"req_id": "r1", "op": "subscribe", "args": [f"publicTrade.{s}" for s in symbols]})
    return await receive_json(ws)


async def collect_until(ws: aiohttp.ClientWebSocketResponse, last_ms: int, limit: int = 5000) -> list[dict[str, Any]]:
    """Snapshots until one carries a trade at or after `last_ms` (bounded by `limit` messages)."""
    out: list[dict[str, Any]] = []
    for _ in range(limit):
        msg = await receive_json(ws)
        if msg.get("topic", "").startswith("publicTrade."):
            out.append(msg)
            if msg["data"][-1]["T"] >= last_ms:
                return out
    raise AssertionError("the stream never reached the expected time")


@pytest.fixture
def clock() -> MarketClock:
    return MarketClock(MIDNIGHT_MS - 20_000, speed=0)  # stands still until a test jumps it


async def test_subscribe_is_acknowledged_and_ping_answers_pong_in_each_categorys_shape(
        sim_cache_dir: Path, clock: MarketClock) -> None:
    async with running_sim(ws_config(sim_cache_dir, clock)) as sim, aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(sim)) as ws:
            reply = await subscribe(ws, "BTCUSDT")
            assert reply["success"] is True and reply["op"] == "subscribe" and reply["req_id"] == "r1"
            await ws.send_json({"op": "ping", "req_id": "p"})
            pong = await receive_json(ws)
            assert pong["op"] == "pong" and pong["success"] is True
        async with http.ws_connect(ws_url(sim, "spot")) as ws:
            await ws.send_json({"op": "ping"})
            pong = await receive_json(ws)
            assert pong["op"] == "ping" and pong["ret_msg"] == "pong"


async def test_refused_subscriptions_say_why(sim_cache_dir: Path, clock: MarketClock) -> None:
    async with running_sim(ws_config(sim_cache_dir, clock)) as sim, aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(sim)) as ws:
            reply = await subscribe(ws, "NOSUCH")
            assert reply["success"] is False and "NOSUCH" in reply["ret_msg"]
            sim.state.faults.add("ws_refuse", symbol="BTCUSDT")
            reply = await subscribe(ws, "BTCUSDT")
            assert reply["success"] is False
            assert (await subscribe(ws, "BTCUSDT"))["success"] is True
        async with http.ws_connect(ws_url(sim, "spot")) as ws:
            reply = await subscribe(ws, *["BTCUSDT"] * 11)
            assert reply["success"] is False and ">10" in reply["ret_msg"]


async def test_pushes_carry_the_archives_trades_ascending_across_midnight(sim_cache_dir: Path) -> None:
    clock = MarketClock(MIDNIGHT_MS - 300_000, speed=0)
    config = ws_config(sim_cache_dir, clock)
    start_ms, end_ms = clock.now_ms(), clock.now_ms() + 600_000  # 5 minutes each side of midnight
    truth = []
    for day in (date(2024, 1, 10), date(2024, 1, 11)):
        table = expected_trades(SimConfig(markets=config.markets, now_ms=end_ms), "BTCUSDT", day, "linear")
        truth += [(tid, us // 1000) for tid, us in zip(table.column("trade_id").to_pylist(),
                                                       table.column("time_us").to_pylist())
                  if start_ms * 1000 < us]
    async with running_sim(config) as sim, aiohttp.ClientSession() as http, http.ws_connect(ws_url(sim)) as ws:
        assert (await subscribe(ws, "BTCUSDT"))["success"]
        clock.jump(end_ms - start_ms)
        messages = await collect_until(ws, truth[-1][1])
    trades = [t for m in messages for t in m["data"]]
    assert all(len(m["data"]) <= 1024 for m in messages) and len(messages) >= 2
    assert [(t["i"], t["T"]) for t in trades] == truth
    assert {t["s"] for t in trades} == {"BTCUSDT"} and {t["S"] for t in trades} <= {"Buy", "Sell"}


async def test_recent_trade_follows_the_same_clock(sim_cache_dir: Path, clock: MarketClock) -> None:
    async with running_sim(ws_config(sim_cache_dir, clock)) as sim, aiohttp.ClientSession() as http:
        url = f"{sim.url}/v5/market/recent-trade?category=linear&symbol=BTCUSDT&limit=1"
        async with http.get(url) as resp:
            before = int((await resp.json())["result"]["list"][0]["time"])
        clock.jump(30_000)
        async with http.get(url) as resp:
            after = int((await resp.json())["result"]["list"][0]["time"])
    assert before <= MIDNIGHT_MS - 20_000 < after <= MIDNIGHT_MS + 10_000
    assert after > MIDNIGHT_MS  # the new day has begun on the REST side too


async def until(condition: Any, tries: int = 1000) -> None:
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


async def test_skip_duplicate_and_phantom_faults_change_exactly_one_message_each(
        sim_cache_dir: Path, clock: MarketClock) -> None:
    config = ws_config(sim_cache_dir, clock)
    async with running_sim(config) as sim, aiohttp.ClientSession() as http, http.ws_connect(ws_url(sim)) as ws:
        assert (await subscribe(ws, "BTCUSDT"))["success"]
        state = sim.state
        for kind in ("ws_skip", "ws_duplicate", "ws_phantom", None):  # one jump, one message each
            if kind:
                state.faults.add(kind)
            seen = state.ws_messages + state.ws_skipped_trades
            end = clock.jump(5_000)
            await until(lambda seen=seen: state.ws_messages + state.ws_skipped_trades > seen)
        msgs = await collect_until(ws, end - 5_000)
    ids = [t["i"] for m in msgs for t in m["data"]]
    assert state.ws_skipped_trades > 0
    assert len(msgs) == 4  # skipped: none; duplicated: twice; phantom and plain: once
    assert msgs[0] == msgs[1]
    assert sum(i.startswith("phantom-") for i in ids) == 1


async def test_a_replay_sends_the_previous_message_again(sim_cache_dir: Path, clock: MarketClock) -> None:
    config = ws_config(sim_cache_dir, clock)
    async with running_sim(config) as sim, aiohttp.ClientSession() as http, http.ws_connect(ws_url(sim)) as ws:
        assert (await subscribe(ws, "BTCUSDT"))["success"]
        first = await collect_until(ws, clock.jump(5_000) - 5_000)
        sim.state.faults.add("ws_replay")
        second = await collect_until(ws, clock.jump(5_000) - 5_000)
        replayed = await receive_json(ws)
    assert replayed == first[-1] and second[-1] != first[-1]


async def test_a_drop_closes_the_socket_and_a_stall_keeps_ponging_without_trades(
        sim_cache_dir: Path, clock: MarketClock) -> None:
    async with running_sim(ws_config(sim_cache_dir, clock)) as sim, aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url(sim)) as ws:
            assert (await subscribe(ws, "BTCUSDT"))["success"]
            sim.state.faults.add("ws_drop")
            clock.jump(3_000)
            msg = await ws.receive(timeout=20)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        async with http.ws_connect(ws_url(sim)) as ws:
            assert (await subscribe(ws, "BTCUSDT"))["success"]
            sim.state.faults.add("ws_stall")
            clock.jump(3_000)
            for _ in range(200):  # the stall fault fires at the next push
                if sim.state.faults.fired["ws_stall"]:
                    break
                await asyncio.sleep(0.02)
            pushed = sim.state.ws_messages
            clock.jump(3_000)
            await ws.send_json({"op": "ping"})
            assert (await receive_json(ws))["op"] == "pong"  # alive, but silent
            assert sim.state.ws_messages == pushed


async def test_a_silent_client_is_cut(sim_cache_dir: Path, clock: MarketClock) -> None:
    config = ws_config(sim_cache_dir, clock, ws_idle_cut_s=0.3)
    async with running_sim(config) as sim, aiohttp.ClientSession() as http, http.ws_connect(ws_url(sim)) as ws:
        msg = await ws.receive(timeout=20)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert sim.state.ws_idle_cuts == 1


def test_the_market_clock_runs_fast_jumps_and_never_goes_back() -> None:
    wall = [1000.0]
    clock = MarketClock(5_000, speed=60, wall=lambda: wall[0])
    assert clock.now_ms() == 5_000
    wall[0] += 1
    assert clock.now_ms() == 65_000
    assert clock.jump(1_000) == 66_000
    with pytest.raises(ValueError):
        clock.jump(-1)
    clock.set_speed(0)
    wall[0] += 10
    assert clock.now_ms() == 66_000


async def test_a_match_split_across_two_messages_leaves_them_sharing_a_seq(sim_cache_dir: Path) -> None:
    base = ws_config(sim_cache_dir, MarketClock(0, speed=0))
    table = expected_trades(SimConfig(markets=base.markets, now_ms=MIDNIGHT_MS), "BTCUSDT", date(2024, 1, 10),
                            "linear")
    seqs, times = table.column("seq").to_pylist(), table.column("time_us").to_pylist()
    # the first k whose push, starting right after trade k-1, splits a shared seq at 1024
    def ceil_ms(us: int) -> int:
        return -(-us // 1000)

    k = next(k for k in range(1, len(seqs) - 1100) if ceil_ms(times[k - 1]) * 1000 < times[k]
             and seqs[k + 1023] == seqs[k + 1024])
    clock = MarketClock(ceil_ms(times[k - 1]), speed=0)  # trade k is the first one pushed
    async with running_sim(ws_config(sim_cache_dir, clock)) as sim, aiohttp.ClientSession() as http, \
            http.ws_connect(ws_url(sim)) as ws:
        assert (await subscribe(ws, "BTCUSDT"))["success"]
        clock.jump(ceil_ms(times[k + 1100]) - clock.now_ms())
        messages = await collect_until(ws, times[k + 1100] // 1000)
    assert messages[0]["data"][0]["seq"] == seqs[k]
    assert len(messages[0]["data"]) == 1024 and messages[0]["data"][-1]["seq"] == messages[1]["data"][0]["seq"]
