"""Circuit breaker and throttle: stop sending when Bybit says stop, slow down when it struggles.

`CircuitBreaker` is a small state machine with an injected clock and no I/O; every method returns the
state transition it caused, and `BreakerLayer` logs it with the messages operators grep for
("Bybit circuit breaker opened", "... half-open", "... closed", "throttle: 2.3x")::

    CLOSED --(threshold consecutive rate limits, or one IP ban)--> OPEN
    OPEN   --(cooldown over; ban_cooldown_s after a 403)---------> HALF_OPEN (one probe goes out)
    HALF_OPEN --(probe answered)--> CLOSED      HALF_OPEN --(probe limited/failed)--> OPEN

The throttle multiplier (1.0 .. throttle_max) rises on every rate-limit or server error and decays
on success; the limiter divides its concurrency by it. While OPEN the layer *waits* by default (a
backfill pauses and resumes), or raises `CircuitOpen` when built with `wait_when_open=False`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from .config import BreakerPolicy
from .errors import (
    BackfillError,
    BadResponse,
    CircuitOpen,
    IpBanned,
    RateLimited,
    ServerError,
    TransportError,
)
from .wire import Request, Response, Transport

log = logging.getLogger("context.backfill")

THROTTLE_LOG_STEP = 0.5  # log the throttle when it moved this much since it was last logged


class BreakerState(str, Enum):
    """CLOSED sends, OPEN sends nothing until the cooldown ends, HALF_OPEN lets one probe through."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True)
class Transition:
    old: BreakerState
    new: BreakerState
    reason: str = ""
    cooldown_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Admission:
    """May a request go now? `wait_s` 0: yes (`probe` tells if it is the half-open probe);
    finite: the cooldown left; `math.inf`: wait until the probe in flight has its answer."""

    wait_s: float
    probe: bool = False
    transition: Transition | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What recording one result did: a state transition (or None) and the throttle it left."""

    transition: Transition | None
    throttle_after: float


class CircuitBreaker:
    """CLOSED / OPEN / HALF_OPEN plus a throttle multiplier; pure state, the clock is injected."""

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self._clock = clock
        self.state = BreakerState.CLOSED
        self.throttle = 1.0
        self.peak_throttle = 1.0
        self.openings = 0
        self.consecutive_rate_limits = 0
        self.open_until = 0.0
        self.reason = ""
        self._probe_in_flight = False

    def admit(self) -> Admission:
        """Ask before sending; an OPEN breaker whose cooldown is over turns HALF_OPEN here."""
        if self.state is BreakerState.CLOSED:
            return Admission(0.0)
        if self.state is BreakerState.OPEN:
            left = self.open_until - self._clock()
            if left > 0:
                return Admission(left)
            self.state = BreakerState.HALF_OPEN
            self._probe_in_flight = True
            return Admission(0.0, probe=True,
                             transition=Transition(BreakerState.OPEN, BreakerState.HALF_OPEN, self.reason))
        if self._probe_in_flight:
            return Admission(math.inf)
        self._probe_in_flight = True
        return Admission(0.0, probe=True)

    def release_probe(self) -> None:
        """The probe was cancelled before any answer: let the next request probe instead."""
        self._probe_in_flight = False

    def record(self, exc: BaseException | None, *, probe: bool = False) -> Outcome:
        """Record one answer (None = success); returns the transition it caused and the throttle after."""
        if probe:
            self._probe_in_flight = False
        if isinstance(exc, IpBanned):
            transition = self._on_limit(exc, self.policy.ban_cooldown_s, immediate=True, probe=probe)
        elif isinstance(exc, RateLimited):
            self.consecutive_rate_limits += 1
            reached = self.consecutive_rate_limits >= self.policy.rate_limit_threshold
            transition = self._on_limit(exc, self.policy.cooldown_s, immediate=reached, probe=probe)
        elif isinstance(exc, (ServerError, TransportError, BadResponse)):
            self._raise_throttle()
            transition = self._open(self.policy.cooldown_s, f"probe failed: {type(exc).__name__}") \
                if probe else None
        else:  # success, or an answer that is not about load (bad parameter, auth, clock)
            self.consecutive_rate_limits = 0
            self.throttle = max(1.0, self.throttle * self.policy.throttle_decay)
            transition = self._close() if probe and self.state is BreakerState.HALF_OPEN else None
        return Outcome(transition, self.throttle)

    def _on_limit(self, exc: BaseException, cooldown_s: float, *, immediate: bool,
                  probe: bool) -> Transition | None:
        self._raise_throttle()
        reason = _reason(exc, self.consecutive_rate_limits)
        if self.state is BreakerState.OPEN:
            self.open_until = max(self.open_until, self._clock() + cooldown_s)  # in-flight stragglers
            return None
        if immediate or probe:
            return self._open(cooldown_s, reason)
        return None

    def _open(self, cooldown_s: float, reason: str) -> Transition:
        old = self.state
        self.state = BreakerState.OPEN
        self.open_until = self._clock() + cooldown_s
        self.reason = reason
        self.openings += 1
        self._probe_in_flight = False
        return Transition(old, BreakerState.OPEN, reason, cooldown_s)

    def _close(self) -> Transition:
        old = self.state
        self.state = BreakerState.CLOSED
        self.consecutive_rate_limits = 0
        self.reason = ""
        return Transition(old, BreakerState.CLOSED)

    def _raise_throttle(self) -> None:
        self.throttle = min(self.policy.throttle_max, self.throttle * self.policy.throttle_step)
        self.peak_throttle = max(self.peak_throttle, self.throttle)


def _reason(exc: BaseException, consecutive: int) -> str:
    if isinstance(exc, IpBanned):
        return ("IP ban (HTTP 403 'access too frequent' or retCode 10018; a 403 can also mean a "
                "restricted region)")
    return f"{consecutive} consecutive rate-limit errors ({type(exc).__name__})"


class BreakerLayer:
    """Consults the breaker before each API request, records each answer, logs what changed.

    Archive downloads pass straight through: the archive host is a separate static server.
    """

    def __init__(self, inner: Transport, breaker: CircuitBreaker, *,
                 sleep: Callable[[float], Awaitable[None]], wait_when_open: bool = True,
                 on_transition: Callable[[Transition], None] | None = None) -> None:
        self._inner = inner
        self.breaker = breaker
        self._sleep = sleep
        self._wait_when_open = wait_when_open
        self._on_transition = on_transition
        self._probe_done = asyncio.Event()
        self._logged_throttle = 1.0

    async def send(self, request: Request) -> Response:
        if request.kind != "api":
            return await self._inner.send(request)
        probe = await self._admit()
        try:
            response = await self._inner.send(request)
        except BackfillError as exc:
            self._record(exc, probe)
            raise
        except BaseException:
            if probe:
                self.breaker.release_probe()
                self._wake_waiters()
            raise
        self._record(None, probe)
        return response

    async def _admit(self) -> bool:
        while True:
            admission = self.breaker.admit()
            self._report(admission.transition)
            if admission.wait_s <= 0:
                return admission.probe
            if not self._wait_when_open:
                left = 0.0 if math.isinf(admission.wait_s) else admission.wait_s
                raise CircuitOpen(f"Bybit circuit breaker is open ({self.breaker.reason}): nothing is sent "
                                  f"for {left:.0f}s more; wait and run again", retry_after_s=left)
            if math.isinf(admission.wait_s):
                await self._probe_done.wait()
            else:
                await self._sleep(admission.wait_s)

    def _record(self, exc: BaseException | None, probe: bool) -> None:
        outcome = self.breaker.record(exc, probe=probe)
        self._report(outcome.transition)
        self._report_throttle(outcome.throttle_after)
        if probe:
            self._wake_waiters()

    def _wake_waiters(self) -> None:
        self._probe_done.set()
        self._probe_done = asyncio.Event()

    def _report(self, transition: Transition | None) -> None:
        if transition is None:
            return
        if transition.new is BreakerState.OPEN:
            log.warning("Bybit circuit breaker opened: %s; sending nothing for %.1f s",
                        transition.reason, transition.cooldown_s)
        elif transition.new is BreakerState.HALF_OPEN:
            log.info("Bybit circuit breaker half-open: sending one probe request")
        else:
            log.info("Bybit circuit breaker closed")
        if self._on_transition is not None:
            self._on_transition(transition)

    def _report_throttle(self, throttle: float) -> None:
        moved = abs(throttle - self._logged_throttle) >= THROTTLE_LOG_STEP
        if moved or (throttle == 1.0 and self._logged_throttle != 1.0):
            log.info("throttle: %.1fx", throttle)
            self._logged_throttle = throttle
