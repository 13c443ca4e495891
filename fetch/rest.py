"""`RecentTradeSource`: the newest trades of a symbol from `GET /v5/market/recent-trade`.

recent-trade has no start, end or cursor: it only ever returns the latest N trades (at most 1000
for derivatives, 60 for spot). So it can only fill the *tail* after the newest archive day; the
`RecentTail` it returns says which span it proves complete (oldest..newest), and whatever lies
between the archive and `oldest_us` is a gap the caller reports, never papers over.
"""

from __future__ import annotations

from .client import BybitClient
from .errors import Implausible, InputError, ParameterError
from .market_span import Market, Span, recent_trade_max
from .models import RecentTail, Trade
from .parse import parse_recent_trades
from .plausible import CLOCK_SKEW_US, EARLIEST_US, first_implausible

RECENT_TRADE_PATH = "/v5/market/recent-trade"


class RecentTradeSource:
    """Fetches and normalizes the recent-trade tail of one symbol."""

    def __init__(self, client: BybitClient) -> None:
        self.client = client

    async def fetch(self, market: Market, limit: int | None = None) -> RecentTail:
        """The newest `limit` trades (default: the category's maximum), sorted by (time, id).

        Raises `Implausible` when any row cannot be true (another symbol, a time before Bybit existed
        or past the exchange's clock as the client knows it, a price or size that is not positive):
        a tail is only worth its coverage if every row of it is believable."""
        symbol = market.symbol
        most = recent_trade_max(market.category)
        limit = most if limit is None else limit
        if not 1 <= limit <= most:
            raise InputError(f"recent-trade limit {limit} is out of range for {market.category}: use 1 to {most}")
        params: dict[str, str | int] = {"category": market.category, "symbol": symbol, "limit": limit}
        try:
            result = await self.client.get_public(RECENT_TRADE_PATH, params)
        except ParameterError as exc:
            raise ParameterError(f"Bybit rejected symbol {symbol!r} for category {market.category} on "
                                 f"recent-trade ({exc}); check the symbol exists in that category",
                                 ret_code=exc.ret_code, status=exc.status, endpoint=RECENT_TRADE_PATH) from None
        trades = sorted(parse_recent_trades(result, market=market),
                        key=lambda t: (t.time_us, t.trade_id))
        _check_plausible(trades, market, self.client.exchange_now_ms() * 1000)
        return RecentTail(
            trades=tuple(trades),
            oldest_us=trades[0].time_us if trades else None,
            newest_us=trades[-1].time_us if trades else None,
            limit=limit,
        )


def _check_plausible(trades: list[Trade], market: Market, now_us: int) -> None:
    bad = first_implausible(trades, symbol=market.symbol, window=Span(EARLIEST_US, now_us + CLOCK_SKEW_US))
    if bad is not None:
        _, trade, why = bad
        raise Implausible(f"recent-trade for {market.symbol} ({market.category}) answered a trade that cannot be "
                          f"true (execId {trade.trade_id!r}: {why}); nothing of this answer is stored, "
                          "and the span it would have covered stays a gap", source="recent-trade")
