"""The account's own fills behind `/v5/execution/list`: deterministic, paged like Bybit.

Each UTC day holds `fills_per_day` fills that are a pure function of (seed, day, index), mostly
execType Trade with an occasional BustTrade / AdlTrade / Settle, plus a Funding row every 8 hours
on the first derivative market. Only fills within `fills_history_days` before the market's now
exist. Pages are sorted by execTime descending (ties by execId) and chained by an opaque cursor
that is already percent-encoded, as Bybit's is, so a client that re-encodes it breaks visibly.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from datetime import date, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from .config import MarketSpec, SimConfig, day_start_ms, utc_date

WEEK_MS = 7 * 86_400_000
Fill = dict[str, Any]


class ParamError(ValueError):
    """A request parameter Bybit would reject with retCode 10001."""


def _uuid(key: str) -> str:
    h = hashlib.md5(key.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _price(spec: MarketSpec, day: date, wiggle: int) -> tuple[float, int]:
    """A price near the market's level on `day`, and its number of decimals."""
    dec = 2 if spec.category == "spot" else 1
    level = spec.base_price * (1 + 0.05 * math.sin(day.toordinal() / 17.0))
    return round(level * (1 + (wiggle % 2001 - 1000) / 100_000), dec), dec


def _record(spec: MarketSpec, t: int, exec_id: str, exec_type: str, side: str, price: float, dec: int,
            qty: str, is_maker: bool, fee_rate: float, order_id: str, seq: int) -> Fill:
    value = float(qty) / price if spec.category == "inverse" else float(qty) * price
    return {
        "symbol": spec.symbol, "orderId": order_id, "orderLinkId": "", "side": side,
        "orderPrice": f"{price:.{dec}f}" if is_maker else "0", "orderQty": qty if order_id else "0",
        "leavesQty": "0", "orderType": ("Limit" if is_maker else "Market") if order_id else "UNKNOWN",
        "stopOrderType": "UNKNOWN", "execFee": f"{value * fee_rate:.8f}",
        "feeCurrency": "USDT" if spec.category == "spot" else "", "execId": exec_id,
        "execPrice": f"{price:.{dec}f}", "execQty": qty, "execType": exec_type,
        "execValue": f"{value:.8f}", "execTime": str(t), "isMaker": is_maker, "feeRate": f"{fee_rate:g}",
        "tradeIv": "", "markIv": "", "markPrice": f"{price:.{dec}f}", "indexPrice": "",
        "underlyingPrice": "", "blockTradeId": "", "closedSize": "0", "seq": seq,
    }


def _fill(seed: int, markets: tuple[MarketSpec, ...], day: date, j: int) -> tuple[str, Fill]:
    key = f"{seed}|fill|{day.isoformat()}|{j}"
    h = int(hashlib.md5(key.encode()).hexdigest(), 16)
    spec = markets[(h >> 32) % len(markets)]
    roll = (h >> 64) % 100
    kind = {0: "BustTrade", 1: "AdlTrade", 2: "Settle"}.get(roll, "Trade") if spec.category != "spot" else "Trade"
    price, dec = _price(spec, day, h >> 80)
    qty = str(1 + (h >> 100) % 5000) if spec.category == "inverse" else f"{(1 + (h >> 100) % 1000) / 1000:.3f}"
    maker = kind == "Trade" and bool((h >> 96) & 1)
    t = day_start_ms(day) + h % 86_400_000
    side = "Buy" if (h >> 72) & 1 else "Sell"
    rec = _record(spec, t, _uuid(key), kind, side, price, dec, qty, maker, 0.0002 if maker else 0.00055,
                  _uuid(key + "|order"), day.toordinal() * 1000 + j)
    return spec.category, rec


def _funding(seed: int, spec: MarketSpec, day: date, hour: int) -> tuple[str, Fill]:
    key = f"{seed}|funding|{spec.symbol}|{day.isoformat()}|{hour}"
    h = int(hashlib.md5(key.encode()).hexdigest(), 16)
    price, dec = _price(spec, day, h >> 80)
    rate = ((h % 201) - 50) / 1_000_000  # mostly positive, sometimes negative
    qty = "1000" if spec.category == "inverse" else "0.500"
    side = "Sell" if h & 1 else "Buy"
    rec = _record(spec, day_start_ms(day) + hour * 3_600_000, _uuid(key), "Funding", side, price, dec, qty,
                  False, rate, "", day.toordinal() * 1000 + 900 + hour)
    return spec.category, rec


@lru_cache(maxsize=4096)
def _day(seed: int, per_day: int, markets: tuple[MarketSpec, ...], day: date) -> tuple[tuple[str, Fill], ...]:
    """All fills of one UTC day (category, record); cached: a 7-day window is read many times."""
    out = [_fill(seed, markets, day, j) for j in range(per_day)]
    holder = next((m for m in markets if m.category != "spot"), None)
    if holder is not None:
        out += [_funding(seed, holder, day, hour) for hour in (0, 8, 16)]
    return tuple(out)


def _days(start_ms: int, end_ms: int) -> Iterator[date]:
    day, last = utc_date(start_ms), utc_date(end_ms)
    while day <= last:
        yield day
        day += timedelta(days=1)


def expected_fills(config: SimConfig, start_ms: int, end_ms: int, exec_type: str | None = None, *,
                   category: str | None = None, symbol: str | None = None) -> list[Fill]:
    """Ground truth: the fills with start_ms <= execTime <= end_ms, newest first (ties: execId desc).

    Only fills inside [now - fills_history_days, now] exist. Records are the exact JSON items the API
    returns; `category=None` means every category.
    """
    now = config.market_now_ms()
    lo, hi = max(start_ms, now - config.fills_history_days * 86_400_000), min(end_ms, now)
    if lo > hi or config.fills_per_day < 0:
        return []
    markets = tuple(config.markets)
    found = [rec for d in _days(lo, hi) for cat, rec in _day(config.seed, config.fills_per_day, markets, d)
             if lo <= int(rec["execTime"]) <= hi and (category is None or cat == category)
             and (symbol is None or rec["symbol"] == symbol) and (exec_type is None or rec["execType"] == exec_type)]
    found.sort(key=lambda r: (int(r["execTime"]), r["execId"]), reverse=True)
    return found


def resolve_window(start_ms: int | None, end_ms: int | None, now_ms: int) -> tuple[int, int]:
    """Bybit's 7-day window rule for startTime/endTime (both inclusive)."""
    if start_ms is None and end_ms is None:
        return now_ms - WEEK_MS, now_ms
    if start_ms is None:
        assert end_ms is not None
        return end_ms - WEEK_MS, end_ms
    if end_ms is None:
        return start_ms, start_ms + WEEK_MS
    if start_ms > end_ms:
        raise ParamError("params error: startTime must not be greater than endTime")
    if end_ms - start_ms > WEEK_MS:
        raise ParamError("params error: The time range between startTime and endTime cannot exceed 7 days")
    return start_ms, end_ms


def encode_cursor(offset: int, exec_id: str) -> str:
    """Opaque and already percent-encoded (':' -> %3A, ',' -> %2C), like Bybit's."""
    return quote(f"{offset}:{exec_id},{offset}:{exec_id}", safe="")


def paginate(items: list[Fill], cursor: str, limit: int) -> tuple[list[Fill], str]:
    """One page from `cursor` (as decoded from the query) and the next cursor ('' on the last page)."""
    start = 0
    if cursor:
        head = cursor.split(",")[0].split(":")
        if len(head) != 2 or not head[0].isdigit():
            raise ParamError("params error: cursor is invalid")
        start, want = int(head[0]), head[1]
        if not (start < len(items) and items[start]["execId"] == want):
            ids = [r["execId"] for r in items]
            if want not in ids:
                raise ParamError("params error: cursor is invalid or expired")
            start = ids.index(want)
    page, nxt = items[start:start + limit], start + limit
    return page, encode_cursor(nxt, items[nxt]["execId"]) if nxt < len(items) else ""
