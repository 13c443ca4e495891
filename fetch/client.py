"""`BybitClient`: the one object the sources use to talk to Bybit's API host and archive host.

It composes one-method layers, outermost first, so that *every attempt* (retries included) is
judged by the breaker, paced by the limiter and signed with a fresh timestamp::

    RetryLayer -> BreakerLayer -> CheckLayer -> LimiterLayer -> counting -> signing -> Transport

(retry outermost: a retry that ignored the limiter or the breaker could turn one 10006 into an IP
ban; signing innermost: a timestamp taken before a limiter wait could fall outside recv_window.)
On top of the stack the client drives two flows: 10002 -> resync the clock offset from
/v5/market/time and retry once; an auth refusal on a *signed public* call -> warn once and carry on
unsigned (public data needs no key), while on a private call it stops with a clear `AuthError`.
The API secret lives only in `Credentials` and the signing layer: never in a log, message or repr.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .breaker import BreakerLayer, BreakerState, CircuitBreaker, Transition
from .config import Credentials, FetchConfig
from .errors import AuthError, BackfillError, ClockSkew, IpBanned, RateLimited
from .limiter import LimiterLayer, RateLimiter
from .parse import parse_envelope, parse_server_time_ms
from .response_check import CheckLayer
from .retry import Decision, RetryLayer
from .signing import ParamValue, auth_headers, build_query
from .transport import AiohttpTransport
from .wire import Closing, Request, Response, Transport

log = logging.getLogger("context.backfill")

SERVER_TIME_PATH = "/v5/market/time"
_NO_KEY = ("this call needs an API key: set BYBIT_API_KEY and BYBIT_API_SECRET (a key with read "
           "permission is enough)")


@dataclass
class ClientStats:
    """Monitoring figures of one client's life; `requests` counts what went over the wire."""

    requests: int = 0
    retries: int = 0
    errors_by_type: dict[str, int] = field(default_factory=dict)
    breaker_openings: int = 0
    peak_throttle: float = 1.0
    rate_limited: int = 0  # 10006 / HTTP 429 / HTTP 403 / 10018 answers
    bytes_downloaded: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _SigningLayer:
    """Adds X-BAPI-* headers to signed requests at the last moment, with the current timestamp."""

    def __init__(self, inner: Transport, credentials: Credentials, clock: Callable[[], float],
                 offset_ms: Callable[[], int]) -> None:
        self._inner = inner
        self._credentials = credentials
        self._clock = clock
        self._offset_ms = offset_ms

    async def send(self, request: Request) -> Response:
        if request.signed:
            creds = self._credentials
            timestamp = int(self._clock() * 1000) + self._offset_ms()
            headers = auth_headers(creds.api_key, creds.api_secret, timestamp, creds.recv_window_ms,
                                   request.query)
            request = dataclasses.replace(request, headers={**request.headers, **headers})
        return await self._inner.send(request)


class _CountingLayer:
    def __init__(self, inner: Transport, stats: ClientStats) -> None:
        self._inner = inner
        self._stats = stats

    async def send(self, request: Request) -> Response:
        self._stats.requests += 1
        return await self._inner.send(request)


class BybitClient(Closing):
    """Public, private (signed) and archive calls through limiter, breaker and retries.

    Use as `async with BybitClient(config) as client:`; `transport` replaces the aiohttp bottom
    layer (tests), and `clock`/`sleep`/`rng` are injected so nothing in tests really waits.
    `sign_public=True` signs public calls too when credentials are set (off by default: public
    data needs no key); `wait_when_open=False` makes an open breaker raise `CircuitOpen` instead of
    pausing until its cooldown ends.
    """

    def __init__(self, config: FetchConfig, *, transport: Transport | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: Callable[[], float] = random.random, wait_when_open: bool = True,
                 sign_public: bool = False) -> None:
        self.config = config
        self._clock = clock
        self._owned_transport: AiohttpTransport | None = None
        if transport is None:
            transport = self._owned_transport = AiohttpTransport(config.timeouts)
        self._stats = ClientStats()
        self.clock_offset_ms = 0
        self._offset_version = 0  # bumped by each resync: concurrent 10002s share one resync
        self._resync_lock = asyncio.Lock()
        self._sign_public = sign_public
        self._public_auth_warned = False
        self.breaker = CircuitBreaker(config.breaker, clock)
        self.limiter = RateLimiter(config.limits, clock, sleep, throttle=lambda: self.breaker.throttle)
        signed = _SigningLayer(transport, config.credentials, clock, lambda: self.clock_offset_ms)
        limited = LimiterLayer(_CountingLayer(signed, self._stats), self.limiter)
        guarded = BreakerLayer(CheckLayer(limited), self.breaker, sleep=sleep, wait_when_open=wait_when_open,
                               on_transition=self._on_transition)
        self._stack = RetryLayer(guarded, config.retry, sleep=sleep, rng=rng, clock=clock,
                                 on_error=self._on_error)

    def __repr__(self) -> str:
        ends = self.config.endpoints
        return (f"BybitClient(rest={ends.rest_base_url!r}, archive={ends.archive_base_url!r}, "
                f"credentials={self.config.credentials!r})")

    async def close(self) -> None:
        """Close the HTTP session if this client created it (a passed-in transport is the caller's)."""
        if self._owned_transport is not None:
            await self._owned_transport.close()

    @property
    def stats(self) -> ClientStats:
        """The live counters (peak throttle refreshed from the breaker on each read)."""
        self._stats.peak_throttle = max(self._stats.peak_throttle, self.breaker.peak_throttle)
        return self._stats

    # --- API host --------------------------------------------------------------------------------
    async def get_public(self, path: str, params: Mapping[str, ParamValue] | None = None) -> dict[str, Any]:
        """GET a market-data endpoint; returns the envelope's `result`."""
        query = build_query(params or {})
        signed = self._sign_public and self.config.credentials.present
        try:
            return await self._call(path, query, signed=signed, public=True)
        except AuthError as exc:
            if not signed:
                raise
            self._fall_back_to_unsigned(path, exc)
            return await self._call(path, query, signed=False, public=True)

    async def get_private(self, path: str, params: Mapping[str, ParamValue] | None = None) -> dict[str, Any]:
        """GET a signed endpoint (e.g. /v5/execution/list); returns the envelope's `result`."""
        if not self.config.credentials.present:
            raise AuthError(f"{path}: {_NO_KEY}", endpoint=path)
        try:
            return await self._call(path, build_query(params or {}), signed=True, public=False)
        except AuthError as exc:
            raise AuthError(f"Bybit refused the API key for {path}: {self._redact(str(exc))}. Private data "
                            "cannot be fetched without a valid key; fix the key and run again",
                            ret_code=exc.ret_code, status=exc.status, endpoint=path) from None

    def exchange_now_ms(self) -> int:
        """The exchange's clock as this client knows it: local time plus the last synced offset (call
        `sync_clock` first where it matters: a client clock running ahead must not cover the future)."""
        return int(self._clock() * 1000) + self.clock_offset_ms

    async def sync_clock(self) -> int:
        """Learn `clock_offset_ms` (server minus local) from /v5/market/time; returns it."""
        before = self._clock()
        response = await self._send(Request(self.config.endpoints.rest_base_url, SERVER_TIME_PATH,
                                            endpoint=SERVER_TIME_PATH))
        after = self._clock()
        server_ms = parse_server_time_ms(parse_envelope(response.body, endpoint=SERVER_TIME_PATH))
        self.clock_offset_ms = server_ms - int((before + after) / 2 * 1000)
        self._offset_version += 1
        log.info("clock offset to Bybit: %d ms", self.clock_offset_ms)
        return self.clock_offset_ms

    async def _call(self, path: str, query: str, *, signed: bool, public: bool) -> dict[str, Any]:
        request = Request(self.config.endpoints.rest_base_url, path, query, endpoint=path,
                          signed=signed, public=public)
        version = self._offset_version
        try:
            response = await self._send(request)
        except ClockSkew:
            if not signed:
                raise
            await self._resync_clock(version, path)
            response = await self._send(request)
        return dict(response.result or {})

    async def _resync_clock(self, version: int, path: str) -> None:
        """Resync after a 10002, unless a concurrent request already did since `version` was read."""
        async with self._resync_lock:
            if self._offset_version == version:
                log.warning("Bybit says our clock is off (10002) on %s: resyncing and retrying once", path)
                await self.sync_clock()

    def _redact(self, text: str) -> str:
        """Bybit echoes the signed string (with the API key) in some errors: show the key's head only."""
        key, secret = self.config.credentials.api_key, self.config.credentials.api_secret
        if secret:
            text = text.replace(secret, "[secret]")
        return text.replace(key, key[:4] + "…") if key else text

    def _fall_back_to_unsigned(self, path: str, exc: AuthError) -> None:
        self._sign_public = False
        if not self._public_auth_warned:
            self._public_auth_warned = True
            log.warning("Bybit refused the API key on public %s (%s); continuing unsigned: public data "
                        "needs no key, but private calls will fail until BYBIT_API_KEY/BYBIT_API_SECRET "
                        "are fixed", path, _code(exc))

    # --- archive host ----------------------------------------------------------------------------
    async def download(self, url_path: str, dest: Path,
                       on_bytes: Callable[[int], None] | None = None) -> Path | None:
        """Stream an archive file to `dest` (atomically); None on 404 (not published yet)."""
        def counted(n: int) -> None:
            self._stats.bytes_downloaded += n
            if on_bytes is not None:
                on_bytes(n)

        request = Request(self.config.endpoints.archive_base_url, url_path, kind="archive",
                          endpoint=url_path, dest=dest, on_bytes=counted)
        response = await self._send(request)
        return None if response.status == 404 else response.path

    async def get_text(self, url_path: str) -> str | None:
        """An archive page (a folder's HTML index) as text; None on 404."""
        request = Request(self.config.endpoints.archive_base_url, url_path, kind="archive",
                          endpoint=url_path)
        response = await self._send(request)
        self._stats.bytes_downloaded += len(response.body)
        return None if response.status == 404 else response.body.decode("utf-8", "replace")

    # --- plumbing --------------------------------------------------------------------------------
    async def _send(self, request: Request) -> Response:
        return await self._stack.send(request)

    def _on_error(self, request: Request, exc: BaseException, decision: Decision,
                  delay: float | None) -> None:
        name = type(exc).__name__
        self._stats.errors_by_type[name] = self._stats.errors_by_type.get(name, 0) + 1
        if isinstance(exc, (RateLimited, IpBanned)):
            self._stats.rate_limited += 1
        if delay is not None:
            self._stats.retries += 1

    def _on_transition(self, transition: Transition) -> None:
        if transition.new is BreakerState.OPEN:
            self._stats.breaker_openings += 1


def _code(exc: BackfillError) -> str:
    ret_code = getattr(exc, "ret_code", None)
    status = getattr(exc, "status", None)
    return f"retCode {ret_code}" if ret_code is not None else f"HTTP {status}"
