"""Retry decisions and delays are pure: exact schedules, with injected rng, clock and sleep."""

from __future__ import annotations

import pytest

from fetch.config import RetryPolicy
from fetch.errors import (ArchiveError, AuthError, BadResponse, CircuitOpen, InputError, IpBanned,
                          ParameterError, TransportError, error_for, error_for_status)
from fetch.retry import Decision, RetryLayer, backoff, classify, retry_delay
from fetch.wire import Request, Response

POLICY = RetryPolicy(max_retries=5, base_s=0.5, max_delay_s=30.0)


@pytest.mark.parametrize("code", [10006, 10016, 10000, 10018])
def test_transient_ret_codes_are_retried(code: int) -> None:
    assert classify(error_for(code, "x")) is Decision.RETRY


@pytest.mark.parametrize("code", [10001, 10003, 10004, 10005, 10010])
def test_terminal_ret_codes_are_never_retried(code: int) -> None:
    assert classify(error_for(code, "x")) is Decision.FAIL


def test_clock_skew_asks_for_a_resync() -> None:
    assert classify(error_for(10002, "timestamp out of window")) is Decision.RESYNC_CLOCK


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 403])
def test_transient_statuses_are_retried(status: int) -> None:
    error = error_for_status(status)
    assert error is not None and classify(error) is Decision.RETRY


@pytest.mark.parametrize("exc", [TransportError("timeout"), TransportError("reset"), BadResponse("x")])
def test_timeouts_resets_and_bad_bodies_are_retried(exc: Exception) -> None:
    assert classify(exc) is Decision.RETRY


@pytest.mark.parametrize("exc", [AuthError("x"), ParameterError("x"), InputError("x"), CircuitOpen("x"),
                                 ArchiveError("x"), ValueError("not ours")])
def test_terminal_and_foreign_errors_fail(exc: Exception) -> None:
    assert classify(exc) is Decision.FAIL


def test_backoff_schedule_is_half_one_two_four_at_mid_jitter() -> None:
    assert [backoff(n, POLICY, lambda: 0.5) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]


def test_backoff_jitter_stays_within_a_quarter_either_side() -> None:
    for n in range(5):
        nominal = 0.5 * 2**n
        assert backoff(n, POLICY, lambda: 0.0) == pytest.approx(nominal * 0.75)
        assert backoff(n, POLICY, lambda: 0.999999) == pytest.approx(nominal * 1.25, rel=1e-5)


def test_backoff_is_capped() -> None:
    assert backoff(20, POLICY, lambda: 1.0) == 30.0
    assert backoff(10_000, POLICY, lambda: 0.5) == 30.0


def test_rate_limit_with_reset_waits_until_the_reset() -> None:
    exc = error_for(10006, "Too many visits!", reset_at_ms=1_000_002_500)
    assert retry_delay(exc, 0, POLICY, lambda: 0.0, now_s=1_000_000.0) == pytest.approx(2.55)


def test_rate_limit_whose_reset_has_passed_uses_backoff() -> None:
    exc = error_for(10006, "Too many visits!", reset_at_ms=999_999_000)
    assert retry_delay(exc, 1, POLICY, lambda: 0.5, now_s=1_000_000.0) == 1.0


class Scripted:
    """A transport that raises or answers from a script, counting calls."""

    def __init__(self, *outcomes: Exception | Response) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def send(self, request: Request) -> Response:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


OK = Response(200, {}, b"{}")
REQ = Request("http://x", "/v5/market/recent-trade")


async def test_retry_layer_sleeps_the_schedule_then_succeeds() -> None:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    inner = Scripted(error_for_status(502), TransportError("reset"), error_for(10016, "busy"), OK)  # type: ignore[arg-type]
    layer = RetryLayer(inner, POLICY, sleep=sleep, rng=lambda: 0.5, clock=lambda: 0.0)
    assert await layer.send(REQ) is OK
    assert slept == [0.5, 1.0, 2.0] and inner.calls == 4


async def test_retry_layer_gives_up_after_max_retries() -> None:
    async def sleep(s: float) -> None:
        pass

    seen: list[float | None] = []
    inner = Scripted(*[TransportError("down")] * 3)
    layer = RetryLayer(inner, RetryPolicy(max_retries=2), sleep=sleep, rng=lambda: 0.5, clock=lambda: 0.0,
                       on_error=lambda r, e, d, delay: seen.append(delay))
    with pytest.raises(TransportError):
        await layer.send(REQ)
    assert inner.calls == 3 and seen == [0.5, 1.0, None]


async def test_retry_layer_never_retries_terminal_errors_or_clock_skew() -> None:
    async def sleep(s: float) -> None:
        raise AssertionError("must not sleep")

    for exc in (error_for(10001, "bad"), error_for(10004, "sign"), error_for(10002, "clock")):
        inner = Scripted(exc)
        with pytest.raises(type(exc)):
            await RetryLayer(inner, POLICY, sleep=sleep, rng=lambda: 0.5, clock=lambda: 0.0).send(REQ)
        assert inner.calls == 1


async def test_ip_ban_is_retried_after_backoff() -> None:
    async def sleep(s: float) -> None:
        pass

    inner = Scripted(IpBanned("403"), OK)
    assert await RetryLayer(inner, POLICY, sleep=sleep, rng=lambda: 0.5, clock=lambda: 0.0).send(REQ) is OK
