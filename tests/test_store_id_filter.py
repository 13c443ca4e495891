"""Global uniqueness with the id filter beside the store: exact whatever state the filter file is in."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from fetch.market_span import Market, Span
from fetch.models import TRADE_SCHEMA
from store import Store, id_filter
from store.ingest import ingest_batch
from store.schema import open_store

DAY = 86_400_000_000
T0 = 1_704_067_200_000_000  # 2024-01-01
ROOT = Path(__file__).resolve().parent.parent


def batch(ids: list[str], times: list[int], price: float = 100.0, source: str = "archive") -> pa.Table:
    n = len(ids)
    return pa.table({"category": ["linear"] * n, "symbol": ["BTCUSDT"] * n, "trade_id": ids,
                     "time_us": times, "price": [price] * n, "qty": [1.0] * n, "side": ["sell"] * n,
                     "is_block_trade": [None] * n, "source": [source] * n}, schema=TRADE_SCHEMA)


def day_batch(day: int, ids: list[str], price: float = 100.0) -> pa.Table:
    return batch(ids, [T0 + day * DAY + k for k in range(len(ids))], price)


def ingest(store: Store, table: pa.Table, window: int | None = None):
    with store.atomic():
        return ingest_batch(store, table, market=Market("linear", "BTCUSDT"), match_window_us=window)


def bloom(db: Path) -> Path:
    return id_filter.filter_path(db, "linear", "BTCUSDT")


def generation(store: Store) -> int:
    row = store.query_one("SELECT generation FROM id_generation WHERE category = 'linear' AND symbol = 'BTCUSDT'")
    return int(row[0]) if row else 0


def trusted(store: Store, db: Path) -> bool:
    found = id_filter.read_header(bloom(db))
    store_id = store.query_one("SELECT store_id FROM store_identity")[0]
    return found is not None and found[0].trusted_for(uuid.UUID(store_id).bytes, generation(store))


def duplicate_keys(store: Store) -> int:
    return int(store.query_one("SELECT count(*) FROM (SELECT trade_id FROM trades GROUP BY ALL HAVING count(*) > 1)")[0])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    id_filter.forget_mapped()
    yield tmp_path / "s.duckdb"
    id_filter.forget_mapped()


@pytest.fixture
def store(db: Path) -> Store:
    opened = open_store(db)
    yield opened
    opened.close()


def fill_store(store: Store) -> list[str]:
    ids = [f"id-{k}" for k in range(2_000)]
    ingest(store, day_batch(0, ids))
    return ids


def test_an_id_reused_weeks_later_is_a_conflict_with_the_filter_in_place(store: Store, db: Path) -> None:
    ids = fill_store(store)
    assert trusted(store, db)
    result = ingest(store, day_batch(21, [ids[7], "new-1"], price=101.0))
    assert (result.received, result.added, result.duplicates, result.conflicts) == (2, 1, 0, 1)
    assert store.query_one("SELECT count(*) FROM conflicts WHERE trade_id = ?", [ids[7]])[0] == 1
    assert duplicate_keys(store) == 0 and trusted(store, db)


def test_generation_moves_only_when_rows_are_inserted(store: Store) -> None:
    ids = fill_store(store)
    before = generation(store)
    again = ingest(store, day_batch(0, ids))
    assert again.duplicates == len(ids) and generation(store) == before
    ingest(store, day_batch(1, ["fresh"]))
    assert generation(store) == before + 1


def test_a_filter_that_says_yes_to_everything_changes_no_count(store: Store, db: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ids = fill_store(store)
    real = id_filter.BlockedBloom.probe_and_add

    def always(self: id_filter.BlockedBloom, ticks: np.ndarray) -> np.ndarray:
        real(self, ticks)
        return np.ones(len(ticks), dtype=np.bool_)

    monkeypatch.setattr(id_filter.BlockedBloom, "probe_and_add", always)
    result = ingest(store, day_batch(30, [*ids[:5], "n1", "n2"], price=102.0))
    assert (result.added, result.duplicates, result.conflicts) == (2, 0, 5)
    same = ingest(store, day_batch(0, ids[:10]))
    assert (same.added, same.duplicates, same.conflicts) == (0, 10, 0)
    assert duplicate_keys(store) == 0


def test_a_filter_that_says_no_to_everything_would_store_duplicates(store: Store, db: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The counterfactual: the filter is what stands between a reused id and a duplicate."""
    ids = fill_store(store)
    monkeypatch.setattr(id_filter.BlockedBloom, "probe_and_add",
                        lambda self, ticks: np.zeros(len(ticks), dtype=np.bool_))
    ingest(store, day_batch(30, ids[:3], price=102.0))
    assert duplicate_keys(store) == 3


def stale_missing_corrupt_or_foreign(kind: str, db: Path, store: Store, tmp_path: Path) -> None:
    path = bloom(db)
    if kind == "missing":
        shutil.rmtree(path.parent)
    elif kind == "stale":  # the filter as it was before the last insert: it lacks that batch's ids
        shutil.copyfile(tmp_path / "before.bloom", path)
    elif kind == "corrupt":
        with open(path, "r+b") as file:
            file.write(b"\xff" * 64)
    elif kind == "truncated":
        with open(path, "r+b") as file:
            file.truncate(id_filter.HEADER_SIZE + 64)
    elif kind == "foreign":  # another store's filter at the same generation
        other_db = tmp_path / "other" / "s.duckdb"
        other_db.parent.mkdir()
        with open_store(other_db) as other:
            ingest(other, day_batch(0, ["o-1"]))
            ingest(other, day_batch(1, ["o-2"]))
        shutil.copyfile(bloom(other_db), path)
    elif kind == "other boot":
        found = id_filter.read_header(path)
        assert found is not None
        moved = id_filter.Header(**{**{f: getattr(found[0], f) for f in found[0].__slots__}, "boot": bytes(16)})
        with open(path, "r+b") as file:
            file.write(moved.pack())
    id_filter.forget_mapped()


@pytest.mark.parametrize("kind", ["missing", "stale", "corrupt", "truncated", "foreign", "other boot"])
def test_an_untrustworthy_filter_is_rebuilt_and_the_check_stays_exact(kind: str, store: Store, db: Path,
                                                                      tmp_path: Path) -> None:
    ingest(store, day_batch(0, ["a-1", "a-2"]))
    shutil.copyfile(bloom(db), tmp_path / "before.bloom")
    ingest(store, day_batch(1, ["b-1", "b-2"]))
    assert generation(store) == 2
    stale_missing_corrupt_or_foreign(kind, db, store, tmp_path)
    assert not trusted(store, db)
    result = ingest(store, day_batch(40, ["b-1", "a-2", "c-1"], price=105.0))
    assert (result.added, result.duplicates, result.conflicts) == (1, 0, 2)
    assert duplicate_keys(store) == 0 and trusted(store, db)


def test_a_flushed_filter_from_another_boot_is_trusted_as_it_is(store: Store, db: Path) -> None:
    fill_store(store)
    found = id_filter.read_header(bloom(db))
    assert found is not None
    header, inode = found
    fields = {f: getattr(header, f) for f in header.__slots__}
    with open(bloom(db), "r+b") as file:
        file.write(id_filter.Header(**{**fields, "boot": bytes(16), "flags": id_filter.SYNCED}).pack())
    id_filter.forget_mapped()
    ingest(store, day_batch(3, ["z"]))
    again = id_filter.read_header(bloom(db))
    assert again is not None and again[1] == inode  # the same file: no rebuild


def test_the_follower_matches_globally_while_the_filter_is_trusted(store: Store, db: Path) -> None:
    ids = fill_store(store)
    result = ingest(store, batch([ids[3], "live-1"], [T0 + 20 * DAY, T0 + 20 * DAY + 1], source="ws"), window=DAY)
    assert (result.added, result.conflicts) == (1, 1)
    assert trusted(store, db)


def test_the_follower_without_a_trusted_filter_deletes_it_and_the_next_ingest_rebuilds(store: Store,
                                                                                    db: Path) -> None:
    ids = fill_store(store)
    shutil.copyfile(bloom(db), db.parent / "old.bloom")
    ingest(store, day_batch(1, ["x-1"]))
    shutil.copyfile(db.parent / "old.bloom", bloom(db))  # stale: lacks x-1
    id_filter.forget_mapped()
    live = ingest(store, batch(["live-1"], [T0 + 2 * DAY], source="ws"), window=DAY)
    assert live.added == 1 and not bloom(db).exists()
    later = ingest(store, day_batch(30, ["x-1", "live-1", ids[0], "y"], price=103.0))
    assert (later.added, later.conflicts) == (1, 3) and duplicate_keys(store) == 0


def test_two_ingests_in_one_transaction_see_each_others_ids(store: Store, db: Path) -> None:
    fill_store(store)
    with store.atomic():
        first = ingest_batch(store, day_batch(5, ["t-1", "t-2"]), market=Market("linear", "BTCUSDT"))
        second = ingest_batch(store, day_batch(25, ["t-2", "t-3"], price=107.0), market=Market("linear", "BTCUSDT"),
                              match_window_us=DAY)
    assert (first.added, second.added, second.conflicts) == (2, 1, 1)
    assert duplicate_keys(store) == 0 and trusted(store, db)


def test_a_rolled_back_transaction_leaves_a_filter_that_still_holds(store: Store, db: Path) -> None:
    ids = fill_store(store)
    with pytest.raises(RuntimeError), store.atomic():
        ingest_batch(store, day_batch(6, ["r-1"]), market=Market("linear", "BTCUSDT"))
        raise RuntimeError("rolled back")
    assert trusted(store, db)
    result = ingest(store, day_batch(9, ["r-1", ids[1]], price=99.0))
    assert (result.added, result.conflicts) == (1, 1)


def test_a_filter_grows_by_a_rebuild_when_full(store: Store, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(id_filter, "MIN_CAPACITY", 64)
    monkeypatch.setattr(id_filter, "CAPACITY_STEP", 64)
    for day in range(6):
        ingest(store, day_batch(day, [f"g{day}-{k}" for k in range(100)]))
    found = id_filter.read_header(bloom(db))
    assert found is not None and found[0].capacity >= 600 and trusted(store, db)
    result = ingest(store, day_batch(50, [f"g{d}-7" for d in range(6)], price=1.0))
    assert result.conflicts == 6 and duplicate_keys(store) == 0


def test_archive_rows_replacing_live_ones_are_not_looked_for_far_away(store: Store, db: Path) -> None:
    """The ids of the REST/live rows an archive day replaces are hits, and explained by the replacement."""
    from store.ingest import EXISTING_FAR_SQL, MISSED_BY_FILTER_SQL

    fill_store(store)
    live = [f"L{k}" for k in range(50)]
    ingest(store, batch(live, [T0 + 3 * DAY + k for k in range(50)], source="ws"), window=DAY)
    assert trusted(store, db)
    seen: list[str] = []
    store.tracer = lambda sql, params: seen.append(sql)
    with store.atomic():
        result = ingest_batch(store, batch(live, [T0 + 3 * DAY + k for k in range(50)]), market=Market("linear", "BTCUSDT"),
                              replace_rest=Span(T0 + 3 * DAY, T0 + 4 * DAY))
    store.tracer = None
    assert (result.added, result.replaced) == (50, 50)
    assert MISSED_BY_FILTER_SQL in seen and EXISTING_FAR_SQL not in seen
    assert store.query_one("SELECT count(*) FROM trades WHERE source <> 'archive'")[0] == 0


CHILD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import pyarrow as pa
    from fetch.market_span import Market
    from fetch.models import TRADE_SCHEMA
    from store import id_filter
    from store.ingest import ingest_batch
    from store.schema import open_store

    # The batch's bits never reach the filter, and the process dies between COMMIT and the header.
    id_filter.BlockedBloom.probe_and_add = lambda self, ids: np.zeros(len(ids), dtype=np.bool_)
    def die(self, generation, count):
        os.kill(os.getpid(), signal.SIGKILL)
    id_filter.FilterFile.write_header = die
    ids = [f"k-{k}" for k in range(100)]
    n = len(ids)
    table = pa.table({"category": ["linear"] * n, "symbol": ["BTCUSDT"] * n, "trade_id": ids,
                      "time_us": [int(sys.argv[2]) + k for k in range(n)], "price": [100.0] * n,
                      "qty": [1.0] * n, "side": ["sell"] * n, "is_block_trade": [None] * n,
                      "source": ["archive"] * n}, schema=TRADE_SCHEMA)
    store = open_store(sys.argv[1])
    with store.atomic():
        ingest_batch(store, table, market=Market("linear", "BTCUSDT"))
    print("not killed")
""")


def test_a_kill_between_commit_and_the_filter_header_stores_nothing_twice(db: Path) -> None:
    with open_store(db) as store:
        fill_store(store)
    done = subprocess.run([sys.executable, "-c", CHILD, str(db), str(T0 + 2 * DAY)], cwd=ROOT,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == -signal.SIGKILL, done.stderr
    id_filter.forget_mapped()
    with open_store(db) as store:
        assert store.query_one("SELECT count(*) FROM trades WHERE trade_id LIKE 'k-%'")[0] == 100  # committed
        assert not trusted(store, db)
        again = ingest(store, batch([f"k-{k}" for k in range(100)], [T0 + 2 * DAY + k for k in range(100)]))
        assert (again.added, again.duplicates) == (0, 100)
        far = ingest(store, day_batch(60, ["k-5", "k-6"], price=1.0))
        assert (far.added, far.conflicts) == (0, 2)
        assert duplicate_keys(store) == 0 and trusted(store, db)


def test_a_day_staged_privately_is_counted_there_and_still_folded(store: Store) -> None:
    """The repeated-id count is taken in the private database before the hop: a repeat must still fold."""
    from store.ingest import Staging, ingest_staged

    with Store.private() as private:
        staging = Staging(private, market=Market("linear", "BTCUSDT"))
        staging.append(batch(["p-1", "p-2"], [T0, T0 + 1]))
        staging.append(batch(["p-2", "p-3"], [T0 + 2, T0 + 3]))
        staging.detach()
        assert staging.summary == (4, 3, T0, T0 + 3)
        with store.atomic():
            result = ingest_staged(store, staging)
    assert (result.received, result.added, result.conflicts) == (4, 3, 1)
    assert duplicate_keys(store) == 0


def test_a_filter_with_damaged_bits_lets_no_near_duplicate_in_and_is_discarded(store: Store, db: Path) -> None:
    """The header's checksum covers only the header: bits lost behind an intact header answer
    "never seen" for stored ids. The near lookup finds them anyway, the batch is matched over the
    whole market, and the file is discarded (rebuilt at the next ingest)."""
    ids = fill_store(store)
    far = ingest(store, day_batch(40, ["far-1", "far-2"]))
    assert far.added == 2 and trusted(store, db)
    id_filter.forget_mapped()
    path = bloom(db)
    data = bytearray(path.read_bytes())
    data[id_filter.HEADER_SIZE:] = bytes(len(data) - id_filter.HEADER_SIZE)  # bits gone, header intact
    path.write_bytes(bytes(data))
    id_filter.forget_mapped()
    assert trusted(store, db)
    result = ingest(store, batch(ids[:100] + ["far-1", "new-1"],
                                 [T0 + k for k in range(100)] + [T0 + 40 * DAY, T0 + 5]))
    assert (result.added, result.duplicates, result.conflicts) == (1, 101, 0)  # far-1 found far away too
    assert duplicate_keys(store) == 0
    assert not path.exists()
    again = ingest(store, day_batch(0, ids[:10]))
    assert again.added == 0 and again.duplicates == 10 and trusted(store, db)
