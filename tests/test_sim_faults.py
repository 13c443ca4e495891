"""Every fault kind, seen from a plain aiohttp client, plus the counters tests rely on."""

from __future__ import annotations

import gzip
import json
import time
import zlib
from datetime import date

import aiohttp
import pytest
from simutil import parse_gz_csv, signed_get

from sim import SimConfig, running_sim
from sim.faults import KINDS, Faults, RequestInfo
from sim.market import expected_trades

RECENT = "/v5/market/recent-trade"
RECENT_URL = RECENT + "?category=linear&symbol=BTCUSDT&limit=5"
FILE = "/trading/BTCUSDT/BTCUSDT2024-01-04.csv.gz"
DAY = date(2024, 1, 4)


async def get(sim, path: str) -> tuple[int, bytes, dict[str, str]]:
    async with aiohttp.ClientSession() as s, s.get(sim.url + path) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


@pytest.mark.parametrize("kind,status", [("http_500", 500), ("http_502", 502), ("http_503", 503)])
async def test_http_errors_hit_the_next_matching_request_only(sim, kind, status):
    sim.state.faults.add(kind, path=RECENT)
    assert (await get(sim, "/v5/market/time"))[0] == 200  # other paths untouched
    assert (await get(sim, RECENT_URL))[0] == status
    assert (await get(sim, RECENT_URL))[0] == 200
    assert sim.state.statuses(RECENT) == [status, 200]
    assert sim.state.faults.fired[kind] == 1


@pytest.mark.parametrize("kind,code", [("ret_10016", 10016), ("ret_10006", 10006), ("ret_10001_empty", 10001)])
async def test_ret_code_faults_are_http_200_envelopes(sim, kind, code):
    sim.state.faults.add(kind, times=2, value=500 if kind == "ret_10006" else None)
    before_ms = time.time() * 1000
    answers = [await get(sim, RECENT_URL) for _ in range(3)]
    after_ms = time.time() * 1000
    bodies = [json.loads(body) for _, body, _ in answers]
    assert [a[0] for a in answers] == [200, 200, 200]
    assert [b["retCode"] for b in bodies] == [code, code, 0]
    if kind == "ret_10006":
        reset = int(answers[0][2]["X-Bapi-Limit-Reset-Timestamp"])
        assert before_ms + 500 - 1 <= reset <= after_ms + 500  # the answer's time + 500 ms
        assert sim.state.rate_limited == 2
    if kind == "ret_10001_empty":
        assert bodies[0]["result"] == {"category": "", "list": []}


async def test_latency_delays_the_answer(sim):
    sim.state.faults.add("latency", value=150)
    started = time.perf_counter()
    assert (await get(sim, RECENT_URL))[0] == 200
    assert time.perf_counter() - started >= 0.14


async def test_configured_latency_applies_to_every_request(sim_config):
    config = SimConfig(**{**sim_config.__dict__, "latency_ms": 120.0})
    async with running_sim(config) as slow:
        for path in ("/v5/market/time", "/trading/BTCUSDT/"):
            started = time.perf_counter()
            assert (await get(slow, path))[0] == 200
            assert time.perf_counter() - started >= 0.11


async def test_drop_cuts_the_body_after_the_headers(sim):
    sim.state.faults.add("drop", path=RECENT)
    async with aiohttp.ClientSession() as s:
        async with s.get(sim.url + RECENT_URL) as resp:
            assert resp.status == 200 and int(resp.headers["Content-Length"]) > 0
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        async with s.get(sim.url + RECENT_URL) as resp:
            assert (await resp.json())["retCode"] == 0


async def test_drop_on_an_archive_file(sim):
    sim.state.faults.add("drop", path="/trading", day=DAY)
    async with aiohttp.ClientSession() as s, s.get(sim.url + FILE) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


async def test_malformed_json_is_a_200_that_does_not_parse(sim):
    sim.state.faults.add("malformed_json")
    status, body, headers = await get(sim, RECENT_URL)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    with pytest.raises(ValueError):
        json.loads(body)


async def test_http_403_starts_a_ban(sim):
    sim.state.faults.add("http_403", path=RECENT)
    assert (await get(sim, RECENT_URL))[:2] == (403, b"access too frequent")
    assert (await get(sim, "/v5/market/time"))[0] == 403
    assert sim.state.bans == 1 and sim.state.forbidden == 2


async def test_truncate_gzip_serves_a_short_file_that_looks_complete(sim):
    sim.state.faults.add("truncate_gzip", day=DAY, symbol="BTCUSDT")
    status, body, headers = await get(sim, FILE)
    assert status == 200 and int(headers["Content-Length"]) == len(body)
    with pytest.raises((EOFError, zlib.error)):
        gzip.decompress(body)
    full = (await get(sim, FILE))[1]
    assert body == full[: len(body)] and 0.55 < len(body) / len(full) < 0.65


async def test_drift_header_renames_and_reorders_columns(sim):
    sim.state.faults.add("drift_header", day=DAY)
    header, rows = parse_gz_csv((await get(sim, FILE))[1])
    assert header[:5] == ["ts", "symbol", "side", "px", "qty"] and "trdMatchID" not in header
    assert len(rows) == 2000


async def test_shuffle_rows_keeps_the_trades_but_not_the_order(sim, sim_config):
    sim.state.faults.add("shuffle_rows", day=DAY, times=-1)
    _, rows = parse_gz_csv((await get(sim, FILE))[1])
    _, again = parse_gz_csv((await get(sim, FILE))[1])
    ids = [r[6] for r in rows]
    truth = expected_trades(sim_config, "BTCUSDT", DAY)["trade_id"].to_pylist()
    assert ids != truth and sorted(ids) == sorted(truth) and rows == again  # seeded: same order twice


async def test_dup_across_days_appends_the_next_days_first_trades(sim, sim_config):
    sim.state.faults.add("dup_across_days", day=DAY)
    _, rows = parse_gz_csv((await get(sim, FILE))[1])
    _, next_rows = parse_gz_csv((await get(sim, "/trading/BTCUSDT/BTCUSDT2024-01-05.csv.gz"))[1])
    assert len(rows) == 2010 and rows[-10:] == next_rows[:10]


async def test_archive_faults_match_on_day_and_symbol_only(sim):
    sim.state.faults.add("truncate_gzip", day=date(2024, 1, 6), symbol="BTCUSDT")
    assert (await get(sim, RECENT_URL))[0] == 200
    gzip.decompress((await get(sim, FILE))[1])  # other day: intact
    gzip.decompress((await get(sim, "/trading/BTCUSD/BTCUSD2024-01-06.csv.gz"))[1])  # other symbol: intact
    assert sim.state.faults.fired["truncate_gzip"] == 0


async def test_a_fault_on_a_signed_endpoint_still_counts_the_request(sim):
    sim.state.faults.add("http_502", path="/v5/execution/list")
    async with aiohttp.ClientSession() as s:
        async with s.get(sim.url + "/v5/execution/list?category=linear") as resp:
            assert resp.status == 502
        _, body = await signed_get(s, sim.url, "/v5/execution/list", "category=linear")
    assert body["retCode"] == 0
    assert sim.state.requests["/v5/execution/list"] == 2
    assert [entry[1:] for entry in sim.state.log] == [("category=linear", 502), ("category=linear", 200)]


async def test_random_mix_is_seeded_and_hits_about_the_requested_share(sim):
    sim.state.faults.random_mix(0.5, ["http_503", "ret_10016", "truncate_gzip"], seed=3, path=RECENT)
    outcomes = []
    for _ in range(40):
        status, body, _ = await get(sim, RECENT_URL)
        outcomes.append(status if status != 200 else json.loads(body)["retCode"])
    faulty = [o for o in outcomes if o != 0]
    assert 8 <= len(faulty) <= 32 and set(faulty) <= {503, 10016}
    assert sim.state.faults.fired["truncate_gzip"] == 0  # not applicable to REST
    sim.state.faults.clear()
    assert (await get(sim, RECENT_URL))[0] == 200


def test_the_registry_validates_kinds_and_counts():
    faults = Faults()
    with pytest.raises(ValueError):
        faults.add("nope")
    with pytest.raises(ValueError):
        faults.add("http_500", times=0)
    always = faults.add("http_500", times=-1)
    req = RequestInfo("/v5/market/time")
    for _ in range(3):
        assert faults.take(req, ("http_500",)) == [always]
    assert always.times == -1 and faults.fired["http_500"] == 3
    assert len(KINDS) == 35  # HTTP, archive, recent-trade and 7 WebSocket kinds (sim.ws)
