"""Signed requests: the emulator checks HMAC-SHA256 over the raw query exactly as Bybit does."""

from __future__ import annotations

import time

import aiohttp
from simutil import KEY, SECRET, hmac_sign, signed_get, signed_headers
from yarl import URL

from sim import SimConfig, running_sim
from sim.auth import sign, verify

PATH = "/v5/execution/list"
QUERY = "category=linear&limit=5"


async def test_a_correctly_signed_request_passes_and_the_signature_matches_an_independent_hmac(sim):
    ts = int(time.time() * 1000)
    expected = hmac_sign(SECRET, f"{ts}{KEY}5000{QUERY}")
    assert sign(SECRET, f"{ts}{KEY}5000{QUERY}") == expected
    async with aiohttp.ClientSession() as s:
        resp, body = await signed_get(s, sim.url, PATH, QUERY, ts_ms=ts)
    assert resp.status == 200 and body["retCode"] == 0, body
    assert len(body["result"]["list"]) == 5


async def test_a_wrong_signature_gets_10004_naming_the_signed_string(sim):
    async with aiohttp.ClientSession() as s:
        _, body = await signed_get(s, sim.url, PATH, QUERY, sign="0" * 64)
        _, upper = await signed_get(s, sim.url, PATH, QUERY, secret="other-secret")
    assert body["retCode"] == 10004 and "origin_string" in body["retMsg"]
    assert upper["retCode"] == 10004


async def test_signing_a_differently_encoded_query_than_the_one_sent_fails(sim):
    """The server signs the bytes on the wire: signing the decoded form of %3A is a 10004."""
    sent = "category=linear&cursor=5%3Aabc%2C5%3Aabc"
    headers = signed_headers("category=linear&cursor=5:abc,5:abc")
    async with aiohttp.ClientSession() as s, s.get(URL(f"{sim.url}{PATH}?{sent}", encoded=True),
                                                   headers=headers) as resp:
        body = await resp.json()
    assert body["retCode"] == 10004


async def test_an_unknown_or_missing_key_gets_10003(sim):
    async with aiohttp.ClientSession() as s:
        _, unknown = await signed_get(s, sim.url, PATH, QUERY, key="nobody")
        async with s.get(f"{sim.url}{PATH}?{QUERY}") as resp:
            missing = await resp.json()
    assert unknown["retCode"] == 10003
    assert missing["retCode"] == 10003


async def test_a_stale_or_future_timestamp_gets_10002(sim):
    now = int(time.time() * 1000)
    async with aiohttp.ClientSession() as s:
        _, stale = await signed_get(s, sim.url, PATH, QUERY, ts_ms=now - 6000)
        _, future = await signed_get(s, sim.url, PATH, QUERY, ts_ms=now + 1500)
        _, wide = await signed_get(s, sim.url, PATH, QUERY, ts_ms=now - 6000, recv_window="20000")
    assert stale["retCode"] == 10002 and "recv_window" in stale["retMsg"]
    assert future["retCode"] == 10002
    assert wide["retCode"] == 0


def test_the_timestamp_window_is_half_open_at_plus_one_second():
    keys, server = {KEY: SECRET}, 1_700_000_000_000

    def code(ts: int) -> int | None:
        headers = signed_headers(QUERY, ts_ms=ts)
        failure = verify(headers, QUERY, keys, server, 5000)
        return failure.ret_code if failure else None

    assert code(server - 5000) is None
    assert code(server + 999) is None
    assert code(server - 5001) == 10002
    assert code(server + 1000) == 10002


async def test_a_skewed_server_clock_needs_a_resync_via_market_time(sim_config):
    config = SimConfig(**{**sim_config.__dict__, "clock_skew_ms": 120_000})
    async with running_sim(config) as sim, aiohttp.ClientSession() as s:
        _, naive = await signed_get(s, sim.url, PATH, QUERY)
        async with s.get(f"{sim.url}/v5/market/time") as resp:
            server = await resp.json()
        offset = server["time"] - int(time.time() * 1000)
        _, synced = await signed_get(s, sim.url, PATH, QUERY, ts_ms=int(time.time() * 1000) + offset)
    assert naive["retCode"] == 10002
    assert 118_000 < offset < 122_000
    assert int(server["result"]["timeSecond"]) == server["time"] // 1000 or abs(
        int(server["result"]["timeSecond"]) - server["time"] // 1000) <= 1
    assert int(server["result"]["timeNano"]) // 1_000_000_000 == int(server["result"]["timeSecond"])
    assert synced["retCode"] == 0
