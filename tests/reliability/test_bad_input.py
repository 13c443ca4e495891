"""Bad input gets a clear error and changes nothing (design.md), through the command line.

Each case runs one command against a store holding two days, and checks: exit code 2, stdout empty,
one `error:` line on stderr (the last; off a terminal, timestamped INFO log lines such as retries may
precede it) that says what is wrong and what to do, and the store as it was (the
DuckDB file's sha256: opening a file read-write and closing it without writing leaves its bytes
alone, which `test_opening_and_closing_a_store_leaves_its_bytes_alone` pins) and no file created.

A truncated or malformed archive day is not bad input: the run goes on with the other days, prints
its summary, names the failed day on stderr and exits 1 (the next run fetches the day again).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from crashutil import ROOT, cli_env
from relutil import archive_days, assert_exactly_the_truth, run_cli
from storeutil import day, sim_fetch_config, us

from sim.server import RunningSim
from store import refresh
from store.schema import open_store

TAIL = "/v5/market/recent-trade"


@dataclass
class World:
    sim: RunningSim
    tmp: Path
    db: Path
    env: dict[str, str]
    holders: list[subprocess.Popen] = field(default_factory=list)

    def sub(self, text: str) -> str:
        return text.format(db=self.db, tmp=self.tmp, url=self.sim.url)


@pytest.fixture
def world(sim_thread: RunningSim, tmp_path: Path) -> Iterator[World]:
    db = tmp_path / "store.duckdb"
    with open_store(db) as store:  # two archive days, so "changes nothing" has something to keep
        asyncio.run(refresh(store, sim_fetch_config(sim_thread.url), "BTCUSDT", us(day(7)), us(day(9)),
                            cache_dir=tmp_path / "cache"))
    env = cli_env(sim_thread.url, db, tmp_path / "cache")
    made = World(sim_thread, tmp_path, db, env)
    yield made
    for holder in made.holders:
        holder.stdin.close()
        holder.wait(timeout=10)


def hold_lock(world: World) -> None:
    """Another process opens the store for writing and keeps it open."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from store import open_store\n"
        f"s = open_store({str(world.db)!r}); print('ready', flush=True); sys.stdin.read(); s.close()")],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    world.holders.append(holder)
    assert holder.stdout.readline().strip() == "ready"


def not_a_database(world: World) -> None:
    (world.tmp / "notes.duckdb").write_text("these are my notes, not a database\n" * 50)


def a_file_in_the_way(world: World) -> None:
    (world.tmp / "afile").write_text("a file where a directory should be")


def garbage_from_the_api(world: World) -> None:
    world.sim.state.faults.add("malformed_json", path=TAIL, times=-1)


def an_endless_answer(world: World) -> None:
    world.sim.state.faults.add("huge_json", path=TAIL, times=-1)


def refuses_the_symbol(world: World) -> None:
    world.sim.state.faults.add("ret_10001_empty", path=TAIL, times=-1)


def nothing(world: World) -> None:
    return None


def a_foreign_database(world: World) -> None:
    """Another application's DuckDB file: tables, but no schema_version of ours."""
    import duckdb

    connection = duckdb.connect(str(world.tmp / "theirs.duckdb"))
    connection.execute("CREATE TABLE invoices (id INTEGER, amount DOUBLE)")
    connection.execute("INSERT INTO invoices VALUES (1, 9.5)")
    connection.close()


def a_second_store(world: World) -> None:
    """Another store holding the same symbol's days, to be exported into the first one's directory."""
    with open_store(world.tmp / "second.duckdb") as store:
        asyncio.run(refresh(store, sim_fetch_config(world.sim.url), "BTCUSDT", us(day(7)), us(day(8))))


@dataclass(frozen=True)
class Bad:
    name: str
    args: list[str]
    says: list[str]                         # the one stderr line contains each of these
    prepare: Callable[[World], None] = nothing
    env: dict[str, str] = field(default_factory=dict)
    exit: int = 2                           # 2 bad input, 3 the exchange, 4 the store (README's table)


TODAY = ["--start", "2024-01-08", "--end", "2024-01-10T12:00"]  # one archive day plus the REST tail
CASES = [
    Bad("unknown symbol", ["refresh", "NOPEUSDT", "--start", "2024-01-08", "--end", "2024-01-09"],
        ["unknown symbol NOPEUSDT", "check the symbol and the category"]),
    # linear and inverse files share the archive's /trading/ folder: only recent-trade can tell the
    # category is wrong, and it is asked before anything is written (a past-only range cannot tell).
    Bad("symbol not in that category", ["refresh", "BTCUSDT", "--category", "inverse", *TODAY],
        ["rejected symbol 'BTCUSDT' for category inverse", "check the symbol exists in that category"]),
    Bad("unknown category", ["refresh", "BTCUSDT", "--category", "futures"],
        ["'futures' is not one of", "--help"]),
    Bad("start after end", ["refresh", "BTCUSDT", "--start", "2024-01-09", "--end", "2024-01-08"],
        ["is not before end", "give a start earlier than the end"]),
    Bad("start equals end", ["refresh", "BTCUSDT", "--start", "2024-01-08", "--end", "2024-01-08"],
        ["is not before end"]),
    Bad("a negative length", ["refresh", "BTCUSDT", "--start", "2024-01-08", "--days", "-2"],
        ["Invalid value for '--days'", "'-2' is not a positive finite number"]),
    Bad("days that are nan", ["refresh", "BTCUSDT", "--days", "nan"], ["'nan' is not a positive finite"]),
    Bad("days that are inf", ["gaps", "BTCUSDT", "--days", "inf"], ["'inf' is not a positive finite"]),
    Bad("days of -1", ["refresh", "BTCUSDT", "--days", "-1"], ["'-1' is not a positive finite"]),
    Bad("days of 1e300", ["refresh", "BTCUSDT", "--days", "1e300"],
        ["--days 1e+300 is not a length", "up to 36600"]),
    Bad("a silence of nan", ["gaps", "BTCUSDT", "--min-silence", "nan"],
        ["Invalid value for '--min-silence'", "'nan' is not a positive finite"]),
    Bad("days with both start and end", ["refresh", "BTCUSDT", "--start", "2024-01-07", "--end", "2024-01-08",
                                         "--days", "1"],
        ["--days cannot be combined with both --start and --end"]),
    Bad("start in the future", ["refresh", "BTCUSDT", "--start", "2099-01-01"],
        ["is in the future", "cannot be fetched before they happen"]),
    Bad("end in the future", ["refresh", "BTCUSDT", "--start", "2024-01-08", "--end", "2099-01-01"],
        ["end 2099-01-01", "is in the future", "leave it out to mean now"]),
    Bad("an impossible date", ["refresh", "BTCUSDT", "--start", "2024-02-30"],
        ["cannot read the date '2024-02-30'", "use YYYY-MM-DD"]),
    Bad("a date in another format", ["refresh", "BTCUSDT", "--start", "01/08/2024"],
        ["cannot read the date '01/08/2024'", "use YYYY-MM-DD"]),
    Bad("a word for a date", ["gaps", "BTCUSDT", "--start", "yesterday"],
        ["cannot read the date 'yesterday'"]),
    Bad("days that are not a number", ["refresh", "BTCUSDT", "--days", "three"],
        ["'three' is not a valid float", "--help"]),
    Bad("the store is locked by another process", ["refresh", "BTCUSDT", "--start", "2024-01-08", "--end",
                                                   "2024-01-09"],
        ["{db}", "in use by another process", "stayed so for 0.2 s", "wait for it to finish", "or use another --db"],
        hold_lock, env={"BACKFILL_LOCK_WAIT_S": "0.2"}, exit=4),
    Bad("status while another process holds the store longer than the wait", ["status"],
        ["{db}", "in use by another process", "BACKFILL_LOCK_WAIT_S"], hold_lock, env={"BACKFILL_LOCK_WAIT_S": "0.2"}, exit=4),
    Bad("refresh into a file that is not a DuckDB database",
        ["refresh", "BTCUSDT", "--db", "{tmp}/notes.duckdb", "--start", "2024-01-08", "--end", "2024-01-09"],
        ["{tmp}/notes.duckdb is not a DuckDB database", "point --db"], not_a_database, exit=4),
    Bad("sql on a file that is not a DuckDB database", ["sql", "SELECT 1", "--db", "{tmp}/notes.duckdb"],
        ["is not a DuckDB database"], not_a_database, exit=4),
    Bad("verify on a file that is not a DuckDB database", ["verify", "--db", "{tmp}/notes.duckdb"],
        ["is not a DuckDB database"], not_a_database, exit=4),
    Bad("sql on a store that does not exist", ["sql", "SELECT 1", "--db", "{tmp}/missing.duckdb"],
        ["no store at {tmp}/missing.duckdb", "run `bybit-backfill refresh` first"], exit=4),
    Bad("status on a store that does not exist", ["status", "--db", "{tmp}/missing.duckdb"], ["no store at"], exit=4),
    Bad("a directory as the store", ["status", "--db", "{tmp}"], ["is a directory"]),
    Bad("sql that does not parse", ["sql", "SELEKT 1"], ["query failed", "syntax error"]),
    Bad("sql that writes", ["sql", "DELETE FROM trades"], ["query failed", "read-only"]),
    Bad("sql that is empty", ["sql", "  "], ["the query is empty"]),
    Bad("sql that is only a comment", ["sql", "/* nothing here */ -- nor here"], ["the query is empty"]),
    Bad("sql copying a table to a file", ["sql", "COPY trades TO '{tmp}/stolen.csv'"],
        ["query failed", "file system operations are disabled"]),
    Bad("sql attaching another database", ["sql", "ATTACH '{tmp}/other.duckdb' AS other"],
        ["query failed", "disabled"]),
    Bad("sql reading an arbitrary file", ["sql", "SELECT * FROM read_csv('/etc/passwd')"],
        ["query failed", "file system operations are disabled"]),
    Bad("sql installing an extension", ["sql", "INSTALL httpfs"], ["query failed", "Permission Error"]),
    Bad("sql loading an extension", ["sql", "LOAD httpfs"], ["query failed", "disabled"]),
    Bad("sql undoing the sandbox", ["sql", "SET enable_external_access = true; COPY trades TO '{tmp}/x.csv'"],
        ["query failed", "the configuration has been locked"]),
    Bad("sql exporting the database", ["sql", "EXPORT DATABASE '{tmp}/dump'"],
        ["query failed", "file system operations are disabled"]),
    Bad("sql several statements written to one --output",
        ["sql", "SELECT 1; SELECT 2", "--format", "csv", "--output", "{tmp}/two.csv"],
        ["--output takes the answer of one statement"]),
    Bad("refresh into a foreign DuckDB file",
        ["refresh", "BTCUSDT", "--db", "{tmp}/theirs.duckdb", "--start", "2024-01-08", "--end", "2024-01-09"],
        ["{tmp}/theirs.duckdb is a DuckDB database made by something else", "left unchanged"],
        a_foreign_database, exit=4),
    Bad("status on a foreign DuckDB file", ["status", "--db", "{tmp}/theirs.duckdb"],
        ["made by something else"], a_foreign_database, exit=4),
    Bad("sql on a foreign DuckDB file", ["sql", "SELECT * FROM invoices", "--db", "{tmp}/theirs.duckdb"],
        ["made by something else"], a_foreign_database, exit=4),
    Bad("export of a second symbol into an owned cache dir",
        ["export", "ETHUSDT", "--start", "2024-01-07", "--end", "2024-01-09"],
        ["the cache dir {tmp}/cache belongs to BTCUSDT (linear, id mode tick) of the store {db}",
         "give each symbol, store and id mode its own --cache-dir"], exit=4),
    Bad("refresh of a second symbol into an owned cache dir",
        ["refresh", "ETHUSDT", "--start", "2024-01-07", "--end", "2024-01-09"],
        ["belongs to BTCUSDT (linear, id mode tick) of the store {db}"], exit=4),
    Bad("export in a second id mode into an owned cache dir",
        ["export", "BTCUSDT", "--start", "2024-01-07", "--end", "2024-01-09", "--id-mode", "raw"],
        ["belongs to BTCUSDT (linear, id mode tick)", "not to BTCUSDT (linear, id mode raw)"], exit=4),
    Bad("export from a second store into an owned cache dir, through a second spelling of the dir",
        ["export", "BTCUSDT", "--db", "{tmp}/second.duckdb", "--start", "2024-01-07", "--end", "2024-01-08",
         "--cache-dir", "{tmp}/cache/../cache/"],
        ["belongs to BTCUSDT (linear, id mode tick) of the store {db}"], a_second_store, exit=4),
    Bad("a timeout that is not a number", ["status"], ["BYBIT_API_TIMEOUT='abc'", "valid number"],
        env={"BYBIT_API_TIMEOUT": "abc"}),
    Bad("a timeout of zero", ["status"], ["BYBIT_API_TIMEOUT='0'", "greater than 0"],
        env={"BYBIT_API_TIMEOUT": "0"}),
    Bad("an unknown category in the environment", ["status"], ["BYBIT_CATEGORY='futures'"],
        env={"BYBIT_CATEGORY": "futures"}),
    Bad("negative retries", ["refresh", "BTCUSDT"], ["BYBIT_BACKFILL_MAX_RETRIES='-1'"],
        env={"BYBIT_BACKFILL_MAX_RETRIES": "-1"}),
    Bad("zero concurrent chunks", ["refresh", "BTCUSDT"], ["BYBIT_BACKFILL_MAX_CONCURRENT_CHUNKS='0'"],
        env={"BYBIT_BACKFILL_MAX_CONCURRENT_CHUNKS": "0"}),
    Bad("a cache switch that is neither true nor false", ["refresh", "BTCUSDT"],
        ["BACKFILL_CACHE_ENABLED='maybe'", "valid boolean"], env={"BACKFILL_CACHE_ENABLED": "maybe"}),
    Bad("an unknown export id mode", ["export", "BTCUSDT"], ["BACKFILL_EXPORT_ID='bogus'", "'tick' or 'raw'"],
        env={"BACKFILL_EXPORT_ID": "bogus"}),
    Bad("a newline in the API key", ["executions"], ["BYBIT_API_KEY: must not contain", "newlines"],
        env={"BYBIT_API_KEY": "abc\ndef", "BYBIT_API_SECRET": "s3cr3t-value"}),
    Bad("an unwritable cache dir (refresh)", ["refresh", "BTCUSDT", "--start", "2024-01-08", "--end",
                                              "2024-01-09", "--cache-dir", "{tmp}/afile/cache"],
        ["cannot write to the cache dir {tmp}/afile/cache", "choose another --cache-dir"], a_file_in_the_way, exit=4),
    Bad("an unwritable cache dir from the environment",
        ["refresh", "BTCUSDT", "--start", "2024-01-08", "--end", "2024-01-09"],
        ["cannot write to the cache dir", "BACKFILL_CACHE_DIR"], a_file_in_the_way,
        env={"BACKFILL_CACHE_DIR": "{tmp}/afile/cache"}, exit=4),
    Bad("an unwritable cache dir (export)",
        ["export", "BTCUSDT", "--start", "2024-01-07", "--end", "2024-01-09",
         "--cache-dir", "{tmp}/afile/cache"],
        ["cannot write to the cache dir"], a_file_in_the_way, exit=4),
    Bad("executions without credentials", ["executions", "--start", "2024-01-01", "--end", "2024-01-08"],
        ["executions needs BYBIT_API_KEY and BYBIT_API_SECRET", "set both"]),
    Bad("executions with a key Bybit refuses", ["executions", "--start", "2024-01-01", "--end", "2024-01-08"],
        ["Bybit refused the API key", "fix the key and run again"],
        env={"BYBIT_API_KEY": "test-key", "BYBIT_API_SECRET": "not-the-secret"}),
    Bad("a non-JSON answer from the API", ["refresh", "BTCUSDT", *TODAY],
        ["non-JSON answer on /v5/market/recent-trade", "check BYBIT_REST_BASE_URL"], garbage_from_the_api, exit=3),
    Bad("an API answer larger than 16 MB", ["refresh", "BTCUSDT", *TODAY],
        ["/v5/market/recent-trade", "over the 16 MB cap", "check BYBIT_REST_BASE_URL"], an_endless_answer, exit=3),
    Bad("recent-trade refusing the symbol (10001, empty list)", ["refresh", "BTCUSDT", *TODAY],
        ["rejected symbol 'BTCUSDT'", "check the symbol exists in that category"], refuses_the_symbol),
    Bad("an API base URL that is not Bybit's API", ["refresh", "BTCUSDT", *TODAY],
        ["HTTP 404 on /v5/market/", "check that BYBIT_REST_BASE_URL"],
        env={"BYBIT_REST_BASE_URL": "{url}/trading"}, exit=3),
    Bad("an API host that refuses connections", ["refresh", "BTCUSDT", *TODAY],
        ["could not connect", "check the network and the base URLs"],
        env={"BYBIT_REST_BASE_URL": "http://127.0.0.1:9", "BYBIT_BACKFILL_MAX_RETRIES": "1"}, exit=3),
]


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING) ")


def one_error_line(err: str) -> str:
    """The single `error:` line, last on stderr. Off a terminal the CLI also logs INFO lines for
    operators (e.g. each retry before giving up): those are timestamped, the error is not."""
    lines = err.splitlines()
    assert lines and lines[-1].startswith("error: "), err
    assert all(LOG_LINE.match(x) for x in lines[:-1]), f"stray output on stderr: {err!r}"
    return lines[-1]


def listing(directory: Path) -> dict[str, str]:
    """Every file under `directory` with its sha256: nothing may appear, vanish or change."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clear_line_its_exit_code_and_changes_nothing(world: World, case: Bad) -> None:
    case.prepare(world)
    before = listing(world.tmp)
    env = {**world.env, **{k: world.sub(v) for k, v in case.env.items()}}
    code, out, err = run_cli(env, *[world.sub(a) for a in case.args])
    assert code == case.exit, (code, out, err)
    assert out == ""
    line = one_error_line(err)
    for words in case.says:
        assert world.sub(words) in line, (words, line)
    assert listing(world.tmp) == before, "the store (and everything beside it) is as it was"


def test_a_bad_value_in_dot_env_is_one_line_too(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(world.tmp)
    (world.tmp / ".env").write_text("BYBIT_API_TIMEOUT=soon\n")
    env = {k: v for k, v in world.env.items() if k != "BYBIT_API_TIMEOUT"}
    code, out, err = run_cli(env, "status")
    assert (code, out) == (2, "")
    assert "BYBIT_API_TIMEOUT='soon'" in one_error_line(err)


def test_a_secret_with_a_newline_is_refused_without_showing_it(world: World) -> None:
    code, _, err = run_cli({**world.env, "BYBIT_API_KEY": "key", "BYBIT_API_SECRET": "top\nsecret"},
                           "executions")
    assert code == 2 and "BYBIT_API_SECRET: must not contain" in one_error_line(err)
    assert "top" not in err and "secret" not in err.replace("BYBIT_API_SECRET", "")


def test_an_unexpected_exception_is_one_line_exit_1_and_its_traceback_only_with_v(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    import store.report

    def broken(*_args: object, **_kwargs: object) -> None:
        raise AttributeError("'NoneType' object has no attribute 'rows'")

    monkeypatch.setattr(store.report, "status", broken)
    code, out, err = run_cli(world.env, "status")
    assert (code, out) == (1, "")
    line = one_error_line(err)
    assert "unexpected AttributeError" in line and "rerun with -v for the traceback" in line
    assert "Traceback" not in err
    code, _, err = run_cli(world.env, "-v", "status")
    assert code == 1 and "Traceback (most recent call last)" in err and "in broken" in err


def test_several_sql_statements_print_each_answer(world: World) -> None:
    code, out, err = run_cli(world.env, "sql", "SELECT 1 AS one; SELECT 'two' AS two -- and a comment")
    assert code == 0, err
    assert out.split("\n\n") == ["one\n---\n1", "two\n---\ntwo\n"]
    code, out, _ = run_cli(world.env, "sql", "SELECT 1 AS one; SELECT 2 AS two", "--format", "json")
    assert json.loads(out) == [[{"one": 1}], [{"two": 2}]]


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_sql_answers_go_to_a_file_through_the_tool(world: World, fmt: str) -> None:
    target = world.tmp / f"daily.{fmt}"
    code, out, err = run_cli(world.env, "sql", "SELECT day, trades FROM daily ORDER BY day", "--format", fmt,
                             "--output", str(target))
    assert code == 0 and out == "", err
    assert f"{target}  2 rows" in err
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert pq.read_table(target).column("trades").to_pylist() == [2000, 2000]
    elif fmt == "csv":
        assert target.read_text().splitlines() == ["day,trades", "2024-01-07,2000", "2024-01-08,2000"]
    else:
        assert [row["trades"] for row in json.loads(target.read_text())] == [2000, 2000]
    assert not [p for p in world.tmp.iterdir() if p.name.startswith(f".daily.{fmt}")], "no temp file left"


def test_opening_and_closing_a_store_leaves_its_bytes_alone(world: World) -> None:
    # What makes the checksum comparison above fair: a read-write open that writes nothing is invisible.
    before = listing(world.tmp)
    open_store(world.db).close()
    open_store(world.db, read_only=True).close()
    assert listing(world.tmp) == before


def test_a_truncated_archive_day_prints_the_summary_names_the_day_and_exits_1(world: World) -> None:
    world.sim.state.faults.add("truncate_gzip", day=day(5))
    args = ["refresh", "BTCUSDT", "--start", "2024-01-04", "--end", "2024-01-07"]
    code, out, err = run_cli(world.env, *args)
    assert code == 1, err
    assert "days: 3 in range, 0 already stored, 2 fetched, 1 failed" in out
    assert ("2024-01-05T00:00:00+00:00 .. 2024-01-06T00:00:00+00:00: archive file for 2024-01-05 is "
            "unusable") in out
    line = one_error_line(err)
    assert "1 archive day(s) failed (2024-01-05)" in line and "rerun the same command" in line
    with open_store(world.db, read_only=True) as store:
        assert archive_days(store, "BTCUSDT") == [day(4), day(6), day(7), day(8)]
    code, out, err = run_cli(world.env, *args)  # the file is whole again: the rerun completes the range
    assert code == 0, err
    assert "days: 3 in range, 2 already stored, 1 fetched, 0 failed" in out and "gaps left: 0" in out
    with open_store(world.db, read_only=True) as store:
        assert_exactly_the_truth(store, world.sim.config, "BTCUSDT", day(4), us(day(9)))


def test_a_malformed_archive_day_fails_the_same_way_in_json(world: World) -> None:
    world.sim.state.faults.add("drift_header", day=day(5))
    code, out, err = run_cli(world.env, "refresh", "BTCUSDT", "--start", "2024-01-05", "--end", "2024-01-07",
                             "--json")
    assert code == 1
    summary = json.loads(out)
    assert summary["days_failed"] == ["2024-01-05"] and summary["errors_by_type"] == {"ArchiveError": 1}
    assert "unknown header" in summary["gaps"][0]["reason"]
    assert "1 archive day(s) failed (2024-01-05)" in one_error_line(err)
