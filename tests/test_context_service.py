"""The context service, imitated exactly: its own dataclass settings, its two `hasattr` checks,
`asyncio.wait_for(backfill_with_cache(today 00:00, now))` at start-up, then `iterate_trades` of the
previous day into its own pydantic `TradeTick`. Against the emulator, whose market follows the wall
clock (so "today" and "yesterday" are the real ones, as the service computes them).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from pathlib import Path

import pytest
from pydantic import BaseModel

from fetch.errors import InputError
from sim import MarketSpec, SimConfig, running_sim
from sim.market import expected_trades
from store import BybitConnectorHistory
from store.history import tick_id

TRADES_PER_DAY = 400_000  # recent-trade's 1000 reach back ~4 minutes: today is never complete by REST


class Side(str, Enum):
    BUY = "buy"
    SELL = "sell"


class ServiceTradeTick(BaseModel):
    """The service's own TradeTick: the same six fields."""

    ts: datetime
    price: float
    qty: float
    side: Side
    isBuyerMaker: bool
    id: int


@dataclass
class ServiceSettings:
    """The service's settings: the seed guide's names lower-cased, plain strings, and its own fields."""

    symbol: str = "BTCUSDT"
    data_source: str = "bybit"
    bybit_api_key: str | None = None
    bybit_api_secret: str | None = None
    bybit_rest_base_url: str = "http://127.0.0.1:9"  # the service defaults to Bybit; tests never may
    bybit_api_timeout: int = 30
    bybit_backfill_max_retries: int = 3
    bybit_backfill_retry_base: float = 0.01
    bybit_backfill_rate_limit_threshold: int = 5
    bybit_backfill_cooldown_seconds: int = 1
    bybit_backfill_public_delay_ms: int = 0
    bybit_backfill_max_concurrent_chunks: int = 2
    backfill_cache_enabled: bool = True
    backfill_cache_dir: str = "./cache"
    context_backfill_test_mode: bool = False
    backfill_timeout_seconds: int = 120
    redis_url: str = "redis://localhost:6379"          # ...and many fields that are not ours
    strategies: list[str] = field(default_factory=lambda: ["momentum"])


def to_service_tick(tick: object) -> ServiceTradeTick:
    return ServiceTradeTick(ts=tick.ts, price=tick.price, qty=tick.qty, side=tick.side,  # type: ignore[attr-defined]
                            isBuyerMaker=tick.isBuyerMaker, id=tick.id)  # type: ignore[attr-defined]


async def service_start_up(settings: ServiceSettings) -> tuple[list[ServiceTradeTick], list[ServiceTradeTick],
                                                               BybitConnectorHistory, object]:
    """What the service does at start-up, line for line."""
    provider = BybitConnectorHistory(settings)
    if hasattr(provider, "test_mode") and provider.test_mode:
        await provider.test_single_window()
    now = datetime.now(UTC)
    today = datetime.combine(now.date(), datetime.min.time(), tzinfo=UTC)
    today_ticks: list[ServiceTradeTick] = []
    if hasattr(provider, "cache_enabled") and provider.cache_enabled:
        trades = await asyncio.wait_for(provider.backfill_with_cache(today, now), settings.backfill_timeout_seconds)
        today_ticks = [to_service_tick(t) for t in trades]
    today_summary = provider.last_summary  # (our addition: what the service would log or expose)
    previous = [to_service_tick(t) async for t in provider.iterate_trades(
        today - timedelta(days=1), today - timedelta(milliseconds=1))]
    return today_ticks, previous, provider, today_summary


@pytest.fixture
def live_config(sim_cache_dir: Path) -> SimConfig:
    """A market that follows the wall clock, listed long before yesterday."""
    return SimConfig(markets=[MarketSpec("BTCUSDT", "linear", trades_per_day=TRADES_PER_DAY,
                                         listed=date(2024, 1, 1))], cache_dir=sim_cache_dir)


async def test_the_service_builds_the_provider_from_its_own_settings_and_gets_the_truth(
        live_config: SimConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    async with running_sim(live_config) as sim:
        # What the service's settings cannot say comes from our environment.
        monkeypatch.setenv("BACKFILL_DB_PATH", str(tmp_path / "service.duckdb"))
        monkeypatch.setenv("BYBIT_ARCHIVE_BASE_URL", sim.url)
        settings = ServiceSettings(bybit_rest_base_url=sim.url, backfill_cache_dir=str(tmp_path / "cache"),
                                   bybit_api_key="plain-key", bybit_api_secret="plain-secret-value")
        caplog.set_level(logging.INFO, logger="context.backfill")
        today_ticks, previous, provider, summary = await service_start_up(settings)
    assert provider.symbol == "BTCUSDT" and provider.cache_enabled and not provider.test_mode
    assert "plain-secret-value" not in repr(provider.settings) and "plain-secret-value" not in caplog.text
    # Yesterday: every trade of the archive day, ascending, with the service's ids.
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    truth = expected_trades(live_config, "BTCUSDT", yesterday, "linear")
    assert sorted(t.id for t in previous) == sorted(tick_id(i) for i in truth.column("trade_id").to_pylist())
    assert [t.ts for t in previous] == sorted(t.ts for t in previous)
    assert all(t.side in (Side.BUY, Side.SELL) and t.isBuyerMaker == (t.side is Side.SELL) for t in previous)
    # Today without a follower: what recent-trade reaches, and one WARNING naming the gap.
    assert today_ticks, "the newest trades are there"
    assert summary is not None
    minutes_into_day = (datetime.now(UTC) - datetime.combine(datetime.now(UTC).date(), datetime.min.time(),
                                                           tzinfo=UTC)).total_seconds() / 60
    if minutes_into_day > 15:  # recent-trade reaches ~4 minutes back: the rest of today is a gap
        assert summary.gaps, "the gap is exposed"  # type: ignore[attr-defined]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "incomplete" in r.getMessage()]
        assert warnings and summary.gaps[0].reason in warnings[0].getMessage()  # type: ignore[attr-defined]


async def test_a_timed_out_backfill_leaves_the_store_consistent_and_closed(
        live_config: SimConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from store.schema import open_store
    from store.report import verify

    async with running_sim(live_config) as sim:
        monkeypatch.setenv("BACKFILL_DB_PATH", str(tmp_path / "service.duckdb"))
        monkeypatch.setenv("BYBIT_ARCHIVE_BASE_URL", sim.url)
        provider = BybitConnectorHistory(ServiceSettings(bybit_rest_base_url=sim.url,
                                                         backfill_cache_dir=str(tmp_path / "cache")))
        today = datetime.combine(datetime.now(UTC).date(), datetime.min.time(), tzinfo=UTC)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(provider.backfill_with_cache(today - timedelta(days=3), today), 0.05)
    with open_store(tmp_path / "service.duckdb") as store:  # closed: another writer can open it at once
        assert verify(store).ok


@pytest.mark.parametrize("field_name,value,says", [
    ("bybit_api_timeout", "abc", "BYBIT_API_TIMEOUT"),
    ("bybit_backfill_max_concurrent_chunks", 0, "BYBIT_BACKFILL_MAX_CONCURRENT_CHUNKS"),
    ("symbol", "no such symbol!", "not a Bybit symbol"),
])
def test_an_invalid_service_setting_is_a_clear_input_error_not_an_attribute_error(
        field_name: str, value: object, says: str) -> None:
    settings = ServiceSettings()
    setattr(settings, field_name, value)
    with pytest.raises(InputError, match=says):
        BybitConnectorHistory(settings)


async def test_with_the_follower_running_beside_it_today_since_midnight_is_complete(
        tmp_path: Path, sim_cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`follow` runs (in the service's own loop, through the Python API) on a market whose clock
    stands still and is moved by the test from just before today's midnight to the wall clock's now;
    then the service starts up as usual. Every trade of today up to the newest one comes back, and
    the only gap left is after the newest trade (nothing newer had happened when it asked)."""
    from sim import MarketClock, running_sim
    from store.follow import Follower
    from tests.followutil import follow_config, follow_sim_config, truth, until

    today = datetime.combine(datetime.now(UTC).date(), datetime.min.time(), tzinfo=UTC)
    start_ms = int(today.timestamp() * 1000) - 60_000
    clock = MarketClock(start_ms, speed=0)
    async with running_sim(follow_sim_config(sim_cache_dir, clock)) as sim:
        db = tmp_path / "service.duckdb"
        follower = Follower(follow_config(sim.url, db), clock=lambda: clock.now_ms() / 1000)
        task = asyncio.create_task(follower.run())
        try:
            await until(lambda: sim.state.ws_subscriptions >= 1, "the first subscription")
            clock.jump(2_000)
            await until(lambda: follower.stats["bridges"] >= 1, "the first bridge")
            target_ms = int(datetime.now(UTC).timestamp() * 1000)
            while clock.now_ms() < target_ms:  # an hour of market at a time, each committed before the next
                reached = clock.jump(min(3_600_000, target_ms - clock.now_ms()))
                last = truth(sim.config, reached, (today.date(),))
                if last:
                    newest = last[-1][1]
                    await until(lambda n=newest: (follower.books["BTCUSDT"].committed_newest_us or -1) >= n,
                                "the follower's commit of the newest trade")
            monkeypatch.setenv("BACKFILL_DB_PATH", str(db))
            monkeypatch.setenv("BYBIT_ARCHIVE_BASE_URL", sim.url)
            settings = ServiceSettings(bybit_rest_base_url=sim.url, backfill_cache_dir=str(tmp_path / "cache"))
            provider = BybitConnectorHistory(settings)
            now = datetime.fromtimestamp(clock.now_ms() / 1000, UTC)
            trades = await asyncio.wait_for(provider.backfill_with_cache(today, now), 120)
            summary = provider.last_summary
        finally:
            follower.stop()
            await asyncio.wait_for(task, 60)
    expected = {i for i, t in truth(sim.config, clock.now_ms(), (today.date(),)) if t < int(now.timestamp() * 1e6)}
    got = [t.exec_id for t in trades]
    assert len(got) == len(set(got)) and set(got) == expected, (len(got), len(expected))
    assert summary is not None
    newest_us = max(int(t.ts.timestamp() * 1_000_000) for t in trades) if trades else int(today.timestamp() * 1e6)
    assert all(g.kind == "uncovered" and g.start_us >= newest_us - 1_000 for g in summary.gaps), summary.gaps
