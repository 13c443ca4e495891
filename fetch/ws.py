"""Bybit's public trade stream (`publicTrade.{SYMBOL}` on `/v5/public/{category}`), live.

Pure parts, tested without a server:

* `plan_connections`: all symbols on as few connections as Bybit's limits allow (spot: at most 10
  args per subscribe request; any category: at most 21,000 characters of args per connection);
* `parse_message`: one text frame -> `TradesMessage` (normalized `Trade`s, source 'ws'), `Pong`,
  `SubscribeReply` or `Ignored`. A push that is not plausible (another symbol, an unknown side, a
  price or size that is not a finite positive number, a time far from the message's own `ts`,
  trades out of order) is rejected whole with `RejectedMessage`: a message the follower cannot
  trust breaks the continuity it can vouch for, exactly like a disconnect;
* `Watchdog`: when the next ping is due (every 20 s), and when a connection is dead: no pong in
  time, or pongs but no trade for too long (a failure pybit and cryptofeed users report).

`PublicStream` is the one connection (on `fetch.transport.WebSocketTransport`, which alone knows
aiohttp): connect, subscribe and wait for every reply, then yield trade messages while it pings;
every way it can end is a `StreamError` (a `TransportError`: try again) or `SubscriptionRefused`.
"""

from __future__ import annotations

import itertools
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from .errors import BadResponse, ExchangeError, Transient, TransportError
from .market_span import Category, Market, check_category
from .models import Source, Trade
from .transport import WebSocketTransport

TOPIC_PREFIX = "publicTrade."
SPOT_ARGS_PER_REQUEST = 10
ARGS_PER_REQUEST = 200  # derivatives document no per-request limit; keep requests modest anyway
MAX_ARGS_CHARS = 21_000
PING_INTERVAL_S = 20.0
MAX_TRADE_AGE_US = 3_600_000_000  # a trade an hour older than its message is not live data
MAX_TRADE_LEAD_US = 5_000_000  # nor one from 5 s after the message was sent
MAX_ID_CHARS = 64


class StreamError(TransportError):
    """The stream ended or cannot be trusted any more (closed, silent, rejected data): reconnect."""


class RejectedMessage(BadResponse):
    """A push failed validation; its `reason` says which check."""


class SubscriptionRefused(ExchangeError, Transient):
    """Bybit answered a subscribe with `success: false` (an unknown symbol, a limit, a hiccup)."""


def topic(symbol: str) -> str:
    return TOPIC_PREFIX + symbol


def stream_path(category: Category) -> str:
    return f"/v5/public/{category}"


def plan_connections(category: str, symbols: Iterable[str]) -> list[list[list[str]]]:
    """Connections -> subscribe requests -> args, filling each connection up to the limits."""
    per_request = SPOT_ARGS_PER_REQUEST if check_category(category) == "spot" else ARGS_PER_REQUEST
    args = list(dict.fromkeys(topic(s) for s in symbols))
    connections: list[list[str]] = []
    chars = MAX_ARGS_CHARS + 1
    for arg in args:
        if len(arg) > MAX_ARGS_CHARS:
            raise ValueError(f"topic {arg[:40]}... is longer than a connection's {MAX_ARGS_CHARS} characters")
        if chars + len(arg) > MAX_ARGS_CHARS:
            connections.append([])
            chars = 0
        connections[-1].append(arg)
        chars += len(arg)
    return [[conn[i: i + per_request] for i in range(0, len(conn), per_request)] for conn in connections]


@dataclass(frozen=True, slots=True)
class TradesMessage:
    """One snapshot: its symbol, the server's `ts` (ms) and its trades, ascending."""

    symbol: str
    ts_ms: int
    trades: tuple[Trade, ...]


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(frozen=True, slots=True)
class SubscribeReply:
    success: bool
    ret_msg: str
    req_id: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """A frame that is none of ours (another op, another topic type)."""

    what: str


WsEvent = TradesMessage | Pong | SubscribeReply | Ignored


def parse_message(text: str | bytes, *, category: Category, symbols: frozenset[str]) -> WsEvent:
    """Classify and validate one frame; see the module docstring for what is rejected."""
    try:
        frame = json.loads(text)
    except ValueError:
        raise RejectedMessage(f"a WebSocket frame is not JSON: {str(text)[:80]!r}") from None
    if not isinstance(frame, dict):
        raise RejectedMessage("a WebSocket frame is not a JSON object")
    name = frame.get("topic")
    if isinstance(name, str):
        if not name.startswith(TOPIC_PREFIX):
            return Ignored(f"topic {name}")
        return _trades(frame, name[len(TOPIC_PREFIX):], category, symbols)
    op = frame.get("op")
    if op == "pong" or frame.get("ret_msg") == "pong":  # derivatives' shape / spot's shape
        return Pong()
    if op == "subscribe":
        return SubscribeReply(frame.get("success") is True, str(frame.get("ret_msg") or ""),
                              str(frame.get("req_id") or ""))
    return Ignored(f"op {op!r}")


def _trades(frame: dict[str, Any], symbol: str, category: Category, symbols: frozenset[str]) -> TradesMessage:
    if symbol not in symbols:
        raise RejectedMessage(f"a push for {symbol!r}, which was not subscribed")
    ts_ms = frame.get("ts")
    data = frame.get("data")
    if not isinstance(ts_ms, int) or isinstance(ts_ms, bool) or not isinstance(data, list):
        raise RejectedMessage(f"a {symbol} push without an integer ts or a data list")
    market = Market(category, symbol)
    trades = tuple(parse_trade(item, market=market, ts_ms=ts_ms) for item in data)
    for before, after in itertools.pairwise(trades):
        if after.time_us < before.time_us:
            raise RejectedMessage(f"a {symbol} push is not in time order ({before.trade_id} after {after.trade_id})")
    return TradesMessage(symbol, ts_ms, trades)


def parse_trade(item: Any, *, market: Market, ts_ms: int) -> Trade:
    """One `data` item -> `Trade` (source 'ws'), or `RejectedMessage` naming the failed check."""
    symbol = market.symbol
    if not isinstance(item, dict):
        raise RejectedMessage(f"a {symbol} trade is not an object")
    if item.get("s") != symbol:
        raise RejectedMessage(f"a trade of {item.get('s')!r} in the {symbol} stream")
    side = item.get("S")
    if side not in ("Buy", "Sell"):
        raise RejectedMessage(f"a {symbol} trade with side {side!r} (Buy or Sell expected)")
    trade_id = item.get("i")
    if not isinstance(trade_id, str) or not trade_id or len(trade_id) > MAX_ID_CHARS:
        raise RejectedMessage(f"a {symbol} trade without a usable id: {trade_id!r}")
    time_ms = item.get("T")
    if not isinstance(time_ms, int) or isinstance(time_ms, bool):
        raise RejectedMessage(f"a {symbol} trade {trade_id} without an integer time")
    time_us = time_ms * 1000
    if not ts_ms * 1000 - MAX_TRADE_AGE_US <= time_us <= ts_ms * 1000 + MAX_TRADE_LEAD_US:
        raise RejectedMessage(f"{symbol} trade {trade_id} at {time_ms} ms is implausible for a message "
                              f"sent at {ts_ms} ms")
    block = item.get("BT")
    return Trade(category=market.category, symbol=symbol, trade_id=trade_id, time_us=time_us,
                 price=_positive(item.get("p"), "price", symbol, trade_id),
                 qty=_positive(item.get("v"), "size", symbol, trade_id), side=side.lower(),
                 is_block_trade=block if isinstance(block, bool) else None, source=Source.WS.value)


def _positive(value: Any, name: str, symbol: str, trade_id: str) -> float:
    try:
        number = float(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else math.nan
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise RejectedMessage(f"{symbol} trade {trade_id} has {name} {value!r} (a finite number > 0 expected)")
    return number


class Watchdog:
    """Heartbeat and freshness of one connection, on an injected clock (seconds).

    `verdict()` names why the connection must be considered dead, or is None: no pong within
    `pong_timeout_s` of a ping, or no trade for `stale_after_s` although it pongs.
    """

    def __init__(self, clock: Callable[[], float], *, ping_interval_s: float = PING_INTERVAL_S,
                 pong_timeout_s: float = 10.0, stale_after_s: float = 90.0) -> None:
        self.clock = clock
        self.ping_interval_s, self.pong_timeout_s, self.stale_after_s = ping_interval_s, pong_timeout_s, stale_after_s
        now = clock()
        self.last_ping_s: float | None = None
        self.awaiting_pong_since: float | None = None
        self.last_data_s = now
        self.opened_s = now

    def ping_due_in(self) -> float:
        """Seconds until the next ping should go out (<= 0: now)."""
        last = self.last_ping_s if self.last_ping_s is not None else self.opened_s - self.ping_interval_s
        return last + self.ping_interval_s - self.clock()

    def sent_ping(self) -> None:
        self.last_ping_s = self.clock()
        if self.awaiting_pong_since is None:
            self.awaiting_pong_since = self.last_ping_s

    def got_pong(self) -> None:
        self.awaiting_pong_since = None

    def got_data(self) -> None:
        self.last_data_s = self.clock()

    def verdict(self) -> str | None:
        now = self.clock()
        if self.awaiting_pong_since is not None and now - self.awaiting_pong_since > self.pong_timeout_s:
            return f"no pong within {self.pong_timeout_s:g} s of a ping"
        if now - self.last_data_s > self.stale_after_s:
            return f"no trade for {now - self.last_data_s:.0f} s although the connection is open"
        return None

    def wait_s(self) -> float:
        """How long a read may block before the watchdog needs to look again."""
        deadlines = [self.ping_due_in(), self.last_data_s + self.stale_after_s - self.clock()]
        if self.awaiting_pong_since is not None:
            deadlines.append(self.awaiting_pong_since + self.pong_timeout_s - self.clock())
        return max(0.01, min(deadlines) + 0.01)


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Timing of one connection; tests shrink these, production keeps Bybit's 20 s ping."""

    ping_interval_s: float = PING_INTERVAL_S
    pong_timeout_s: float = 10.0
    stale_after_s: float = 90.0
    connect_timeout_s: float = 10.0
    subscribe_timeout_s: float = 10.0


class PublicStream:
    """One WebSocket connection carrying `requests` (the args of each subscribe request)."""

    def __init__(self, base_url: str, category: str, requests: list[list[str]], *,
                 options: StreamOptions | None = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.category = check_category(category)
        self.url = base_url.rstrip("/") + stream_path(self.category)
        self.requests = requests
        self.symbols = frozenset(arg[len(TOPIC_PREFIX):] for req in requests for arg in req)
        self.options = options or StreamOptions()
        self.monotonic = monotonic
        self._socket = WebSocketTransport(self.url, connect_timeout_s=self.options.connect_timeout_s)
        self.watchdog: Watchdog | None = None

    async def __aenter__(self) -> Self:
        try:
            await self._connect()
            await self._subscribe()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._socket.close()

    async def _connect(self) -> None:
        try:
            await self._socket.open()
        except TransportError as error:
            raise StreamError(str(error)) from None
        self.watchdog = Watchdog(self.monotonic, ping_interval_s=self.options.ping_interval_s,
                                 pong_timeout_s=self.options.pong_timeout_s,
                                 stale_after_s=self.options.stale_after_s)

    async def _subscribe(self) -> None:
        for args in self.requests:
            req_id = uuid.uuid4().hex[:16]
            await self._send({"req_id": req_id, "op": "subscribe", "args": args})
            deadline = self.monotonic() + self.options.subscribe_timeout_s
            while True:
                event = await self._receive(max(0.01, deadline - self.monotonic()), waiting="a subscribe reply")
                if isinstance(event, SubscribeReply) and event.req_id in (req_id, ""):
                    if not event.success:
                        raise SubscriptionRefused(f"Bybit refused the subscription to {', '.join(args)}: "
                                                  f"{event.ret_msg or 'no reason given'}; retrying",
                                                  endpoint=self.url)
                    break
                if isinstance(event, TradesMessage):
                    raise StreamError("trades arrived before the subscription was confirmed")

    async def _send(self, payload: dict[str, Any]) -> None:
        try:
            await self._socket.send_text(json.dumps(payload, separators=(",", ":")))
        except TransportError as error:
            raise StreamError(str(error)) from None

    async def _receive(self, timeout: float, *, waiting: str) -> WsEvent | None:
        """The next frame, or None when `timeout` passed first (the stream stays open)."""
        try:
            text = await self._socket.receive_text(timeout)
        except TransportError as error:
            raise StreamError(str(error)) from None
        if text is None:
            if waiting != "data":
                raise StreamError(f"{self.url}: no {waiting} within {timeout:.1f} s")
            return None
        return parse_message(text, category=self.category, symbols=self.symbols)

    async def messages(self) -> AsyncIterator[TradesMessage]:
        """Trade messages until the stream ends (always by an exception); pings as it goes."""
        dog = self.watchdog
        assert dog is not None
        while True:
            if dog.ping_due_in() <= 0:
                await self._send({"op": "ping"})
                dog.sent_ping()
            reason = dog.verdict()
            if reason is not None:
                raise StreamError(f"{self.url}: {reason}")
            event = await self._receive(dog.wait_s(), waiting="data")
            if isinstance(event, Pong):
                dog.got_pong()
            elif isinstance(event, TradesMessage):
                if event.trades:
                    dog.got_data()
                yield event
