"""Retry decisions (pure) and the layer that acts on them.

`classify` reads only the error's type: `Transient` errors are retried, `Terminal` ones are not, and
`ClockSkew` (10002) is handed up so the client can resync its clock and retry once with a fresh
signature. `backoff` is the schedule 0.5 s, 1 s, 2 s, 4 s... (capped) with jitter from an injected rng;
a rate limit that says when it resets is waited out until that moment instead. Sleep, clock and rng
are parameters, so tests assert exact delays without patching anything.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from enum import Enum

from .config import RetryPolicy
from .errors import BackfillError, ClockSkew, RateLimited, Transient
from .wire import Request, Response, Transport

log = logging.getLogger("context.backfill")

JITTER = 0.25          # each delay is drawn from [1 - JITTER, 1 + JITTER] x the nominal delay
RESET_MARGIN_S = 0.05  # wait a little past a rate-limit reset, our clock and Bybit's differ slightly
MAX_RESET_WAIT_S = 60.0


class Decision(Enum):
    RETRY = "retry"
    FAIL = "fail"
    RESYNC_CLOCK = "resync-clock"


def classify(exc: BaseException) -> Decision:
    """What to do after `exc`: retry it, give up, or resync the clock (10002) and retry once."""
    if isinstance(exc, ClockSkew):
        return Decision.RESYNC_CLOCK
    if isinstance(exc, Transient):
        return Decision.RETRY
    return Decision.FAIL


def backoff(attempt: int, policy: RetryPolicy, rng: Callable[[], float]) -> float:
    """Seconds before retry number `attempt` (0-based): base*2**attempt, jittered, capped."""
    nominal = policy.base_s * 2.0 ** min(attempt, 32)
    jittered = nominal * (1.0 - JITTER + 2.0 * JITTER * rng())
    return min(policy.max_delay_s, jittered)


def retry_delay(exc: BaseException, attempt: int, policy: RetryPolicy, rng: Callable[[], float],
                now_s: float) -> float:
    """The wait before the next try: until a known rate-limit reset, else the backoff schedule."""
    reset_at_ms = exc.reset_at_ms if isinstance(exc, RateLimited) else None
    if reset_at_ms is not None:
        until_reset = reset_at_ms / 1000.0 - now_s
        if until_reset > 0:
            return min(MAX_RESET_WAIT_S, until_reset + RESET_MARGIN_S + rng() * RESET_MARGIN_S)
    return backoff(attempt, policy, rng)


OnAttemptError = Callable[[Request, BaseException, Decision, float | None], None]


class RetryLayer:
    """Resends a request after transient failures, at most `policy.max_retries` more times.

    `on_error(request, exc, decision, delay)` is told about every failed attempt (delay is None when
    the error is final), which is how the client counts retries and errors by type.
    """

    def __init__(self, inner: Transport, policy: RetryPolicy, *, sleep: Callable[[float], Awaitable[None]],
                 rng: Callable[[], float], clock: Callable[[], float],
                 on_error: OnAttemptError | None = None) -> None:
        self._inner = inner
        self._policy = policy
        self._sleep = sleep
        self._rng = rng
        self._clock = clock
        self._on_error = on_error

    async def send(self, request: Request) -> Response:
        attempt = 0
        while True:
            try:
                response = await self._inner.send(request)
                log.debug("%s %s -> %d in %.0f ms, %d bytes", request.method, request.endpoint or request.path,
                          response.status, response.elapsed_s * 1000, response.size_bytes)
                return response
            except BackfillError as exc:
                decision = classify(exc)
                retry = decision is Decision.RETRY and attempt < self._policy.max_retries
                delay = retry_delay(exc, attempt, self._policy, self._rng, self._clock()) if retry else None
                if self._on_error is not None:
                    self._on_error(request, exc, decision, delay)
                if delay is None:
                    raise
                log.info("retrying %s in %.2fs after %s (retry %d of %d)", request.endpoint or request.path,
                         delay, type(exc).__name__, attempt + 1, self._policy.max_retries)
                await self._sleep(delay)
                attempt += 1
