"""Client-side rate limiting: stay under Bybit's limits instead of learning them from bans.

Three budgets, all on an injected clock (sleep injected too, so tests never really wait):

* the IP budget: at most `ip_safety * ip_requests` API-host requests in any rolling `ip_window_s`
  (600 per 5 s at Bybit; a 403 ban costs at least 10 minutes, hence the safety margin). Archive-host
  downloads are a different server and are not counted;
  every window is `WINDOW_SLACK_S` longer than Bybit's, because Bybit counts arrivals and latency
  varies: requests sent 1.1 s apart can arrive in the same second;
* per-endpoint budgets per second (`endpoint_per_s`, e.g. 50/s for /v5/execution/list, also with
  the safety margin) and `public_delay_ms` spacing between public calls;
* pacing from the `X-Bapi-Limit*` headers: when an endpoint reports few requests left, the next ones
  wait until its reset timestamp.

Concurrency is bounded by `max_concurrency / throttle`, so it shrinks while the breaker's throttle
is up. Budgets are divided by the throttle too.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType

from .config import RateLimits
from .models import LimitStatus
from .parse import parse_limit_headers
from .transport import Request, Response, Transport

LOW_REMAINING = 0.1   # "low": at most this share of the endpoint's limit left
MAX_PACE_WAIT_S = 5.0  # our clock and Bybit's differ; never trust a reset further away than this
# Bybit counts a request when it *arrives*; we count it when we send it. Latency jitter can push
# requests sent in two of our windows into one of Bybit's, so our windows are this much longer.
WINDOW_SLACK_S = 0.25


class _Window:
    """Send times inside a rolling window; tells how long until one more send fits the budget."""

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self.times: deque[float] = deque()

    def wait_s(self, now: float, budget: int) -> float:
        while self.times and self.times[0] <= now - self.span_s:
            self.times.popleft()
        if len(self.times) < budget:
            return 0.0
        return self.times[len(self.times) - budget] + self.span_s - now

    def add(self, now: float) -> None:
        self.times.append(now)


class RateLimiter:
    """The budgets above; `acquire()` waits until a request may go, `observe()` reads headers."""

    def __init__(self, limits: RateLimits, clock: Callable[[], float],
                 sleep: Callable[[float], Awaitable[None]], *,
                 throttle: Callable[[], float] = lambda: 1.0) -> None:
        self.limits = limits
        self._clock = clock
        self._sleep = sleep
        self._throttle = throttle
        self._ip = _Window(limits.ip_window_s + WINDOW_SLACK_S)
        self._endpoints: dict[str, _Window] = {}
        self._paused_until: dict[str, float] = {}
        self._last_public = -math.inf
        self._in_flight = 0
        self._slots = asyncio.Condition()

    # --- pure budget arithmetic -----------------------------------------------------------------
    def ip_budget(self) -> int:
        return max(1, int(self.limits.ip_safety * self.limits.ip_requests / self._throttle()))

    def endpoint_budget(self, endpoint: str) -> int | None:
        per_s = self.limits.endpoint_per_s.get(endpoint)
        if per_s is None:
            return None
        return max(1, int(self.limits.ip_safety * per_s / self._throttle()))

    def concurrency(self) -> int:
        return max(1, int(self.limits.max_concurrency / self._throttle()))

    def wait_s(self, endpoint: str, public: bool) -> float:
        """How long the next request to `endpoint` must wait (0: it may go now)."""
        now = self._clock()
        waits = [self._ip.wait_s(now, self.ip_budget()), self._paused_until.get(endpoint, now) - now]
        budget = self.endpoint_budget(endpoint)
        if budget is not None:
            waits.append(self._endpoint(endpoint).wait_s(now, budget))
        if public and self.limits.public_delay_ms > 0:
            spacing = self.limits.public_delay_ms / 1000.0 * self._throttle()
            waits.append(self._last_public + spacing - now)
        return max(0.0, *waits)

    def take(self, endpoint: str, public: bool) -> None:
        """Count one request as sent now (call only when `wait_s` said 0)."""
        now = self._clock()
        self._ip.add(now)
        if endpoint in self.limits.endpoint_per_s:
            self._endpoint(endpoint).add(now)
        if public:
            self._last_public = now

    def observe(self, endpoint: str, status: LimitStatus) -> None:
        """Pace from `X-Bapi-Limit*`: few requests left -> hold the endpoint until its reset."""
        if status.remaining is None or status.reset_at_ms is None:
            return
        low = max(0, int((status.limit or 0) * LOW_REMAINING))
        if status.remaining > low:
            return
        now = self._clock()
        until = min(status.reset_at_ms / 1000.0, now + MAX_PACE_WAIT_S)
        if until > self._paused_until.get(endpoint, 0.0):
            self._paused_until[endpoint] = until

    def _endpoint(self, endpoint: str) -> _Window:
        if endpoint not in self._endpoints:
            self._endpoints[endpoint] = _Window(1.0 + WINDOW_SLACK_S)
        return self._endpoints[endpoint]

    # --- waiting --------------------------------------------------------------------------------
    async def acquire(self, endpoint: str, *, public: bool) -> None:
        """Wait for a concurrency slot and for every budget; the caller must `release()` after."""
        async with self._slots:
            await self._slots.wait_for(lambda: self._in_flight < self.concurrency())
            self._in_flight += 1
        try:
            while (wait := self.wait_s(endpoint, public)) > 0:
                await self._sleep(wait)
            self.take(endpoint, public)
        except BaseException:
            await self.release()
            raise

    async def release(self) -> None:
        async with self._slots:
            self._in_flight -= 1
            self._slots.notify_all()

    def slot(self, endpoint: str, *, public: bool) -> _Slot:
        """`async with limiter.slot(endpoint, public=...)`: acquire, then release whatever happens."""
        return _Slot(self, endpoint, public)


class _Slot:
    def __init__(self, limiter: RateLimiter, endpoint: str, public: bool) -> None:
        self._limiter, self._endpoint, self._public = limiter, endpoint, public

    async def __aenter__(self) -> None:
        await self._limiter.acquire(self._endpoint, public=self._public)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._limiter.release()


class LimiterLayer:
    """Runs every API request through the `RateLimiter`; archive downloads pass straight through."""

    def __init__(self, inner: Transport, limiter: RateLimiter) -> None:
        self._inner = inner
        self.limiter = limiter

    async def send(self, request: Request) -> Response:
        if request.kind != "api":
            return await self._inner.send(request)
        endpoint = request.endpoint or request.path
        async with self.limiter.slot(endpoint, public=request.public):
            response = await self._inner.send(request)
        self.limiter.observe(endpoint, parse_limit_headers(response.headers))
        return response
