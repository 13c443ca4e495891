"""The fetch layer against the local Bybit emulator (`sim/`): the issue's acceptance checks.

Everything runs on 127.0.0.1; waits are either tiny real ones (the ban test) or skipped through an
injected sleep, so the whole module stays fast.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from fetch.market_span import Market
from fetch import (ArchiveError, ArchiveFile, ArchiveSource, AuthError, BreakerPolicy, BybitClient,
                   Credentials, Endpoints, ExecutionSource, FetchConfig, InputError, ParameterError,
                   RateLimits, RecentTradeSource, RetryPolicy, read_archive)
from sim import SimConfig, SimState, running_sim
from sim.config import day_start_ms
from sim.faults import RequestInfo
from sim.fills import expected_fills
from sim.market import expected_count, expected_trades
from sim.server import RunningSim

KEY, SECRET = "test-key", "test-secret"


def fetch_config(sim: RunningSim, *, secret: str = SECRET, key: str = KEY, **kw: object) -> FetchConfig:
    return FetchConfig(endpoints=Endpoints(sim.url, sim.url), credentials=Credentials(key, secret), **kw)  # type: ignore[arg-type]


def quick_sleep(record: list[float] | None = None) -> Callable[[float], Awaitable[None]]:
    """A sleep that notes the asked delay but waits at most 10 ms (retries without real backoff)."""
    async def sleep(seconds: float) -> None:
        if record is not None:
            record.append(seconds)
        await asyncio.sleep(min(seconds, 0.01))
    return sleep


@pytest.fixture
async def client(sim: RunningSim) -> AsyncIterator[BybitClient]:
    async with BybitClient(fetch_config(sim), sleep=quick_sleep()) as c:
        yield c


# --- executions ---------------------------------------------------------------------------------

async def test_signed_crawl_over_60_days_returns_every_fill_exactly_once(sim: RunningSim,
                                                                          client: BybitClient) -> None:
    end = sim.config.market_now_ms()
    start = end - 60 * 86_400_000
    got: list[str] = []
    windows = []
    async for window, executions in ExecutionSource(client).fetch("linear", start, end):
        windows.append(window)
        got.extend(e.exec_id for e in executions)
        assert all(window[0] * 1000 <= e.time_us < window[1] * 1000 for e in executions)
    truth = expected_fills(sim.config, start, end - 1, category="linear")
    assert len(got) == len(set(got)) == len(truth) > 500
    assert set(got) == {f["execId"] for f in truth}
    assert windows[0][0] == start and windows[-1][1] == end and len(windows) == 9
    assert {"Trade", "Funding"} <= {f["execType"] for f in truth}
    assert sim.state.rate_limited == 0 and sim.state.forbidden == 0


async def test_a_fill_on_a_window_boundary_is_yielded_once(sim: RunningSim, client: BybitClient) -> None:
    truth = expected_fills(sim.config, day_start_ms(date(2024, 1, 1)), sim.config.market_now_ms(),
                           category="linear")
    t = int(truth[len(truth) // 2]["execTime"])  # a real fill's time, used as a window edge
    got = []
    source = ExecutionSource(client)
    for window in [(t - 86_400_000, t), (t, t + 86_400_000)]:
        got += [e.exec_id for e in await source.fetch_window("linear", window)]
    expected = expected_fills(sim.config, t - 86_400_000, t + 86_400_000 - 1, category="linear")
    assert sorted(got) == sorted(f["execId"] for f in expected)


async def test_a_crawl_under_the_emulators_real_limits_gets_no_10006_and_no_403(
        sim_config: SimConfig) -> None:
    # Bybit's real numbers (600 per 5 s per IP, 50/s on execution/list) and enough pages (> 100) that
    # an unpaced crawl with 8 windows in flight would exceed 50/s.
    config = dataclasses.replace(sim_config, fills_per_day=400)
    async with running_sim(config) as sim:
        async with BybitClient(fetch_config(sim)) as client:
            end = config.market_now_ms()
            start = end - 56 * 86_400_000
            started = time.monotonic()
            count = sum([len(x) async for _, x in ExecutionSource(client).fetch("linear", start, end)])
            elapsed = time.monotonic() - started
            assert count == len(expected_fills(config, start, end - 1, category="linear"))
            requests = sim.state.requests["/v5/execution/list"]
            assert requests > 100 and client.stats.requests == requests
            assert sim.state.rate_limited == 0 and sim.state.forbidden == 0 and sim.state.bans == 0
            assert client.stats.retries == 0 and client.stats.errors_by_type == {}
            assert elapsed >= (requests - 50) / 50  # it was paced: an unpaced crawl takes well under 1 s


async def test_execution_crawl_without_credentials_asks_for_them(sim: RunningSim) -> None:
    async with BybitClient(FetchConfig(endpoints=Endpoints(sim.url, sim.url))) as client:
        with pytest.raises(AuthError, match="BYBIT_API_KEY and BYBIT_API_SECRET"):
            async for _ in ExecutionSource(client).fetch("linear", 0, 86_400_000):
                pass
    assert sim.state.requests["/v5/execution/list"] == 0


async def test_clock_skew_is_resynced_once_then_signed_calls_succeed(sim_config: SimConfig) -> None:
    async with running_sim(dataclasses.replace(sim_config, clock_skew_ms=20_000)) as sim:
        async with BybitClient(fetch_config(sim), sleep=quick_sleep()) as client:
            end = sim.config.market_now_ms()
            result = [x async for x in ExecutionSource(client).fetch("linear", end - 86_400_000, end)]
            assert len(result) == 1
            assert abs(client.clock_offset_ms - 20_000) < 1_000
        assert sim.state.requests["/v5/market/time"] == 1


# --- auth and secrecy ---------------------------------------------------------------------------

async def test_wrong_secret_public_calls_go_on_private_calls_stop_with_a_clear_error(
        sim: RunningSim, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-secret-value"
    async with BybitClient(fetch_config(sim, secret=wrong), sleep=quick_sleep(), sign_public=True) as client:
        tail = await RecentTradeSource(client).fetch(Market("linear", "BTCUSDT"), limit=10)
        assert len(tail.trades) == 10
        with pytest.raises(AuthError, match="refused the API key") as info:
            await client.get_private("/v5/execution/list", {"category": "linear"})
        shown = repr(client) + repr(client.config) + str(client.stats) + str(info.value) + repr(info.value)
    assert sim.state.requests["/v5/execution/list"] == 1  # an auth error is never retried
    assert wrong not in shown and wrong not in caplog.text


async def test_the_secret_never_appears_in_logs_or_reprs(sim: RunningSim, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "a-very-particular-secret"
    config = dataclasses.replace(sim.config, api_keys={"k2": secret})
    async with running_sim(config) as sim2:
        sim2.state.faults.add("http_502", path="/v5/execution/list")
        async with BybitClient(fetch_config(sim2, key="k2", secret=secret), sleep=quick_sleep()) as client:
            end = config.market_now_ms()
            async for _ in ExecutionSource(client).fetch("linear", end - 86_400_000, end):
                pass
            text = repr(client) + repr(client.config) + repr(client.config.credentials) + str(client.stats)
    assert secret not in text and secret not in caplog.text
    assert "retrying" in caplog.text


# --- recent trades ------------------------------------------------------------------------------

async def test_recent_tail_matches_ground_truth_and_is_sorted(sim: RunningSim, client: BybitClient) -> None:
    tail = await RecentTradeSource(client).fetch(Market("linear", "BTCUSDT"))
    assert tail.limit == 1000 and len(tail.trades) == 1000
    keys = [(t.time_us, t.trade_id) for t in tail.trades]
    assert keys == sorted(keys)
    assert (tail.oldest_us, tail.newest_us) == (keys[0][0], keys[-1][0])
    now_day = date(2024, 1, 10)
    truth = expected_trades(sim.config, "BTCUSDT", now_day, "linear")
    truth_ids = truth.column("exec_id").to_pylist()[-1000:]
    assert {t.trade_id for t in tail.trades} == set(truth_ids)


async def test_spot_tail_has_60_trades_with_19_digit_ids(client: BybitClient) -> None:
    tail = await RecentTradeSource(client).fetch(Market("spot", "BTCUSDT"))
    assert len(tail.trades) == 60
    assert all(t.trade_id.isdigit() and len(t.trade_id) == 19 for t in tail.trades)


async def test_unknown_symbol_is_a_parameter_error_naming_it(sim: RunningSim, client: BybitClient) -> None:
    with pytest.raises(ParameterError, match="NOPEUSDT"):
        await RecentTradeSource(client).fetch(Market("linear", "NOPEUSDT"))
    sim.state.faults.add("ret_10001_empty", path="/v5/market/recent-trade")
    with pytest.raises(ParameterError, match="BTCUSDT"):
        await RecentTradeSource(client).fetch(Market("linear", "BTCUSDT"))
    assert sim.state.requests["/v5/market/recent-trade"] == 2


async def test_injected_5xx_10016_and_drops_are_retried_and_succeed(sim: RunningSim) -> None:
    path = "/v5/market/recent-trade"
    for kind in ("http_500", "http_502", "http_503", "ret_10016", "drop"):
        sim.state.faults.add(kind, path=path)
    delays: list[float] = []
    async with BybitClient(fetch_config(sim), sleep=quick_sleep(delays), rng=lambda: 0.5) as client:
        tail = await RecentTradeSource(client).fetch(Market("linear", "BTCUSDT"), limit=50)
        stats = client.stats
    assert len(tail.trades) == 50
    assert sim.state.requests[path] == 6 and stats.requests == 6 and stats.retries == 5
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert stats.errors_by_type == {"ServerError": 4, "TransportError": 1}
    assert stats.peak_throttle > 1.0


async def test_malformed_json_and_rate_limits_are_retried(sim: RunningSim) -> None:
    path = "/v5/market/recent-trade"
    sim.state.faults.add("malformed_json", path=path)
    sim.state.faults.add("ret_10006", path=path, value=300)
    delays: list[float] = []
    async with BybitClient(fetch_config(sim), sleep=quick_sleep(delays), rng=lambda: 0.5) as client:
        tail = await RecentTradeSource(client).fetch(Market("linear", "BTCUSDT"), limit=5)
        assert client.stats.rate_limited == 1
        assert client.stats.errors_by_type == {"BadResponse": 1, "RateLimited": 1}
    assert len(tail.trades) == 5
    # Waited for the advertised reset (~300 ms from the answer; less if this machine is slow to read
    # it), not the backoff (0.5 s here): only an upper bound, which a busy machine cannot break.
    assert delays[1] < 0.5


async def test_too_many_failures_give_up_with_the_last_error(sim: RunningSim) -> None:
    sim.state.faults.add("http_503", path="/v5/market/recent-trade", times=-1)
    async with BybitClient(fetch_config(sim, retry=RetryPolicy(max_retries=2)), sleep=quick_sleep()) as client:
        with pytest.raises(Exception, match="HTTP 503"):
            await RecentTradeSource(client).fetch(Market("linear", "BTCUSDT"), limit=5)
    assert sim.state.requests["/v5/market/recent-trade"] == 3


# --- the IP limit and the ban -------------------------------------------------------------------

async def test_public_burst_stays_under_the_ip_limit_however_late_requests_arrive(sim_config: SimConfig) -> None:
    # The IP limit scaled down (60 per 1 s instead of 600 per 5 s) so the test takes about 3 s. The
    # first budget's worth of requests reaches the limit's counter 0.9 s late (a slow network, or a
    # busy machine: how the CI once saw a ban), the next ones at once: a client that counted from
    # its sends would put both batches into one of the emulator's windows.
    # A ban ends quickly on both sides, so a client that breaks the limit fails the test, not hangs it.
    config = dataclasses.replace(sim_config, ip_limit=60, ip_window_s=1.0, ban_seconds=0.2)
    limits = RateLimits(ip_requests=60, ip_window_s=1.0, max_concurrency=64)
    path = "/v5/market/recent-trade"
    async with running_sim(config) as sim:
        sim.state.faults.add("latency", path=path, value=900, times=54)
        policy = {"limits": limits, "breaker": BreakerPolicy(ban_cooldown_s=0.2), "retry": RetryPolicy(max_retries=0)}
        async with BybitClient(fetch_config(sim, **policy)) as client:
            params = {"category": "linear", "symbol": "BTCUSDT", "limit": 1}
            await asyncio.gather(*(client.get_public(path, params) for _ in range(120)), return_exceptions=True)
        assert sim.state.requests[path] == 120
        assert sim.state.forbidden == 0 and sim.state.bans == 0


async def test_a_403_ban_opens_the_breaker_and_nothing_is_sent_until_the_cooldown_ends(
        sim_config: SimConfig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="context.backfill")
    config = dataclasses.replace(sim_config, ban_seconds=0.6)
    breaker = BreakerPolicy(ban_cooldown_s=1.0)
    assert BreakerPolicy().ban_cooldown_s >= 600  # the default stays Bybit's ten minutes
    path = "/v5/market/recent-trade"
    async with running_sim(config) as sim:
        sim.state.faults.add("http_403", path=path)
        async with BybitClient(fetch_config(sim, breaker=breaker)) as client:
            params = {"category": "linear", "symbol": "BTCUSDT", "limit": 1}
            started = time.monotonic()
            first = asyncio.create_task(client.get_public(path, params))
            for _ in range(500):  # until the 403 has come back (bounded; no fixed delay to outrun)
                if client.stats.breaker_openings == 1:
                    break
                await asyncio.sleep(0.01)
            assert sim.state.forbidden == 1 and sim.state.bans == 1 and client.stats.breaker_openings == 1
            others = [asyncio.create_task(client.get_public(path, params)) for _ in range(5)]
            seen = []
            # The breaker opened after `started`, so until started + cooldown it is certainly open:
            # watch the wire that long, however slowly this machine gets there.
            while time.monotonic() < started + breaker.ban_cooldown_s - 0.05:
                seen.append(sim.state.requests[path])
                await asyncio.sleep(0.05)
            await asyncio.gather(first, *others)
            elapsed = time.monotonic() - started
            assert set(seen) <= {1}  # nothing was sent while the breaker was open
            assert elapsed >= 1.0
            assert client.stats.breaker_openings == 1 and client.stats.rate_limited == 1
        assert sim.state.requests[path] == 7 and sim.state.forbidden == 1 and sim.state.bans == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Bybit circuit breaker opened") for m in messages)
    assert any(m.startswith("Bybit circuit breaker half-open") for m in messages)
    assert "Bybit circuit breaker closed" in messages


# --- the archive --------------------------------------------------------------------------------

async def test_archive_days_download_and_parse_to_the_ground_truth(sim: RunningSim, client: BybitClient,
                                                                   tmp_path: Path) -> None:
    source = ArchiveSource(client, tmp_path)
    days = await source.list_days(Market("linear", "BTCUSDT"))
    assert days == [date(2024, 1, 1) + timedelta(days=k) for k in range(9)]
    progress: list[int] = []
    results = [x async for x in source.fetch_days(Market("linear", "BTCUSDT"), days[6:], on_bytes=progress.append)]
    assert [d for d, _ in results] == days[6:]
    for day, outcome in results:
        assert isinstance(outcome, ArchiveFile) and outcome.day == day and outcome.size_bytes > 0
        table = read_archive(outcome.path, Market("linear", "BTCUSDT"), day)
        truth = expected_trades(sim.config, "BTCUSDT", day, "linear")
        assert table.num_rows == expected_count(sim.config, "BTCUSDT", day, "linear")
        assert sorted(table.column("trade_id").to_pylist()) == sorted(truth.column("trade_id").to_pylist())
        assert sorted(table.column("time_us").to_pylist()) == sorted(truth.column("time_us").to_pylist())
    assert sum(progress) == sum(o.size_bytes for _, o in results if isinstance(o, ArchiveFile))
    assert client.stats.bytes_downloaded >= sum(progress)


async def test_spot_archive_ids_are_stable_and_times_exact(sim: RunningSim, client: BybitClient,
                                                           tmp_path: Path) -> None:
    day = date(2024, 1, 9)  # has the rpi column
    file = await ArchiveSource(client, tmp_path).download_day(Market("spot", "BTCUSDT"), day)
    assert file is not None
    table = read_archive(file.path, Market("spot", "BTCUSDT"), day)
    truth = expected_trades(sim.config, "BTCUSDT", day, "spot")
    assert table.num_rows == truth.num_rows
    ids = table.column("trade_id").to_pylist()
    assert ids[0].startswith("20240109") and len(ids[0]) == 18
    assert sorted(table.column("time_us").to_pylist()) == sorted(truth.column("time_us").to_pylist())


async def test_a_truncated_day_is_an_archive_error_for_that_day_only(sim: RunningSim, client: BybitClient,
                                                                     tmp_path: Path) -> None:
    bad = date(2024, 1, 5)
    sim.state.faults.add("truncate_gzip", day=bad, times=-1)
    days = [date(2024, 1, 4), bad, date(2024, 1, 6)]
    parsed: dict[date, int | ArchiveError] = {}
    async for day, outcome in ArchiveSource(client, tmp_path).fetch_days(Market("linear", "BTCUSDT"), days):
        assert isinstance(outcome, ArchiveFile)
        try:
            parsed[day] = read_archive(outcome.path, Market("linear", "BTCUSDT"), day).num_rows
        except ArchiveError as exc:
            parsed[day] = exc
    assert isinstance(parsed[bad], ArchiveError) and parsed[bad].day == "2024-01-05"
    assert parsed[days[0]] == expected_count(sim.config, "BTCUSDT", days[0], "linear")
    assert parsed[days[2]] == expected_count(sim.config, "BTCUSDT", days[2], "linear")


async def test_drifted_header_is_an_archive_error_naming_the_header(sim: RunningSim, client: BybitClient,
                                                                    tmp_path: Path) -> None:
    day = date(2024, 1, 3)
    sim.state.faults.add("drift_header", day=day)
    file = await ArchiveSource(client, tmp_path).download_day(Market("linear", "BTCUSDT"), day)
    assert file is not None
    with pytest.raises(ArchiveError, match="unknown header.*ts,symbol") as info:
        read_archive(file.path, Market("linear", "BTCUSDT"), day)
    assert info.value.day == "2024-01-03"


async def test_shuffled_rows_parse_completely(sim: RunningSim, client: BybitClient, tmp_path: Path) -> None:
    day = date(2024, 1, 2)
    sim.state.faults.add("shuffle_rows", day=day)
    file = await ArchiveSource(client, tmp_path).download_day(Market("inverse", "BTCUSD"), day)
    assert file is not None
    table = read_archive(file.path, Market("inverse", "BTCUSD"), day)
    assert table.num_rows == expected_count(sim.config, "BTCUSD", day, "inverse")
    times = table.column("time_us").to_pylist()
    assert times != sorted(times)


async def test_a_dropped_download_is_retried_and_no_partial_file_is_left(sim: RunningSim, client: BybitClient,
                                                                        tmp_path: Path) -> None:
    day = date(2024, 1, 7)
    sim.state.faults.add("drop", path="/trading/BTCUSDT/BTCUSDT2024-01-07")
    file = await ArchiveSource(client, tmp_path).download_day(Market("linear", "BTCUSDT"), day)
    assert file is not None
    assert read_archive(file.path, Market("linear", "BTCUSDT"), day).num_rows == expected_count(
        sim.config, "BTCUSDT", day, "linear")
    assert sim.state.requests["/trading"] == 2 and client.stats.retries == 1
    assert [p.name for p in file.path.parent.iterdir()] == [file.path.name]


async def test_unpublished_day_is_none_and_unknown_symbol_is_an_input_error(
        sim: RunningSim, client: BybitClient, tmp_path: Path) -> None:
    source = ArchiveSource(client, tmp_path)
    results = [x async for x in source.fetch_days(Market("linear", "BTCUSDT"), [date(2024, 1, 9), date(2024, 1, 10)])]
    assert isinstance(results[0][1], ArchiveFile) and results[1] == (date(2024, 1, 10), None)
    with pytest.raises(InputError, match="unknown symbol NOPE"):
        await source.list_days(Market("linear", "NOPE"))


async def test_a_persistently_failing_day_is_an_error_value_not_an_exception(
        sim: RunningSim, tmp_path: Path) -> None:
    sim.state.faults.add("http_500", path="/trading/BTCUSDT/BTCUSDT2024-01-02", times=-1)
    config = fetch_config(sim, retry=RetryPolicy(max_retries=1))
    async with BybitClient(config, sleep=quick_sleep()) as client:
        days = [date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)]
        results = dict([x async for x in ArchiveSource(client, tmp_path).fetch_days(Market("linear", "BTCUSDT"), days)])
    assert isinstance(results[date(2024, 1, 2)], ArchiveError)
    assert "2024-01-02" in str(results[date(2024, 1, 2)])
    assert isinstance(results[date(2024, 1, 1)], ArchiveFile) and isinstance(results[date(2024, 1, 3)], ArchiveFile)


class InFlight(SimState):
    """Counts the requests the emulator is answering at once: each is counted on arrival and logged
    when its answer is ready (after the configured latency)."""

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        self.arrived = self.peak = 0

    def count(self, info: RequestInfo) -> None:
        self.arrived += 1
        self.peak = max(self.peak, self.arrived - len(self.log))
        super().count(info)


async def test_downloads_run_concurrently_up_to_the_bound(sim_config: SimConfig, tmp_path: Path) -> None:
    config = dataclasses.replace(sim_config, latency_ms=1000)  # long enough to overlap on a busy machine
    state = InFlight(config)
    async with running_sim(config, state) as sim:
        async with BybitClient(fetch_config(sim, archive_concurrency=4)) as client:
            days = [date(2024, 1, 1) + timedelta(days=k) for k in range(8)]
            results = [x async for x in ArchiveSource(client, tmp_path).fetch_days(Market("linear", "BTCUSDT"), days)]
    assert all(isinstance(o, ArchiveFile) for _, o in results)
    assert state.peak == 4, "four downloads at once, never more"


async def test_the_default_ten_minute_ban_is_waited_out_on_a_fake_clock(sim_config: SimConfig,
                                                                        fake_clock: Any) -> None:
    clock = fake_clock
    state = SimState(sim_config, clock=clock)  # the emulator's limits and bans run on the same fake clock
    path = "/v5/market/recent-trade"
    state.faults.add("http_403", path=path)
    async with running_sim(sim_config, state) as sim:
        async with BybitClient(fetch_config(sim), clock=clock, sleep=clock.sleep, rng=lambda: 0.5) as client:
            tail = await RecentTradeSource(client).fetch(Market("linear", "BTCUSDT"), limit=3)
            assert client.breaker.policy.ban_cooldown_s == 600.0
    assert len(tail.trades) == 3
    assert sim.state.statuses(path) == [403, 200]  # one refused request, then the probe after the ban
    assert sum(clock.sleeps) == pytest.approx(600.0)  # backoff 0.5 s + the rest of the cooldown


async def test_an_auth_error_shows_only_the_head_of_the_api_key(sim: RunningSim) -> None:
    key = "test-key"
    async with BybitClient(fetch_config(sim, key=key, secret="nope"), sleep=quick_sleep()) as client:
        with pytest.raises(AuthError) as info:
            await client.get_private("/v5/execution/list", {"category": "linear"})
    assert "10004" in str(info.value) and "test…" in str(info.value) and key not in str(info.value)
