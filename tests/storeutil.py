"""Helpers for store tests: a FetchConfig aimed at the emulator, ground truth, and SQL checks."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from fetch.config import BreakerPolicy, Credentials, Endpoints, FetchConfig, RetryPolicy
from sim import SimConfig
from sim.market import expected_trades
from store import Store
from store.timeutil import day_start_us

KEY, SECRET = "test-key", "test-secret"


def sim_fetch_config(url: str, *, credentials: bool = False, max_retries: int = 5,
                     ban_cooldown_s: float = 600.0, cooldown_s: float = 0.2) -> FetchConfig:
    """Bybit behaviour with test-sized waits: backoff from 10 ms, short breaker cooldowns."""
    return FetchConfig(
        endpoints=Endpoints(rest_base_url=url, archive_base_url=url),
        credentials=Credentials(KEY, SECRET) if credentials else Credentials(),
        retry=RetryPolicy(max_retries=max_retries, base_s=0.01, max_delay_s=0.2),
        breaker=BreakerPolicy(cooldown_s=cooldown_s, ban_cooldown_s=ban_cooldown_s),
    )


def day(n: int) -> date:
    return date(2024, 1, n)


def us(d: date) -> int:
    return day_start_us(d)


def dt(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def truth_ids(config: SimConfig, symbol: str, first: date, last_exclusive: date,
              category: str = "linear") -> set[str]:
    ids: set[str] = set()
    current = first
    while current < last_exclusive:
        ids.update(expected_trades(config, symbol, current, category).column("trade_id").to_pylist())
        current += timedelta(days=1)
    return ids


def stored_ids(store: Store, symbol: str, start_us: int, end_us: int, category: str = "linear") -> list[str]:
    rows = store.query("SELECT trade_id FROM trades WHERE category = ? AND symbol = ? AND time_us >= ? "
                       "AND time_us < ?", [category, symbol, start_us, end_us])
    return [r[0] for r in rows]


def duplicate_keys(store: Store) -> list[tuple]:
    return store.query("SELECT category, symbol, trade_id, count(*) FROM trades GROUP BY ALL "
                       "HAVING count(*) > 1")


def total_requests(state) -> int:
    """Every request the emulator answered (API and archive)."""
    return len(state.log)
