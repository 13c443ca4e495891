"""`InstrumentSource`: every symbol of a category from `GET /v5/market/instruments-info`.

A whole-market refresh (`refresh --all`) needs the list of symbols, and only this endpoint says which
category a symbol belongs to (the archive's `/trading/` folder mixes linear and inverse) and whether
it still trades: delisted symbols keep their archive folders, so `status=Closed` finds their history.
Without `status` Bybit returns only `Trading` symbols; pages are `limit` (at most 1000) long, linked
by `nextPageCursor` (empty on the last page).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .client import BybitClient
from .errors import BadResponse, InputError
from .market_span import Category, check_category

INSTRUMENTS_PATH = "/v5/market/instruments-info"
STATUSES = ("PreLaunch", "Trading", "Delivering", "Closed")
# What `--status all` means: every status with trades (PreLaunch symbols have none yet).
ALL_TRADED = ("Trading", "Delivering", "Closed")
PAGE_LIMIT = 1000
MAX_PAGES = 100  # 100,000 symbols per status: far more than Bybit lists; bounds a cursor that loops


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    category: Category
    status: str


def parse_instruments(result: dict[str, Any], category: Category) -> tuple[list[Instrument], str]:
    """One page's instruments and the cursor of the next page ('' when this is the last)."""
    items = result.get("list")
    if not isinstance(items, list):
        raise BadResponse(f"{INSTRUMENTS_PATH}: the result holds no list of instruments")
    found = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("symbol"), str):
            raise BadResponse(f"{INSTRUMENTS_PATH}: an instrument without a symbol: {item!r:.200}")
        found.append(Instrument(item["symbol"], category, str(item.get("status", ""))))
    cursor = result.get("nextPageCursor") or ""
    return found, str(cursor)


def statuses_for(choice: str) -> tuple[str, ...]:
    """`--status` (Trading, Closed, ..., or all) as the statuses to ask for."""
    if choice.lower() == "all":
        return ALL_TRADED
    for status in STATUSES:
        if status.lower() == choice.lower():
            return (status,)
    raise InputError(f"unknown instrument status {choice!r}: use one of {', '.join(STATUSES)} or all")


class InstrumentSource:
    """Lists a category's symbols, page by page."""

    def __init__(self, client: BybitClient) -> None:
        self.client = client

    async def list(self, category: Category, statuses: Sequence[str] = ("Trading",)) -> list[Instrument]:
        """Every instrument of `category` with one of `statuses`, in symbol order, each once."""
        cat = check_category(category)
        seen: dict[str, Instrument] = {}
        for status in statuses:
            cursor = ""
            for _ in range(MAX_PAGES):
                params: dict[str, str | int] = {"category": cat, "status": status, "limit": PAGE_LIMIT}
                if cursor:
                    params["cursor"] = cursor
                page, cursor = parse_instruments(await self.client.get_public(INSTRUMENTS_PATH, params), cat)
                for instrument in page:
                    seen.setdefault(instrument.symbol, instrument)
                if not cursor:
                    break
        return [seen[symbol] for symbol in sorted(seen)]
