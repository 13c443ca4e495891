"""The fault matrix: every way the emulator can misbehave, and a refresh or an executions crawl that
still ends with exactly the exchange's trades (or fills) in the store, each once, with whole-day
coverage and summary counters that say what happened.

A refresh here covers 2024-01-08 .. 2024-01-10 12:00 of BTCUSDT (linear, 2000 trades a day): two
archive days plus today's REST tail, i.e. five requests when nothing goes wrong (the archive index,
two day files, the exchange's clock, recent-trade). Waits are test-sized (backoff from 10 ms, 0.2 s breaker cooldowns); the
ten-minute IP ban runs on a fake clock shared by the emulator and the client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from relutil import (
    NOW_US,
    TimedState,
    archive_days,
    assert_exactly_the_truth,
    fill_ids,
    recording_sleep,
    stored_fill_ids,
)
from storeutil import KEY, SECRET, day, sim_fetch_config, us

from fetch import BybitClient, Credentials, FetchConfig, ParameterError, RateLimits, Timeouts
from fetch.market_span import Span
from sim import SimState, running_sim
from sim.market import expected_count
from store import Store, refresh, refresh_executions
from store.schema import open_store

TAIL = "/v5/market/recent-trade"
EXECUTIONS = "/v5/execution/list"
INDEX = "/trading/BTCUSDT/"          # a prefix of every file too: `times=1` hits the index, asked first
FILE_8 = "/trading/BTCUSDT/BTCUSDT2024-01-08"
FAULT_FREE_REQUESTS = 5              # index, two day files, /v5/market/time, recent-trade


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(tmp_path / "store.duckdb")
    yield opened
    opened.close()


@dataclass(frozen=True)
class Case:
    """One row of the matrix: faults to inject, then what the summary must say."""

    name: str
    faults: list[tuple[str, dict[str, Any]]]
    errors: dict[str, int]
    retries: int
    openings: int = 0
    timeout_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# Short enough to keep the suite quick, long enough that no answer of a busy CI host (seen: 0.9 s
# late) is cut by it; the injected delays exceed it by far.
SHORT_TIMEOUT_S = 2.0


def with_timeout(config: FetchConfig, timeout_s: float | None) -> FetchConfig:
    return config if timeout_s is None else replace(config, timeouts=Timeouts(total_s=timeout_s))


REFRESH_CASES = [
    Case("HTTP 500 twice on a day file", [("http_500", {"path": FILE_8, "times": 2})], {"ServerError": 2}, 2),
    Case("HTTP 502 on the archive index", [("http_502", {"path": INDEX})], {"ServerError": 1}, 1),
    Case("HTTP 503 on recent-trade", [("http_503", {"path": TAIL})], {"ServerError": 1}, 1),
    Case("retCode 10016 twice on recent-trade", [("ret_10016", {"path": TAIL, "times": 2})],
         {"ServerError": 2}, 2),
    Case("a timeout on recent-trade", [("latency", {"path": TAIL, "value": 3000})], {"TransportError": 1}, 1,
         timeout_s=SHORT_TIMEOUT_S),
    Case("a timeout on a day file", [("latency", {"path": FILE_8, "value": 3000})], {"TransportError": 1}, 1,
         timeout_s=SHORT_TIMEOUT_S),
    Case("a day file cut mid-body", [("drop", {"path": FILE_8})], {"TransportError": 1}, 1),
    Case("recent-trade cut mid-body", [("drop", {"path": TAIL})], {"TransportError": 1}, 1),
    Case("a day file stalling mid-body (no byte for the API timeout)", [("stall", {"path": FILE_8, "value": 10})],
         {"TransportError": 1}, 1, timeout_s=SHORT_TIMEOUT_S),
    Case("malformed JSON twice on recent-trade", [("malformed_json", {"path": TAIL, "times": 2})],
         {"BadResponse": 2}, 2),
    Case("10006 five times in a row opens the breaker",
         [("ret_10006", {"path": TAIL, "times": 5, "value": 50})], {"RateLimited": 5}, 5, openings=1),
    Case("every transient fault at once", [("http_500", {"path": FILE_8}), ("drop", {"path": INDEX}),
                                          ("ret_10016", {"path": TAIL}), ("malformed_json", {"path": TAIL})],
         {"ServerError": 2, "TransportError": 1, "BadResponse": 1}, 4),
]


@pytest.mark.parametrize("case", REFRESH_CASES, ids=[c.name for c in REFRESH_CASES])
async def test_a_refresh_under_a_transient_fault_stores_exactly_the_exchanges_trades(
        sim, store: Store, case: Case) -> None:
    for kind, options in case.faults:
        sim.state.faults.add(kind, **options)
    config = with_timeout(sim_fetch_config(sim.url), case.timeout_s)
    summary = await refresh(store, config, "BTCUSDT", us(day(8)), NOW_US)
    assert sum(sim.state.faults.fired.values()) == sum(o.get("times", 1) for _, o in case.faults)
    assert summary.errors_by_type == case.errors
    assert summary.retries == case.retries > 0
    assert summary.requests == FAULT_FREE_REQUESTS + case.retries
    assert summary.breaker_openings == case.openings
    assert summary.days_failed == [] and summary.days_fetched == 2 and summary.tail_rows == 1000
    assert archive_days(store, "BTCUSDT") == [day(8), day(9)]
    assert_exactly_the_truth(store, sim.config, "BTCUSDT", day(8), NOW_US)


async def test_a_day_file_slower_than_the_archive_timeout_is_cut_and_retried(sim, store: Store) -> None:
    # Bytes stop for 10 s, well inside a 30 s stall allowance, but past a 2 s total for the file.
    sim.state.faults.add("stall", path=FILE_8, value=10)
    config = replace(sim_fetch_config(sim.url), timeouts=Timeouts(total_s=30, archive_total_s=SHORT_TIMEOUT_S))
    summary = await refresh(store, config, "BTCUSDT", us(day(8)), NOW_US)
    assert summary.errors_by_type == {"TransportError": 1} and summary.retries == 1
    assert_exactly_the_truth(store, sim.config, "BTCUSDT", day(8), NOW_US)


def test_the_archive_timeout_is_a_setting() -> None:
    from store.settings import Settings

    timeouts = Settings(bybit_archive_timeout=42, bybit_api_timeout=7, _env_file=None).fetch_config().timeouts
    assert (timeouts.archive_total_s, timeouts.total_s) == (42, 7)


async def test_an_api_answer_over_the_size_cap_is_refused_unbuffered_and_never_retried(sim, store: Store) -> None:
    from fetch.errors import ResponseTooLarge
    from fetch.transport import MAX_BODY_BYTES

    sim.state.faults.add("huge_json", path=TAIL, times=-1, value=MAX_BODY_BYTES * 4)
    with pytest.raises(ResponseTooLarge, match="over the 16 MB cap"):
        await refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(8)), NOW_US)
    assert sim.state.faults.fired["huge_json"] == 1, "a terminal error: asked once"
    assert store.query_one("SELECT count(*) FROM trades") == (0,)


async def test_10006_waits_until_the_advertised_reset_then_retries(sim, store: Store) -> None:
    sim.state.faults.add("ret_10006", path=TAIL, value=400)  # X-Bapi-Limit-Reset-Timestamp = now + 400 ms
    config = sim_fetch_config(sim.url)
    delays: list[float] = []
    async with BybitClient(config, sleep=recording_sleep(delays)) as client:
        summary = await refresh(store, config, "BTCUSDT", us(day(8)), NOW_US, client=client)
    assert summary.errors_by_type == {"RateLimited": 1} and summary.retries == 1
    assert client.stats.rate_limited == 1
    # The backoff schedule is capped at 0.2 s here, so a longer wait is the advertised reset.
    assert [d for d in delays if d > 0.2] and all(0.2 < d < 0.6 for d in delays if d > 0.2)
    assert sim.state.statuses(TAIL) == [200, 200]  # 10006 travels in an HTTP 200
    assert_exactly_the_truth(store, sim.config, "BTCUSDT", day(8), NOW_US)


async def test_an_ip_ban_opens_the_breaker_and_nothing_is_sent_for_ten_minutes_then_one_probe(
        sim_config, store: Store, fake_clock) -> None:
    # The emulator's ban and the client's cooldown run on one fake clock: Bybit's real 600 s ban, no wait.
    state = SimState(sim_config, clock=fake_clock)
    state.faults.add("http_403", path=TAIL)
    async with running_sim(sim_config, state) as sim:
        config = sim_fetch_config(sim.url)  # ban cooldown 600 s, as Bybit's ban
        async with BybitClient(config, clock=fake_clock, sleep=fake_clock.sleep, rng=lambda: 0.5) as client:
            summary = await refresh(store, config, "BTCUSDT", us(day(8)), NOW_US, client=client)
    # The ban lasts exactly the cooldown, so a request sent during it would show as a second 403.
    api = [(path, status) for path, _, status in sim.state.log if path.startswith("/v5/")]
    assert api == [("/v5/market/time", 200), (TAIL, 403), (TAIL, 200)], \
        "the clock, one refused request, then the single probe after the ban"
    assert sim.state.bans == 1 and sim.state.forbidden == 1
    assert sum(fake_clock.sleeps) >= 600.0
    assert summary.breaker_openings == 1 and summary.errors_by_type == {"IpBanned": 1}
    assert summary.retries == 1
    assert_exactly_the_truth(store, sim.config, "BTCUSDT", day(8), NOW_US)


async def test_an_ip_ban_in_a_signed_crawl_stops_all_traffic_until_the_cooldown_ends(
        sim_config, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="context.backfill")
    cooldown = 0.6
    state = TimedState(replace(sim_config, ban_seconds=cooldown))
    state.faults.add("http_403", path=EXECUTIONS)
    start, end = us(day(10)) - 28 * 86_400_000_000, us(day(10))
    async with running_sim(state.config, state) as sim:
        config = replace(sim_fetch_config(sim.url, credentials=True, ban_cooldown_s=cooldown),
                         limits=RateLimits(max_concurrency=1))
        summary = await refresh_executions(store, config, Span(start, end))
    opened = [r.created for r in caplog.records if r.getMessage().startswith("Bybit circuit breaker opened")]
    assert len(opened) == 1 and summary.breaker_openings == 1
    arrivals = [t for t, path in state.arrivals if path.startswith("/v5/")]
    during = [t for t in arrivals if opened[0] < t < opened[0] + cooldown]
    assert during == [], "a request reached the exchange while the breaker was open"
    statuses = state.statuses(EXECUTIONS)
    assert statuses[0] == 403 and 403 not in statuses[1:], "the probe after the cooldown was let through"
    assert summary.errors_by_type == {"IpBanned": 1} and summary.retries == 1
    stored = stored_fill_ids(store)
    assert len(stored) == len(set(stored)) and set(stored) == fill_ids(sim.config, start, end)


@pytest.mark.parametrize("skew_ms, recv_window_ms", [(3000, 2000), (-3000, 5000)],
                         ids=["server ahead by 3 s", "server behind by 3 s"])
async def test_a_skewed_exchange_clock_is_learned_first_and_the_signed_crawl_completes(
        sim_config, store: Store, skew_ms: int, recv_window_ms: int) -> None:
    # Bybit accepts server - recv_window <= ts < server + 1000: a server 3 s ahead is refused only with
    # a recv_window under 3 s, a server 3 s behind always.
    start, end = us(day(10)) - 14 * 86_400_000_000, us(day(10))
    # 100 ms per answer: the second window's first page leaves before the first one's 10002 is back.
    async with running_sim(replace(sim_config, clock_skew_ms=skew_ms, latency_ms=100)) as sim:
        config = replace(sim_fetch_config(sim.url, credentials=True),
                         credentials=Credentials(KEY, SECRET, recv_window_ms=recv_window_ms))
        async with BybitClient(config) as client:
            summary = await refresh_executions(store, config, Span(start, end), client=client)
            assert abs(client.clock_offset_ms - skew_ms) < 1000
    # The crawl learns the exchange's clock before its first signed request (it also bounds the
    # coverage by it), so no request goes out with a stale clock: no 10002 at all. The 10002 ->
    # resync -> retry-once flow itself is pinned in tests/test_fetch_client_fake.py.
    assert summary.errors_by_type == {} and summary.retries == 0
    assert sim.state.requests["/v5/market/time"] == 1
    stored = stored_fill_ids(store)
    assert len(stored) == len(set(stored)) and set(stored) == fill_ids(sim.config, start, end)


EXECUTION_CASES = [
    Case("HTTP 500 twice", [("http_500", {"path": EXECUTIONS, "times": 2})], {"ServerError": 2}, 2),
    Case("HTTP 502", [("http_502", {"path": EXECUTIONS})], {"ServerError": 1}, 1),
    Case("HTTP 503", [("http_503", {"path": EXECUTIONS})], {"ServerError": 1}, 1),
    Case("retCode 10016", [("ret_10016", {"path": EXECUTIONS})], {"ServerError": 1}, 1),
    Case("a timeout", [("latency", {"path": EXECUTIONS, "value": 3000})], {"TransportError": 1}, 1,
         timeout_s=SHORT_TIMEOUT_S),
    Case("a page cut mid-body", [("drop", {"path": EXECUTIONS})], {"TransportError": 1}, 1),
    Case("10006 with a reset timestamp", [("ret_10006", {"path": EXECUTIONS, "value": 150})],
         {"RateLimited": 1}, 1),
    Case("malformed JSON", [("malformed_json", {"path": EXECUTIONS})], {"BadResponse": 1}, 1),
]


@pytest.mark.parametrize("case", EXECUTION_CASES, ids=[c.name for c in EXECUTION_CASES])
async def test_an_executions_crawl_under_a_transient_fault_stores_every_fill_once(
        sim, store: Store, case: Case) -> None:
    for kind, options in case.faults:
        sim.state.faults.add(kind, **options)
    start, end = us(day(10)) - 21 * 86_400_000_000, us(day(10))
    config = with_timeout(sim_fetch_config(sim.url, credentials=True), case.timeout_s)
    clean = await refresh_executions(store, config, Span(start, end))
    assert clean.errors_by_type == case.errors and clean.retries == case.retries > 0
    assert clean.windows_fetched == 3 and clean.breaker_openings == case.openings
    stored = stored_fill_ids(store)
    assert len(stored) == len(set(stored)) and set(stored) == fill_ids(sim.config, start, end)
    covered = store.query("SELECT min(start_us), max(end_us), count(*) FROM coverage "
                          "WHERE source = 'executions'")
    assert covered == [(start, end, 3)]


async def test_a_truncated_day_fails_alone_is_reported_and_the_next_refresh_fetches_it(
        sim, store: Store) -> None:
    sim.state.faults.add("truncate_gzip", day=day(8))
    first = await refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(7)), NOW_US)
    assert first.days_failed == ["2024-01-08"] and first.days_fetched == 2
    assert first.errors_by_type == {"ArchiveError": 1} and first.retries == 0
    [gap] = [g for g in first.gaps if g.start_us == us(day(8))]
    assert gap.end_us == us(day(9)) and "unusable" in gap.reason and "truncated" in gap.reason
    assert archive_days(store, "BTCUSDT") == [day(7), day(9)]
    assert store.query_one("SELECT count(*) FROM trades WHERE time_us >= ? AND time_us < ?",
                           [us(day(8)), us(day(9))]) == (0,), "nothing of the bad day is half-stored"
    assert verify_ok(store)
    second = await refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(7)), NOW_US)
    assert second.days_fetched == 1 and second.days_failed == [] and second.days_from_store == 2
    assert archive_days(store, "BTCUSDT") == [day(7), day(8), day(9)]
    assert_exactly_the_truth(store, sim.config, "BTCUSDT", day(7), NOW_US)


async def test_a_drifted_csv_header_fails_that_day_with_a_message_naming_the_header(
        sim, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="context.backfill")
    sim.state.faults.add("drift_header", day=day(8))
    summary = await refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(8)), NOW_US)
    assert summary.days_failed == ["2024-01-08"] and summary.errors_by_type == {"ArchiveError": 1}
    [message] = [r.getMessage() for r in caplog.records if "2024-01-08 failed" in r.getMessage()]
    assert "unknown header 'ts,symbol,side,px,qty,tickDirection,trade_id" in message
    assert "timestamp,symbol,side,size,price" in message, "the message says what was expected"
    [gap] = [g for g in summary.gaps if g.start_us == us(day(8))]
    assert "unknown header" in gap.reason and "rerun" in gap.reason
    assert archive_days(store, "BTCUSDT") == [day(9)]
    assert verify_ok(store)


async def test_rows_out_of_order_are_stored_and_exported_in_time_order(sim, store: Store,
                                                                       tmp_path: Path) -> None:
    sim.state.faults.add("shuffle_rows", day=day(8))
    cache = tmp_path / "cache"
    summary = await refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(8)), NOW_US, cache_dir=cache)
    assert sim.state.faults.fired["shuffle_rows"] == 1
    assert summary.days_failed == [] and summary.duplicates_skipped == 0 and summary.conflicts == 0
    assert_exactly_the_truth(store, sim.config, "BTCUSDT", day(8), NOW_US)
    table = pq.read_table(cache / "backfill_2024-01-08.parquet")
    times = table.column("T").to_pylist()
    assert times == sorted(times) and len(times) == expected_count(sim.config, "BTCUSDT", day(8))


async def test_a_days_file_holding_the_next_days_trades_fails_that_day_and_the_rerun_completes_it(
        sim, store: Store) -> None:
    sim.state.faults.add("dup_across_days", day=day(8))  # day 8's file ends with day 9's first 10 trades
    summary = await refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(8)), NOW_US)
    assert sim.state.faults.fired["dup_across_days"] == 1
    assert summary.days_failed == ["2024-01-08"] and summary.conflicts == 0
    [gap] = [g for g in summary.gaps if g.start_us == us(day(8))]
    assert "the time lies outside" in gap.reason and "line " in gap.reason
    assert archive_days(store, "BTCUSDT") == [day(9)]
    again = await refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(8)), NOW_US)
    assert again.days_fetched == 1 and again.days_failed == []
    assert_exactly_the_truth(store, sim.config, "BTCUSDT", day(8), NOW_US)


async def test_10001_with_an_empty_list_on_recent_trade_is_an_error_never_no_trades(sim,
                                                                                   store: Store) -> None:
    sim.state.faults.add("ret_10001_empty", path=TAIL)
    with pytest.raises(ParameterError, match="BTCUSDT") as info:
        await refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(8)), NOW_US)
    assert info.value.ret_code == 10001
    assert sim.state.requests[TAIL] == 1, "a parameter error is never retried"
    assert store.query_one("SELECT count(*) FROM coverage WHERE source = 'rest'") == (0,)
    assert store.query_one("SELECT count(*) FROM trades WHERE source = 'rest'") == (0,)
    # The tail is asked before any day is written, so the refusal leaves the whole store as it was.
    assert store.query_one("SELECT count(*) FROM coverage") == (0,)
    assert store.query_one("SELECT count(*) FROM trades") == (0,)


async def test_a_fault_free_run_sends_the_minimum_and_a_covered_range_sends_nothing(sim,
                                                                                   store: Store) -> None:
    summary = await refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(8)), NOW_US)
    assert summary.requests == FAULT_FREE_REQUESTS and summary.retries == 0 and summary.errors_by_type == {}
    before = len(sim.state.log)
    again = await refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(8)), us(day(10)))
    assert again.requests == 0 and len(sim.state.log) == before


def verify_ok(store: Store) -> bool:
    from store.report import verify

    report = verify(store)
    assert report.ok, report.checks
    return True

