"""The trade model: determinism, the REST tail computed without the whole day, ids and hashes."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta

import pytest

from sim import MarketSpec, SimConfig
from sim.config import day_start_ms
from sim.market import connection, expected_trades, mix32, recent_trades, spot_exec_id, trade_uuid

DAY = date(2024, 1, 10)


def config_for(spec: MarketSpec, now_ms: int, tmp_path) -> SimConfig:
    return SimConfig(now_ms=now_ms, markets=[spec], cache_dir=tmp_path)


@pytest.mark.parametrize("category,symbol", [("linear", "BTCUSDT"), ("inverse", "BTCUSD"), ("spot", "BTCUSDT")])
@pytest.mark.parametrize("offset_ms", [1, 3_600_000 + 17, 43_200_000, 86_399_999])
def test_the_rest_tail_is_exactly_the_newest_trades_of_the_ground_truth(tmp_path, category, symbol, offset_ms):
    spec = MarketSpec(symbol, category, trades_per_day=20_000, listed=date(2024, 1, 1))
    now_ms = day_start_ms(DAY) + offset_ms
    config = config_for(spec, now_ms, tmp_path)
    truth = (expected_trades(config, symbol, DAY - timedelta(days=1)).to_pylist()
             + expected_trades(config, symbol, DAY).to_pylist())
    tail = recent_trades(config, spec, now_ms, 1000)
    assert [t.exec_id for t in tail] == [r["exec_id"] for r in reversed(truth[-1000:])]
    assert [t.time_us for t in tail] == [r["time_us"] for r in reversed(truth[-1000:])]
    assert all(t.time_us <= now_ms * 1000 for t in tail)


def test_the_tail_of_a_busy_day_is_cheap(tmp_path):
    spec = MarketSpec("BTCUSDT", "linear", trades_per_day=1_500_000)
    config = config_for(spec, day_start_ms(DAY) + 50_000_000, tmp_path)
    tail = recent_trades(config, spec, config.market_now_ms(), 1000)  # its speed is bench/'s to measure
    assert len(tail) == 1000


def test_the_tail_stops_at_the_listing_day(tmp_path):
    spec = MarketSpec("ETHUSDT", "linear", trades_per_day=100, listed=DAY - timedelta(days=2))
    config = config_for(spec, day_start_ms(DAY) + 43_200_000, tmp_path)
    assert len(recent_trades(config, spec, config.market_now_ms(), 1000)) == 100 + 100 + 50


def test_trades_are_a_pure_function_of_the_seed(tmp_path):
    spec = MarketSpec("BTCUSDT", "linear", trades_per_day=500)
    a = expected_trades(config_for(spec, day_start_ms(DAY), tmp_path), "BTCUSDT", date(2024, 1, 2))
    b = expected_trades(config_for(spec, day_start_ms(DAY), tmp_path), "BTCUSDT", date(2024, 1, 2))
    c = expected_trades(SimConfig(seed=8, now_ms=day_start_ms(DAY), markets=[spec]), "BTCUSDT", date(2024, 1, 2))
    assert a.equals(b) and not a.equals(c)
    assert a["trade_id"][0].as_py() == trade_uuid(7, "BTCUSDT", date(2024, 1, 2), 0)
    h = hashlib.md5(b"7|BTCUSDT|2024-01-02|0").hexdigest()
    assert a["trade_id"][0].as_py().replace("-", "") == h


def test_spot_and_linear_markets_of_one_symbol_trade_differently(tmp_path):
    specs = [MarketSpec("BTCUSDT", "linear", trades_per_day=300), MarketSpec("BTCUSDT", "spot", trades_per_day=300)]
    config = SimConfig(now_ms=day_start_ms(DAY), markets=specs, cache_dir=tmp_path)
    linear = expected_trades(config, "BTCUSDT", date(2024, 1, 2), "linear")["time_us"].to_pylist()
    spot = expected_trades(config, "BTCUSDT", date(2024, 1, 2), "spot")["time_us"].to_pylist()
    assert linear != spot and all(t % 1000 == 0 for t in spot)


def test_python_and_sql_hashes_agree():
    xs = [0, 1, 12345678, 2**32 - 1, 987654321012]
    sql = connection().execute("SELECT " + ", ".join(f"mix32({x})" for x in xs)).fetchone()
    assert list(sql) == [mix32(x) for x in xs]


def test_spot_exec_ids_fit_in_a_signed_64_bit_integer():
    big = spot_exec_id(date(9999, 12, 31), 9_999_999)
    assert len(spot_exec_id(date(2024, 1, 1), 0)) == 19 and int(big) < 2**63
