"""Rate limits: per-endpoint 10006 with X-Bapi-Limit* headers, and the IP limit's 403 ban."""

from __future__ import annotations

import aiohttp
from conftest import SIM_NOW
from simutil import signed_get

from sim import SimConfig, SimState, running_sim
from sim.limits import EndpointLimiter, IpLimiter


def small(sim_config: SimConfig, **changes: object) -> SimConfig:
    return SimConfig(**{**sim_config.__dict__, **changes})


async def test_the_endpoint_limit_answers_10006_and_every_response_carries_the_limit_headers(sim_config, fake_clock):
    config = small(sim_config, endpoint_limits={"/v5/execution/list": 3})
    state = SimState(config, clock=fake_clock)
    async with running_sim(config, state) as sim, aiohttp.ClientSession() as s:
        answers = [await signed_get(s, sim.url, "/v5/execution/list", "category=linear&limit=1") for _ in range(4)]
        fake_clock.advance(1.0)
        after_reset = await signed_get(s, sim.url, "/v5/execution/list", "category=linear&limit=1")
        async with s.get(sim.url + "/v5/market/recent-trade?category=linear&symbol=BTCUSDT&limit=1") as resp:
            public_headers = resp.headers
    codes = [body["retCode"] for _, body in answers]
    assert codes == [0, 0, 0, 10006]
    assert answers[3][1]["retMsg"] == "Too many visits!" and answers[3][0].status == 200
    assert [r.headers["X-Bapi-Limit-Status"] for r, _ in answers] == ["2", "1", "0", "0"]
    assert all(r.headers["X-Bapi-Limit"] == "3" for r, _ in answers)
    reset = int(answers[3][0].headers["X-Bapi-Limit-Reset-Timestamp"])
    assert reset == (int(SIM_NOW.timestamp()) + 1) * 1000  # the end of the second the 4th call hit
    assert after_reset[1]["retCode"] == 0
    assert state.rate_limited == 1
    assert "X-Bapi-Limit" not in public_headers  # market endpoints have no per-endpoint limit


async def test_limits_are_per_api_key(sim_config, fake_clock):
    config = small(sim_config, endpoint_limits={"/v5/execution/list": 1},
                   api_keys={"test-key": "test-secret", "k2": "s2"})
    async with running_sim(config, SimState(config, clock=fake_clock)) as sim, aiohttp.ClientSession() as s:
        _, first = await signed_get(s, sim.url, "/v5/execution/list", "category=linear")
        _, other = await signed_get(s, sim.url, "/v5/execution/list", "category=linear", key="k2", secret="s2")
        _, again = await signed_get(s, sim.url, "/v5/execution/list", "category=linear")
    assert [first["retCode"], other["retCode"], again["retCode"]] == [0, 0, 10006]


async def test_exceeding_the_ip_limit_bans_all_v5_requests_until_the_ban_ends(sim_config, fake_clock):
    config = small(sim_config, ip_limit=5, ip_window_s=5.0, ban_seconds=600.0)
    state = SimState(config, clock=fake_clock)
    url = "/v5/market/recent-trade?category=linear&symbol=BTCUSDT&limit=1"
    async with running_sim(config, state) as sim, aiohttp.ClientSession() as s:
        statuses = []
        for _ in range(7):
            async with s.get(sim.url + url) as resp:
                statuses.append(resp.status)
                body = await resp.text()
        async with s.get(sim.url + "/v5/market/time") as resp:
            other_endpoint = resp.status
        async with s.get(sim.url + "/trading/BTCUSDT/BTCUSDT2024-01-02.csv.gz") as resp:
            archive = resp.status
        fake_clock.advance(599.0)
        async with s.get(sim.url + url) as resp:
            still = resp.status
        fake_clock.advance(1.5)
        async with s.get(sim.url + url) as resp:
            recovered = resp.status
    assert statuses == [200] * 5 + [403, 403]
    assert body == "access too frequent"
    assert other_endpoint == 403 and archive == 200  # the archive is another host: never banned
    assert still == 403 and recovered == 200
    assert state.bans == 1 and state.forbidden == 4


async def test_the_ip_window_rolls(sim_config, fake_clock):
    limiter = IpLimiter(3, 5.0, 60.0, fake_clock)
    assert [limiter.check().allowed for _ in range(3)] == [True] * 3
    fake_clock.advance(5.01)
    assert limiter.check().allowed
    assert not limiter.banned


def test_endpoint_windows_reset_each_second(fake_clock):
    limiter = EndpointLimiter({"/x": 2}, fake_clock)
    assert limiter.hit("/y", "k") is None
    assert [limiter.hit("/x", "k").allowed for _ in range(3)] == [True, True, False]  # type: ignore[union-attr]
    fake_clock.advance(1)
    status = limiter.hit("/x", "k")
    assert status is not None and status.allowed and status.remaining == 1
