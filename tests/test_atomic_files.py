"""Files replaced whole stay whole with several writers in one process (threads, two refreshes of
one store): the state notes beside the store and the filter files."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from store.atomic import temp_beside, write_json_atomic
from store.writer_state import WriterNote, active_writer


def test_temp_names_differ_within_one_process(tmp_path: Path) -> None:
    target = tmp_path / "note.json"
    names = {temp_beside(target) for _ in range(1000)}
    assert len(names) == 1000
    assert all(name.parent == tmp_path and name.name.startswith(".note.json.") for name in names)


def test_threads_rewriting_one_note_never_publish_a_mixed_file(tmp_path: Path) -> None:
    # Payloads of different lengths: through one shared temp name, a short write over a long one
    # left the long one's tail behind it ("Extra data" for every reader, a two-writer CI failure).
    target = tmp_path / "db.duckdb.writer.json"
    failures: list[str] = []
    start = threading.Barrier(4)

    def writer(width: int) -> None:
        start.wait()
        for round_ in range(300):
            write_json_atomic(target, {"progress": "x" * width, "round": round_})

    def reader() -> None:
        start.wait()
        for _ in range(900):
            try:
                json.loads(target.read_text())
            except FileNotFoundError:
                continue
            except ValueError as error:
                failures.append(str(error))

    threads = [threading.Thread(target=writer, args=(width,)) for width in (1, 200, 5000)]
    threads.append(threading.Thread(target=reader))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert json.loads(target.read_text())["round"] == 299
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temp left behind


def test_a_writer_closing_beside_an_unreadable_note_does_not_raise(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    note = WriterNote(db, "refresh BTCUSDT")
    assert active_writer(db) is not None
    note.path.write_text('{"pid": 1}{"pid": 2}')  # what a torn note looks like
    note.close()  # must not fail the refresh that is ending
    assert active_writer(db) is None


def test_a_writer_ending_leaves_the_note_of_another_writer_of_the_same_process(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    first = WriterNote(db, "refresh BTCUSDT")
    second = WriterNote(db, "refresh ETHUSDT")  # the note shows the latest writer
    first.close()
    writer = active_writer(db)
    assert writer is not None and writer["command"] == "refresh ETHUSDT", "the other writer is still at work"
    second.close()
    assert active_writer(db) is None and not first.path.exists()
