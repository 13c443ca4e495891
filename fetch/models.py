"""Normalized records that every source produces and the store consumes.

Times are integers (epoch microseconds) so that the archive's 0.1 ms precision survives every hop:
a float of seconds cannot hold 1741910443.7357 exactly. Bulk archive data travels as Arrow tables
with `TRADE_SCHEMA`; small streams (REST tail, executions) as frozen dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import pyarrow as pa

from .market_span import Category


class Source(str, Enum):
    """Where a stored trade came from: a daily archive file, recent-trade (REST) or live capture (ws)."""

    ARCHIVE = "archive"
    REST = "rest"
    WS = "ws"


# Column order and types of a normalized trade batch; the store's staging table mirrors it.
TRADE_SCHEMA = pa.schema([
    pa.field("category", pa.string(), nullable=False),
    pa.field("symbol", pa.string(), nullable=False),
    pa.field("trade_id", pa.string(), nullable=False),
    pa.field("time_us", pa.int64(), nullable=False),
    pa.field("price", pa.float64(), nullable=False),
    pa.field("qty", pa.float64(), nullable=False),
    pa.field("side", pa.string(), nullable=False),
    pa.field("is_block_trade", pa.bool_(), nullable=True),
    pa.field("source", pa.string(), nullable=False),
])


@dataclass(frozen=True, slots=True)
class Trade:
    """One public trade. `side` is the taker side, so the buyer was the maker exactly when it is sell."""

    category: Category
    symbol: str
    trade_id: str
    time_us: int
    price: float
    qty: float
    side: str
    is_block_trade: bool | None
    source: str

    @property
    def is_buyer_maker(self) -> bool:
        return self.side == "sell"


def trades_to_table(trades: list[Trade]) -> pa.Table:
    """Column-wise Arrow table of dataclass trades, in `TRADE_SCHEMA` order."""
    names = TRADE_SCHEMA.names
    columns = {name: [getattr(t, name) for t in trades] for name in names}
    return pa.table(columns, schema=TRADE_SCHEMA)


@dataclass(frozen=True, slots=True)
class Execution:
    """One fill of the account's own orders, from /v5/execution/list."""

    category: Category
    symbol: str
    exec_id: str
    order_id: str
    exec_type: str
    time_us: int
    price: float
    qty: float
    side: str
    fee: float
    fee_currency: str
    is_maker: bool


@dataclass(frozen=True, slots=True)
class RecentTail:
    """What recent-trade returned: the trades (ascending) and the span they prove complete."""

    trades: tuple[Trade, ...]
    oldest_us: int | None
    newest_us: int | None
    limit: int
