"""The archive host: folder indexes, exact CSV formats, publication horizon, ground truth, caching."""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal

import aiohttp
import pytest
from simutil import parse_gz_csv

from sim import MarketSpec, SimConfig
from sim.archive import ensure_file
from sim.market import expected_count, expected_trades, trade_uuid

LINEAR_HEADER = ["timestamp", "symbol", "side", "size", "price", "tickDirection", "trdMatchID", "grossValue",
                 "homeNotional", "foreignNotional"]


async def fetch(sim, path: str) -> tuple[int, bytes, aiohttp.typedefs.LooseHeaders]:
    async with aiohttp.ClientSession() as s, s.get(sim.url + path) as resp:
        return resp.status, await resp.read(), resp.headers


async def test_the_index_lists_exactly_the_published_days(sim):
    status, body, _ = await fetch(sim, "/trading/BTCUSDT/")
    names = re.findall(r'href="([^"]+\.csv\.gz)"', body.decode())
    assert status == 200
    assert names == [f"BTCUSDT2024-01-0{d}.csv.gz" for d in range(1, 10)]
    _, spot, _ = await fetch(sim, "/spot/BTCUSDT/")
    assert re.findall(r'href="([^"]+\.csv\.gz)"', spot.decode())[0] == "BTCUSDT_2024-01-01.csv.gz"
    _, eth, _ = await fetch(sim, "/trading/ETHUSDT/")
    assert re.findall(r'href="([^"]+\.csv\.gz)"', eth.decode())[0] == "ETHUSDT2024-01-03.csv.gz"
    assert (await fetch(sim, "/trading/NOPE/"))[0] == 404
    assert (await fetch(sim, "/spot/BTCUSD/"))[0] == 404


async def test_today_future_and_pre_listing_days_are_404(sim):
    for path in ["/trading/BTCUSDT/BTCUSDT2024-01-10.csv.gz", "/trading/BTCUSDT/BTCUSDT2024-01-11.csv.gz",
                 "/trading/ETHUSDT/ETHUSDT2024-01-02.csv.gz", "/spot/BTCUSDT/BTCUSDT2024-01-05.csv.gz",
                 "/trading/BTCUSDT/BTCUSDT_2024-01-05.csv.gz", "/spot/BTCUSDT/BTCUSDT_2024-01-10.csv.gz"]:
        assert (await fetch(sim, path))[0] == 404, path


async def test_a_linear_file_matches_the_ground_truth_and_real_formatting(sim, sim_config):
    status, body, headers = await fetch(sim, "/trading/BTCUSDT/BTCUSDT2024-01-05.csv.gz")
    assert status == 200 and headers["Content-Type"] == "application/gzip"
    assert int(headers["Content-Length"]) == len(body) and "Content-Encoding" not in headers
    header, rows = parse_gz_csv(body)
    assert header == LINEAR_HEADER  # before rpi_from: no RPI column
    truth = expected_trades(sim_config, "BTCUSDT", date(2024, 1, 5), "linear").to_pylist()
    assert len(rows) == len(truth) == expected_count(sim_config, "BTCUSDT", date(2024, 1, 5)) == 2000
    for row, t in zip(rows, truth):
        seconds, _, frac = row[0].partition(".")
        assert int(seconds) * 1_000_000 + int(frac.ljust(4, "0")) * 100 == t["time_us"]
        assert row[6] == t["trade_id"] and float(row[4]) == t["price"] and float(row[3]) == t["qty"]
        assert row[2].lower() == t["side"] and row[1] == "BTCUSDT"
    assert [int(r[0].partition(".")[0]) for r in rows] == sorted(int(r[0].partition(".")[0]) for r in rows)
    stamps = [r[0] for r in rows]
    assert any("." not in s for s in stamps), "about 1% of timestamps are integers"
    assert all(re.fullmatch(r"\d{10}(\.\d{4})?", s) for s in stamps)
    assert any("e+" in r[7] for r in rows) and any("e+" not in r[7] for r in rows)
    assert {r[5] for r in rows} <= {"PlusTick", "ZeroPlusTick", "MinusTick", "ZeroMinusTick"}
    assert len(set(stamps)) < len(stamps), "several trades share a timestamp"
    assert truth[0]["trade_id"] == trade_uuid(sim_config.seed, "BTCUSDT", date(2024, 1, 5), 0)


async def test_rpi_days_gain_the_eleventh_column(sim):
    _, body, _ = await fetch(sim, "/trading/BTCUSDT/BTCUSDT2024-01-08.csv.gz")
    header, rows = parse_gz_csv(body)
    assert header == LINEAR_HEADER + ["RPI"]
    assert {r[10] for r in rows} == {"0", "1"}


async def test_inverse_sizes_are_whole_contracts_with_half_dollar_prices(sim, sim_config):
    _, body, _ = await fetch(sim, "/trading/BTCUSD/BTCUSD2024-01-02.csv.gz")
    header, rows = parse_gz_csv(body)
    assert header == LINEAR_HEADER
    assert all(r[3].isdigit() for r in rows)
    assert all(Decimal(r[4]) % Decimal("0.5") == 0 for r in rows)
    truth = expected_trades(sim_config, "BTCUSD", date(2024, 1, 2))
    assert [r[6] for r in rows] == truth["trade_id"].to_pylist()


async def test_spot_files_use_milliseconds_lower_case_sides_and_per_day_ids(sim, sim_config):
    _, d1, _ = await fetch(sim, "/spot/BTCUSDT/BTCUSDT_2024-01-02.csv.gz")
    _, d2, _ = await fetch(sim, "/spot/BTCUSDT/BTCUSDT_2024-01-09.csv.gz")
    (h1, r1), (h2, r2) = parse_gz_csv(d1), parse_gz_csv(d2)
    assert h1 == ["id", "timestamp", "price", "volume", "side"]
    assert h2 == ["id", "timestamp", "price", "volume", "side", "rpi"]
    assert [r[0] for r in r1] == [str(i) for i in range(1, 1001)] == [r[0] for r in r2]
    assert {r[4] for r in r1} == {"buy", "sell"}
    truth = expected_trades(sim_config, "BTCUSDT", date(2024, 1, 2), "spot").to_pylist()
    assert [int(r[1]) * 1000 for r in r1] == [t["time_us"] for t in truth]
    assert all(len(r[1]) == 13 for r in r1)


def test_busy_days_are_generated_once_then_served_from_the_cache(tmp_path):
    spec = MarketSpec("BTCUSDT", "linear", trades_per_day=150_000)
    config = SimConfig(now_ms=1_704_888_000_000, markets=[spec], cache_dir=tmp_path)
    path, generated = ensure_file(config, spec, date(2024, 1, 3))
    mtime = path.stat().st_mtime_ns
    again, regenerated = ensure_file(config, spec, date(2024, 1, 3))
    assert generated and not regenerated and again == path and path.stat().st_mtime_ns == mtime
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp files left behind"


async def test_file_downloads_are_counted_under_the_folder_and_full_path(sim):
    path = "/trading/BTCUSDT/BTCUSDT2024-01-03.csv.gz"
    await fetch(sim, path)
    await fetch(sim, "/trading/BTCUSDT/")
    assert sim.state.requests["/trading"] == 1 and sim.state.requests[path] == 1
    assert sim.state.requests["/trading/BTCUSDT/"] == 1


@pytest.mark.parametrize("day", [date(2024, 1, 1) + timedelta(days=k) for k in (0, 8)])
def test_trade_times_are_non_decreasing_and_inside_the_day(sim_config, day):
    times = expected_trades(sim_config, "BTCUSDT", day)["time_us"].to_pylist()
    start = (day - date(1970, 1, 1)).days * 86_400_000_000
    assert times == sorted(times) and start <= times[0] and times[-1] < start + 86_400_000_000
