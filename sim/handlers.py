"""Route handlers: the REST endpoints and the archive host, answering as Bybit does.

Handlers only compute answers; limits, faults, latency and bookkeeping are the middleware's
(`sim.app`). Slow work (DuckDB generation) runs in worker threads so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from .archive import ensure_file, file_name, index_html, is_published, parse_file_name, published_days
from .auth import verify
from .config import MarketSpec, day_start_ms
from .faults import ARCHIVE_KINDS, ARCHIVE_VARIANT, RECENT_KINDS
from .fills import ParamError, expected_fills, paginate, resolve_window
from .market import recent_trades
from .state import FILE_PATH_KEY, MIX_KEY, STATE_KEY, SimState, raw_query, request_info

CATEGORIES = ("linear", "inverse", "spot", "option")


def envelope(state: SimState, code: int, msg: str, result: Any,
             headers: dict[str, str] | None = None) -> web.Response:
    """Bybit's JSON envelope; `time` is the server clock (real time + configured skew)."""
    body = {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {},
            "time": state.config.server_time_ms()}
    return web.Response(text=json.dumps(body, separators=(",", ":")), content_type="application/json",
                        headers=headers)


def _int_param(query: Any, name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ParamError(f"params error: {name} must be an integer, got {raw!r}") from None


def _limit(query: Any, low: int, high: int, default: int) -> int:
    value = _int_param(query, "limit")
    if value is None:
        return default
    if not low <= value <= high:
        raise ParamError(f"params error: limit must be between {low} and {high}, got {value}")
    return value


async def market_time(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    now_ms = state.config.server_time_ms()
    result = {"timeSecond": str(now_ms // 1000), "timeNano": str(now_ms * 1_000_000)}
    return envelope(state, 0, "OK", result)


async def recent_trade(request: web.Request) -> web.Response:
    """Newest trades first; no time or cursor parameters exist (start/end are ignored)."""
    state = request.app[STATE_KEY]
    category, symbol = request.query.get("category", ""), request.query.get("symbol", "")
    empty = {"category": "", "list": []}
    if category not in CATEGORIES:
        return envelope(state, 10001, "params error: category invalid", empty)
    spec = state.config.market(symbol, (category,))
    if spec is None:
        return envelope(state, 10001, "params error: symbol invalid", empty)
    try:
        limit = _limit(request.query, 1, 60, 60) if category == "spot" else _limit(request.query, 1, 1000, 500)
    except ParamError as exc:
        return envelope(state, 10001, str(exc), empty)
    trades = await asyncio.to_thread(recent_trades, state.config, spec, state.config.market_now_ms(), limit)
    items = [{"execId": t.exec_id, "symbol": spec.symbol, "price": t.price, "size": t.size, "side": t.side,
              "time": str(t.time_us // 1000), "isBlockTrade": False, "isRPITrade": t.is_rpi, "seq": str(t.seq)}
             for t in trades]
    for fault in state.faults.take(request_info(request), RECENT_KINDS):
        _bend(items, fault.kind)
    return envelope(state, 0, "OK", {"category": category, "list": items})


def _bend(items: list[dict[str, Any]], kind: str) -> None:
    """One row of the answer made untrue (the middle one), as a hostile exchange would."""
    if not items:
        return
    row = items[len(items) // 2]
    if kind == "recent_seconds":
        row["time"] = str(int(row["time"]) // 1000)
    elif kind == "recent_future":
        row["time"] = "4102444800000"  # 2100-01-01
    elif kind == "recent_foreign_symbol":
        row["symbol"] = "XYZUSDT"
    elif kind == "recent_zero_price":
        row["price"] = "0"


async def execution_list(request: web.Request) -> web.Response:
    """Signed: the account's fills in a <= 7-day window, newest first, cursor-paged."""
    state = request.app[STATE_KEY]
    cfg = state.config
    failure = verify(request.headers, raw_query(request), cfg.api_keys, cfg.server_time_ms(),
                     cfg.recv_window_default)
    if failure is not None:
        return envelope(state, failure.ret_code, failure.ret_msg, {})
    q = request.query
    category = q.get("category", "")
    try:
        if category not in CATEGORIES:
            raise ParamError("params error: category is missing or invalid" if category else
                             "params error: category is required")
        limit = _limit(q, 1, 100, 50)
        start, end = resolve_window(_int_param(q, "startTime"), _int_param(q, "endTime"), cfg.market_now_ms())
        fills = expected_fills(cfg, start, end, q.get("execType") or None, category=category,
                               symbol=q.get("symbol") or None)
        page, cursor = paginate(fills, q.get("cursor", ""), limit)
    except ParamError as exc:
        return envelope(state, 10001, str(exc), {})
    return envelope(state, 0, "OK", {"nextPageCursor": cursor, "category": category, "list": page})


INSTRUMENT_STATUSES = ("PreLaunch", "Trading", "Delivering", "Closed")
_CONTRACT = {"linear": "LinearPerpetual", "inverse": "InversePerpetual", "spot": ""}


async def instruments_info(request: web.Request) -> web.Response:
    """The markets of a category; `status` filters (none given: only `Trading`, as Bybit does);
    `limit` (1-1000, default 500) and `cursor` page through them, in symbol order."""
    state = request.app[STATE_KEY]
    q = request.query
    category, status = q.get("category", ""), q.get("status", "") or "Trading"
    if category not in CATEGORIES:
        return envelope(state, 10001, "params error: category invalid", {"category": "", "list": []})
    if status not in INSTRUMENT_STATUSES:
        return envelope(state, 10001, "params error: status invalid", {"category": "", "list": []})
    try:
        limit = _limit(q, 1, 1000, 500)
        offset = int(q.get("cursor") or 0)
    except (ParamError, ValueError) as exc:
        return envelope(state, 10001, str(exc), {"category": "", "list": []})
    specs = sorted((m for m in state.config.markets if m.category == category and m.status == status),
                   key=lambda m: m.symbol)
    page = specs[offset:offset + limit]
    items = [{"symbol": m.symbol, "contractType": _CONTRACT.get(m.category, ""), "status": m.status,
              "launchTime": str(day_start_ms(m.listed))} for m in page]
    cursor = str(offset + limit) if offset + limit < len(specs) else ""
    return envelope(state, 0, "OK", {"category": category, "list": items, "nextPageCursor": cursor})


def _archive_market(request: web.Request) -> tuple[str, MarketSpec | None]:
    root = "/spot" if request.path.startswith("/spot/") else "/trading"
    cats = ("spot",) if root == "/spot" else ("linear", "inverse")
    return root, request.app[STATE_KEY].config.market(request.match_info["symbol"], cats)


def not_found() -> web.Response:
    return web.Response(status=404, text="<html><body><h1>404 Not Found</h1></body></html>",
                        content_type="text/html")


async def archive_index(request: web.Request) -> web.Response:
    """The folder listing: exactly the published days, oldest first."""
    _, spec = _archive_market(request)
    if spec is None:
        return not_found()
    names = [file_name(spec, d) for d in published_days(request.app[STATE_KEY].config, spec)]
    return web.Response(text=index_html(request.path, names), content_type="text/html")


async def archive_file(request: web.Request) -> web.StreamResponse:
    """One day's .csv.gz, served from the cache; archive faults pick a variant or truncate it."""
    state = request.app[STATE_KEY]
    root, spec = _archive_market(request)
    day = parse_file_name(root, spec.symbol, request.match_info["name"]) if spec else None
    if spec is None or day is None or not is_published(state.config, spec, day):
        return not_found()
    hits = state.faults.take(request_info(request), ARCHIVE_KINDS, extra=request.get(MIX_KEY))
    variant = frozenset(ARCHIVE_VARIANT[f.kind] for f in hits if f.kind in ARCHIVE_VARIANT)
    path, generated = await asyncio.to_thread(ensure_file, state.config, spec, day, variant)
    state.files_generated += int(generated)
    request[FILE_PATH_KEY] = path
    if any(f.kind == "truncate_gzip" for f in hits):
        data = await asyncio.to_thread(path.read_bytes)
        return web.Response(body=data[: int(len(data) * 0.6)], content_type="application/gzip")
    if any(f.kind == "corrupt_deflate" for f in hits):
        corrupt = bytearray(await asyncio.to_thread(path.read_bytes))
        corrupt[10] = 0xFF  # the first byte after the 10-byte gzip header: a final block of the reserved type
        return web.Response(body=bytes(corrupt), content_type="application/gzip")
    return web.FileResponse(path, headers={"Content-Type": "application/gzip"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v5/market/time", market_time)
    app.router.add_get("/v5/market/recent-trade", recent_trade)
    app.router.add_get("/v5/execution/list", execution_list)
    app.router.add_get("/v5/market/instruments-info", instruments_info)
    for root in ("/trading", "/spot"):
        app.router.add_get(root + "/{symbol}", archive_index)
        app.router.add_get(root + "/{symbol}/", archive_index)
        app.router.add_get(root + "/{symbol}/{name}", archive_file)
