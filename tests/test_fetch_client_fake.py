"""BybitClient's flows over a fake transport: signing, auth fallback, clock resync, stats, secrecy."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from fetch import (AuthError, BybitClient, Credentials, Endpoints, FetchConfig, ParameterError,
                   RateLimits, RetryPolicy)
from fetch.signing import sign
from fetch.wire import Request, Response

SECRET = "s3cr3t-never-shown"
KEY = "key-1"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def envelope(code: int = 0, result: object = None, msg: str = "OK", time: int | None = None) -> bytes:
    return json.dumps({"retCode": code, "retMsg": msg, "result": result or {}, "time": time}).encode()


class Fake:
    """Answers each request with `handler(request)`; remembers every request."""

    def __init__(self, handler: Callable[[Request], Response]) -> None:
        self.handler = handler
        self.requests: list[Request] = []

    async def send(self, request: Request) -> Response:
        self.requests.append(request)
        return self.handler(request)


def config(creds: bool = True, **kw: object) -> FetchConfig:
    return FetchConfig(endpoints=Endpoints("http://api", "http://archive"),
                       credentials=Credentials(KEY, SECRET) if creds else Credentials(),
                       retry=RetryPolicy(max_retries=3), limits=RateLimits(max_concurrency=4), **kw)  # type: ignore[arg-type]


def client(fake: Fake, clock: Clock, creds: bool = True, **kw: object) -> BybitClient:
    return BybitClient(config(creds), transport=fake, clock=clock, sleep=clock.sleep, rng=lambda: 0.5, **kw)  # type: ignore[arg-type]


async def test_public_calls_are_unsigned_and_return_result() -> None:
    clock = Clock()
    fake = Fake(lambda r: Response(200, {}, envelope(result={"list": [1]})))
    async with client(fake, clock) as c:
        assert await c.get_public("/v5/market/recent-trade", {"category": "linear", "symbol": "BTCUSDT"}) == {
            "list": [1]}
    (request,) = fake.requests
    assert request.query == "category=linear&symbol=BTCUSDT" and not request.signed
    assert "X-BAPI-SIGN" not in request.headers


async def test_private_calls_sign_the_exact_query_string_with_the_current_time() -> None:
    clock = Clock()
    fake = Fake(lambda r: Response(200, {}, envelope(result={"list": []})))
    async with client(fake, clock) as c:
        await c.get_private("/v5/execution/list", {"category": "linear", "cursor": "a%3D1%26b"})
    (request,) = fake.requests
    assert request.query == "category=linear&cursor=a%3D1%26b"
    ts = int(clock.now * 1000)
    assert request.headers["X-BAPI-TIMESTAMP"] == str(ts)
    assert request.headers["X-BAPI-SIGN"] == sign(SECRET, KEY, ts, 5000, request.query)


async def test_private_call_without_credentials_says_which_variables_to_set() -> None:
    fake = Fake(lambda r: Response(200, {}, envelope()))
    async with client(fake, Clock(), creds=False) as c:
        with pytest.raises(AuthError, match="BYBIT_API_KEY and BYBIT_API_SECRET"):
            await c.get_private("/v5/execution/list", {"category": "linear"})
    assert fake.requests == []


@pytest.mark.parametrize("answer", [Response(401, {}, b"Unauthorized"), Response(200, {}, envelope(10003, msg="bad key")),
                                    Response(200, {}, envelope(10004, msg="sign")),
                                    Response(200, {}, envelope(10005, msg="perm")),
                                    Response(200, {}, envelope(10010, msg="ip"))])
async def test_auth_refusal_on_a_private_call_stops_with_a_clear_error(answer: Response) -> None:
    fake = Fake(lambda r: answer)
    async with client(fake, Clock()) as c:
        with pytest.raises(AuthError, match="refused the API key"):
            await c.get_private("/v5/execution/list", {"category": "linear"})
    assert len(fake.requests) == 1  # never retried


async def test_auth_refusal_on_a_signed_public_call_warns_once_and_goes_on_unsigned(
        caplog: pytest.LogCaptureFixture) -> None:
    def handler(r: Request) -> Response:
        return Response(200, {}, envelope(10003, msg="API key is invalid.") if r.signed else envelope(result={"ok": 1}))

    fake = Fake(handler)
    caplog.set_level(logging.WARNING, logger="context.backfill")
    async with client(fake, Clock(), sign_public=True) as c:
        assert await c.get_public("/v5/market/recent-trade", {"symbol": "X"}) == {"ok": 1}
        assert await c.get_public("/v5/market/recent-trade", {"symbol": "X"}) == {"ok": 1}
    assert [r.signed for r in fake.requests] == [True, False, False]
    warnings = [r for r in caplog.records if "continuing unsigned" in r.getMessage()]
    assert len(warnings) == 1


async def test_clock_skew_resyncs_from_server_time_and_retries_once() -> None:
    clock = Clock()
    server_offset_ms = 3_000

    def handler(r: Request) -> Response:
        if r.path == "/v5/market/time":
            server_ms = int(clock.now * 1000) + server_offset_ms
            return Response(200, {}, envelope(result={"timeSecond": str(server_ms // 1000),
                                                      "timeNano": str(server_ms * 1_000_000)}))
        ts = int(r.headers["X-BAPI-TIMESTAMP"])
        ok = abs(ts - (int(clock.now * 1000) + server_offset_ms)) < 1000
        return Response(200, {}, envelope(result={"list": []}) if ok else envelope(10002, msg="ts"))

    fake = Fake(handler)
    async with client(fake, clock) as c:
        assert await c.get_private("/v5/execution/list", {"category": "linear"}) == {"list": []}
        assert c.clock_offset_ms == server_offset_ms
    assert [r.path for r in fake.requests] == ["/v5/execution/list", "/v5/market/time", "/v5/execution/list"]


async def test_clock_skew_that_persists_after_one_resync_is_raised() -> None:
    def handler(r: Request) -> Response:
        if r.path == "/v5/market/time":
            return Response(200, {}, envelope(result={"timeSecond": "1700000000"}))
        return Response(200, {}, envelope(10002, msg="ts"))

    fake = Fake(handler)
    async with client(fake, Clock()) as c:
        with pytest.raises(Exception, match="10002"):
            await c.get_private("/v5/execution/list", {"category": "linear"})
    assert len(fake.requests) == 3


async def test_stats_count_wire_requests_retries_errors_and_rate_limits() -> None:
    answers = [Response(502, {}, b"bad gateway"), Response(200, {}, envelope(10006, msg="Too many visits!")),
               Response(200, {}, envelope(result={}))]
    fake = Fake(lambda r: answers.pop(0))
    async with client(fake, Clock()) as c:
        await c.get_public("/v5/market/recent-trade", {})
        stats = c.stats
    assert (stats.requests, stats.retries, stats.rate_limited) == (3, 2, 1)
    assert stats.errors_by_type == {"ServerError": 1, "RateLimited": 1}
    assert stats.peak_throttle == 2.25


async def test_parameter_error_is_not_retried() -> None:
    fake = Fake(lambda r: Response(200, {}, envelope(10001, {"list": []}, msg="params error: symbol invalid")))
    async with client(fake, Clock()) as c:
        with pytest.raises(ParameterError):
            await c.get_public("/v5/market/recent-trade", {"symbol": "NOPE"})
    assert len(fake.requests) == 1


async def test_download_returns_none_on_404_and_the_path_on_200(tmp_path: Path) -> None:
    def handler(r: Request) -> Response:
        if "missing" in r.path:
            return Response(404, {}, b"not found")
        assert r.dest is not None and r.on_bytes is not None
        r.dest.write_bytes(b"x" * 10)
        r.on_bytes(10)
        return Response(200, {}, path=r.dest, size_bytes=10)

    fake = Fake(handler)
    seen: list[int] = []
    async with client(fake, Clock()) as c:
        assert await c.download("/trading/X/missing.csv.gz", tmp_path / "m.gz") is None
        assert await c.download("/trading/X/X.csv.gz", tmp_path / "x.gz", on_bytes=seen.append) == tmp_path / "x.gz"
        assert c.stats.bytes_downloaded == 10 and seen == [10]
    assert all(r.kind == "archive" and r.base_url == "http://archive" for r in fake.requests)


async def test_the_secret_never_appears_in_reprs_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    answers = [Response(200, {}, envelope(10004, msg="error sign!")), Response(503, {}, b"down"),
               Response(200, {}, envelope(result={}))]
    fake = Fake(lambda r: answers.pop(0))
    errors: list[str] = []
    async with client(fake, Clock()) as c:
        try:
            await c.get_private("/v5/execution/list", {"category": "linear"})
        except AuthError as exc:
            errors.append(str(exc) + repr(exc))
        await c.get_private("/v5/execution/list", {"category": "linear"})
        shown = repr(c) + repr(c.config) + repr(c.config.credentials) + repr(fake.requests) + str(c.stats)
    text = shown + "".join(errors) + caplog.text
    assert SECRET not in text
    assert "X-BAPI-SIGN" not in shown
