"""The archive CSV reader: every layout, exact microseconds, stable spot ids, and clear failures."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from fetch.market_span import Market
from fetch.errors import ArchiveError
from fetch.models import TRADE_SCHEMA
from fetch.parse import archive_rows, read_archive, sniff_header
from fetch.archive_csv import ArchiveFormat

DAY = date(2025, 3, 14)
NOV_14 = date(2023, 11, 14)  # the day of 1700000000
LINEAR = "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional"


def write(tmp_path: Path, text: str, name: str = "f.csv.gz") -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()))
    return path


def test_linear_without_rpi_gives_exact_microseconds(tmp_path: Path) -> None:
    path = write(tmp_path, LINEAR + "\n"
                 "1741910443.7357,BTCUSDT,Buy,0.001,83000.5,PlusTick,aa-1,8.3e+06,0.001,83.0005\n"
                 "1741910401,BTCUSDT,Sell,2,38000,MinusTick,aa-2,7600000000,2,76000\n"
                 "1741910443.0001,BTCUSDT,Sell,0.5,83000,ZeroMinusTick,aa-3,4.15E+09,0.5,41500\n")
    table = read_archive(path, Market("linear", "BTCUSDT"), DAY)
    assert table.schema == TRADE_SCHEMA
    assert table.column("time_us").to_pylist() == [1741910443735700, 1741910401000000, 1741910443000100]
    assert table.column("trade_id").to_pylist() == ["aa-1", "aa-2", "aa-3"]
    assert table.column("side").to_pylist() == ["buy", "sell", "sell"]
    assert table.column("qty").to_pylist() == [0.001, 2.0, 0.5]
    assert table.column("price").to_pylist() == [83000.5, 38000.0, 83000.0]
    assert set(table.column("source").to_pylist()) == {"archive"}
    assert set(table.column("category").to_pylist()) == {"linear"}
    assert table.column("is_block_trade").null_count == 3


def test_linear_with_rpi_column_and_inverse_category(tmp_path: Path) -> None:
    path = write(tmp_path, LINEAR + ",RPI\n1741910443.7357,BTCUSD,Buy,100,83000.5,PlusTick,id-1,120481,100,0.0012,1\n")
    (row,) = read_archive(path, Market("inverse", "BTCUSD"), DAY).to_pylist()
    assert row == {"category": "inverse", "symbol": "BTCUSD", "trade_id": "id-1", "time_us": 1741910443735700,
                   "price": 83000.5, "qty": 100.0, "side": "buy", "is_block_trade": None, "source": "archive"}


def test_timestamps_with_four_decimals_never_go_through_float(tmp_path: Path) -> None:
    # 1741910443.7357 as a float times 1e6 is 1741910443735699.8: a float path would truncate it.
    stamps = [f"1741910443.{k:04d}" for k in range(0, 10000, 7)]
    rows = "".join(f"{s},BTCUSDT,Buy,1,1,PlusTick,id{k},1,1,1\n" for k, s in enumerate(stamps))
    table = read_archive(write(tmp_path, LINEAR + "\n" + rows), Market("linear", "BTCUSDT"), DAY)
    expected = [int(s.replace(".", "")) * 100 for s in stamps]
    assert table.column("time_us").to_pylist() == expected


_DAY_START_S = 1741910400  # DAY at 00:00 UTC


def _exact_us(text: str, per_second: int) -> int | None:
    """The reference: the timestamp's exact value in microseconds by Python's Decimal, or None for
    what is no plain decimal, has a fraction of a microsecond or does not fit in an int64."""
    from decimal import Decimal, InvalidOperation

    try:
        value = Decimal(text.strip()) * per_second
    except InvalidOperation:
        return None
    if not value.is_finite() or value != value.to_integral_value() or not -(2**63) <= value < 2**63:
        return None
    return int(value)


@pytest.mark.parametrize("spot", [False, True])
def test_timestamps_become_their_exact_microseconds_or_fail_the_file(tmp_path: Path, spot: bool) -> None:
    import random
    from decimal import Decimal

    rng = random.Random(7)
    unit, places = (1000, 3) if spot else (1, 6)  # spot: milliseconds with up to 3 places
    base = _DAY_START_S * unit
    shapes = [str(base + rng.randrange(86_400 * unit)) for _ in range(300)]
    shapes += [f"{base + rng.randrange(86_400 * unit)}.{rng.randrange(10**places):0{rng.randint(1, places)}d}"
               for _ in range(300)]
    shapes += [f"{base}.{'0' * 12}", f" {base + 5}", f"{base + 5} ", f"+{base + 5}", f"{base + 5}.",
               f"{(base + 7) / 10**9}e9", f"{base}.{'1' * (places + 1)}", f"{base}.5{'0' * 20}",
               "0x10", "1_000", "nan", "inf", "", "\u0661\u0662", f"{base}e30", f"-{base}",
               # 2**64 microseconds past a time of the day: its low 64 bits alone are that time
               str((Decimal(2**64) + DAY_START_US + 5_000_000) / (1000 if spot else 1_000_000))]
    header = "id,timestamp,price,volume,side" if spot else LINEAR
    market = Market("spot", "BTCUSDT") if spot else Market("linear", "BTCUSDT")
    for k, text in enumerate(shapes):
        row = (f"{k},{text},42000.5,0.5,buy" if spot
               else f"{text},BTCUSDT,Buy,0.5,42000.5,PlusTick,id-{k},1,1,1")
        path = write(tmp_path, f"{header}\n{row}\n", name=f"t{k}.csv.gz")
        expected = _exact_us(text, 1000 if spot else 1_000_000)
        in_day = expected is not None and DAY_START_US <= expected < DAY_START_US + 86_400_000_000
        if in_day:
            assert read_archive(path, market, DAY).column("time_us").to_pylist() == [expected], repr(text)
        else:
            with pytest.raises(ArchiveError):
                read_archive(path, market, DAY)


DAY_START_US = _DAY_START_S * 1_000_000


def test_spot_uses_milliseconds_and_derives_day_prefixed_ids(tmp_path: Path) -> None:
    path = write(tmp_path, "id,timestamp,price,volume,side\n17,1704153600123,42000.1,0.5,buy\n"
                           "1,1704153600000,42000,1,sell\n")
    table = read_archive(path, Market("spot", "BTCUSDT"), date(2024, 1, 2))
    assert table.column("trade_id").to_pylist() == ["202401020000000017", "202401020000000001"]
    assert table.column("time_us").to_pylist() == [1704153600123000, 1704153600000000]
    assert all(int(i) < 2**63 for i in table.column("trade_id").to_pylist())


def test_spot_ids_of_different_days_never_collide(tmp_path: Path) -> None:
    first = "id,timestamp,price,volume,side,rpi\n1,1704153600123,1,1,buy,0\n"
    second = "id,timestamp,price,volume,side,rpi\n1,1704240000123,1,1,buy,0\n"
    day1 = read_archive(write(tmp_path, first, "a.gz"), Market("spot", "BTCUSDT"), date(2024, 1, 2))
    day2 = read_archive(write(tmp_path, second, "b.gz"), Market("spot", "BTCUSDT"), date(2024, 1, 3))
    assert day1.column("trade_id")[0] != day2.column("trade_id")[0]


def test_rows_in_any_order_are_all_kept_as_they_come(tmp_path: Path) -> None:
    rows = ["1700000003,S,Buy,1,1,T,c,1,1,1", "1700000001,S,Sell,1,1,T,a,1,1,1", "1700000002,S,Buy,1,1,T,b,1,1,1"]
    table = read_archive(write(tmp_path, LINEAR + "\n" + "\n".join(rows) + "\n"), Market("linear", "S"), NOV_14)
    assert table.column("trade_id").to_pylist() == ["c", "a", "b"]


def test_identical_rows_with_different_ids_are_distinct_trades(tmp_path: Path) -> None:
    rows = "1700000001.5,S,Buy,1,1,T,x1,1,1,1\n1700000001.5,S,Buy,1,1,T,x2,1,1,1\n"
    assert read_archive(write(tmp_path, LINEAR + "\n" + rows), Market("linear", "S"), NOV_14).num_rows == 2


def test_batches_stream_in_trade_schema(tmp_path: Path) -> None:
    rows = "".join(f"{1699920000 + k}.5,S,Buy,1,{k + 1},T,id{k},1,1,1\n" for k in range(20000))
    batches = list(archive_rows(write(tmp_path, LINEAR + "\n" + rows), Market("linear", "S"), NOV_14, block_size=64 << 10))
    assert len(batches) > 1
    assert all(isinstance(b, pa.RecordBatch) and b.schema == TRADE_SCHEMA for b in batches)
    assert sum(b.num_rows for b in batches) == 20000


def test_drifted_header_names_the_day_and_the_header(tmp_path: Path) -> None:
    path = write(tmp_path, "ts,symbol,side,px,qty,tickDirection,trade_id,grossValue,homeNotional,foreignNotional\n"
                           "1700000000,S,Buy,1,1,T,x,1,1,1\n")
    with pytest.raises(ArchiveError, match="unknown header") as info:
        read_archive(path, Market("linear", "S"), DAY)
    assert info.value.day == "2025-03-14"
    assert "ts,symbol,side,px" in str(info.value)


def test_truncated_gzip_is_an_archive_error_for_that_day(tmp_path: Path) -> None:
    rows = "".join(f"{1700000000 + k}.5,S,Buy,1,{k},T,id{k},1,1,1\n" for k in range(50000))
    whole = gzip.compress((LINEAR + "\n" + rows).encode())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ArchiveError, match="truncated or malformed") as info:
        list(archive_rows(path, Market("linear", "S"), DAY))
    assert info.value.day == DAY.isoformat()


@pytest.mark.parametrize("row", [
    "1700000000,S,Buy,abc,1,T,x,1,1,1",       # bad number
    "1700000000,S,Buy,,1,T,x,1,1,1",          # empty number
    "1700000000,S,Buy,1,1,T,x,1,1",           # missing column
    "17000000xx,S,Buy,1,1,T,x,1,1,1",         # bad timestamp
    "1700000000,S,Hold,1,1,T,x,1,1,1",        # bad side
    "1700000000,S,Buy,1,1,T,,1,1,1",          # empty id
    "1700000000.1234567,S,Buy,1,1,T,x,1,1,1", # more precision than a microsecond
])
def test_malformed_rows_are_archive_errors(tmp_path: Path, row: str) -> None:
    with pytest.raises(ArchiveError):
        read_archive(write(tmp_path, LINEAR + "\n" + row + "\n"), Market("linear", "S"), NOV_14)


@pytest.mark.parametrize("content", [b"", b"not gzip at all"])
def test_empty_or_non_gzip_files_are_archive_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.csv.gz"
    path.write_bytes(content if content else gzip.compress(b""))
    with pytest.raises(ArchiveError):
        read_archive(path, Market("linear", "S"), DAY)


def test_spot_id_out_of_range_is_an_archive_error(tmp_path: Path) -> None:
    path = write(tmp_path, "id,timestamp,price,volume,side\n12345678901,1704153600123,1,1,buy\n")
    with pytest.raises(ArchiveError):
        read_archive(path, Market("spot", "S"), DAY)


@pytest.mark.parametrize("header,fmt", [
    (LINEAR, ArchiveFormat.DERIVATIVES), (LINEAR + ",RPI", ArchiveFormat.DERIVATIVES),
    ("id,timestamp,price,volume,side", ArchiveFormat.SPOT), ("id,timestamp,price,volume,side,rpi", ArchiveFormat.SPOT),
    ("\ufeff" + LINEAR + "\r", ArchiveFormat.DERIVATIVES),
    (LINEAR + ",RPI,extra", None), ("timestamp,symbol", None), ("", None),
])
def test_header_sniffing(header: str, fmt: ArchiveFormat | None) -> None:
    assert sniff_header(header) is fmt


# --- rows that parse but cannot be this file's trades ---------------------------------------------

GOOD_ROW = "1699920001.5,S,Buy,1,100,T,ok-1,1,1,1"


@pytest.mark.parametrize("row,why", [
    ("1700006400.5,S,Buy,1,100,T,x,1,1,1", "the time lies outside"),        # the next day
    ("1699919999.9,S,Buy,1,100,T,x,1,1,1", "the time lies outside"),        # the day before
    ("1699920002,OTHER,Buy,1,100,T,x,1,1,1", "the symbol is not S"),        # another market
    ("1699920002,S,Buy,1,0,T,x,1,1,1", "the price is not"),                 # price 0
    ("1699920002,S,Buy,1,-5,T,x,1,1,1", "the price is not"),                # negative price
    ("1699920002,S,Buy,1,nan,T,x,1,1,1", "the price is not"),               # NaN
    ("1699920002,S,Buy,inf,100,T,x,1,1,1", "the size is not"),              # infinite size
    ("1699920002,S,Buy,0,100,T,x,1,1,1", "the size is not"),                # size 0
])
def test_a_row_of_another_day_symbol_or_with_bad_values_fails_the_day_naming_its_line(
        tmp_path: Path, row: str, why: str) -> None:
    text = LINEAR + "\n" + GOOD_ROW + "\n" + GOOD_ROW.replace("ok-1", "ok-2") + "\n" + row + "\n"
    with pytest.raises(ArchiveError) as caught:
        read_archive(write(tmp_path, text), Market("linear", "S"), NOV_14)
    message = str(caught.value)
    assert why in message and "line 4" in message and "2023-11-14" in message
    assert caught.value.day == "2023-11-14"


def test_a_spot_row_of_another_day_fails_the_day(tmp_path: Path) -> None:
    path = write(tmp_path, "id,timestamp,price,volume,side\n1,1704153600123,1,1,buy\n2,1704240000000,1,1,buy\n")
    with pytest.raises(ArchiveError, match="line 3: the time lies outside"):
        read_archive(path, Market("spot", "BTCUSDT"), date(2024, 1, 2))


@pytest.mark.parametrize("header", [LINEAR, LINEAR + ",RPI", "id,timestamp,price,volume,side"])
def test_a_header_only_file_is_an_empty_archive_file_never_a_day_of_zero_trades(
        tmp_path: Path, header: str) -> None:
    with pytest.raises(ArchiveError, match="empty archive file"):
        read_archive(write(tmp_path, header + "\n"), Market("spot" if header.startswith("id") else "linear", "S"),
                     NOV_14)
