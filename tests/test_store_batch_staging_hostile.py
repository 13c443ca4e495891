"""Hostile files and situations for the small files read together (`store.batch_staging`), the
staging budget, waiting out a worker (`store.threads`) and tick ids in Python.

Found by attacking this code (each test failed on it before the fix named in its docstring): the
invariant is that for ANY input file `stage_many` gives exactly what `stage_file` gives (the same
rows as a set, tick ids, summary, or the same error), that no result of a group is lost, and that a
cancelled caller never leaves its worker behind. Tests marked "covers" held from the start and stay
as guards of risks no other test covers.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import types
import uuid
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest
from stagingutil import alone, outcome

from fetch.archive_csv import LINEAR_COLUMNS, SPOT_COLUMNS
from fetch.errors import ArchiveError
from fetch.market_span import Market
from store.batch_staging import SmallFile, StagingBatcher, stage_many
from store.db import Store
from store.ingest import EMPTY, Staging, with_tick_ids
from store.staging import Stopped, stage_file
from store.staging_budget import StagingBudget
from store.threads import in_thread
from store.tick_ids import TICK_ID_SQL, md5_low_sql, tick_id, tick_ids, tick_number_sql

DAY = date(2024, 1, 2)
START_S = 1704153600  # 2024-01-02 00:00 UTC
LINEAR = Market("linear", "BTCUSDT")
SPOT = Market("spot", "BTCUSDT")


# ---- helpers ------------------------------------------------------------------------------------

def _row(k: int, **values: str) -> dict[str, str]:
    row = {"timestamp": f"{START_S + 60 * k}.{k % 10_000:04d}", "symbol": "BTCUSDT", "side": "Buy" if k % 2 else "Sell",
           "size": f"0.{k + 1:03d}", "price": f"{42_000 + k}.5", "tickDirection": "PlusTick",
           "trdMatchID": str(uuid.UUID(int=k + 1)), "grossValue": "1.0", "homeNotional": "1.0",
           "foreignNotional": "1.0"}
    row.update(values)
    return row


def _linear(rows: list[dict[str, str]]) -> bytes:
    lines = [",".join(LINEAR_COLUMNS)] + [",".join(row[name] for name in LINEAR_COLUMNS) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def _one_bad(**values: str) -> bytes:
    """40 clean rows, row 20 with `values`."""
    rows = [_row(k) for k in range(40)]
    rows[20].update(values)
    return _linear(rows)


def _spot(bad: tuple[int, str] | None = None) -> bytes:
    rows = [[str(k + 1), str(START_S * 1000 + 1000 * k), f"{42_000 + k}.5", "0.25", "buy" if k % 2 else "sell"]
            for k in range(40)]
    if bad is not None:
        rows[20][bad[0]] = bad[1]
    return ("\n".join([",".join(SPOT_COLUMNS)] + [",".join(row) for row in rows]) + "\n").encode()


def _write(directory: Path, name: str, text: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(gzip.compress(text))
    return path


@pytest.fixture
def private():
    with Store.private() as database:
        yield database.branch()


def _together(files: list[SmallFile]) -> list[Staging | BaseException]:
    with Store.private() as reader:
        return stage_many(reader, files)


def _file(private: Store, path: Path, market: Market = LINEAR, stopping: threading.Event | None = None) -> SmallFile:
    return SmallFile(private, market, DAY, path, stopping or threading.Event())


def _drain(batcher: StagingBatcher) -> None:
    """Wait until every call the batcher's single thread was handed has run (FIFO executor)."""
    batcher._thread.submit(lambda: None).result(timeout=120)


# ---- 1. numbers DuckDB reads and pyarrow refuses ---------------------------------------------------

# DuckDB's DOUBLE reader accepts '_' digit separators ('1_000' = 1000.0); pyarrow's CSV reader (the
# parser of record) refuses them: `stage_file` fails the day ("CSV conversion error to double"). The
# batch kept such a file; now it reads numbers as text and converts only plain decimals.
@pytest.mark.parametrize(("market", "text"), [
    (LINEAR, _one_bad(size="1_000")),
    (LINEAR, _one_bad(price="42_000.5")),
    (LINEAR, _one_bad(size="1e1_0")),
    (SPOT, _spot((3, "1_0"))),
    (SPOT, _spot((2, "42_000.5"))),
], ids=["linear_size", "linear_price", "linear_size_exponent", "spot_volume", "spot_price"])
def test_a_number_with_an_underscore_ends_as_alone(tmp_path: Path, private: Store, market: Market,
                                                    text: bytes) -> None:
    file = _file(private, _write(tmp_path, "f.csv.gz", text), market)
    [together] = _together([file])
    assert outcome(together) == alone(file)


# ---- 2. a space beside a quote --------------------------------------------------------------------

# DuckDB's CSV reader drops one space before an opening quote and after a closing one (' "abc"' and
# '"abc" ' both read 'abc'; ' "a,b"' is one field); pyarrow keeps them as text (' "abc"', 'abc ') or
# splits the field. The batch stored other trade ids than the parser of record, or kept files it
# refuses; now it reads with quoting off and leaves any quote to `stage_file`.
@pytest.mark.parametrize(("market", "text"), [
    (LINEAR, _one_bad(trdMatchID=' "abc"')),
    (LINEAR, _one_bad(trdMatchID='"abc" ')),
    (LINEAR, _one_bad(trdMatchID=' "a,b"')),
    (LINEAR, _one_bad(side=' "Buy"')),
    (LINEAR, _one_bad(symbol=' "BTCUSDT"')),
    (LINEAR, _one_bad(timestamp=f' "{START_S + 5}.5"')),
    (LINEAR, _one_bad(price=' "42000.5"')),
    (SPOT, _spot((0, ' "21"'))),
    (SPOT, _spot((0, '"21" '))),
    (SPOT, _spot((1, f' "{START_S * 1000 + 5}"'))),
], ids=["id_space_quote", "id_quote_space", "id_space_quoted_comma", "side", "symbol", "time", "price",
        "spot_id_space_quote", "spot_id_quote_space", "spot_time"])
def test_a_space_beside_a_quote_ends_as_alone(tmp_path: Path, private: Store, market: Market, text: bytes) -> None:
    file = _file(private, _write(tmp_path, "f.csv.gz", text), market)
    [together] = _together([file])
    assert outcome(together) == alone(file)


# ---- 3. a corrupt deflate stream -----------------------------------------------------------------

def _corrupt(path: Path) -> Path:
    """The gzip file with its first deflate block made invalid (BFINAL=1, BTYPE=11, reserved): isal
    raises its own `IsalError` at the first read, which is neither OSError nor EOFError nor ValueError."""
    data = bytearray(path.read_bytes())
    data[10] = 0xFF  # the first byte after the 10-byte gzip header (zlib's header has no name)
    path.write_bytes(bytes(data))
    return path


def test_a_corrupt_small_file_fails_alone_with_an_archive_error(tmp_path: Path, private: Store) -> None:
    """isal's own `IsalError` (neither OSError, EOFError nor ValueError) escaped `layout_of` and
    `stage_many`; now any unreadable file is staged alone, which names it ('truncated or malformed')."""
    bad = _file(private, _corrupt(_write(tmp_path, "bad.csv.gz", _one_bad())))
    good = _file(private, _write(tmp_path, "good.csv.gz", _one_bad()))
    assert isinstance(alone(bad), tuple) and alone(bad)[0] is ArchiveError
    results = _together([bad, good])
    assert [outcome(r) for r in results] == [alone(bad), alone(good)]


def test_a_corrupt_file_does_not_fail_the_other_refreshes_of_its_batch(tmp_path: Path, private: Store) -> None:
    """Through the batcher: the error was handed to every file of the group; now the clean file
    beside the corrupt one is staged, and only the corrupt one fails."""
    batcher = StagingBatcher()
    gate = threading.Event()
    batcher._thread.submit(gate.wait, 60)  # the two files wait together, read as one group
    bad = batcher.submit(_file(private, _corrupt(_write(tmp_path, "bad.csv.gz", _one_bad()))))
    good = batcher.submit(_file(private, _write(tmp_path, "good.csv.gz", _one_bad())))
    gate.set()
    _drain(batcher)
    assert isinstance(bad.exception(timeout=0), ArchiveError), repr(bad.exception(timeout=0))
    assert good.exception(timeout=0) is None, repr(good.exception(timeout=0))
    assert isinstance(good.result(timeout=0), Staging)


async def test_a_corrupt_small_file_fails_its_day_not_the_whole_market_run(tmp_path: Path) -> None:
    """End to end, through the emulator (`corrupt_deflate`): one symbol's day-2 file arrives corrupt. Staged alone it is
    an ArchiveError (that day fails, the others complete); read in a batch, IsalError escaped the
    refresh and the market run's TaskGroup."""
    from storeutil import day, duplicate_keys, sim_fetch_config, us

    from fetch.market_span import Span
    from sim import MarketSpec, SimConfig, running_sim
    from store.market import refresh_market
    from store.schema import open_store

    markets = [MarketSpec(f"S{k:02d}USDT", "linear", trades_per_day=300, listed=day(1)) for k in range(3)]
    config = SimConfig(now_ms=us(day(10)) // 1000 + 12 * 3_600_000, markets=markets, cache_dir=tmp_path / "sim")
    store = open_store(tmp_path / "store.duckdb")
    try:
        async with running_sim(config) as sim:
            sim.state.faults.add("corrupt_deflate", symbol="S01USDT", day=day(2))
            summary = await refresh_market(store, sim_fetch_config(sim.url), None, Span(us(day(2)), us(day(4))),
                                           concurrency=3)
            assert sim.state.faults.fired["corrupt_deflate"] == 1
        results = {r.symbol: r for r in summary.results}
        assert results["S01USDT"].days_failed == [day(2).isoformat()] and results["S01USDT"].error is None
        assert all(not results[s].failures for s in ("S00USDT", "S02USDT"))
        assert duplicate_keys(store) == []
    finally:
        store.close()


# ---- 4. paths: the same file twice, a glob character ------------------------------------------------

def test_the_same_path_twice_in_one_read_is_not_doubled(tmp_path: Path, private: Store) -> None:
    """A path given twice is read twice by DuckDB (`JOIN f USING (filename)` paired each copy's rows
    with both entries): a repeated path is now staged alone."""
    path = _write(tmp_path, "BTCUSDT2024-01-02.csv.gz", _one_bad())
    files = [_file(private, path), _file(private, path)]
    results = _together(files)
    assert [outcome(r) for r in results] == [alone(f) for f in files]


@pytest.mark.parametrize("name", ["a*.csv.gz", "a?.csv.gz", "a[b].csv.gz"])
def test_a_glob_character_in_a_path_does_not_double_another_file(tmp_path: Path, private: Store, name: str) -> None:
    """DuckDB expands the paths it is given as globs: 'a*.csv.gz' (a legal file name) also read
    'ab.csv.gz', another file of the same read; a path with a glob character is now staged alone."""
    first = _file(private, _write(tmp_path, name, _one_bad()))
    other = _file(private, _write(tmp_path, "ab.csv.gz", _linear([_row(100 + k) for k in range(7)])))
    results = _together([first, other])
    assert [outcome(r) for r in results] == [alone(first), alone(other)]


# ---- 5. cancellation ------------------------------------------------------------------------------

def test_a_stopped_refresh_gets_stopped_from_the_batch_too(tmp_path: Path, private: Store) -> None:
    """`stage_file` raises Stopped once the refresh's `stopping` is set; the batch did the work of
    the cancelled refresh anyway. Now it answers Stopped too."""
    stopping = threading.Event()
    stopping.set()
    file = _file(private, _write(tmp_path, "f.csv.gz", _one_bad()), stopping=stopping)
    with pytest.raises(Stopped):
        stage_file(file.private, file.market, file.day, file.path, stopping)
    [together] = _together([file])
    assert isinstance(together, Stopped), together


def test_a_cancelled_future_does_not_strand_the_rest_of_its_group(tmp_path: Path, private: Store) -> None:
    """A future cancelled before its group was read (what `asyncio.wrap_future` does when its awaiter
    is cancelled) made `set_result` raise InvalidStateError out of the loop resolving the group, so
    the later files' refreshes waited forever. Now a group's futures are set running when taken,
    and a cancelled one is left out."""
    batcher = StagingBatcher()
    gate = threading.Event()
    batcher._thread.submit(gate.wait, 60)
    first = batcher.submit(_file(private, _write(tmp_path, "a.csv.gz", _one_bad())))
    second = batcher.submit(_file(private, _write(tmp_path, "b.csv.gz", _one_bad())))
    assert first.cancel(), "what asyncio.wrap_future does to it when its awaiter is cancelled"
    gate.set()
    _drain(batcher)
    assert second.done(), "the other refresh's file was read but its future never resolved"
    assert isinstance(second.result(timeout=0), Staging)


def test_a_cancelled_commit_future_does_not_strand_the_rest_of_its_group(monkeypatch) -> None:
    """The same in `pipeline.CommitQueue`: the days after a cancelled future in the group never
    learned that they were committed."""
    from store import pipeline

    monkeypatch.setattr(pipeline, "_commit", lambda store, days: [EMPTY for _ in days])
    queue = pipeline.CommitQueue()
    gate = threading.Event()
    queue._thread.submit(gate.wait, 60)
    store = types.SimpleNamespace(path="/nowhere/store.duckdb")
    day = types.SimpleNamespace(staging=types.SimpleNamespace(received=1))
    first, second = queue.submit(store, day), queue.submit(store, day)  # type: ignore[arg-type]
    assert first.cancel()
    gate.set()
    queue._thread.submit(lambda: None).result(timeout=60)
    assert second.done(), "committed, but its refresh is never told"


async def test_in_thread_waits_for_its_worker_even_when_cancelled_twice() -> None:
    """A cancelled caller waits for the worker (it holds a DuckDB connection the cancelled run's
    cleanup closes next): the second wait was not shielded, so a second cancel() let the caller go
    while the worker still ran (`pipeline._staged` and `_committed` too). `store.threads.finish`
    waits through every cancel."""
    started, release = threading.Event(), threading.Event()

    def worker() -> None:
        started.set()
        release.wait(60)

    task = asyncio.ensure_future(in_thread(worker))
    await asyncio.to_thread(started.wait, 60)
    task.cancel()
    for _ in range(10):
        await asyncio.sleep(0)
    assert not task.done(), "one cancel: still waiting for the worker (as designed)"
    task.cancel()
    for _ in range(50):  # only the loop's own callbacks: no thread involved
        await asyncio.sleep(0)
    returned_early = task.done()
    release.set()
    await asyncio.gather(task, return_exceptions=True)
    assert not returned_early, "the caller was let go while its worker still ran"


# ---- guards: these held from the start, and cover risks no other test covers ----------------------

# covers TICK_ID_SQL, with_tick_ids (the staged SQL twin) and tick_ids/tick_id (Python) being
# equal for ids at the edges: 2**63-1 and 2**63, 19 and 20 digits, leading zeros, empty, unicode
# and fullwidth digits, NUL, a digit-only id in a batch of UUIDs (the per-id branch of tick_ids).
def test_tick_ids_agree_with_the_sql_twins_at_the_edges() -> None:
    import duckdb

    ids = ["", " ", "0", "00", "0" * 19, "0" * 20, "1" * 19, "9223372036854775807", "9223372036854775808",
           "09223372036854775807", "18446744073709551615", "9999999999999999999", "-1", "+1", "1 ", " 1", "1.0",
           "1e3", "0x10", "1_000", "\u0661\u0662", "\uff11\uff12", "\u00b2", "a\x00b", "\x00", "1\x00", "e\u0301",
           "\U0001f600", "a" * 5000, str(uuid.UUID(int=7)), "123\n"]
    table = pa.table({"trade_id": ids})
    with duckdb.connect() as con:
        con.register("t", table)
        sql = [r[0] for r in con.execute(f"SELECT {TICK_ID_SQL} FROM t").fetchall()]
        parts = con.sql(f"SELECT trade_id, tick_number, {md5_low_sql('trade_id')} AS md5_low "
                        f"FROM (SELECT *, {tick_number_sql('trade_id')} AS tick_number FROM t)").to_arrow_table()
    staged = with_tick_ids(parts).column("tick_id").to_pylist()
    assert list(tick_ids(ids)) == sql == staged == [tick_id(i) for i in ids]
    no_numbers = [i for i in ids if not (i.isascii() and i.isdigit())]
    assert list(tick_ids(no_numbers)) == [tick_id(i) for i in no_numbers]


# covers CSV quirks where DuckDB and pyarrow could have disagreed but do not (each file ends
# exactly as staged alone, kept from the read or staged alone).
@pytest.mark.parametrize(("market", "text"), [
    (LINEAR, _one_bad(trdMatchID='"ab\ncd"')),      # a quoted newline (pyarrow reads it: one thread)
    (LINEAR, _one_bad(trdMatchID='"ab\rcd"')),
    (LINEAR, _one_bad(trdMatchID='"ab,cd"')),
    (LINEAR, _one_bad(trdMatchID='ab"cd')),
    (LINEAR, _one_bad(trdMatchID='"ab"cd')),
    (LINEAR, _one_bad(trdMatchID="ab\x00cd")),      # a NUL byte: hashed alike
    (LINEAR, _one_bad(trdMatchID="   ")),
    (LINEAR, _one_bad(trdMatchID="\u0661\u0662\u0663")),
    (LINEAR, _one_bad(trdMatchID='""')),
    (LINEAR, _one_bad(price=" 42000.5")),
    (LINEAR, _one_bad(price="42000.5 ")),
    (LINEAR, _one_bad(price="+42000.5")),
    (LINEAR, _one_bad(price="0042000.5")),
    (LINEAR, _one_bad(price="-0")),
    (LINEAR, _one_bad(price="Infinity")),
    (LINEAR, _one_bad(price="1e400")),
    (LINEAR, _one_bad(price="1e-400")),
    (LINEAR, _one_bad(size="1e3")),
    (LINEAR, _one_bad(size="0x10")),
    (LINEAR, _one_bad(side="Buy ")),
    (LINEAR, _one_bad(side="SELL")),
    (LINEAR, _one_bad(symbol="BTCUSDT ")),
    (LINEAR, _one_bad(timestamp=f"0{START_S + 5}.5")),
    (LINEAR, _one_bad(timestamp=f"{START_S + 5}.")),
    (LINEAR, _one_bad(timestamp=f"{START_S + 5}.\u0665")),
    (LINEAR, _one_bad(tickDirection="Plus\x00Tick")),
    (LINEAR, _one_bad(tickDirection='"Plus\nTick"')),
    (LINEAR, _linear([_row(k) for k in range(10)]) + b"\n\n"),
    (LINEAR, _linear([_row(k) for k in range(10)])[:-1]),
    (LINEAR, _linear([_row(k) for k in range(10)]).replace(b"\n", b"\r")),
    (LINEAR, _linear([_row(k) for k in range(10)]).replace(b"\n", b"\n\n", 3)),
    (LINEAR, (",".join(LINEAR_COLUMNS) + ",RPI\n").encode()
     + b"".join(line + (b',"x,\ny"\n' if k == 3 else b",\xff\n" if k == 4 else b",\n")
                for k, line in enumerate(_linear([_row(k) for k in range(10)]).splitlines()[1:]))),
    (SPOT, _spot((0, "0000000021"))),
    (SPOT, _spot((0, "+21"))),
    (SPOT, _spot((0, '"21"'))),
], ids=lambda value: None if isinstance(value, bytes) else value.category)
def test_csv_quirks_that_end_as_alone(tmp_path: Path, private: Store, market: Market, text: bytes) -> None:
    file = _file(private, _write(tmp_path, "f.csv.gz", text), market)
    [together] = _together([file])
    assert outcome(together) == alone(file)


# covers gzip container quirks: several members (DuckDB reads them all), trailing zeros,
# garbage or a missing trailer after the stream, and files of two symbols of one name in two folders.
def test_gzip_quirks_and_same_names_in_two_folders(tmp_path: Path, private: Store) -> None:
    text = _linear([_row(k) for k in range(30)])
    cut = text.index(b"\n", len(text) // 2) + 1
    shapes = {"members": gzip.compress(text[:cut]) + gzip.compress(text[cut:]),
              "zeros": gzip.compress(text) + bytes(16), "garbage": gzip.compress(text) + b"garbage",
              "no_trailer": gzip.compress(text)[:-8]}
    files = []
    for name, data in shapes.items():
        path = tmp_path / f"{name}.csv.gz"
        path.write_bytes(data)
        files.append(_file(private, path))
    for symbol in ("AAAUSDT", "BBBUSDT"):
        rows = [_row(k + (0 if symbol == "AAAUSDT" else 500), symbol=symbol) for k in range(5 if symbol == "AAAUSDT" else 9)]
        files.append(_file(private, _write(tmp_path / symbol, "2024-01-02.csv.gz", _linear(rows)), Market("linear", symbol)))
    results = _together(files)
    assert [outcome(r) for r in results] == [alone(f) for f in files]
    assert [r.received for r in results[-2:]] == [5, 9]  # type: ignore[union-attr]


# covers a take that was woken by a give and cancelled before it ran: nothing is taken, and
# the other waiter woken by the same give still goes on (no lost wake-up).
async def test_a_take_cancelled_after_its_wake_up_takes_nothing_and_loses_no_wake_up() -> None:
    budget = StagingBudget(10)
    await budget.take(10)
    first = asyncio.create_task(budget.take(6))
    second = asyncio.create_task(budget.take(4))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not first.done() and not second.done()
    budget.give(10)  # wakes both
    first.cancel()   # before it runs again
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 5)
    assert first.cancelled() and budget.used == 4
    budget.give(4)
    assert budget.used == 0 and budget._waiters == []


# covers `_Run.conclude` raising (a BackfillError in the worker thread): its refreshes are
# failed, the lock is let go, and the next batch concludes.
async def test_a_conclude_that_raises_fails_its_parts_and_frees_the_lock(monkeypatch) -> None:
    from store import market as market_module
    from store.errors import StoreError

    calls: list[int] = []

    def conclude(store, parts):
        calls.append(len(parts))
        if len(calls) == 1:
            raise StoreError("disk full")

    monkeypatch.setattr(market_module, "conclude", conclude)
    run = market_module._Run(None, None, None, category="linear", id_mode="tick", lake=None,  # type: ignore[arg-type]
                             summary=market_module.MarketSummary("linear", "", "", None),
                             results={s: market_module.SymbolResult("linear", s) for s in ("A", "B")},
                             on_symbol=None, remaining={"A": 1, "B": 1})

    def part(symbol: str):
        return types.SimpleNamespace(ask=types.SimpleNamespace(market=Market("linear", symbol)),
                                     summary=types.SimpleNamespace(days_in_range=0, days_from_store=0, days_fetched=0,
                                                                   rows_added=0, gaps=[], days_failed=[]))

    run.fetched = [part("A")]
    await run.conclude()
    assert run.results["A"].error == "disk full" and not run.concluding.locked()
    run.fetched = [part("B")]
    await run.conclude()
    assert calls == [1, 1] and run.results["B"].error is None and run.remaining == {"A": 0, "B": 0}


# covers paths DuckDB could misread (a comma, quotes, a space, non-ASCII, braces, a '['
# folder that matches nothing, which DuckDB then reads as it is) and files of every layout
# interleaved in one batch: each file's rows come back to it, not to a neighbour.
def test_odd_paths_and_interleaved_layouts_map_each_file_to_its_own_rows(tmp_path: Path, private: Store) -> None:
    names = ["a,b.csv.gz", "q'\"uote.csv.gz", "sp ace.csv.gz", "ünï.csv.gz", "{x,y}.csv.gz", "~home.csv.gz"]
    files = [_file(private, _write(tmp_path, name, _linear([_row(10 * k + j) for j in range(k + 1)])))
             for k, name in enumerate(names)]
    files.append(_file(private, _write(tmp_path / "dir[1]", "x.csv.gz", _linear([_row(900 + j) for j in range(3)]))))
    files.insert(2, _file(private, _write(tmp_path, "spot.csv.gz", _spot()), SPOT))
    rpi = (",".join(LINEAR_COLUMNS) + ",RPI\n").encode() + b"".join(
        line + b",1\n" for line in _linear([_row(700 + j) for j in range(4)]).splitlines()[1:])
    files.insert(4, _file(private, _write(tmp_path, "rpi.csv.gz", rpi)))
    files.insert(1, _file(private, _write(tmp_path, "inverse.csv.gz", _linear([_row(800 + j, symbol="BTCUSD")
                                                                             for j in range(2)])), Market("inverse", "BTCUSD")))
    results = _together(files)
    assert [outcome(r) for r in results] == [alone(f) for f in files]
    assert all(isinstance(r, Staging) for r in results)


# covers `ingest_many._CLASSIFY_SQL` answering each market's filter state exactly as
# `id_filter.states_many` does (markets with and without an `id_generation` row, repeated markets).
def test_the_merged_classify_query_gives_the_states_states_many_gives(tmp_path: Path) -> None:
    from store import id_filter
    from store.ingest_many import _CLASSIFY_SQL
    from store.schema import open_store

    store = open_store(tmp_path / "store.duckdb")
    try:
        with store.atomic():
            id_filter.bump_generations(store, [("linear", "A"), ("linear", "B")])
            id_filter.bump_generations(store, [("linear", "B")])
        markets = [("linear", "A"), ("linear", "B"), ("linear", "C"), ("inverse", "A"), ("linear", "B")]
        rows = store.query(_CLASSIFY_SQL, [list(range(len(markets))), [c for c, _ in markets], [s for _, s in markets],
                                           [DAY] * len(markets)])
        merged = [id_filter.state_of(store_id, generation) for _, _, _, store_id, generation in rows]
        assert merged == id_filter.states_many(store, markets)
        assert [generation for _, generation in merged] == [1, 2, 0, 0, 2]
    finally:
        store.close()
