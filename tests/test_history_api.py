"""The drop-in API: Settings from env, the provider factory, TradeTick ids, test mode."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fetch.errors import AuthError, InputError
from store import BybitConnectorHistory, Settings, TradeTick, create_history_provider, tick_id
from store.tick_ids import TICK_ID_SQL
from store.schema import open_store
from storeutil import sim_fetch_config


def test_settings_read_the_seed_guides_variable_names(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BYBIT_API_TIMEOUT", "7.5")
    monkeypatch.setenv("BYBIT_BACKFILL_MAX_RETRIES", "9")
    monkeypatch.setenv("BYBIT_BACKFILL_COOLDOWN_SECONDS", "30")
    monkeypatch.setenv("BACKFILL_CACHE_DIR", str(tmp_path / "c"))
    (tmp_path / ".env").write_text("BYBIT_SYMBOL=ethusdt\nBYBIT_API_SECRET=from-dotenv\n")
    settings = Settings()
    assert settings.bybit_api_timeout == 7.5 and settings.bybit_symbol == "ETHUSDT"
    config = settings.fetch_config()
    assert config.retry.max_retries == 9 and config.timeouts.total_s == 7.5
    assert config.breaker.cooldown_s == 30 and config.breaker.ban_cooldown_s >= 600, "403 bans last >= 10 min"
    assert config.credentials.api_secret == "from-dotenv"
    assert "from-dotenv" not in repr(settings) + str(settings) + repr(config)


def test_tick_ids_are_stable_63_bit_and_the_same_in_sql_and_python(tmp_path: Path) -> None:
    uuid = "3f1c9e2a-8b4d-4e6f-9a0b-1c2d3e4f5a6b"
    expected = int.from_bytes(hashlib.md5(uuid.encode()).digest()[:8], "big") & ((1 << 63) - 1)
    assert tick_id(uuid) == expected and 0 <= expected < 2**63
    assert tick_id("2290000000067893217") == 2290000000067893217
    assert tick_id("99999999999999999999") != 99999999999999999999, "too wide for int64: hashed"
    with open_store(tmp_path / "t.duckdb") as store:
        for value in (uuid, "2290000000067893217", "99999999999999999999", "202401020000000017", "abc"):
            sql = f"SELECT {TICK_ID_SQL} FROM (SELECT ? AS trade_id)"
            assert store.query_one(sql, [value])[0] == tick_id(value), value


@pytest.mark.parametrize("in_python", [True, False], ids=["hashed-in-python", "in-duckdb"])
@pytest.mark.parametrize("kinds", ["mixed", "uuids"])
def test_a_staged_days_tick_ids_are_the_same_as_sqls_and_pythons(monkeypatch, in_python: bool, kinds: str) -> None:
    """Staging computes the tick id in Python for a small batch (`store.tick_ids`: per id when some
    id is a number, else the digests joined and read at once) and in DuckDB for a big one (the
    number, else md5's low bytes swapped by numpy): the same value as TICK_ID_SQL and `tick_id` for
    every kind of id, edge cases included, and the same staged side."""
    import random
    import uuid as uuid_module

    import pyarrow as pa

    from fetch.market_span import Market
    from fetch.models import TRADE_SCHEMA
    from store import Store, ingest
    from store.ingest import Staging

    monkeypatch.setattr(ingest, "PYTHON_TICKS_ROWS", 10**9 if in_python else 0)
    rng = random.Random(5)
    ids = [str(uuid_module.UUID(int=rng.getrandbits(128))) for _ in range(2_000)]
    if kinds == "mixed":
        ids += ([str(rng.randint(0, 10**19)) for _ in range(2_000)]
                + ["0", "0001", "9223372036854775807", "9223372036854775808", "99999999999999999999", "-5",
                   "12a", "", " 12", "1" * 19, "202401020000000017", "\u0663"])
    n = len(ids)
    sides = [rng.choice(["buy", "sell"]) for _ in range(n)]
    batch = pa.table({"category": ["spot"] * n, "symbol": ["BTCUSDT"] * n, "trade_id": ids,
                      "time_us": list(range(n)), "price": [1.0] * n, "qty": [1.0] * n, "side": sides,
                      "is_block_trade": [None] * n, "source": ["archive"] * n}, schema=TRADE_SCHEMA)
    with Store.private() as private:
        staging = Staging(private, market=Market("spot", "BTCUSDT"))
        staging.append(batch)
        staging.detach()
        assert staging.table is not None
        staged = staging.table.column("tick_id").to_pylist()
        assert staging.table.column("is_sell").to_pylist() == [side == "sell" for side in sides]
        assert staging.table.schema == ingest._STAGE_SCHEMA
        private.register("ids", pa.table({"trade_id": ids}))
        in_sql = [row[0] for row in private.query(f"SELECT {TICK_ID_SQL} FROM ids")]
    assert staged == in_sql == [tick_id(value) for value in ids]


def test_the_factory_serves_bybit_and_refuses_other_sources(tmp_path) -> None:
    assert isinstance(create_history_provider(Settings(_env_file=None)), BybitConnectorHistory)
    with pytest.raises(InputError, match="DATA_SOURCE"):
        create_history_provider(Settings(data_source="binance", _env_file=None))


async def test_test_single_window_proves_the_key_with_one_signed_call(sim, tmp_path) -> None:
    settings = Settings(backfill_db_path=tmp_path / "h.duckdb", context_backfill_test_mode=True,
                        _env_file=None)
    history = BybitConnectorHistory(settings, fetch_config=sim_fetch_config(sim.url, credentials=True))
    ticks = await history.backfill_with_cache(datetime(2024, 1, 1, tzinfo=UTC),
                                              datetime(2024, 1, 2, tzinfo=UTC))
    assert 0 < len(ticks) <= 10 and all(isinstance(t, TradeTick) for t in ticks)
    assert sim.state.requests["/v5/execution/list"] == 1
    assert not (tmp_path / "h.duckdb").exists(), "test mode does no backfill"
    keyless = BybitConnectorHistory(settings, fetch_config=sim_fetch_config(sim.url))
    with pytest.raises(AuthError, match="BYBIT_API_KEY"):
        await keyless.test_single_window()


async def test_naive_datetimes_are_refused(tmp_path) -> None:
    history = BybitConnectorHistory(Settings(backfill_db_path=tmp_path / "h.duckdb", _env_file=None))
    with pytest.raises(InputError, match="timezone-aware"):
        await history.backfill_with_cache(datetime(2024, 1, 1), datetime(2024, 1, 2))
