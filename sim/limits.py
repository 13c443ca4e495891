"""Bybit's two rate limits, with an injected clock so tests can step through a ban.

- IP limit: every `/v5/` request shares one rolling window (600 per 5 s on Bybit). The request that
  exceeds it gets HTTP 403 "access too frequent" and starts a ban: every `/v5/` request is refused
  until it ends. The archive host is another server and is never counted.
- Per-endpoint limit per API key per second (e.g. `/v5/execution/list` 50/s): exceeding it gives
  retCode 10006. Its state is reported on every response in the `X-Bapi-Limit*` headers.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]  # epoch seconds


@dataclass(frozen=True)
class IpVerdict:
    allowed: bool
    ban_started: bool = False
    banned_until: float = 0.0


class IpLimiter:
    """Rolling-window counter plus ban state for all `/v5/` traffic of the (single) client IP."""

    def __init__(self, limit: int, window_s: float, ban_s: float, clock: Clock) -> None:
        self.limit, self.window_s, self.ban_s, self.clock = limit, window_s, ban_s, clock
        self._hits: deque[float] = deque()
        self.banned_until = 0.0
        self._lock = threading.Lock()

    def check(self) -> IpVerdict:
        """Count one request; refuse it while banned or when it exceeds the window."""
        now = self.clock()
        with self._lock:
            if now < self.banned_until:
                return IpVerdict(False, False, self.banned_until)
            while self._hits and self._hits[0] <= now - self.window_s:
                self._hits.popleft()
            if len(self._hits) >= self.limit:
                return IpVerdict(False, True, self._start_ban(now))
            self._hits.append(now)
            return IpVerdict(True)

    def ban(self) -> float:
        """Start a ban now (the `http_403` fault); returns when it ends."""
        with self._lock:
            return self._start_ban(self.clock())

    def _start_ban(self, now: float) -> float:
        self.banned_until = now + self.ban_s
        self._hits.clear()
        return self.banned_until

    @property
    def banned(self) -> bool:
        return self.clock() < self.banned_until


@dataclass(frozen=True)
class LimitStatus:
    """One request's verdict and the values of the X-Bapi-Limit* headers."""

    allowed: bool
    limit: int
    remaining: int
    reset_ms: int

    def headers(self) -> dict[str, str]:
        return {"X-Bapi-Limit": str(self.limit), "X-Bapi-Limit-Status": str(self.remaining),
                "X-Bapi-Limit-Reset-Timestamp": str(self.reset_ms)}


class EndpointLimiter:
    """Fixed one-second windows per (path, api key), as Bybit's per-UID endpoint limits."""

    def __init__(self, limits: dict[str, int], clock: Clock) -> None:
        self.limits, self.clock = dict(limits), clock
        self._counts: dict[tuple[str, str], tuple[int, int]] = {}  # -> (window second, count)
        self._lock = threading.Lock()

    def hit(self, path: str, api_key: str) -> LimitStatus | None:
        """Count one request to `path`; None when the path has no endpoint limit."""
        limit = self.limits.get(path)
        if limit is None:
            return None
        second = math.floor(self.clock())
        with self._lock:
            window, count = self._counts.get((path, api_key), (second, 0))
            if window != second:
                count = 0
            allowed = count < limit
            count += 1 if allowed else 0
            self._counts[(path, api_key)] = (second, count)
        return LimitStatus(allowed, limit, max(0, limit - count), (second + 1) * 1000)
