"""The rate limiter's budgets on a fake clock: IP window, per-endpoint, spacing, header pacing."""

from __future__ import annotations

import asyncio
import math

import pytest

from fetch.config import RateLimits
from fetch.limiter import LimiterLayer, RateLimiter
from fetch.wire import LimitStatus, Request, Response


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def limiter(clock: Clock, throttle: float = 1.0, **kw: object) -> RateLimiter:
    limits = RateLimits(**{"ip_requests": 10, "ip_window_s": 5.0, "ip_safety": 1.0,  # type: ignore[arg-type]
                           "endpoint_per_s": {"/v5/execution/list": 4}, **kw})
    return RateLimiter(limits, clock, clock.sleep, throttle=lambda: throttle)


async def take(lim: RateLimiter, endpoint: str = "/v5/market/recent-trade", public: bool = True) -> None:
    async with lim.slot(endpoint, public=public):
        pass  # answered at once


async def test_ip_window_allows_the_budget_then_waits_for_the_oldest_to_expire() -> None:
    clock = Clock()
    lim = limiter(clock)
    for _ in range(10):
        await take(lim)
    assert clock.slept == []
    await take(lim)
    assert clock.slept == [5.0] and clock.now == 1005.0


async def test_a_request_counts_until_a_window_after_its_answer_not_its_send() -> None:
    # Bybit counts arrivals, which lie anywhere between our send and the answer: a slow answer
    # keeps its request in the window until a whole window after it came back.
    clock = Clock()
    lim = limiter(clock, max_concurrency=100)
    slots = [lim.slot("/v5/a", public=False) for _ in range(10)]
    for slot in slots:
        await slot.__aenter__()  # the budget of 10, all in flight
    assert lim.wait_s("/v5/a", public=False) == math.inf, "only an answer can make room"
    eleventh = asyncio.create_task(take(lim, "/v5/a", public=False))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not eleventh.done() and clock.slept == [], "waits for an answer, not a guessed time"
    clock.now += 3.0  # the answers take 3 s (longer than any slack would allow)
    for slot in slots:
        await slot.__aexit__(None, None, None)
    await eleventh
    assert clock.slept == [5.0] and clock.now == 1008.0, "a window after the answers, not the sends"


async def test_an_endpoint_never_has_more_than_its_limit_in_flight_or_answered_within_a_second() -> None:
    clock = Clock()
    lim = limiter(clock, ip_requests=1000, max_concurrency=100)  # /v5/execution/list: 4 per second
    slots = [lim.slot("/v5/execution/list", public=False) for _ in range(4)]
    for slot in slots:
        await slot.__aenter__()  # paced, but all four still in flight
    assert lim.wait_s("/v5/execution/list", public=False) == math.inf
    clock.now += 2.0
    for slot in slots:
        await slot.__aexit__(None, None, None)
    assert lim.wait_s("/v5/execution/list", public=False) == pytest.approx(1.0)


def test_ip_budget_keeps_a_safety_margin_and_shrinks_with_throttle() -> None:
    clock = Clock()
    assert RateLimiter(RateLimits(), clock, clock.sleep).ip_budget() == 540
    assert RateLimiter(RateLimits(), clock, clock.sleep, throttle=lambda: 2.0).ip_budget() == 270


async def test_endpoint_requests_are_spaced_evenly_so_no_second_of_arrivals_exceeds_the_limit() -> None:
    clock = Clock()
    lim = limiter(clock, ip_requests=1000)  # /v5/execution/list: 4 per second
    sent = []
    for _ in range(12):
        await take(lim, "/v5/execution/list", public=False)
        sent.append(clock.now)
    interval = 1.05 / (4 - 0.25)
    assert clock.slept[1:] == pytest.approx([interval] * 10), "even spacing, never a burst"
    for first in sent:  # any 1 s plus 50 ms of latency jitter holds at most the limit
        assert sum(first <= t < first + 1.05 - 1e-9 for t in sent) <= 4
    assert len(sent) / (sent[-1] - sent[0]) > 0.9 * 4 - 0.5, "yet close to the limit"


async def test_a_50_per_second_endpoint_is_paced_above_90_percent_of_its_limit() -> None:
    clock = Clock()
    lim = limiter(clock, endpoint_per_s={"/v5/execution/list": 50})
    interval = lim.endpoint_interval("/v5/execution/list")
    assert interval is not None and 0.9 * 50 < 1 / interval < 48
    assert lim.endpoint_interval("/v5/market/recent-trade") is None


async def test_public_calls_are_spaced_by_public_delay() -> None:
    clock = Clock()
    lim = limiter(clock, public_delay_ms=200)
    for _ in range(3):
        await take(lim)
    assert clock.slept == pytest.approx([0.2, 0.2])
    await take(lim, "/v5/execution/list", public=False)  # private calls are not spaced
    assert len(clock.slept) == 2


async def test_low_remaining_header_pauses_the_endpoint_until_reset() -> None:
    clock = Clock()
    lim = limiter(clock)
    lim.observe("/v5/execution/list", LimitStatus(limit=50, remaining=2, reset_at_ms=1000_700))
    assert lim.wait_s("/v5/execution/list", public=False) == pytest.approx(0.7)
    assert lim.wait_s("/v5/market/recent-trade", public=True) == 0.0
    lim.observe("/v5/other", LimitStatus(limit=50, remaining=40, reset_at_ms=1000_700))
    assert lim.wait_s("/v5/other", public=False) == 0.0


async def test_requests_still_in_flight_count_against_what_the_window_has_left() -> None:
    clock = Clock()
    lim = limiter(clock, ip_requests=1000)
    slots = [lim.slot("/v5/other", public=False) for _ in range(4)]
    for slot in slots:
        await slot.__aenter__()
    lim.observe("/v5/other", LimitStatus(limit=50, remaining=6, reset_at_ms=1000_400))
    assert lim.wait_s("/v5/other", public=False) == pytest.approx(0.4), "4 in flight + 2 >= 6 left"
    for slot in slots:
        await slot.__aexit__(None, None, None)
    lim.observe("/v5/x", LimitStatus(limit=50, remaining=6, reset_at_ms=1000_400))
    assert lim.wait_s("/v5/x", public=False) == 0.0, "nothing in flight: 6 left is plenty"


def test_absurd_reset_timestamps_are_capped() -> None:
    clock = Clock()
    lim = limiter(clock)
    lim.observe("/e", LimitStatus(limit=50, remaining=0, reset_at_ms=9_999_999_999_999))
    assert lim.wait_s("/e", public=False) == pytest.approx(5.0)


def test_headers_without_remaining_or_reset_change_nothing() -> None:
    clock = Clock()
    lim = limiter(clock)
    lim.observe("/e", LimitStatus(limit=50, remaining=None, reset_at_ms=None))
    lim.observe("/e", LimitStatus(limit=None, remaining=0, reset_at_ms=None))
    assert lim.wait_s("/e", public=False) == 0.0


def test_concurrency_shrinks_with_throttle() -> None:
    clock = Clock()
    assert limiter(clock, max_concurrency=8).concurrency() == 8
    assert limiter(clock, 2.0, max_concurrency=8).concurrency() == 4
    assert limiter(clock, 5.0, max_concurrency=8).concurrency() == 1


async def test_layer_bounds_in_flight_requests_and_skips_archive_downloads() -> None:
    clock = Clock()
    lim = limiter(clock, max_concurrency=2, ip_requests=1000)
    in_flight = peak = 0

    class Slow:
        async def send(self, request: Request) -> Response:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            for _ in range(3):
                await asyncio.sleep(0)
            in_flight -= 1
            return Response(200, {"x-bapi-limit-status": "1"}, b"{}")

    layer = LimiterLayer(Slow(), lim)
    await asyncio.gather(*(layer.send(Request("http://x", "/v5/a")) for _ in range(6)))
    assert peak == 2
    peak = 0
    await asyncio.gather(*(layer.send(Request("http://x", "/f.gz", kind="archive")) for _ in range(6)))
    assert peak == 6
    assert len(lim._ip.answered) == 6  # archive downloads are not counted against the IP budget
