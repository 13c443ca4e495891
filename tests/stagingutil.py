"""What a staged file comes to, comparable between `store.batch_staging` and `stage_file` (the
parser of record): the rows as a set, tick ids, summary, or the error."""

from __future__ import annotations

import threading

from fetch.errors import ArchiveError
from store.batch_staging import SmallFile
from store.ingest import Staging
from store.staging import stage_file


def outcome(result: Staging | BaseException) -> object:
    """A staging or an error, comparable across the two paths (row order is not part of it)."""
    if isinstance(result, BaseException):
        return type(result), str(result)
    assert result.table is not None
    table = result.table.sort_by([("trade_id", "ascending"), ("time_us", "ascending"), ("price", "ascending"),
                                  ("qty", "ascending")])
    return table.schema, table.to_pylist(), result.summary, result.received, result.source


def alone(file: SmallFile) -> object:
    """The outcome of `file` staged alone by `stage_file`, in the file's own private database."""
    try:
        return outcome(stage_file(file.private, file.market, file.day, file.path, threading.Event()))
    except ArchiveError as error:
        return outcome(error)
