"""The parquet cache cannot be corrupted, and damage is repaired or reported (issue 12, points 1-4).

A store holding days 7 and 8 (and today's tail, 2024-01-10 up to the emulator's noon) is exported
into a cache directory; each test then damages, shares or re-reads that directory.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fetch.market_span import Market, Span
from crashutil import cli_env
from relutil import run_cli
from storeutil import day, dt, sim_fetch_config, us

from sim.server import RunningSim
from store import BybitConnectorHistory, Settings, refresh
from store.schema import open_store
from store.cache_dir import OWNER_FILE, cache_path, days_needing_export, stale_reason
from store.day_summary import resummarize


@pytest.fixture
def stored(sim_thread: RunningSim, tmp_path: Path) -> tuple[Path, Path]:
    db, cache = tmp_path / "store.duckdb", tmp_path / "cache"
    with open_store(db) as store:
        asyncio.run(refresh(store, sim_fetch_config(sim_thread.url), "BTCUSDT", us(day(7)), us(day(9)),
                            cache_dir=cache))
    return db, cache


def refresh_again(sim: RunningSim, db: Path, cache: Path) -> int:
    with open_store(db) as store:
        summary = asyncio.run(refresh(store, sim_fetch_config(sim.url), "BTCUSDT", us(day(7)), us(day(9)),
                                      cache_dir=cache))
    return summary.files_exported


def rows_of(path: Path) -> int:
    return pq.read_table(path).num_rows


def test_the_marker_names_the_store_symbol_and_id_mode(stored: tuple[Path, Path]) -> None:
    db, cache = stored
    owner = json.loads((cache / OWNER_FILE).read_text())
    assert (owner["store"], owner["category"], owner["symbol"], owner["id_mode"]) == (
        os.path.realpath(db), "linear", "BTCUSDT", "tick")


def test_a_symlink_to_an_owned_dir_is_the_same_dir(sim_thread: RunningSim, stored: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    _db, cache = stored
    link = tmp_path / "link"
    link.symlink_to(cache, target_is_directory=True)
    other = tmp_path / "other.duckdb"
    code, _, err = run_cli(cli_env(sim_thread.url, other, link), "refresh", "BTCUSDT", "--start",
                           "2024-01-07", "--end", "2024-01-08")
    assert code == 4 and "belongs to BTCUSDT (linear, id mode tick) of the store" in err, err
    assert sorted(p.name for p in cache.glob("backfill_*")) == ["backfill_2024-01-07.parquet",
                                                               "backfill_2024-01-08.parquet"]


def test_the_python_api_is_refused_a_directory_another_store_owns(sim_thread: RunningSim,
                                                                  stored: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    from store.errors import ExportError

    _db, cache = stored
    settings = Settings(backfill_db_path=tmp_path / "api.duckdb", backfill_cache_dir=cache, _env_file=None)
    history = BybitConnectorHistory(settings, fetch_config=sim_fetch_config(sim_thread.url))
    before = {p.name: p.read_bytes() for p in cache.iterdir() if p.is_file()}
    with pytest.raises(ExportError, match="belongs to BTCUSDT .* of the store"):
        asyncio.run(history.backfill_with_cache(dt(day(7)), dt(day(9))))
    assert {p.name: p.read_bytes() for p in cache.iterdir() if p.is_file()} == before


def test_refresh_rewrites_a_truncated_file(sim_thread: RunningSim, stored: tuple[Path, Path]) -> None:
    db, cache = stored
    target = cache_path(cache, day(7))
    whole = rows_of(target)
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    assert refresh_again(sim_thread, db, cache) == 1
    assert rows_of(target) == whole


def test_refresh_rewrites_a_foreign_file_put_in_place_of_a_day(sim_thread: RunningSim,
                                                               stored: tuple[Path, Path]) -> None:
    db, cache = stored
    target = cache_path(cache, day(8))
    whole = rows_of(target)
    pq.write_table(pa.table({"x": [1, 2, 3]}), target)
    assert refresh_again(sim_thread, db, cache) == 1
    assert rows_of(target) == whole


def test_refresh_rewrites_a_file_whose_footer_counts_other_rows(sim_thread: RunningSim,
                                                                stored: tuple[Path, Path]) -> None:
    db, cache = stored
    target = cache_path(cache, day(8))
    table = pq.read_table(target)
    smaller = table.slice(0, table.num_rows - 1)
    pq.write_table(smaller, target)
    with open_store(db) as store:  # pretend the export log recorded this very file
        store.execute("UPDATE exports SET size_bytes = ? WHERE path = ?", [target.stat().st_size, str(target)])
    assert refresh_again(sim_thread, db, cache) == 1
    assert rows_of(target) == table.num_rows


def test_a_day_whose_trades_changed_but_not_their_count_is_stale(stored: tuple[Path, Path]) -> None:
    db, cache = stored
    with open_store(db) as store:
        assert days_needing_export(store, market=Market("linear", "BTCUSDT"), days=[day(7), day(8)],
                                   cache_dir=cache, id_mode="tick") == []
        with store.atomic():
            store.execute("UPDATE trades SET time_us = time_us + 1 WHERE trade_id = (SELECT min(trade_id) "
                          "FROM trades WHERE time_us >= ? AND time_us < ?)", [us(day(7)), us(day(8))])
            resummarize(store, Market("linear", "BTCUSDT"), Span(us(day(7)), us(day(8))))
        assert stale_reason(store, market=Market("linear", "BTCUSDT"), day=day(7), cache_dir=cache,
                            id_mode="tick") == "the store's rows for the day changed"
        assert days_needing_export(store, market=Market("linear", "BTCUSDT"), days=[day(7), day(8)],
                                   cache_dir=cache, id_mode="tick") == [day(7)]


def test_checking_many_files_at_once_agrees_with_checking_each_alone(stored: tuple[Path, Path]) -> None:
    """`days_needing_export` reads the records and footers of all the days in two statements; each
    state of a file gives the answer `stale_reason` gives for it alone, including a footer that
    cannot be read at all (the statement over all footers then fails whole)."""
    db, cache = stored
    market = Market("linear", "BTCUSDT")
    days = [day(5), day(6), day(7), day(8)]  # 5: never exported; 6: exported, file gone; 7, 8: current

    def each_alone(store) -> list:
        return [d for d in days if stale_reason(store, market=market, day=d, cache_dir=cache, id_mode="tick")]

    with open_store(db) as store:
        store.execute("INSERT INTO exports (category, symbol, day, path, rows, id_mode, fingerprint, size_bytes) "
                      "SELECT category, symbol, ?, ?, rows, id_mode, fingerprint, size_bytes FROM exports "
                      "WHERE day = ?",
                      [day(6), str(cache_path(cache, day(6))), day(7)])
        assert days_needing_export(store, market=market, days=days, cache_dir=cache, id_mode="tick") \
            == each_alone(store) == [day(5), day(6)]
        # in another id mode every file is stale
        assert days_needing_export(store, market=market, days=days, cache_dir=cache, id_mode="trade") == days
        target = cache_path(cache, day(8))
        data = bytearray(target.read_bytes())
        data[-8:-4] = b"\xff\xff\xff\x7f"  # the footer's length: past the file's start, same size
        target.write_bytes(bytes(data))
        assert days_needing_export(store, market=market, days=days, cache_dir=cache, id_mode="tick") \
            == each_alone(store) == [day(5), day(6), day(8)]


@pytest.mark.parametrize("name", ["cache[1]", "cache*", "cache?"])
def test_a_cache_dir_named_like_a_glob_pattern_is_current_after_its_export(sim_thread: RunningSim, tmp_path: Path,
                                                                           name: str) -> None:
    # The footers are read through DuckDB, which takes a path for a pattern: a name with `[`, `*` or
    # `?` must still find its own file, or every refresh would rewrite every file.
    db, cache = tmp_path / "store.duckdb", tmp_path / name
    assert refresh_again(sim_thread, db, cache) == 2
    with open_store(db) as store:
        assert days_needing_export(store, market=Market("linear", "BTCUSDT"), days=[day(7), day(8)],
                                   cache_dir=cache, id_mode="tick") == []
    assert refresh_again(sim_thread, db, cache) == 0


def test_the_export_log_keeps_the_fingerprint_and_size_of_each_file(stored: tuple[Path, Path]) -> None:
    db, cache = stored
    with open_store(db, read_only=True) as store:
        rows = store.query("SELECT e.path, e.size_bytes, e.fingerprint = s.fingerprint FROM exports e "
                           "JOIN day_summary s USING (category, symbol, day) ORDER BY e.day")
    assert [(Path(p).name, size, same) for p, size, same in rows] == [
        ("backfill_2024-01-07.parquet", cache_path(cache, day(7)).stat().st_size, True),
        ("backfill_2024-01-08.parquet", cache_path(cache, day(8)).stat().st_size, True)]


@pytest.mark.parametrize("damage", ["truncated", "foreign", "tampered", "missing"])
def test_verify_reports_a_damaged_file_as_a_fail_line(sim_thread: RunningSim, stored: tuple[Path, Path],
                                                      damage: str) -> None:
    db, cache = stored
    target = cache_path(cache, day(7))
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[:-100])
    elif damage == "foreign":
        target.write_text("not parquet at all")
    elif damage == "missing":
        target.unlink()
    else:  # the same rows, one price changed: a file someone edited
        table = pq.read_table(target)
        prices = table.column("p").to_pylist()
        prices[0] += 1.0
        pq.write_table(table.set_column(2, "p", pa.array(prices)), target, compression="snappy")
    code, out, err = run_cli(cli_env(sim_thread.url, db, cache), "verify")
    assert code == 1, (out, err)
    assert "Traceback" not in out + err
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 1 and "exports match the store" in fails[0] and "2024-01-07" in fails[0], out


def test_backfill_with_cache_reads_the_store_when_a_file_cannot_be_read(sim_thread: RunningSim,
                                                                        stored: tuple[Path, Path]) -> None:
    db, cache = stored
    settings = Settings(backfill_db_path=db, backfill_cache_dir=cache, _env_file=None)
    history = BybitConnectorHistory(settings, fetch_config=sim_fetch_config(sim_thread.url))
    good = asyncio.run(history.backfill_with_cache(dt(day(7)), dt(day(9))))
    target = cache_path(cache, day(7))
    data = bytearray(target.read_bytes())
    data[8:4008] = bytes(4000)  # the data pages, not the footer: size and footer still match the log
    target.write_bytes(bytes(data))
    with pytest.raises(Exception):  # noqa: B017 - what a plain reader of the file gets
        pq.read_table(target)
    again = asyncio.run(history.backfill_with_cache(dt(day(7)), dt(day(9))))
    assert [t.id for t in again] == [t.id for t in good] and len(good) == 4000


def test_backfill_with_cache_serves_today_from_the_store_without_a_file(sim_thread: RunningSim,
                                                                        tmp_path: Path) -> None:
    settings = Settings(backfill_db_path=tmp_path / "t.duckdb", backfill_cache_dir=tmp_path / "cache",
                        _env_file=None)
    history = BybitConnectorHistory(settings, fetch_config=sim_fetch_config(sim_thread.url))
    start, end = dt(day(9)), dt(day(10)) + timedelta(hours=12)
    ticks = asyncio.run(history.backfill_with_cache(start, end))
    assert {t.ts.date() for t in ticks} == {day(9), day(10)}
    assert not cache_path(tmp_path / "cache", day(10)).exists(), "today is not complete: no file"
    assert cache_path(tmp_path / "cache", day(9)).exists()


def test_export_writes_no_file_for_a_day_that_is_not_complete_and_says_why(sim_thread: RunningSim,
                                                                           tmp_path: Path) -> None:
    db, cache = tmp_path / "e.duckdb", tmp_path / "cache"
    with open_store(db) as store:  # day 8 whole, day 10 only its REST tail, day 9 never fetched
        asyncio.run(refresh(store, sim_fetch_config(sim_thread.url), "BTCUSDT", us(day(8)), us(day(9))))
        asyncio.run(refresh(store, sim_fetch_config(sim_thread.url), "BTCUSDT", us(day(10)),
                            us(day(10)) + 12 * 3_600_000_000))
    code, out, err = run_cli(cli_env(sim_thread.url, db, cache), "export", "BTCUSDT", "--start", "2024-01-08",
                             "--end", "2024-01-10T12:00")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].endswith("backfill_2024-01-08.parquet  2,000 rows")
    assert lines[1].startswith("skipped 2024-01-09: not complete in the store")
    assert lines[2].startswith("skipped 2024-01-10: not complete in the store")
    assert sorted(p.name for p in cache.glob("backfill_*")) == ["backfill_2024-01-08.parquet"]


def test_a_day_a_follower_captures_is_exported_so_far_but_a_hole_before_its_last_commit_refuses_it(
        tmp_path: Path) -> None:
    """Today's file grows while `follow` runs: the day counts as complete up to the follower's last
    commit (nothing stored after it), never with a hole before it."""
    from datetime import date

    from store.cache_dir import complete_days
    from store.coverage import add_coverage

    day0 = date(2024, 1, 11)
    start = 19_733 * 86_400_000_000  # 2024-01-11 00:00 UTC
    with open_store(tmp_path / "live.duckdb") as store, store.atomic():
        add_coverage(store, market=Market("linear", "BTCUSDT"), source="ws", span=Span(start - 60_000_000, start + 3_600_000_000),
                     added_rows=0)
        assert complete_days(store, Market("linear", "BTCUSDT"), [day0])[0] == []  # the refresh's rule: whole days
        live = complete_days(store, Market("linear", "BTCUSDT"), [day0], live_through_us=start + 3_600_000_000)
        assert live[0] == [day0]
        add_coverage(store, market=Market("linear", "BTCUSDT"), source="ws", span=Span(start + 4_000_000_000, start + 5_000_000_000),
                     added_rows=0)
        holed = complete_days(store, Market("linear", "BTCUSDT"), [day0], live_through_us=start + 5_000_000_000)
        assert holed[0] == [] and "not complete" in holed[1][0].reason


def test_a_daily_file_rewritten_while_it_is_read_is_read_whole(tmp_path: Path) -> None:
    """The follower rewrites today's file atomically every minute while the context service reads
    it: every read sees one whole version, never one version's footer with the other's pages (read
    by path, pyarrow opened the file twice: 41% of reads failed in a loop like this one)."""
    import threading

    from store import CACHE_SCHEMA
    from store.history import read_cache

    cache = tmp_path / "cache"
    cache.mkdir()
    target = cache_path(cache, day(2))
    start = dt(day(2))

    def version(rows: int) -> pa.Table:
        times = [us(day(2)) // 1000 + k for k in range(rows)]
        return pa.table({"T": times, "i": [str(k) for k in range(rows)], "p": [1.0] * rows, "q": [1.0] * rows,
                         "s": ["buy"] * rows, "m": [False] * rows}, schema=CACHE_SCHEMA)

    versions = [version(3_000), version(4_000)]
    pq.write_table(versions[0], target)
    stop = threading.Event()

    def rewrite() -> None:
        k = 0
        while not stop.is_set():
            temp = target.with_name(f".{target.name}.{k % 2}.tmp")
            pq.write_table(versions[k % 2], temp)
            os.replace(temp, target)
            k += 1

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        counts = {len(read_cache(cache, start, start + timedelta(days=1))) for _ in range(200)}
    finally:
        stop.set()
        writer.join()
    assert counts <= {3_000, 4_000}
