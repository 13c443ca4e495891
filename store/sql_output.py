"""`bybit-backfill sql` output: an analyst's answers streamed as Arrow record batches to a writer.

Nothing is fetched whole: each statement's answer is read one batch at a time from DuckDB and
written at once, so a million-row CSV costs one batch of memory and runs at the speed of Arrow's
CSV writer (about half the time of DuckDB's own `COPY ... TO` on the same query, `bench/sql_csv.py`).

csv and parquet go through Arrow; table and json render row by row, so they read DuckDB's rows in
batches (`fetchmany`) and `sql` in its default format starts without loading pyarrow.

Formats, all with LF line endings:
- csv: header, then rows (Arrow's writer: strings quoted, floats shortest round-trip, NULL empty,
  TIMESTAMPTZ as ISO-8601 `...Z`);
- json: one statement: a list of row objects; several: a list of those lists. NaN and infinities
  become null (JSON has no NaN), times ISO-8601;
- table: aligned columns, floats as stored (the shortest text that reads back to the same value,
  e.g. a REAL 11.408 shows 11.408, not 11.407999992370605), cells wider than `MAX_CELL` cut with an
  ellipsis; column widths come from the first batch, so the table streams too;
- parquet: one file (`--output` only).

The connection is the sandboxed read-only one of `store.db.SANDBOX`: this module writes only to
the stream it is given (`--output`: a hidden temp file, renamed into place).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from fetch.errors import InputError
from store.atomic import temp_beside
from store.schema import open_store

MAX_CELL = 40
ELLIPSIS = "…"
BATCH_ROWS = 65_536


@dataclass(frozen=True, slots=True)
class Written:
    """What one `sql` call wrote: rows per statement that had an answer."""

    rows: list[int]


def stream_sql(path: str | Path, query: str, fmt: str, out: IO[bytes], *,
               batch_rows: int = BATCH_ROWS, wait_s: float = 0.0) -> Written:
    """Run every statement of `query` on a sandboxed read-only connection and write each answer to
    `out` in `fmt` (csv, json, table or parquet) as it streams; wait up to `wait_s` for a writer."""
    with open_store(path, read_only=True, sandbox=True, wait_s=wait_s) as store:
        statements = store.user_statement_texts(query)
        if fmt == "parquet" and len(statements) != 1:
            raise InputError(f"--format parquet takes the answer of one statement, the query has "
                             f"{len(statements)}: run them one at a time")
        writer = _WRITERS[fmt](out, len(statements))
        counts = []
        for number, text in enumerate(statements):
            answer = (store.user_row_batches(text, batch_rows) if writer.rows_only
                      else store.user_batches(text, batch_rows))
            counts.append(writer.statement(number, text, answer))
        writer.close()
    return Written(counts)


def write_sql_file(path: str | Path, query: str, fmt: str, output: Path, *, wait_s: float = 0.0) -> Written:
    """`sql --output`: the answer into `output`, via a hidden temp name and a rename, so a reader
    never sees half a file; the tool writes it (the analyst's connection cannot write files)."""
    with open_store(path, read_only=True, sandbox=True, wait_s=wait_s) as store:
        count = len(store.user_statement_texts(query))
    if count != 1:
        raise InputError(f"--output takes the answer of one statement, the query has {count}: "
                         "run them one at a time")
    target = Path(output)
    temp = temp_beside(target)
    try:
        with temp.open("wb") as out:
            written = stream_sql(path, query, fmt, out, wait_s=wait_s)
        os.replace(temp, target)
    except OSError as error:
        raise InputError(f"cannot write {target}: {error.strerror or error}; choose another --output") from None
    finally:
        temp.unlink(missing_ok=True)
    return written


# (Arrow schema, record batches), or for the row writers ((name, type) per column, lists of rows)
Answer = tuple[Any, Iterator[Any]] | None


class _Writer:
    rows_only = False  # True: fed DuckDB rows (`user_row_batches`), no pyarrow; else Arrow batches

    def __init__(self, out: IO[bytes], statements: int) -> None:
        self.out = out
        self.statements = statements

    def statement(self, number: int, text: str, answer: Answer) -> int:
        raise NotImplementedError

    def close(self) -> None:
        self.out.flush()


def _timestamps_as_iso(batch: Any) -> Any:
    """TIMESTAMPTZ columns as ISO-8601 text ending in Z (Arrow's CSV writer would print +0000)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not any(pa.types.is_timestamp(f.type) and f.type.tz for f in batch.schema):
        return batch
    columns = [pc.cast(column, pa.string()) if pa.types.is_timestamp(column.type) and column.type.tz
               else column for column in batch.columns]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


class _Csv(_Writer):
    def statement(self, number: int, text: str, answer: Answer) -> int:
        import pyarrow.csv as pcsv

        if answer is None:
            return 0
        schema, batches = answer
        names = list(schema.names)
        if number:
            self.out.write(b"\n")
        self.out.write((",".join(_csv_name(n) for n in names) + "\n").encode())
        rows, writer = 0, None
        options = pcsv.WriteOptions(include_header=False, quoting_style="needed")
        for batch in batches:
            batch = _timestamps_as_iso(batch)
            if writer is None:
                writer = pcsv.CSVWriter(self.out, batch.schema, write_options=options)
            writer.write_batch(batch)
            rows += batch.num_rows
        if writer is not None:
            writer.close()  # flushes; does not close `out`
        return rows


def _csv_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"' if any(c in name for c in ',"\n\r') else name


def json_value(value: Any) -> Any:
    """A value JSON can carry: NaN/inf -> null, times ISO-8601, decimals as numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).isoformat()
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return value


class _Json(_Writer):
    rows_only = True

    def __init__(self, out: IO[bytes], statements: int) -> None:
        super().__init__(out, statements)
        if statements > 1:
            self.out.write(b"[\n")

    def statement(self, number: int, text: str, answer: Answer) -> int:
        if number:
            self.out.write(b",\n")
        self.out.write(b"[")
        rows = 0
        if answer is not None:
            columns, batches = answer
            names = [name for name, _type in columns]
            for batch in batches:
                for row in batch:
                    self.out.write((",\n  " if rows else "\n  ").encode())
                    self.out.write(json.dumps({k: json_value(v) for k, v in zip(names, row)}, allow_nan=False,
                                              default=str).encode())
                    rows += 1
        self.out.write(b"\n]" if rows else b"]")
        return rows

    def close(self) -> None:
        self.out.write(b"\n]\n" if self.statements > 1 else b"\n")
        super().close()


def cell(value: Any) -> str:
    """A table cell: floats as stored (Python's repr is the shortest round-trip text), NULL empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).isoformat()
    return str(value)


def cut(text: str, width: int = MAX_CELL) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + ELLIPSIS


def float32_text(value: float) -> str:
    """The shortest text that reads back to the same REAL (float32): what DuckDB stored, where the
    Python float of it would show its binary expansion (11.407999992370605 for 11.408)."""
    if not math.isfinite(value):
        return repr(value)
    target = struct.unpack("f", struct.pack("f", value))[0]
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == target:
            return repr(float(text))
    return repr(value)


def _row_cells(columns: list[tuple[str, str]], rows: list[tuple[Any, ...]]) -> list[list[str]]:
    real = [kind in ("FLOAT", "REAL", "FLOAT4") for _name, kind in columns]
    return [[float32_text(v) if r and isinstance(v, float) else cell(v) for v, r in zip(row, real)]
            for row in rows]


class _Table(_Writer):
    rows_only = True

    def statement(self, number: int, text: str, answer: Answer) -> int:
        if number:
            self.out.write(b"\n")
        if answer is None:
            self.out.write(f"ok: {text}\n".encode())
            return 0
        columns, batches = answer
        names = [name for name, _type in columns]
        widths: list[int] | None = None
        rows = 0
        for batch in batches:
            cells = _row_cells(columns, batch)
            if widths is None:
                widths = [min(MAX_CELL, max([len(n)] + [len(r[i]) for r in cells])) for i, n in enumerate(names)]
                self._line([cut(n) for n in names], widths)
                self.out.write(("  ".join("-" * w for w in widths) + "\n").encode())
            for row in cells:
                self._line([cut(c, w) for c, w in zip(row, widths)], widths)
            rows += len(batch)
        if widths is None:  # no rows: still the header
            widths = [min(MAX_CELL, len(n)) for n in names]
            self._line([cut(n) for n in names], widths)
            self.out.write(("  ".join("-" * w for w in widths) + "\n").encode())
        return rows

    def _line(self, cells: list[str], widths: list[int]) -> None:
        self.out.write(("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() + "\n").encode())


class _Parquet(_Writer):
    def statement(self, number: int, text: str, answer: Answer) -> int:
        import pyarrow.parquet as pq

        if answer is None:
            raise InputError("the statement returns no rows to write: give a query")
        rows = 0
        schema, batches = answer
        with pq.ParquetWriter(self.out, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
        return rows


_WRITERS: dict[str, type[_Writer]] = {"csv": _Csv, "json": _Json, "table": _Table, "parquet": _Parquet}
