"""The plausibility checks are pure: each way a trade can be untrue, named, with no server."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from fetch.models import Trade
from fetch.market_span import Span
from fetch.plausible import CLOCK_SKEW_US, EARLIEST_US, first_implausible, first_implausible_row, why_implausible

NOW = EARLIEST_US + 10**15


def trade(**changes: object) -> Trade:
    values: dict[str, object] = {"category": "linear", "symbol": "BTCUSDT", "trade_id": "a", "time_us": NOW - 1,
                                 "price": 100.0, "qty": 1.0, "side": "buy", "is_block_trade": None,
                                 "source": "rest"}
    values.update(changes)
    return Trade(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("changes,says", [
    ({"symbol": "ETHUSDT"}, "ETHUSDT"),
    ({"side": "hold"}, "side"),
    ({"price": 0.0}, "price"), ({"price": -1.0}, "price"), ({"price": math.nan}, "price"),
    ({"price": math.inf}, "price"), ({"qty": 0.0}, "size"), ({"qty": math.nan}, "size"),
    ({"time_us": (NOW // 1_000_000) * 1000}, "outside"),   # seconds read as ms: 1970
    ({"time_us": NOW + CLOCK_SKEW_US + 1}, "outside"),     # past the exchange's now
    ({"time_us": EARLIEST_US - 1}, "outside"),
])
def test_each_untrue_trade_is_named(changes: dict[str, object], says: str) -> None:
    why = why_implausible(trade(**changes), symbol="BTCUSDT",
                          window=Span(EARLIEST_US, NOW + CLOCK_SKEW_US))
    assert why is not None and says in why


def test_a_true_trade_passes_and_the_first_bad_one_is_found() -> None:
    good = trade()
    assert why_implausible(good, symbol="BTCUSDT", window=Span(EARLIEST_US, NOW)) is None
    found = first_implausible([good, trade(price=0.0), trade(symbol="X")], symbol="BTCUSDT",
                              window=Span(EARLIEST_US, NOW))
    assert found is not None and found[0] == 1


def test_the_columnar_check_finds_the_earliest_bad_row_across_checks() -> None:
    def run(prices: list[float], times: list[int], symbols: list[str] | None = None) -> tuple[int, str] | None:
        n = len(prices)
        return first_implausible_row(
            symbols=pa.array(symbols) if symbols else None, symbol="S", sides=pa.array(["buy"] * n),
            prices=pa.array(prices), qtys=pa.array([1.0] * n), times_us=pa.array(times, pa.int64()),
            window=Span(10, 20))
    assert run([1.0, 2.0], [10, 19]) is None
    assert run([1.0, 2.0, 0.0], [10, 25, 11]) == (1, "the time lies outside "
                                                  "1970-01-01T00:00:00.000010+00:00 .. 1970-01-01T00:00:00.000020+00:00")
    bad = run([1.0, 1.0], [10, 11], ["S", "T"])
    assert bad is not None and bad[0] == 1 and "symbol" in bad[1]
