"""The bottom layer: one HTTP request on the wire, and the only module that imports aiohttp's client.

Every layer above speaks `Request` -> `Response` through the one-method `Transport` protocol
(`fetch.wire`, which imports no aiohttp), so tests can swap this layer for a fake and the demo can
point it at `sim/`. aiohttp's exceptions (and timeouts, resets) are translated to `TransportError`
here and nowhere else; messages carry a redacted URL (path and parameter names, never headers,
signatures or long values).

Archive downloads are streamed to a temp file beside the destination in chunks and renamed into
place only when complete, so a reader never sees half a file; a body shorter than its
Content-Length is a `TransportError` (retried), never a short file. A download that stalls (no byte
for the API timeout) is a `TransportError` too; its total time is `Timeouts.archive_total_s`.

Memory stays bounded whatever a server sends: an API answer is read chunk by chunk and refused
(`ResponseTooLarge`) as soon as it passes `MAX_BODY_BYTES`, announced or not, compressed or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from pathlib import Path

import aiohttp
from yarl import URL

from .config import Timeouts
from .errors import ResponseTooLarge, TransportError
from .wire import Closing, Request, Response

CHUNK_BYTES = 1 << 20
MAX_BODY_BYTES = 16 << 20  # Bybit's largest answers (1000 trades, 100 fills) are well under 1 MB


class AiohttpTransport(Closing):
    """One aiohttp session for the whole run, created on first use; timeouts on every request."""

    def __init__(self, timeouts: Timeouts, *, connection_limit: int = 32) -> None:
        self._timeouts = timeouts
        self._connection_limit = connection_limit
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._connection_limit)
            timeout = aiohttp.ClientTimeout(total=self._timeouts.total_s, connect=self._timeouts.connect_s)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self._session

    async def send(self, request: Request) -> Response:
        started = time.monotonic()
        try:
            if request.dest is not None:
                return await self._download(request, request.dest, started)
            return await self._fetch(request, started)
        except (TransportError, ResponseTooLarge):
            raise
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            raise TransportError(_describe(exc, request)) from None

    async def _fetch(self, request: Request, started: float) -> Response:
        session = self._get_session()
        url = URL(request.url, encoded=True)
        async with session.request(request.method, url, headers=dict(request.headers)) as resp:
            body = await _read_capped(resp, request)
            return Response(resp.status, _headers(resp), body, elapsed_s=time.monotonic() - started,
                            size_bytes=len(body))

    async def _download(self, request: Request, dest: Path, started: float) -> Response:
        session = self._get_session()
        timeout = aiohttp.ClientTimeout(total=self._timeouts.archive_total_s,
                                        connect=self._timeouts.connect_s,
                                        sock_read=self._timeouts.total_s)
        headers = {**request.headers, "Accept-Encoding": "identity"}  # keep the .gz bytes as they are
        url = URL(request.url, encoded=True)
        async with session.request(request.method, url, headers=headers, timeout=timeout,
                                   auto_decompress=False) as resp:
            if resp.status != 200:
                body = await _read_capped(resp, request)
                return Response(resp.status, _headers(resp), body, elapsed_s=time.monotonic() - started)
            size = await _stream_to_file(resp, dest, request)
            return Response(resp.status, _headers(resp), b"", path=dest,
                            elapsed_s=time.monotonic() - started, size_bytes=size)


async def _stream_to_file(resp: aiohttp.ClientResponse, dest: Path, request: Request) -> int:
    """Write the body to a temp file beside `dest`, check its length, then rename it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    size = 0
    try:
        with open(tmp, "wb") as out:  # noqa: ASYNC230 (a local temp file; each chunk's write is short)
            async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                out.write(chunk)
                size += len(chunk)
                if request.on_bytes is not None:
                    request.on_bytes(len(chunk))
        expected = resp.content_length
        if expected is not None and size != expected:
            raise TransportError(f"download of {request.redacted_url} ended after {size} of {expected} "
                                 "bytes: the connection was cut (retried)")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return size


async def _read_capped(resp: aiohttp.ClientResponse, request: Request) -> bytes:
    """The body, refused once it passes `MAX_BODY_BYTES` (before buffering more than that)."""
    if resp.content_length is not None and resp.content_length > MAX_BODY_BYTES:
        raise _too_large(request, f"announces {resp.content_length} bytes")
    body = bytearray()
    async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _too_large(request, f"sent more than {MAX_BODY_BYTES} bytes")
    return bytes(body)


def _too_large(request: Request, what: str) -> ResponseTooLarge:
    return ResponseTooLarge(f"the answer of {request.redacted_url} {what}, over the {MAX_BODY_BYTES >> 20} MB "
                            "cap: that is not Bybit's API; check BYBIT_REST_BASE_URL / BYBIT_ARCHIVE_BASE_URL")


def _headers(resp: aiohttp.ClientResponse) -> dict[str, str]:
    return {name.lower(): value for name, value in resp.headers.items()}


def _describe(exc: BaseException, request: Request) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        what = "timed out"
    elif isinstance(exc, aiohttp.ClientPayloadError):
        what = "the answer was cut short"
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        what = "the server closed the connection"
    elif isinstance(exc, (aiohttp.ClientConnectorError, ConnectionRefusedError)):
        what = "could not connect"
    elif isinstance(exc, ConnectionResetError):
        what = "the connection was reset"
    else:
        what = f"failed ({type(exc).__name__})"
    return (f"{request.method} {request.redacted_url} {what}: a network problem (retried); if it "
            "persists check the network and the base URLs")


class WebSocketTransport:
    """One WebSocket connection of text frames (the public trade stream), on its own session.

    Like `AiohttpTransport` for HTTP, the only place aiohttp's WebSocket client is used: every way
    the connection can fail (refused, reset, closed by the server, a send on a dead socket) comes out
    as `TransportError`, so `fetch.ws` speaks Bybit's protocol without knowing aiohttp.
    """

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0, max_frame_bytes: int = 1 << 24) -> None:
        self.url = url
        self._connect_timeout_s = connect_timeout_s
        self._max_frame_bytes = max_frame_bytes
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None,
                                                                            connect=self._connect_timeout_s))
        try:
            self._ws = await self._session.ws_connect(self.url, autoping=True, heartbeat=None,
                                                      max_msg_size=self._max_frame_bytes)
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            await self.close()
            raise TransportError(f"could not open {self.url} ({type(exc).__name__}: {exc})") from None

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError, RuntimeError):
                await self._ws.close()
        if self._session is not None:
            await self._session.close()
        self._ws = self._session = None

    async def send_text(self, text: str) -> None:
        if self._ws is None:
            raise TransportError(f"{self.url}: the connection is not open")
        try:
            await self._ws.send_str(text)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise TransportError(f"{self.url}: sending failed ({type(exc).__name__})") from None

    async def receive_text(self, timeout: float) -> str | None:
        """The next text frame; None when `timeout` seconds passed first (the connection stays open)."""
        if self._ws is None:
            raise TransportError(f"{self.url}: the connection is not open")
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = await self._ws.receive(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return None
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise TransportError(f"{self.url}: the connection failed ({type(exc).__name__})") from None
            if msg.type == aiohttp.WSMsgType.TEXT:
                return str(msg.data)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.ERROR):
                raise TransportError(f"{self.url}: the server closed the connection "
                                     f"({msg.extra or msg.data or msg.type.name})")
