"""Parse one day's archive file and stage it, outside the store file.

The file is stream-parsed (in a thread of its own, `read_ahead`, a few batches ahead, unless it is
small) and staged in groups of ~STAGE_ROWS rows: a private in-memory DuckDB database
(`Store.private()`) computes their tick ids, and the day is kept as one Arrow table of its staged
columns (~110 MB for 1.5M trades) until it commits. The store file is not touched: the day moves
into the store only when it is committed (`store.ingest_many`), so others can read and write the
store meanwhile.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pyarrow as pa

from fetch.archive_csv import archive_rows
from fetch.market_span import Market
from store.db import Store
from store.ingest import Staging

INLINE_BYTES = 1 << 20  # files smaller than this are parsed in the staging thread itself
STAGE_ROWS = 1 << 18  # ~260k rows per tick-id query: small ones cost DuckDB its parallelism


class Stopped(Exception):
    """The refresh was cancelled (Ctrl-C) while a day was being staged."""


def stage_file(private: Store, market: Market, day: date, path: Path, stopping: threading.Event) -> Staging:
    """The day's file, parsed and staged in `private` (call in a worker thread: it blocks)."""
    staging = Staging(private, market=market)
    group: list[pa.RecordBatch] = []
    rows = 0
    batches = archive_rows(path, market, day)
    # A small file parses in a few milliseconds: a parser thread of its own would cost more.
    for batch in batches if path.stat().st_size < INLINE_BYTES else read_ahead(batches):
        if stopping.is_set():
            raise Stopped
        group.append(batch)
        rows += batch.num_rows
        if rows >= STAGE_ROWS:
            staging.append(pa.Table.from_batches(group).combine_chunks())
            group, rows = [], 0
    if group:
        staging.append(pa.Table.from_batches(group).combine_chunks())
    staging.detach()  # counted and taken out here, not while the store is held for the commit
    return staging


_END = object()


def read_ahead(batches: Iterator[pa.RecordBatch], depth: int = 8) -> Iterator[pa.RecordBatch]:
    """Iterate `batches` in a thread of its own, up to `depth` ahead; its error is raised here.
    Stopping early (an error while staging) stops the parser at its next batch."""
    buffer: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        """Hand over `item`; False once the consumer has stopped."""
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                buffer.put(item, timeout=0.05)
                return True
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the consuming thread, raised there
            put(error)

    parser = threading.Thread(target=produce, name="bybit-parse", daemon=True)
    parser.start()
    try:
        while (item := buffer.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, pa.RecordBatch)
            yield item
    finally:
        stop.set()
        parser.join()
