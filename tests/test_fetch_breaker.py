"""The circuit breaker's state machine and throttle, and the layer that waits and logs."""

from __future__ import annotations

import asyncio
import logging
import math

import pytest

from fetch.breaker import Admission, BreakerLayer, BreakerState, CircuitBreaker
from fetch.config import BreakerPolicy
from fetch.errors import (AuthError, CircuitOpen, IpBanned, ParameterError, RateLimited, ServerError,
                          TransportError)
from fetch.wire import Request, Response

POLICY = BreakerPolicy(rate_limit_threshold=3, cooldown_s=60.0, ban_cooldown_s=600.0, throttle_max=5.0,
                       throttle_step=1.5, throttle_decay=0.9)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def limited() -> RateLimited:
    return RateLimited("10006", ret_code=10006)


def test_default_ban_cooldown_is_at_least_ten_minutes() -> None:
    assert BreakerPolicy().ban_cooldown_s >= 600


def test_closed_admits_everything() -> None:
    breaker = CircuitBreaker(POLICY, Clock())
    assert breaker.admit() == Admission(0.0)
    assert breaker.state is BreakerState.CLOSED


def test_opens_after_threshold_consecutive_rate_limits() -> None:
    clock = Clock()
    breaker = CircuitBreaker(POLICY, clock)
    assert breaker.record(limited()).transition is None
    assert breaker.record(limited()).transition is None
    outcome = breaker.record(limited())
    assert outcome.transition is not None
    assert (outcome.transition.old, outcome.transition.new) == (BreakerState.CLOSED, BreakerState.OPEN)
    assert outcome.transition.cooldown_s == 60.0 and "3 consecutive" in outcome.transition.reason
    assert breaker.admit().wait_s == 60.0 and breaker.openings == 1


def test_a_success_resets_the_consecutive_count() -> None:
    breaker = CircuitBreaker(POLICY, Clock())
    breaker.record(limited())
    breaker.record(limited())
    breaker.record(None)
    assert breaker.record(limited()).transition is None
    assert breaker.state is BreakerState.CLOSED


def test_server_errors_do_not_open_but_raise_the_throttle() -> None:
    breaker = CircuitBreaker(POLICY, Clock())
    for _ in range(10):
        assert breaker.record(ServerError("502")).transition is None
    assert breaker.state is BreakerState.CLOSED and breaker.throttle == 5.0


def test_an_ip_ban_opens_at_once_for_the_ban_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(POLICY, clock)
    transition = breaker.record(IpBanned("403", status=403)).transition
    assert transition is not None and transition.new is BreakerState.OPEN
    assert transition.cooldown_s == 600.0 and "403" in transition.reason
    clock.now += 599.0
    assert breaker.admit().wait_s == pytest.approx(1.0)


def test_after_cooldown_half_open_lets_exactly_one_probe_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(POLICY, clock)
    breaker.record(IpBanned("403"))
    clock.now += 600.0
    first = breaker.admit()
    assert first.wait_s == 0 and first.probe
    assert first.transition is not None and first.transition.new is BreakerState.HALF_OPEN
    assert breaker.admit().wait_s == math.inf  # everyone else waits for the probe
    assert breaker.admit().wait_s == math.inf


def test_probe_success_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(POLICY, clock)
    breaker.record(IpBanned("403"))
    clock.now += 600.0
    assert breaker.admit().probe
    transition = breaker.record(None, probe=True).transition
    assert transition is not None and (transition.old, transition.new) == (BreakerState.HALF_OPEN,
                                                                           BreakerState.CLOSED)
    assert breaker.admit() == Admission(0.0)


@pytest.mark.parametrize("failure,cooldown", [(limited(), 60.0), (IpBanned("403"), 600.0),
                                              (ServerError("503"), 60.0), (TransportError("reset"), 60.0)])
def test_probe_failure_opens_again(failure: Exception, cooldown: float) -> None:
    clock = Clock()
    breaker = CircuitBreaker(POLICY, clock)
    breaker.record(IpBanned("403"))
    clock.now += 600.0
    assert breaker.admit().probe
    transition = breaker.record(failure, probe=True).transition
    assert transition is not None and (transition.old, transition.new) == (BreakerState.HALF_OPEN,
                                                                           BreakerState.OPEN)
    assert transition.cooldown_s == cooldown and breaker.openings == 2


@pytest.mark.parametrize("answer", [ParameterError("10001"), AuthError("10003")])
def test_a_probe_answered_with_a_non_load_error_still_closes(answer: Exception) -> None:
    clock = Clock()
    breaker = CircuitBreaker(POLICY, clock)
    breaker.record(IpBanned("403"))
    clock.now += 600.0
    breaker.admit()
    transition = breaker.record(answer, probe=True).transition
    assert transition is not None and transition.new is BreakerState.CLOSED


def test_a_cancelled_probe_lets_the_next_request_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(POLICY, clock)
    breaker.record(IpBanned("403"))
    clock.now += 600.0
    breaker.admit()
    breaker.release_probe()
    assert breaker.admit().probe


def test_a_ban_during_open_extends_the_cooldown_without_a_new_opening() -> None:
    clock = Clock()
    breaker = CircuitBreaker(POLICY, clock)
    for _ in range(3):
        breaker.record(limited())
    assert breaker.admit().wait_s == 60.0
    assert breaker.record(IpBanned("403")).transition is None
    assert breaker.admit().wait_s == 600.0 and breaker.openings == 1


def test_throttle_rises_by_step_up_to_max_and_decays_to_one() -> None:
    breaker = CircuitBreaker(POLICY, Clock())
    seen = []
    for _ in range(8):
        seen.append(breaker.record(ServerError("5xx")).throttle_after)
    assert seen[:3] == [1.5, 2.25, 3.375] and max(seen) == 5.0 and seen[-1] == 5.0
    assert breaker.peak_throttle == 5.0
    after = [breaker.record(None).throttle_after for _ in range(30)]
    assert after[0] == pytest.approx(4.5) and after[-1] == 1.0 and min(after) == 1.0
    assert all(a >= b for a, b in zip(after, after[1:]))


# --- the layer ----------------------------------------------------------------------------------

class Scripted:
    def __init__(self, clock: Clock, *outcomes: Exception | None) -> None:
        self.clock = clock
        self.outcomes = list(outcomes)
        self.sent_at: list[float] = []

    async def send(self, request: Request) -> Response:
        self.sent_at.append(self.clock.now)
        await asyncio.sleep(0)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        return Response(200, {}, b"{}")


REQ = Request("http://x", "/v5/market/recent-trade")


async def test_layer_waits_out_the_ban_then_probes_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="context.backfill")
    clock = Clock()
    inner = Scripted(clock, IpBanned("403"))
    layer = BreakerLayer(inner, CircuitBreaker(POLICY, clock), sleep=clock.sleep)
    with pytest.raises(IpBanned):
        await layer.send(REQ)
    await layer.send(REQ)
    assert inner.sent_at == [1000.0, 1600.0]  # nothing was sent during the 600 s cooldown
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Bybit circuit breaker opened") and "600.0 s" in m for m in messages)
    assert any(m.startswith("Bybit circuit breaker half-open") for m in messages)
    assert "Bybit circuit breaker closed" in messages
    assert "throttle: 1.5x" in messages


async def test_layer_raises_circuit_open_when_told_not_to_wait() -> None:
    clock = Clock()
    layer = BreakerLayer(Scripted(clock, IpBanned("403")), CircuitBreaker(POLICY, clock), sleep=clock.sleep,
                         wait_when_open=False)
    with pytest.raises(IpBanned):
        await layer.send(REQ)
    with pytest.raises(CircuitOpen) as info:
        await layer.send(REQ)
    assert info.value.retry_after_s == pytest.approx(600.0)


async def test_concurrent_requests_wait_for_the_single_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(POLICY, clock)
    breaker.record(IpBanned("403"))
    clock.now += 600.0
    gate = asyncio.Event()
    sent: list[float] = []

    class Gated:
        async def send(self, request: Request) -> Response:
            sent.append(clock.now)
            await gate.wait()
            return Response(200, {}, b"{}")

    layer = BreakerLayer(Gated(), breaker, sleep=clock.sleep)
    tasks = [asyncio.create_task(layer.send(REQ)) for _ in range(5)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert breaker.state is BreakerState.HALF_OPEN and len(sent) == 1  # only the probe is out
    gate.set()
    await asyncio.gather(*tasks)
    assert len(sent) == 5 and breaker.state is BreakerState.CLOSED


async def test_throttle_changes_are_logged_with_one_decimal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="context.backfill")
    clock = Clock()
    policy = BreakerPolicy(rate_limit_threshold=100)
    layer = BreakerLayer(Scripted(clock, *[ServerError("502")] * 3), CircuitBreaker(policy, clock),
                         sleep=clock.sleep)
    for _ in range(3):
        with pytest.raises(ServerError):
            await layer.send(REQ)
    throttles = [r.getMessage() for r in caplog.records if r.getMessage().startswith("throttle:")]
    assert throttles == ["throttle: 1.5x", "throttle: 2.2x", "throttle: 3.4x"]


async def test_archive_requests_bypass_the_breaker() -> None:
    clock = Clock()
    breaker = CircuitBreaker(POLICY, clock)
    breaker.record(IpBanned("403"))
    inner = Scripted(clock)
    layer = BreakerLayer(inner, breaker, sleep=clock.sleep, wait_when_open=False)
    await layer.send(Request("http://a", "/trading/X/", kind="archive"))
    assert inner.sent_at == [1000.0]
