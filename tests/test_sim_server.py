"""Ways to run the emulator, and its public surface."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import sim
from sim import SimConfig, run_in_thread

ROOT = Path(__file__).resolve().parents[1]


def test_the_public_names_are_pinned():
    assert sorted(sim.__all__) == sorted(["SimConfig", "MarketSpec", "MarketClock", "SimState", "Faults", "create_app",
                                          "running_sim", "run_in_thread", "serve"])
    assert all(hasattr(sim, name) for name in sim.__all__)


def test_the_emulator_never_imports_the_library():
    code = "import sys, sim, sim.app, sim.server; print(sorted(m for m in sys.modules if m.split('.')[0] in ('fetch', 'store')))"
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_threaded_sim_serves_synchronous_callers(sim_thread):
    assert sim_thread.url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(sim_thread.url + "/v5/market/time", timeout=10) as resp:
        body = json.load(resp)
    assert body["retCode"] == 0
    assert sim_thread.state.requests["/v5/market/time"] == 1


def test_threaded_sims_stop_cleanly_and_can_run_side_by_side(sim_config):
    with run_in_thread(sim_config) as a, run_in_thread(sim_config) as b:
        assert a.url != b.url
        for running in (a, b):
            with urllib.request.urlopen(running.url + "/v5/market/time", timeout=10) as resp:
                assert resp.status == 200
    with pytest.raises(OSError):
        urllib.request.urlopen(a.url + "/v5/market/time", timeout=2)


async def test_running_sim_binds_loopback_on_a_free_port(sim):
    host, port = sim.url.removeprefix("http://").split(":")
    assert host == "127.0.0.1" and int(port) > 0
    assert sim.config.now_ms is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_python_dash_m_sim_serves_until_terminated(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sim", "--port", str(port), "--now", "2024-01-10T12:00"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        body = None
        for _ in range(100):  # up to ~10 s for the interpreter to start
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/trading/BTCUSDT/", timeout=1) as resp:
                    body = resp.read().decode()
                break
            except OSError:
                time.sleep(0.1)
        assert body is not None and "BTCUSDT2024-01-09.csv.gz" in body and "2024-01-10" not in body
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_default_config_is_the_documented_one():
    config = SimConfig()
    assert [(m.symbol, m.category, m.trades_per_day) for m in config.markets] == [
        ("BTCUSDT", "linear", 20_000), ("ETHUSDT", "linear", 5_000), ("BTCUSD", "inverse", 5_000),
        ("BTCUSDT", "spot", 5_000)]
    assert config.api_keys == {"test-key": "test-secret"} and config.ip_limit == 600
    assert config.endpoint_limits == {"/v5/execution/list": 50}
    assert config.resolved_cache_dir().name == "bybit-sim-cache"
