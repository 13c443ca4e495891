"""AiohttpTransport against a tiny local aiohttp.web server: streaming, atomic files, error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from fetch.config import Timeouts
from fetch.errors import TransportError
from fetch.transport import AiohttpTransport
from fetch.wire import Request

PAYLOAD = bytes(range(256)) * 8192  # 2 MiB: several chunks


async def whole(request: web.Request) -> web.Response:
    return web.Response(body=PAYLOAD, content_type="application/gzip")


async def short(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": str(len(PAYLOAD))})
    await response.prepare(request)
    await response.write(PAYLOAD[: len(PAYLOAD) // 2])
    request.transport.close()  # type: ignore[union-attr]
    return response


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.Response(text="late")


async def echo(request: web.Request) -> web.Response:
    return web.Response(text=request.query_string + "|" + request.rel_url.raw_query_string)


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_get("/whole.csv.gz", whole)
    app.router.add_get("/short.csv.gz", short)
    app.router.add_get("/slow", slow)
    app.router.add_get("/echo", echo)
    async with TestServer(app, host="127.0.0.1") as srv:
        yield srv


def base(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def test_download_streams_to_dest_with_progress_and_leaves_no_temp(server: TestServer, tmp_path: Path) -> None:
    seen: list[int] = []
    dest = tmp_path / "d" / "whole.csv.gz"
    async with AiohttpTransport(Timeouts()) as transport:
        response = await transport.send(Request(base(server), "/whole.csv.gz", kind="archive", dest=dest,
                                                on_bytes=seen.append))
    assert response.status == 200 and response.path == dest and response.size_bytes == len(PAYLOAD)
    assert dest.read_bytes() == PAYLOAD and sum(seen) == len(PAYLOAD) and len(seen) >= 2
    assert [p.name for p in dest.parent.iterdir()] == ["whole.csv.gz"]


async def test_a_body_shorter_than_content_length_is_a_transport_error_and_no_file(
        server: TestServer, tmp_path: Path) -> None:
    dest = tmp_path / "short.csv.gz"
    async with AiohttpTransport(Timeouts()) as transport:
        with pytest.raises(TransportError):
            await transport.send(Request(base(server), "/short.csv.gz", kind="archive", dest=dest))
    assert list(tmp_path.iterdir()) == []


async def test_a_404_download_returns_the_status_without_a_file(server: TestServer, tmp_path: Path) -> None:
    async with AiohttpTransport(Timeouts()) as transport:
        response = await transport.send(Request(base(server), "/nope.csv.gz", kind="archive",
                                                dest=tmp_path / "n.gz"))
    assert response.status == 404 and response.path is None and list(tmp_path.iterdir()) == []


async def test_timeouts_become_transport_errors_with_a_redacted_url(server: TestServer) -> None:
    async with AiohttpTransport(Timeouts(total_s=0.2, connect_s=0.2)) as transport:
        with pytest.raises(TransportError, match="timed out") as info:
            await transport.send(Request(base(server), "/slow", "cursor=" + "x" * 80,
                                         headers={"X-BAPI-SIGN": "deadbeef"}))
    assert "deadbeef" not in str(info.value) and "x" * 30 not in str(info.value)


async def test_refused_connections_become_transport_errors() -> None:
    async with AiohttpTransport(Timeouts(connect_s=1)) as transport:
        with pytest.raises(TransportError, match="could not connect"):
            await transport.send(Request("http://127.0.0.1:9", "/v5/market/time"))


async def test_the_query_string_is_sent_exactly_as_given(server: TestServer) -> None:
    query = "category=linear&cursor=page%3D2%26x%3D1&symbol=BTCUSDT"
    async with AiohttpTransport(Timeouts()) as transport:
        response = await transport.send(Request(base(server), "/echo", query))
    assert response.body.decode().split("|")[1] == query


async def test_one_session_is_reused_and_closed(server: TestServer) -> None:
    transport = AiohttpTransport(Timeouts())
    await transport.send(Request(base(server), "/echo"))
    session = transport._session
    await transport.send(Request(base(server), "/echo"))
    assert transport._session is session
    await transport.close()
    assert transport._session is None
