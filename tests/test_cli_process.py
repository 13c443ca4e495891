"""The installed command as a user runs it: the offline demo, and Ctrl-C in the middle of a refresh."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner
from crashutil import child_env

import cli
from sim import run_in_thread
from store.report import verify
from store.schema import open_store


def test_demo_runs_offline_end_to_end(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli.main, ["demo", "--dir", "demo", "--days", "2",
                                           "--trades-per-day", "3000"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Analyst query" in result.output and "Try next" in result.output
    files = sorted(p.name for p in (tmp_path / "demo" / "backfill_cache").glob("[!.]*"))
    assert len(files) >= 2 and all(f.startswith("backfill_") for f in files)
    with open_store(tmp_path / "demo" / "demo.duckdb", read_only=True) as store:
        assert store.query_one("SELECT count(*) FROM trades")[0] >= 6000
        assert verify(store).ok


def test_ctrl_c_keeps_finished_days_rolls_back_the_current_one_and_says_rerun(sim_config, tmp_path) -> None:
    slow = replace(sim_config, latency_ms=150, markets=[
        replace(m, trades_per_day=20_000) if (m.symbol, m.category) == ("BTCUSDT", "linear") else m
        for m in sim_config.markets])
    with run_in_thread(slow) as sim:
        env = child_env(BYBIT_REST_BASE_URL=sim.url, BYBIT_ARCHIVE_BASE_URL=sim.url,
                        BACKFILL_DB_PATH=str(tmp_path / "c.duckdb"),
                        BACKFILL_CACHE_DIR=str(tmp_path / "cache"), BYBIT_BACKFILL_MAX_CONCURRENT_CHUNKS="1")
        args = [sys.executable, "-c", "import cli; cli.run()", "refresh", "BTCUSDT", "--start",
                "2024-01-01", "--end", "2024-01-10"]
        process = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        # Wait for an event, not a timer: off a terminal each committed day is logged on stderr.
        seen = []
        for line in process.stderr:
            seen.append(line)
            if re.search(r"INFO archive linear BTCUSDT 2024-01-0\d: [\d,]+ rows, \d+ added", line):
                break
        else:
            raise AssertionError(f"the refresh ended before committing a day: {''.join(seen)[-2000:]}")
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
        err = "".join(seen) + rest
        assert process.returncode == 130, err[-2000:]
        assert "interrupted" in err and "rerun" in err
        with open_store(tmp_path / "c.duckdb", read_only=True) as store:
            assert verify(store).ok
            days = store.query_one("SELECT count(*) FROM coverage WHERE source = 'archive'")[0]
            rows = store.query_one("SELECT count(*) FROM trades")[0]
        assert 0 < days < 9 and rows == days * 20_000, "whole days only"
        finished = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert finished.returncode == 0, finished.stderr
        with open_store(tmp_path / "c.duckdb", read_only=True) as store:
            assert store.query_one("SELECT count(*) FROM trades")[0] == 9 * 20_000


def test_sim_command_serves_the_emulator_until_stopped(tmp_path: Path) -> None:
    import json
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = child_env()
    server = subprocess.Popen([sys.executable, "-c", "import cli; cli.run()", "sim", "--port", str(port)],
                              env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline, body = time.monotonic() + 30, None
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v5/market/time", timeout=2) as r:
                    body = json.loads(r.read())
            except OSError:
                time.sleep(0.1)
        assert body is not None and body["retCode"] == 0 and "timeSecond" in body["result"]
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=15)


def _command(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m cli`, the same `cli.run` the console script calls (it ends with `os._exit`)."""
    return subprocess.run([sys.executable, "-m", "cli", *args], env=child_env(**env), cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_command_ends_at_once_with_everything_written_and_closed(env, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    done = _command("refresh", "BTCUSDT", "--start", "2024-01-01", "--end", "2024-01-04", "--json",
                    env=env, cwd=work)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    db = Path(env["BACKFILL_DB_PATH"])
    assert not Path(str(db) + ".wal").exists(), "the store was closed (checkpointed) before the exit"
    assert not Path(str(db) + ".writer.json").exists(), "the writer's note was removed"
    assert sorted(p.name for p in work.iterdir()) == [], "nothing left in the working directory"
    files = sorted((tmp_path / "cache").glob("backfill_*.parquet"))
    assert [p.name for p in files] == [f"backfill_2024-01-0{d}.parquet" for d in (1, 2, 3)]
    with open_store(db, read_only=True) as store:
        assert verify(store).ok
        stored = store.query_one("SELECT count(*) FROM trades")[0]
    assert stored == summary["rows_added"] == sum(pq.read_metadata(p).num_rows for p in files) > 0


def test_the_command_flushes_a_long_answer_and_keeps_its_exit_codes(env, tmp_path: Path) -> None:
    # The answer is far more than a pipe's buffer: what is still in Python's buffer at the end
    # must reach the reader before the process leaves without teardown.
    with open_store(Path(env["BACKFILL_DB_PATH"])):
        pass  # an empty store to ask
    answer = _command("sql", "SELECT range AS n FROM range(100000)", "--format", "csv", env=env, cwd=tmp_path)
    assert answer.returncode == 0, answer.stderr[-2000:]
    lines = answer.stdout.splitlines()
    assert lines[0] == "n" and lines[1:] == [str(n) for n in range(100000)]
    refused = _command("refresh", "BTCUSDT", "--start", "someday", "--json", env=env, cwd=tmp_path)
    assert refused.returncode == 2
    assert json.loads(refused.stdout)["exit_code"] == 2


_FAKE_COMMAND = """
import sys, threading, time
import cli

def late_write():
    time.sleep(0.3)
    with open(sys.argv[1], "w") as out:
        out.write("written")

def command():
    threading.Thread(target=late_write).start()  # not a daemon: a normal exit waits for it
    sys.stdout.write("answer without a newline")
    raise SystemExit(sys.argv[2] if sys.argv[2] == "a message" else int(sys.argv[2]))

cli.main = command
cli.run()
"""


def test_run_waits_for_threads_flushes_and_exits_as_python_would(tmp_path: Path) -> None:
    env = child_env()
    for code, expected in (("3", 3), ("0", 0), ("a message", 1)):
        target = tmp_path / f"late-{expected}.txt"
        done = subprocess.run([sys.executable, "-c", _FAKE_COMMAND, str(target), code], env=env, check=False,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == expected, done.stderr
        assert target.read_text() == "written", "a thread still running was cut off"
        assert done.stdout == "answer without a newline"
        assert ("a message" in done.stderr) == (code == "a message")


def test_a_reader_that_stops_early_ends_the_command_quietly(env, tmp_path: Path) -> None:
    # An analyst's `bybit-backfill sql ... | head`: the pipe closes under a long answer.
    with open_store(Path(env["BACKFILL_DB_PATH"])):
        pass
    process = subprocess.Popen([sys.executable, "-m", "cli", "sql", "SELECT range FROM range(1000000)",
                                "--format", "csv"], env=child_env(**env), cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline() == "range\n"
    process.stdout.close()
    assert process.wait(timeout=120) == cli.EXIT_PIPE_CLOSED
    assert process.stderr.read() == "", "no 'unexpected BrokenPipeError: a bug' line"
