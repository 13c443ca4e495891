"""Market and Span: the (category, symbol) and [start_us, end_us) pairs as values that check themselves."""

from __future__ import annotations

import dataclasses

import pytest

from fetch.errors import InputError
from fetch.market_span import CATEGORIES, Market, Span, check_category, recent_trade_max


def test_the_categories_are_those_with_public_trade_archives() -> None:
    assert CATEGORIES == ("linear", "inverse", "spot")


def test_a_known_category_passes_and_an_unknown_one_is_refused_by_name() -> None:
    assert check_category("spot") == "spot"
    with pytest.raises(InputError, match="unknown category 'option': use one of linear, inverse, spot"):
        check_category("option")


def test_recent_trade_answers_at_most_60_spot_trades_and_1000_derivative_ones() -> None:
    assert [recent_trade_max(c) for c in CATEGORIES] == [1000, 1000, 60]


def test_parse_normalizes_what_a_person_typed() -> None:
    assert Market.parse("linear", "  btcusdt ") == Market("linear", "BTCUSDT")


def test_parse_refuses_what_is_no_symbol_or_no_category() -> None:
    with pytest.raises(InputError, match="not a Bybit symbol"):
        Market.parse("linear", "btc usdt")
    with pytest.raises(InputError, match="unknown category"):
        Market.parse("futures", "BTCUSDT")


@pytest.mark.parametrize("symbol", ["btcusdt", " BTCUSDT", ""])
def test_the_constructor_refuses_a_symbol_not_spelled_as_bybit_spells_it(symbol: str) -> None:
    """It checks and does not repair: rows are keyed by the spelling, so a repaired one would query
    rows the caller never stored."""
    with pytest.raises(ValueError, match="Market.parse"):
        Market("linear", symbol)


def test_the_constructor_refuses_an_unknown_category() -> None:
    with pytest.raises(ValueError, match="unknown category"):
        Market("option", "BTCUSDT")  # type: ignore[arg-type]


def test_of_checks_the_category_of_plain_strings() -> None:
    assert Market.of("inverse", "BTCUSD") == Market("inverse", "BTCUSD")
    with pytest.raises(InputError):
        Market.of("option", "BTCUSD")


def test_a_market_is_a_frozen_value_and_no_tuple() -> None:
    market = Market("linear", "BTCUSDT")
    assert market == Market("linear", "BTCUSDT") and len({market, Market("linear", "BTCUSDT")}) == 1
    assert market != Market("spot", "BTCUSDT")
    assert market != ("linear", "BTCUSDT")  # type: ignore[comparison-overlap]  # what mypy refuses too
    with pytest.raises(dataclasses.FrozenInstanceError):
        market.symbol = "ETHUSDT"  # type: ignore[misc]


def test_a_span_whose_start_is_after_its_end_is_refused() -> None:
    with pytest.raises(ValueError, match=r"span \[5, 4\) starts after it ends"):
        Span(5, 4)


def test_an_empty_span_is_allowed_and_contains_nothing() -> None:
    span = Span(5, 5)
    assert span == (5, 5) and not span.contains(5) and not span.overlaps(Span(0, 10))


def test_a_span_unpacks_sorts_and_compares_as_the_pair_it_is() -> None:
    start, end = Span(10, 20)
    assert (start, end) == (10, 20) and [*Span(10, 20)] == [10, 20]
    assert Span(10, 20) == (10, 20)
    assert sorted([Span(30, 40), Span(10, 20)]) == [(10, 20), (30, 40)]


def test_a_span_is_half_open() -> None:
    span = Span(10, 20)
    assert span.contains(10) and span.contains(19) and not span.contains(20) and not span.contains(9)


def test_spans_that_only_touch_do_not_overlap() -> None:
    assert not Span(10, 20).overlaps(Span(20, 30))
    assert Span(10, 20).overlaps(Span(19, 30)) and Span(19, 30).overlaps(Span(10, 20))
    assert Span(10, 40).overlaps(Span(20, 30))


def test_clip_keeps_the_part_inside_the_other_span() -> None:
    assert Span(5, 25).clip(Span(10, 20)) == Span(10, 20)
    assert Span(15, 25).clip(Span(10, 20)) == Span(15, 20)
    assert Span(20, 30).clip(Span(10, 20)) is None
