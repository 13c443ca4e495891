"""Many staged days in one transaction (`store.ingest_many`): the same store as one day at a time.

The fresh-day path skips the match, the REST replacement and the per-day summary for days it shows
hold nothing yet; every way a day can fail to be fresh (rows already on it, REST rows to replace, a
repeated id, an id stored near it or far away, a row outside its day, a second day of one market
in the group, damaged filter bits) must still end exactly as the one-day-at-a-time path ends.
"""

from __future__ import annotations

import random
from concurrent.futures import Future
from pathlib import Path

import pyarrow as pa
import pytest

from fetch.market_span import Market, Span
from fetch.models import TRADE_SCHEMA
from store import Store, id_filter
from store.day_summary import mismatches
from store.ingest import Staging, ingest_batch
from store.ingest_many import StagedDay, commit_day, commit_days
from store.schema import open_store

DAY = 86_400_000_000
T0 = 1_704_067_200_000_000  # 2024-01-01
SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT")


def rows(symbol: str, ids: list[str], times: list[int], prices: list[float] | None = None,
         source: str = "archive") -> pa.Table:
    n = len(ids)
    return pa.table({"category": ["linear"] * n, "symbol": [symbol] * n, "trade_id": ids, "time_us": times,
                     "price": prices or [100.0] * n, "qty": [1.0] * n,
                     "side": ["buy" if k % 2 else "sell" for k in range(n)], "is_block_trade": [None] * n,
                     "source": [source] * n}, schema=TRADE_SCHEMA)


def staged(private: Store, symbol: str, day: int, table: pa.Table) -> StagedDay:
    market = Market("linear", symbol)
    staging = Staging(private.branch(), market=market)
    staging.append(table)
    staging.detach()
    return StagedDay(market, Span(T0 + day * DAY, T0 + (day + 1) * DAY), staging, f"file-{symbol}-{day}")


def snapshot(store: Store) -> dict[str, object]:
    return {
        "trades": sorted(store.query("SELECT category, symbol, trade_id, time_us, price, qty, side, source FROM trades")),
        "coverage": sorted(store.query("SELECT category, symbol, source, start_us, end_us, file_rows, expected_rows, "
                                       "added_rows, detail FROM coverage")),
        "conflicts": sorted(store.query("SELECT category, symbol, trade_id, new_time_us, new_price FROM conflicts")),
        "summary": sorted(store.query("SELECT category, symbol, day, trades, first_us, last_us, fingerprint "
                                      "FROM day_summary")),
        "mismatches": mismatches(store),
    }


def preload(store: Store, plan: list[tuple[str, pa.Table]]) -> None:
    for symbol, table in plan:
        with store.atomic():
            ingest_batch(store, table, market=Market("linear", symbol))


def random_case(rng: random.Random) -> tuple[list[tuple[str, pa.Table]], list[tuple[str, int, pa.Table]]]:
    """What the store holds already, and the days of one group (symbol, day, rows)."""
    stored: list[tuple[str, pa.Table]] = []
    days: list[tuple[str, int, pa.Table]] = []
    for symbol in rng.sample(SYMBOLS, rng.randint(1, len(SYMBOLS))):
        old = [f"{symbol}-old-{k}" for k in range(20)]
        if rng.random() < 0.5:
            stored.append((symbol, rows(symbol, old, [T0 + 1 * DAY + 1000 * k for k in range(20)])))
        if rng.random() < 0.3:  # REST rows on day 3, with the archive's ids or (as spot's are) others
            rest_ids = rng.choice([[f"{symbol}-3-{k}" for k in range(5)], [f"{symbol}-rest-{k}" for k in range(5)]])
            stored.append((symbol, rows(symbol, rest_ids, [T0 + 3 * DAY + 10 * k for k in range(5)], source="rest")))
        for day in sorted(rng.sample([0, 2, 3, 6, 9], rng.randint(1, 3))):
            n = rng.randint(5, 40)
            ids = [f"{symbol}-{day}-{k}" for k in range(n)]
            times = [T0 + day * DAY + 500 * k for k in range(n)]
            prices = [100.0 + k for k in range(n)]
            fault = rng.choice(["none", "none", "repeat", "repeat-other", "near", "far", "outside", "same-group"])
            if fault == "repeat":
                ids.append(ids[0]); times.append(times[0]); prices.append(prices[0])
            elif fault == "repeat-other":
                ids.append(ids[1]); times.append(times[1] + 1); prices.append(999.0)
            elif fault in ("near", "far"):  # an id stored on day 1 (near day 0 and 2, far from 6 and 9)
                ids.append(old[3]); times.append(times[-1] + 1); prices.append(103.0)
            elif fault == "outside":
                times[0] = T0 + day * DAY - 1
            elif fault == "same-group" and days and days[-1][0] == symbol:
                ids.append(days[-1][2].column("trade_id")[0].as_py()); times.append(times[-1] + 1)
                prices.append(prices[-1])
            days.append((symbol, day, rows(symbol, ids, times, prices)))
    rng.shuffle(days)
    return stored, days


@pytest.mark.parametrize("seed", range(40))
def test_a_group_commit_ends_as_committing_each_day_alone(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    stored, days = random_case(rng)
    id_filter.forget_mapped()
    with open_store(tmp_path / "alone.duckdb") as alone, open_store(tmp_path / "group.duckdb") as group, \
            Store.private() as private:
        preload(alone, stored)
        preload(group, stored)
        expected = []
        for symbol, day, table in days:
            with alone.atomic():
                expected.append(commit_day(alone, staged(private, symbol, day, table)))
        with group.atomic():
            results = commit_days(group, [staged(private, symbol, day, table) for symbol, day, table in days])
        assert results == expected
        assert snapshot(group) == snapshot(alone)
        assert snapshot(group)["mismatches"] == []
    id_filter.forget_mapped()


def test_fresh_days_of_many_markets_are_stored_whole_with_their_coverage(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.duckdb") as store, Store.private() as private:
        days = [staged(private, symbol, day, rows(symbol, [f"{symbol}-{day}-{k}" for k in range(50)],
                                                   [T0 + day * DAY + k for k in range(50)]))
                for symbol in SYMBOLS for day in (0,)]
        with store.atomic():
            results = commit_days(store, days)
        assert [(r.received, r.added, r.duplicates) for r in results] == [(50, 50, 0)] * len(SYMBOLS)
        assert store.query_one("SELECT count(*), count(DISTINCT (symbol, trade_id)) FROM trades") == (200, 200)
        assert store.query_one("SELECT count(*), sum(expected_rows) FROM coverage") == (len(SYMBOLS), 200)
        assert mismatches(store) == []
        # Each market's filter names the generation its insert made: trusted at the next ingest.
        again = [staged(private, symbol, 0, rows(symbol, [f"{symbol}-0-{k}" for k in range(50)],
                                                 [T0 + k for k in range(50)])) for symbol in SYMBOLS]
        with store.atomic():
            repeat = commit_days(store, again)
        assert [(r.added, r.duplicates) for r in repeat] == [(0, 50)] * len(SYMBOLS)
        for symbol in SYMBOLS:
            found = id_filter.read_header(id_filter.filter_path(store.path, "linear", symbol))
            generation = store.query_one("SELECT generation FROM id_generation WHERE symbol = ?", [symbol])[0]
            assert found is not None and found[0].generation == generation


def test_damaged_filter_bits_let_no_duplicate_of_a_neighbouring_day_in(tmp_path: Path) -> None:
    """Bits lost behind an intact header say "never seen" for stored ids: a day beside the stored one
    that repeats some of them is not taken for fresh (the look near it finds them)."""
    db = tmp_path / "s.duckdb"
    id_filter.forget_mapped()
    with open_store(db) as store, Store.private() as private:
        stored = [f"s-{k}" for k in range(100)]
        preload(store, [("AAAUSDT", rows("AAAUSDT", stored, [T0 + DAY + k for k in range(100)]))])
        path = id_filter.filter_path(db, "linear", "AAAUSDT")
        id_filter.forget_mapped()
        data = bytearray(path.read_bytes())
        data[id_filter.HEADER_SIZE:] = bytes(len(data) - id_filter.HEADER_SIZE)
        path.write_bytes(bytes(data))
        id_filter.forget_mapped()
        day = staged(private, "AAAUSDT", 2, rows("AAAUSDT", stored[:30] + ["new-1"],
                                                 [T0 + 2 * DAY + k for k in range(31)]))
        with store.atomic():
            [result] = commit_days(store, [day])
        assert (result.added, result.duplicates, result.conflicts) == (1, 0, 30)  # other times: conflicts
        assert store.query_one("SELECT count(*) - count(DISTINCT trade_id) FROM trades") == (0,)
    id_filter.forget_mapped()


@pytest.mark.parametrize("damaged", [0, 2])
def test_damaged_bits_of_one_market_in_a_group_of_neighbouring_days_let_no_duplicate_in(tmp_path: Path,
                                                                                       damaged: int) -> None:
    """Three markets, each with a stored day and the next one in one group; the filter of one of
    them (the first or the last of the group) has lost its bits and its next day repeats stored
    ids: the look near each day (one statement for all) checks each day against its own market,
    so that day is not taken for fresh, and the other two are."""
    db = tmp_path / "s.duckdb"
    symbols = SYMBOLS[:3]
    id_filter.forget_mapped()
    with open_store(db) as store, Store.private() as private:
        stored = {symbol: [f"{symbol}-s-{k}" for k in range(100)] for symbol in symbols}
        preload(store, [(symbol, rows(symbol, stored[symbol], [T0 + DAY + k for k in range(100)]))
                        for symbol in symbols])
        path = id_filter.filter_path(db, "linear", symbols[damaged])
        id_filter.forget_mapped()
        data = bytearray(path.read_bytes())
        data[id_filter.HEADER_SIZE:] = bytes(len(data) - id_filter.HEADER_SIZE)
        path.write_bytes(bytes(data))
        id_filter.forget_mapped()
        days = []
        for k, symbol in enumerate(symbols):
            ids = (stored[symbol][:30] if k == damaged else []) + [f"{symbol}-new-{j}" for j in range(5)]
            days.append(staged(private, symbol, 2, rows(symbol, ids, [T0 + 2 * DAY + j for j in range(len(ids))])))
        with store.atomic():
            results = commit_days(store, days)
        for k, result in enumerate(results):
            expected = (5, 0, 30) if k == damaged else (5, 0, 0)
            assert (result.added, result.duplicates, result.conflicts) == expected, symbols[k]
        assert store.query_one("SELECT count(*) - count(DISTINCT (symbol, trade_id)) FROM trades") == (0,)
    id_filter.forget_mapped()


def test_one_bad_day_in_a_group_fails_alone(tmp_path: Path) -> None:
    """A transaction of many days that fails is retried day by day: the others are committed."""
    from store.pipeline import CommitQueue

    with open_store(tmp_path / "s.duckdb") as store, Store.private() as private:
        good = [staged(private, symbol, 0, rows(symbol, [f"{symbol}-{k}" for k in range(10)],
                                                [T0 + k for k in range(10)])) for symbol in SYMBOLS[:3]]
        bad = staged(private, SYMBOLS[3], 0, rows(SYMBOLS[3], ["x"], [T0]))
        bad.staging.table = pa.table({"nonsense": [1]})  # cannot be inserted
        queue = CommitQueue()
        blocker = store.sibling()
        with blocker.atomic():  # the commit thread waits for this transaction: the days gather
            futures: list[Future] = [queue.submit(store, day) for day in [good[0], bad, *good[1:]]]
        blocker.release()
        results = []
        for future in futures:
            try:
                results.append(future.result(timeout=60).added)
            except Exception as error:  # noqa: BLE001 - the bad day's own error
                results.append(type(error).__name__)
        assert results[0] == 10 and results[2:] == [10, 10]
        assert isinstance(results[1], str)
        assert store.query_one("SELECT count(*) FROM trades") == (30,)
        assert store.query_one("SELECT count(*) FROM coverage") == (3,)


def test_a_day_the_filter_has_seen_one_id_of_is_not_probed_twice(tmp_path: Path) -> None:
    """A group day with one id stored a month earlier goes on to the general path with the filter's
    first answer: probed again, every one of its ids (added by the first probe) would be a hit, each
    looked for over the whole market and counted stale, and the filter thrown away."""
    db = tmp_path / "s.duckdb"
    id_filter.forget_mapped()
    with open_store(db) as store, Store.private() as private:
        preload(store, [("AAAUSDT", rows("AAAUSDT", ["old-1"], [T0]))])
        ids = [f"new-{k}" for k in range(id_filter.STALE_HITS_LIMIT + 5_000)] + ["old-1"]
        day = staged(private, "AAAUSDT", 30, rows("AAAUSDT", ids, [T0 + 30 * DAY + k for k in range(len(ids))]))
        with store.atomic():
            [result] = commit_days(store, [day])
        assert (result.added, result.duplicates + result.conflicts) == (len(ids) - 1, 1)
        found = id_filter.read_header(id_filter.filter_path(db, "linear", "AAAUSDT"))
        generation = store.query_one("SELECT generation FROM id_generation")[0]
        assert found is not None and found[0].generation == generation  # kept, not discarded
    id_filter.forget_mapped()


def test_a_day_whose_staged_rows_were_let_go_is_refused_not_covered_empty(tmp_path: Path) -> None:
    """The refresh lets a day's rows go once it is committed (or given up, say a second Ctrl-C). A
    commit of it after that must fail, not store nothing and claim the day with a coverage row."""
    from store.errors import StoreError

    with open_store(tmp_path / "s.duckdb") as store, Store.private() as private:
        day = staged(private, "AAAUSDT", 0, rows("AAAUSDT", ["a-1", "a-2"], [T0, T0 + 1]))
        day.staging.table = None
        with pytest.raises(StoreError, match="already taken"), store.atomic():
            commit_days(store, [day])
        assert store.query_one("SELECT count(*) FROM coverage") == (0,)
        assert store.query_one("SELECT count(*) FROM trades") == (0,)


def test_a_day_summary_edited_away_and_a_lost_filter_let_no_stored_id_in_twice(tmp_path: Path) -> None:
    """`day_summary` only picks the fresh candidates: with every summary row deleted by hand and the
    filter file gone, the filter is rebuilt from the trades themselves, finds the ids, and the day
    goes down the general path (duplicates, not a second copy)."""
    db = tmp_path / "s.duckdb"
    id_filter.forget_mapped()
    with open_store(db) as store, Store.private() as private:
        ids = [f"x-{k}" for k in range(50)]
        preload(store, [("AAAUSDT", rows("AAAUSDT", ids, [T0 + k for k in range(50)]))])
        store.execute("DELETE FROM day_summary")
        id_filter.filter_path(db, "linear", "AAAUSDT").unlink()
        id_filter.forget_mapped()
        day = staged(private, "AAAUSDT", 0, rows("AAAUSDT", ids, [T0 + k for k in range(50)]))
        with store.atomic():
            [result] = commit_days(store, [day])
        assert (result.added, result.duplicates) == (0, 50)
        assert store.query_one("SELECT count(*) - count(DISTINCT trade_id) FROM trades") == (0,)
    id_filter.forget_mapped()
