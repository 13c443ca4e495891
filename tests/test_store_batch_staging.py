"""Small archive files staged together in one DuckDB read (`store.batch_staging`) end exactly as each
staged alone by `store.staging.stage_file`: the same rows, tick ids and summary, or the same error."""

from __future__ import annotations

import gzip
import random
import threading
import uuid
from datetime import date
from pathlib import Path

import pytest
from stagingutil import alone, outcome

from fetch.archive_csv import LINEAR_COLUMNS
from fetch.errors import ArchiveError
from fetch.market_span import Market
from store import batch_staging
from store.batch_staging import BATCHER, SmallFile, stage_many
from store.db import Store
from store.ingest import Staging
from store.staging import stage_file

DAY = date(2024, 1, 2)
START_S = 1704153600  # 2024-01-02 00:00 UTC
HEADER = ",".join(LINEAR_COLUMNS)


def _row(rng: random.Random, symbol: str = "BTCUSDT", **values: str) -> dict[str, str]:
    row = {"timestamp": f"{START_S + rng.randint(0, 86_399)}.{rng.randint(0, 9999):04d}", "symbol": symbol,
           "side": rng.choice(["Buy", "Sell"]), "size": f"{rng.uniform(0.001, 5):.3f}",
           "price": f"{rng.uniform(10, 50_000):.1f}", "tickDirection": "PlusTick",
           "trdMatchID": str(uuid.UUID(int=rng.getrandbits(128))), "grossValue": "1.0",
           "homeNotional": "1.0", "foreignNotional": "1.0"}
    row.update(values)
    return row


def _text(rows: list[dict[str, str]], *, rpi: bool = False, header: str = HEADER, newline: str = "\n") -> bytes:
    names = LINEAR_COLUMNS + (("RPI",) if rpi else ())
    lines = [header + (",RPI" if rpi else "")]
    lines += [",".join([*(row[name] for name in LINEAR_COLUMNS), *(["0"] if rpi else [])]) for row in rows]
    assert len(names) == len(lines[0].split(","))
    return (newline.join(lines) + newline).encode()


def _cases() -> dict[str, bytes]:
    """Named files: clean ones in every shape the archive has, and each way a file can be wrong."""
    rng = random.Random(7)
    clean = [_row(rng) for _ in range(300)]

    def one_bad(**values: str) -> bytes:
        rows = [dict(row) for row in clean]
        rows[150].update(values)
        return _text(rows)

    cases = {
        "clean": _text(clean),
        "clean_rpi": _text(clean, rpi=True),
        "clean_crlf": _text(clean, newline="\r\n"),
        "whole_seconds": _text([_row(rng, timestamp=str(START_S + k)) for k in range(50)]),
        "mixed_widths": _text([_row(rng, timestamp=f"{START_S + k}.{'5' * (1 + k % 6)}") for k in range(60)]),
        "lower_case_side": one_bad(side="buy"),
        "numeric_ids": _text([_row(rng, trdMatchID=str(rng.randint(0, 10**19))) for _ in range(80)]),
        "repeated_id": one_bad(trdMatchID=clean[3]["trdMatchID"]),
        "quoted_id": one_bad(trdMatchID=f'"{clean[150]["trdMatchID"]}"'),
        "one_row": _text(clean[:1]),
        # wrong in one row (or in its shape): staged alone, the file's error names it
        "foreign_symbol": one_bad(symbol="XYZUSDT"),
        "bad_side": one_bad(side="Hold"),
        "zero_price": one_bad(price="0"),
        "nan_price": one_bad(price="nan"),
        "inf_size": one_bad(size="inf"),
        "negative_size": one_bad(size="-1"),
        "empty_price": one_bad(price=""),
        "empty_id": one_bad(trdMatchID=""),
        "next_day": one_bad(timestamp=f"{START_S + 86_400}.0000"),
        "day_before": one_bad(timestamp=f"{START_S - 1}.9999"),
        "seven_decimals": one_bad(timestamp=f"{START_S + 5}.1234567"),
        "exponent_time": one_bad(timestamp="1.7041536e9"),
        "spaced_time": one_bad(timestamp=f" {START_S + 5}"),
        "text_price": one_bad(price="abc"),
        "header_only": _text([]),
        "unknown_header": _text(clean, header=HEADER.replace("trdMatchID", "matchId")),
        "bom_header": _text(clean, header="\ufeff" + HEADER),
    }
    extra = _text(clean).decode().splitlines()
    extra[100] += ",surplus"
    cases["extra_column"] = ("\n".join(extra) + "\n").encode()
    short = _text(clean).decode().splitlines()
    short[100] = short[100].rsplit(",", 1)[0]
    cases["missing_column"] = ("\n".join(short) + "\n").encode()
    return cases


CASES = _cases()


def _write(tmp_path: Path, name: str, text: bytes) -> Path:
    path = tmp_path / f"{name}.csv.gz"
    data = gzip.compress(text)
    if name == "truncated":
        data = data[: len(data) // 2]
    path.write_bytes(data)
    return path


@pytest.fixture
def private():
    with Store.private() as database:
        yield database.branch()


# DuckDB cannot read these at all: the whole read fails, and each of its files is staged alone.
READ_FAILS = ("extra_column", "missing_column", "truncated")
CLEAN = ("clean", "clean_rpi", "clean_crlf", "whole_seconds", "mixed_widths", "lower_case_side", "numeric_ids",
         "repeated_id", "one_row")
# Staged, but only by `stage_file`: shapes the read leaves to it (a quote, an exponent, a BOM).
ALONE_AND_STAGED = ("quoted_id", "exponent_time", "bom_header", "spaced_time")


@pytest.fixture
def staged_alone(monkeypatch) -> list[str]:
    """The names of the files `stage_many` handed to `stage_file` (the rest were read together)."""
    alone: list[str] = []

    def counting(private_db, market, day, path, stopping):
        alone.append(Path(path).name.split(".")[0])
        return stage_file(private_db, market, day, path, stopping)

    monkeypatch.setattr(batch_staging, "stage_file", counting)
    return alone


def _files(tmp_path: Path, private: Store, names) -> list[SmallFile]:
    return [SmallFile(private, Market("linear", "BTCUSDT"), DAY, _write(tmp_path, name, CASES.get(name, CASES["clean"])),
                      threading.Event()) for name in names]


def test_every_file_of_one_read_ends_as_it_would_alone(tmp_path: Path, private: Store, staged_alone) -> None:
    """Clean files in every shape and files wrong in one row, in one read: the clean ones are kept
    from the read, the others staged alone (which names their fault), and each ends as alone."""
    names = [name for name in CASES if name not in READ_FAILS]
    files = _files(tmp_path, private, names)
    with Store.private() as reader:
        together = stage_many(reader, files)
    assert sorted(staged_alone) == sorted(set(names) - set(CLEAN)), "only the faulty files go alone"
    for name, file, result in zip(names, files, together, strict=True):
        assert outcome(result) == alone(file), name
    staged = {name for name, result in zip(names, together, strict=True) if isinstance(result, Staging)}
    assert staged == {*CLEAN, *ALONE_AND_STAGED}


@pytest.mark.parametrize("bad", READ_FAILS)
def test_a_read_that_fails_stages_each_of_its_files_alone(tmp_path: Path, private: Store, staged_alone,
                                                          bad: str) -> None:
    names = ["clean", bad, "whole_seconds"]
    files = _files(tmp_path, private, names)
    with Store.private() as reader:
        results = stage_many(reader, files)
    assert staged_alone == names
    for name, file, result in zip(names, files, results, strict=True):
        assert outcome(result) == alone(file), name
    assert isinstance(results[0], Staging) and isinstance(results[2], Staging)
    assert isinstance(results[1], ArchiveError) and "truncated or malformed" in str(results[1])


SPOT_HEADER = "id,timestamp,price,volume,side"


def _spot_cases() -> dict[str, bytes]:
    """Spot files: a per-day id sequence, times in milliseconds, no symbol column."""
    rng = random.Random(11)
    start_ms = START_S * 1000

    def text(rows: list[list[str]], *, rpi: bool = False) -> bytes:
        lines = [SPOT_HEADER + (",rpi" if rpi else "")] + [",".join(row + (["0"] if rpi else [])) for row in rows]
        return ("\n".join(lines) + "\n").encode()

    clean = [[str(k + 1), str(start_ms + rng.randint(0, 86_399_999)), f"{rng.uniform(10, 50_000):.2f}",
              f"{rng.uniform(0.0001, 3):.4f}", rng.choice(["buy", "sell"])] for k in range(200)]

    def one_bad(column: int, value: str) -> bytes:
        rows = [list(row) for row in clean]
        rows[100][column] = value
        return text(rows)

    return {
        "spot_clean": text(clean), "spot_clean_rpi": text(clean, rpi=True),
        "spot_ms_decimals": one_bad(1, f"{start_ms + 5}.25"), "spot_id_zeros": one_bad(0, "0000000101"),
        "spot_upper_side": one_bad(4, "Sell"),
        # wrong, or a shape only `stage_file` reads
        "spot_id_too_big": one_bad(0, str(10**10)), "spot_id_negative": one_bad(0, "-1"), "spot_id_text": one_bad(0, "x1"),
        "spot_id_long_zeros": one_bad(0, "000000000101"), "spot_next_day": one_bad(1, str(start_ms + 86_400_000)),
        "spot_zero_price": one_bad(2, "0"), "spot_nan_volume": one_bad(3, "nan"), "spot_bad_side": one_bad(4, "hold"),
        "spot_four_decimals": one_bad(1, f"{start_ms + 5}.1234"), "spot_header_only": text([]),
    }


SPOT_CASES = _spot_cases()
SPOT_CLEAN = ("spot_clean", "spot_clean_rpi", "spot_ms_decimals", "spot_id_zeros", "spot_upper_side")


def test_spot_files_of_one_read_end_as_they_would_alone(tmp_path: Path, private: Store, staged_alone) -> None:
    """The same for spot: each file's `YYYYMMDD` + 10-digit ids, its times from milliseconds."""
    files = [SmallFile(private, Market("spot", "BTCUSDT"), DAY, _write(tmp_path, name, text), threading.Event())
             for name, text in SPOT_CASES.items()]
    with Store.private() as reader:
        together = stage_many(reader, files)
    assert sorted(staged_alone) == sorted(set(SPOT_CASES) - set(SPOT_CLEAN))
    for name, file, result in zip(SPOT_CASES, files, together, strict=True):
        assert outcome(result) == alone(file), name
    staged = {name for name, result in zip(SPOT_CASES, together, strict=True) if isinstance(result, Staging)}
    assert staged == {*SPOT_CLEAN, "spot_id_long_zeros"}, "that one only `stage_file` reads"
    first = together[0]
    assert isinstance(first, Staging) and first.table is not None
    assert min(first.table.column("trade_id").to_pylist()) == "202401020000000001"


def test_a_file_of_the_other_layout_for_its_market_is_staged_alone(tmp_path: Path, private: Store,
                                                                   staged_alone) -> None:
    """A spot header in a linear market's file (or the reverse) is for `stage_file` to judge."""
    files = [SmallFile(private, Market("linear", "BTCUSDT"), DAY, _write(tmp_path, "spot_clean", SPOT_CASES["spot_clean"]),
                       threading.Event()),
             SmallFile(private, Market("spot", "BTCUSDT"), DAY, _write(tmp_path, "clean", CASES["clean"]),
                       threading.Event())]
    with Store.private() as reader:
        results = stage_many(reader, files)
    assert sorted(staged_alone) == ["clean", "spot_clean"]
    for file, result in zip(files, results, strict=True):
        assert outcome(result) == alone(file)


def test_files_handed_to_the_batcher_from_many_threads_each_get_their_own_rows(tmp_path: Path) -> None:
    rng = random.Random(3)
    with Store.private() as database:
        expected, files = {}, []
        for k in range(24):
            symbol = f"S{k:02d}USDT"
            rows = [_row(rng, symbol=symbol) for _ in range(20 + k)]
            expected[symbol] = sorted(row["trdMatchID"] for row in rows)
            files.append(SmallFile(database.branch(), Market("linear", symbol), DAY,
                                   _write(tmp_path, symbol, _text(rows)), threading.Event()))
        futures = {}

        def submit(file: SmallFile) -> None:
            futures[file.market.symbol] = BATCHER.submit(file)

        threads = [threading.Thread(target=submit, args=(file,)) for file in files]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for symbol, future in futures.items():
            staging = future.result(timeout=60)
            assert staging.market.symbol == symbol and staging.table is not None
            assert sorted(staging.table.column("trade_id").to_pylist()) == expected[symbol]
