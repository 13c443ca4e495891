"""The public WebSocket streams, `/v5/public/linear|inverse|spot`, speaking Bybit's protocol.

* `{"op":"subscribe","args":["publicTrade.BTCUSDT"]}` -> `{"success":true,...,"op":"subscribe"}`,
  or `success:false` with the reason (unknown topic, spot's 10-args-per-request limit, the
  21,000-character limit of one connection's args, or an injected `ws_refuse`); all or nothing.
* `{"op":"ping"}` -> a pong in the category's shape: spot answers `"op":"ping","ret_msg":"pong"`,
  linear/inverse `"op":"pong"` with the server time in `args` (clients must accept both).
* A connection that sends nothing (no ping, no request) for `SimConfig.ws_idle_cut_s` (Bybit: 10
  minutes) is cut.
* `publicTrade.{SYMBOL}` snapshots carry the very trades (ids, values) of the archive and
  recent-trade (`sim.market.trades_from`), ascending, at most 1024 a message (a match split at that
  limit leaves two messages with one `seq`), pushed as the market clock passes them: from the first
  trade after the subscribe on, nothing is replayed.

Faults (`sim.faults.WS_KINDS`) act on single pushes or subscribes; see that module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from aiohttp import WSMsgType, web

from .config import MarketSpec, SimConfig, day_start_ms, utc_date
from .faults import RequestInfo
from .market import TailTrade, count_until, trades_from
from .state import STATE_KEY, SimState

WS_CATEGORIES = ("linear", "inverse", "spot")
MAX_TRADES_PER_MESSAGE = 1024
SPOT_MAX_ARGS = 10
MAX_ARGS_CHARS = 21_000
TICK_TRADES_CAP = 50_000  # trades generated per topic per tick: a clock jump catches up over ticks
PUSH_KINDS = ("ws_drop", "ws_stall", "ws_duplicate", "ws_replay", "ws_skip", "ws_phantom")
TOPIC_PREFIX = "publicTrade."


@dataclass
class Cursor:
    """The next trade a topic will push: index `i` of `day`."""

    spec: MarketSpec
    day: date
    i: int


@dataclass
class Connection:
    """One client's socket: its topics, the last thing it sent, and the faults acting on it."""

    ws: web.WebSocketResponse
    category: str
    path: str
    conn_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    topics: dict[str, Cursor] = field(default_factory=dict)
    args_chars: int = 0
    last_heard_s: float = 0.0
    stalled_until_s: float = 0.0
    previous: str | None = None
    phantoms: int = 0


def advance(config: SimConfig, cursor: Cursor, until_us: int, cap: int = TICK_TRADES_CAP) -> list[TailTrade]:
    """The trades from `cursor` with time <= until_us (at most `cap`), moving the cursor past them.

    Crosses UTC midnights: a day whose last trade was pushed hands over to the next day's trade 0.
    """
    out: list[TailTrade] = []
    for _ in range(10_000):  # bounded: each pass consumes trades or one day
        if len(out) >= cap:
            break
        if cursor.day < cursor.spec.listed:
            cursor.day, cursor.i = cursor.spec.listed, 0
        want = cap - len(out)
        rows = trades_from(config, cursor.spec, cursor.day, cursor.i, until_us, want)
        out.extend(rows)
        cursor.i += len(rows)
        if len(rows) == want:
            continue
        next_start_us = day_start_ms(cursor.day + timedelta(days=1)) * 1000
        if cursor.i >= cursor.spec.trades_per_day and next_start_us <= until_us:
            cursor.day, cursor.i = cursor.day + timedelta(days=1), 0
            continue
        break
    return out


def start_cursor(config: SimConfig, spec: MarketSpec, now_ms: int) -> Cursor:
    """A fresh subscription pushes only what trades after `now_ms`."""
    day = utc_date(now_ms)
    return Cursor(spec, day, count_until(config, spec, day, now_ms * 1000))


def trade_item(symbol: str, t: TailTrade, previous_price: str | None) -> dict[str, Any]:
    tick = "ZeroPlusTick" if previous_price is None or previous_price == t.price else (
        "PlusTick" if float(t.price) > float(previous_price) else "MinusTick")
    return {"T": t.time_us // 1000, "s": symbol, "S": t.side, "v": t.size, "p": t.price, "L": tick,
            "i": t.exec_id, "BT": False, "RPI": t.is_rpi, "seq": t.seq}


def push_messages(symbol: str, trades: list[TailTrade], ts_ms: int) -> list[dict[str, Any]]:
    """Snapshots of at most 1024 ascending trades each (a busy tick spans several messages)."""
    messages = []
    previous: str | None = None
    for lo in range(0, len(trades), MAX_TRADES_PER_MESSAGE):
        data = []
        for t in trades[lo: lo + MAX_TRADES_PER_MESSAGE]:
            data.append(trade_item(symbol, t, previous))
            previous = t.price
        messages.append({"topic": TOPIC_PREFIX + symbol, "type": "snapshot", "ts": ts_ms, "data": data})
    return messages


def pong(category: str, conn: Connection, req_id: str, server_ms: int) -> dict[str, Any]:
    if category == "spot":
        return {"success": True, "ret_msg": "pong", "conn_id": conn.conn_id, "req_id": req_id, "op": "ping"}
    return {"success": True, "ret_msg": "", "conn_id": conn.conn_id, "req_id": req_id, "op": "pong",
            "args": [str(server_ms)]}


def _reply(conn: Connection, op: str, req_id: str, error: str | None) -> dict[str, Any]:
    return {"success": error is None, "ret_msg": error or "", "conn_id": conn.conn_id, "req_id": req_id,
            "op": op}


def check_subscribe(state: SimState, conn: Connection, args: Any) -> tuple[list[MarketSpec], str | None]:
    """The markets of a subscribe request, or why it is refused."""
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        return [], "error:args must be a non-empty list of topics"
    if conn.category == "spot" and len(args) > SPOT_MAX_ARGS:
        return [], f"error:args size >{SPOT_MAX_ARGS}"
    if conn.args_chars + sum(len(a) for a in args) > MAX_ARGS_CHARS:
        return [], f"error:the args of one connection may total at most {MAX_ARGS_CHARS} characters"
    specs = []
    for arg in args:
        symbol = arg[len(TOPIC_PREFIX):] if arg.startswith(TOPIC_PREFIX) else None
        spec = state.config.market(symbol, (conn.category,)) if symbol else None
        if spec is None:
            return [], f"error:handler not found,topic:{arg}"
        refused = state.faults.take(RequestInfo(conn.path, spec.symbol, ws=True), ("ws_refuse",))
        if refused:
            return [], f"Invalid symbol :[{arg}]"
        specs.append(spec)
    return specs, None


async def _send(conn: Connection, payload: dict[str, Any] | str) -> None:
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    with contextlib.suppress(ConnectionError, RuntimeError):
        await conn.ws.send_str(text)


async def _on_request(state: SimState, conn: Connection, text: str) -> None:
    conn.last_heard_s = state.clock()
    try:
        req = json.loads(text)
        op, req_id = str(req.get("op", "")), str(req.get("req_id", ""))
    except (ValueError, AttributeError):
        await _send(conn, {"success": False, "ret_msg": "error:request not in JSON", "conn_id": conn.conn_id,
                           "op": ""})
        return
    if op == "ping":
        await _send(conn, pong(conn.category, conn, req_id, state.config.server_time_ms()))
    elif op == "subscribe":
        specs, error = check_subscribe(state, conn, req.get("args"))
        if error is None:
            now_ms = state.config.market_now_ms()
            cursors = [await asyncio.to_thread(start_cursor, state.config, s, now_ms) for s in specs]
            conn.args_chars += sum(len(TOPIC_PREFIX + s.symbol) for s in specs)
        await _send(conn, _reply(conn, op, req_id, error))
        if error is None:
            conn.topics.update({c.spec.symbol: c for c in cursors if c.spec.symbol not in conn.topics})
            state.ws_subscriptions += len(specs)
    elif op == "unsubscribe":
        for arg in req.get("args") or []:
            conn.topics.pop(str(arg)[len(TOPIC_PREFIX):], None)
        await _send(conn, _reply(conn, op, req_id, None))
    else:
        await _send(conn, _reply(conn, op, req_id, f"error:unknown op {op!r}"))


async def _push(state: SimState, conn: Connection, symbol: str, message: dict[str, Any]) -> bool:
    """Send one snapshot through the faults; False when the connection is gone."""
    hits = state.faults.take(RequestInfo(conn.path, symbol, ws=True), PUSH_KINDS)
    kinds = {f.kind: f for f in hits}
    if "ws_drop" in kinds:
        await conn.ws.close(code=1001, message=b"dropped (sim fault)")
        return False
    if "ws_stall" in kinds:
        stall = kinds["ws_stall"].value
        conn.stalled_until_s = math.inf if stall is None else state.clock() + stall
        return True
    if "ws_skip" in kinds:
        state.ws_skipped_trades += len(message["data"])
        return True
    if "ws_phantom" in kinds:
        _add_phantom(conn, message)
    text = json.dumps(message, separators=(",", ":"))
    await _send(conn, text)
    state.ws_messages += 1
    state.ws_trades_pushed += len(message["data"])
    if "ws_duplicate" in kinds:
        await _send(conn, text)
    if "ws_replay" in kinds and conn.previous is not None:
        await _send(conn, conn.previous)
    conn.previous = text
    return True


def _add_phantom(conn: Connection, message: dict[str, Any]) -> None:
    last = dict(message["data"][-1])
    conn.phantoms += 1
    last["i"] = f"phantom-{conn.conn_id[:8]}-{conn.phantoms}"
    message["data"].append(last)


async def _push_loop(state: SimState, conn: Connection) -> None:
    config = state.config
    while not conn.ws.closed:
        await asyncio.sleep(config.ws_tick_ms / 1000)
        if state.clock() - conn.last_heard_s > config.ws_idle_cut_s:
            state.ws_idle_cuts += 1
            await conn.ws.close(code=1000, message=b"idle: no ping or request for too long")
            return
        if state.clock() < conn.stalled_until_s or not conn.topics:
            continue
        now_ms = config.market_now_ms()
        for symbol, cursor in list(conn.topics.items()):
            trades = await asyncio.to_thread(advance, config, cursor, now_ms * 1000)
            if config.latency_ms > 0 and trades:
                await asyncio.sleep(config.latency_ms / 1000)
            for message in push_messages(symbol, trades, now_ms):
                if not await _push(state, conn, symbol, message):
                    return
                if state.clock() < conn.stalled_until_s:
                    break


async def public_stream(request: web.Request) -> web.StreamResponse:
    """GET /v5/public/{category}: upgrade, then serve requests and pushes until either side closes."""
    state = request.app[STATE_KEY]
    category = request.match_info["category"]
    if category not in WS_CATEGORIES:
        return web.Response(status=404, text="<html><body><h1>404 Not Found</h1></body></html>",
                            content_type="text/html")
    ws = web.WebSocketResponse(autoping=True, heartbeat=None, max_msg_size=1 << 20)
    await ws.prepare(request)
    conn = Connection(ws, category, request.path, last_heard_s=state.clock())
    state.ws_connections += 1
    state.ws_open += 1
    pusher = asyncio.create_task(_push_loop(state, conn))
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await _on_request(state, conn, msg.data)
            elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break
    finally:
        state.ws_open -= 1
        pusher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pusher
        if not ws.closed:
            await ws.close()
    return ws


def add_ws_routes(app: web.Application) -> None:
    app.router.add_get("/v5/public/{category}", public_stream)


__all__ = ["add_ws_routes", "advance", "push_messages", "start_cursor"]
