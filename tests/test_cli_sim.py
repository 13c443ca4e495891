"""`bybit-backfill sim` on its own: the options a newcomer needs, and what it prints on start."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from sim.options import SimOptions, banner, parse_fault, parse_markets

ROOT = Path(__file__).resolve().parent.parent


def test_markets_and_faults_are_parsed_as_documented() -> None:
    markets = parse_markets("BTCUSDT:linear:1500000,ethusdt:linear:200000")
    assert [(m.symbol, m.category, m.trades_per_day) for m in markets] == [
        ("BTCUSDT", "linear", 1_500_000), ("ETHUSDT", "linear", 200_000)]
    assert parse_fault("http_502:0.25") == ("http_502", 0.25)
    assert parse_fault("truncate_gzip") == ("truncate_gzip", 0.05)
    with pytest.raises(ValueError, match="unknown kind"):
        parse_fault("nonsense")
    config, faults = SimOptions(markets="BTCUSDT:spot", trades_per_day=10, seed=3, now="2024-01-10T12:00",
                                latency_ms=5, faults=("ret_10006:1",)).build()
    assert (config.seed, config.latency_ms, config.markets[0].trades_per_day, faults) == (
        3, 5, 10, [("ret_10006", 1.0)])
    assert config.now_ms == 1_704_888_000_000


def test_the_banner_gives_the_url_markets_key_and_env_lines() -> None:
    config, _ = SimOptions(markets="BTCUSDT:linear:1000").build()
    text = "\n".join(banner("http://127.0.0.1:8099", config, []))
    for line in ("export BYBIT_REST_BASE_URL=http://127.0.0.1:8099",
                 "export BYBIT_ARCHIVE_BASE_URL=http://127.0.0.1:8099",
                 "export BYBIT_WS_BASE_URL=ws://127.0.0.1:8099", "export BYBIT_API_KEY=test-key",
                 "export BYBIT_API_SECRET=test-secret", "BTCUSDT (linear, 1,000 trades/day)"):
        assert line in text


def test_bad_sim_options_are_one_error_line() -> None:
    for args in (["--markets", "BTCUSDT"], ["--fault", "bogus:0.1"], ["--fault", "http_502:2"],
                 ["--now", "yesterday"]):
        result = CliRunner().invoke(cli.main, ["sim", *args])
        assert result.exit_code == 2, args
        assert "error:" in result.stderr, args


def test_clear_cache_removes_only_the_emulators_files(tmp_path: Path) -> None:
    (tmp_path / "v1-s7-linear-BTCUSDT-2024-01-01-n10-p50000.0-rpi0-plain.csv.gz").write_bytes(b"x")
    (tmp_path / "mine.txt").write_text("keep")
    result = CliRunner().invoke(cli.main, ["sim", "--clear-cache", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0 and "removed 1 " in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def _lines(stream: object, out: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        out.put(line)


def test_sim_alone_prints_its_env_lines_serves_them_and_logs_requests_with_v(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "sim", "--port", "0", "--markets", "BTCUSDT:linear:500",
         "--now", "2024-01-10T12:00", "--seed", "5", "--latency-ms", "1", "--cache-dir", str(tmp_path),
         "--fault", "http_502:0", "-v"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    out: queue.Queue[str] = queue.Queue()
    err: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, out), daemon=True).start()
    threading.Thread(target=_lines, args=(proc.stderr, err), daemon=True).start()
    try:
        printed: dict[str, str] = {}
        for _ in range(40):  # bounded: the banner is 11 lines
            line = out.get(timeout=30).strip()
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                printed[name] = value
            if "BYBIT_API_SECRET" in printed:
                break
        url = printed["BYBIT_REST_BASE_URL"]
        assert url.startswith("http://127.0.0.1:") and printed["BYBIT_ARCHIVE_BASE_URL"] == url
        assert printed["BYBIT_WS_BASE_URL"] == url.replace("http", "ws")
        with urllib.request.urlopen(f"{url}/v5/market/recent-trade?category=linear&symbol=BTCUSDT&limit=1",
                                    timeout=30) as answer:
            assert answer.status == 200
        logged = ""
        for _ in range(20):
            logged += err.get(timeout=30)
            if "/v5/market/recent-trade" in logged:
                break
        assert "GET /v5/market/recent-trade" in logged and "-> 200 in" in logged
    finally:
        proc.terminate()
        proc.wait(timeout=30)
