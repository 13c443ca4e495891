"""What a request, a coverage row or an export is about: a market and a span of time. Pure, light.

`Market` is a (category, symbol) that cannot be mixed up: a frozen dataclass, never a tuple, so a
(symbol, category) in the wrong order or a bare string fails at once (mypy refuses it before that).
Its constructor checks and does not repair: the symbol must already be spelled as Bybit spells it
(upper case, no padding), because the store keys rows by that spelling, and a constructor that
quietly upper-cased `btcusdt` would hide the caller that skipped normalizing. Text a person typed
goes through `Market.parse`, the one place that normalizes; `Market.of` takes plain strings that
are already right (stored rows).

`Span` is a half-open [start_us, end_us) in epoch microseconds. It is a NamedTuple because spans
travel as rows: out of SQL (`Span(*row)`), into SQL parameters (`[*span]`), through sorting and
`for a, b in spans`. An empty span (start == end) is allowed, as the clip of one span to another
can be empty; a start after the end is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, Self, get_args

from .errors import InputError
from .symbols import normalize_symbol

# The categories whose public trades Bybit publishes as daily archive files, recent-trade answers
# and publicTrade streams. Options have none of the archive files, so they are not one of ours.
Category = Literal["linear", "inverse", "spot"]
CATEGORIES: tuple[Category, ...] = get_args(Category)


def check_category(text: str) -> Category:
    """`text` as a `Category`, or an `InputError` naming the ones there are."""
    for category in CATEGORIES:
        if text == category:
            return category
    raise InputError(f"unknown category {text!r}: use one of {', '.join(CATEGORIES)}")


def recent_trade_max(category: Category) -> int:
    """recent-trade's largest `limit`: 60 for spot, 1000 for derivatives."""
    return 60 if category == "spot" else 1000


@dataclass(frozen=True, slots=True)
class Market:
    """One market: a category and a symbol as Bybit spells it (e.g. linear BTCUSDT)."""

    category: Category
    symbol: str

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown category {self.category!r}: use one of {', '.join(CATEGORIES)}")
        if not self.symbol or self.symbol != self.symbol.strip().upper():
            raise ValueError(f"{self.symbol!r} is not a symbol as Bybit spells it: use Market.parse")

    @classmethod
    def of(cls, category: str, symbol: str) -> Market:
        """A market from plain strings already spelled right (a stored row)."""
        return cls(check_category(category), symbol)

    @classmethod
    def parse(cls, category: str, symbol: str) -> Market:
        """A market from what a person typed: the category checked, the symbol normalized."""
        return cls(check_category(category), normalize_symbol(symbol))


class _SpanFields(NamedTuple):
    start_us: int
    end_us: int


class Span(_SpanFields):
    """Half-open [start_us, end_us) in epoch microseconds; start_us <= end_us."""

    __slots__ = ()

    def __new__(cls, start_us: int, end_us: int) -> Self:
        if start_us > end_us:
            raise ValueError(f"span [{start_us}, {end_us}) starts after it ends")
        return super().__new__(cls, start_us, end_us)

    def contains(self, time_us: int) -> bool:
        return self.start_us <= time_us < self.end_us

    def overlaps(self, other: Span) -> bool:
        """True when the two share an instant (an empty span shares none)."""
        return max(self.start_us, other.start_us) < min(self.end_us, other.end_us)

    def clip(self, other: Span) -> Span | None:
        """The part of this span inside `other`, or None when they do not overlap."""
        if not self.overlaps(other):
            return None
        return Span(max(self.start_us, other.start_us), min(self.end_us, other.end_us))
