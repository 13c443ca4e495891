"""Client-side rate limiting: stay under Bybit's limits instead of learning them from bans.

Three budgets, all on an injected clock (sleep injected too, so tests never really wait):

* the IP budget: at most `ip_safety * ip_requests` API-host requests in any rolling `ip_window_s`
  (600 per 5 s at Bybit; a 403 ban costs at least 10 minutes, hence the safety margin). Archive-host
  downloads are a different server and are not counted. Bybit counts a request when it *arrives*,
  which is somewhere between our send and our receipt of the answer, however slow the network or
  this machine. So a request counts from its send (while in flight) until one window after its
  answer: if N+1 requests arrived within one of Bybit's windows, the last of them to be sent saw the
  other N in flight or answered less than a window before, and was held. No latency can break that;
* per-endpoint limits per second (`endpoint_per_s`, e.g. 50/s for /v5/execution/list): requests are
  spaced evenly (a GCRA with a quarter-interval tolerance), never sent in bursts, at a rate that
  leaves room for `ARRIVAL_JITTER_S` of latency differences; and the same in-flight-or-answered
  window as the IP budget caps them at the limit in any second of arrivals, whatever the latency;
  `public_delay_ms` spacing between public calls;
* pacing from the `X-Bapi-Limit*` headers: when an endpoint reports no more requests left in its
  window than are still in flight (plus `LOW_MARGIN`), the next ones wait until its reset timestamp.
  That guard catches jitter the spacing did not foresee, before Bybit answers 10006.

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
from .wire import LimitStatus, Request, Response, Transport, parse_limit_headers

LOW_MARGIN = 2        # "low": no more left in the window than in flight plus this
MAX_PACE_WAIT_S = 5.0  # our clock and Bybit's differ; never trust a reset further away than this
ARRIVAL_JITTER_S = 0.05  # latency differences between requests that per-endpoint pacing absorbs
BURST_TOLERANCE = 0.25   # of one interval: a late wake-up does not lower the rate, nor allows a burst


class _Window:
    """Requests counted from their send until `span_s` after their answer (see the module's proof).

    `wait_s` says how long until one more request fits `budget`; None when requests in flight alone
    fill it (only an answer can make room, so wait for one)."""

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self.in_flight = 0
        self.answered: deque[float] = deque()  # answer times, in order

    def wait_s(self, now: float, budget: int) -> float | None:
        while self.answered and self.answered[0] <= now - self.span_s:
            self.answered.popleft()
        room = budget - self.in_flight  # answered requests that may still be inside the window
        if room <= 0:
            return None
        if len(self.answered) < room:
            return 0.0
        return self.answered[len(self.answered) - room] + self.span_s - now

    def send(self) -> None:
        self.in_flight += 1

    def answer(self, now: float) -> None:
        self.in_flight -= 1
        self.answered.append(now)


class _Pace:
    """Even spacing (GCRA): request n may go at `tat - tolerance`, and moves `tat` one interval on."""

    def __init__(self) -> None:
        self.tat = -math.inf  # theoretical arrival time of the next request

    def wait_s(self, now: float, interval: float) -> float:
        return max(0.0, self.tat - BURST_TOLERANCE * interval - now)

    def add(self, now: float, interval: float) -> None:
        self.tat = max(self.tat, now) + interval


class RateLimiter:
    """The budgets above; `slot()` waits until a request may go, `observe()` reads headers."""

    def __init__(self, limits: RateLimits, clock: Callable[[], float],
                 sleep: Callable[[float], Awaitable[None]], *,
                 throttle: Callable[[], float] = lambda: 1.0) -> None:
        self.limits = limits
        self._clock = clock
        self._sleep = sleep
        self._throttle = throttle
        self._ip = _Window(limits.ip_window_s)
        self._endpoints: dict[str, _Pace] = {}
        self._endpoint_windows: dict[str, _Window] = {}
        self._sending: dict[str, int] = {}  # per endpoint: sent, answer not yet observed
        self._paused_until: dict[str, float] = {}
        self._last_public = -math.inf
        self._in_flight = 0
        self._slots = asyncio.Condition()    # a concurrency slot came free
        self._answers = asyncio.Condition()  # an answer came back (it can make room in a window)

    # --- pure budget arithmetic -----------------------------------------------------------------
    def ip_budget(self) -> int:
        return max(1, int(self.limits.ip_safety * self.limits.ip_requests / self._throttle()))

    def endpoint_budget(self, endpoint: str) -> int | None:
        """Requests to `endpoint` in flight or answered within the last second; None: no limit."""
        per_s = self.limits.endpoint_per_s.get(endpoint)
        return None if per_s is None else max(1, int(per_s / self._throttle()))

    def endpoint_interval(self, endpoint: str) -> float | None:
        """Seconds between two requests to `endpoint`; None when it has no per-second limit."""
        per_s = self.limits.endpoint_per_s.get(endpoint)
        if per_s is None:
            return None
        allowed = per_s / self._throttle()
        # n sends evenly spaced with tolerance span (n - 1 - BURST_TOLERANCE) intervals: keep n <=
        # the limit within any 1 s + jitter.
        rate = max(allowed - BURST_TOLERANCE, allowed / 2) / (1.0 + ARRIVAL_JITTER_S)
        return 1.0 / rate

    def concurrency(self) -> int:
        return max(1, int(self.limits.max_concurrency / self._throttle()))

    def wait_s(self, endpoint: str, public: bool) -> float:
        """How long the next request to `endpoint` must wait: 0 when it may go now, `math.inf`
        when requests in flight fill a budget (only one of their answers can make room)."""
        now = self._clock()
        windows = [self._ip.wait_s(now, self.ip_budget())]
        budget = self.endpoint_budget(endpoint)
        if budget is not None:
            windows.append(self._endpoint_window(endpoint).wait_s(now, budget))
        if None in windows:
            return math.inf
        waits = [w for w in windows if w is not None]
        waits.append(self._paused_until.get(endpoint, now) - now)
        interval = self.endpoint_interval(endpoint)
        if interval is not None:
            waits.append(self._endpoint(endpoint).wait_s(now, interval))
        if public and self.limits.public_delay_ms > 0:
            spacing = self.limits.public_delay_ms / 1000.0 * self._throttle()
            waits.append(self._last_public + spacing - now)
        return max(0.0, *waits)

    def take(self, endpoint: str, public: bool) -> None:
        """Count one request as sent now (call only when `wait_s` said 0; `answered` after)."""
        now = self._clock()
        self._ip.send()
        interval = self.endpoint_interval(endpoint)
        if interval is not None:
            self._endpoint(endpoint).add(now, interval)
            self._endpoint_window(endpoint).send()
        if public:
            self._last_public = now
        self._sending[endpoint] = self._sending.get(endpoint, 0) + 1

    def answered(self, endpoint: str) -> None:
        """The request `take` counted has its answer (or failed): its window time starts now."""
        now = self._clock()
        self._ip.answer(now)
        if endpoint in self._endpoint_windows:
            self._endpoint_windows[endpoint].answer(now)
        self._sending[endpoint] -= 1

    def observe(self, endpoint: str, status: LimitStatus) -> None:
        """Pace from `X-Bapi-Limit*`: if the requests still in flight (plus a margin) could use up
        what is left of the window, hold the endpoint until its reset."""
        if status.remaining is None or status.reset_at_ms is None:
            return
        if status.remaining > self._sending.get(endpoint, 0) + LOW_MARGIN:
            return
        now = self._clock()
        until = min(status.reset_at_ms / 1000.0, now + MAX_PACE_WAIT_S)
        if until > self._paused_until.get(endpoint, 0.0):
            self._paused_until[endpoint] = until

    def _endpoint(self, endpoint: str) -> _Pace:
        if endpoint not in self._endpoints:
            self._endpoints[endpoint] = _Pace()
        return self._endpoints[endpoint]

    def _endpoint_window(self, endpoint: str) -> _Window:
        if endpoint not in self._endpoint_windows:
            self._endpoint_windows[endpoint] = _Window(1.0)
        return self._endpoint_windows[endpoint]

    # --- waiting --------------------------------------------------------------------------------
    async def acquire(self, endpoint: str, *, public: bool) -> None:
        """Wait for a concurrency slot and for every budget; the caller must `release(endpoint)`
        once the request is answered or has failed."""
        async with self._slots:
            await self._slots.wait_for(lambda: self._in_flight < self.concurrency())
            self._in_flight += 1
        try:
            while (wait := self.wait_s(endpoint, public)) > 0:
                if math.isinf(wait):
                    async with self._answers:
                        await self._answers.wait_for(
                            lambda: not math.isinf(self.wait_s(endpoint, public)))
                else:
                    await self._sleep(wait)
            self.take(endpoint, public)
        except BaseException:
            await self._free_slot()
            raise

    async def release(self, endpoint: str) -> None:
        """The request `acquire` let go is answered (or failed): count it so, free its slot."""
        self.answered(endpoint)
        async with self._answers:
            self._answers.notify_all()
        await self._free_slot()

    async def _free_slot(self) -> None:
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
        await self._limiter.release(self._endpoint)


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
