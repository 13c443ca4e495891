"""The emulator as an aiohttp application: routes plus one middleware for everything cross-cutting.

Per request, the middleware: counts it; waits the configured and injected latency; enforces the IP
limit and ban on `/v5/` paths; lets a registered fault answer instead of the handler; enforces the
per-endpoint limit (10006) and stamps the `X-Bapi-Limit*` headers; and logs (path, query, status).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import hdrs, web

from .config import SimConfig
from .faults import Fault, RequestInfo
from .handlers import add_routes, envelope
from .state import FILE_PATH_KEY, MIX_KEY, STATE_KEY, SimState, raw_query, request_info
from .ws import add_ws_routes

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TERMINAL_KINDS = ("http_500", "http_502", "http_503", "ret_10016", "ret_10006", "ret_10001_empty",
                  "drop", "stall", "huge_json", "malformed_json", "http_403")
_STREAMING_KINDS = ("drop", "stall", "huge_json")
log = logging.getLogger("sim")
_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Temporarily Unavailable"}
_BROKEN_JSON = b'{"retCode":0,"retMsg":"OK","result":{"category":"linear","list":[{"execId":'


def forbidden(state: SimState) -> web.Response:
    """Bybit's IP-ban answer: HTTP 403 with a plain-text body."""
    state.forbidden += 1
    return web.Response(status=403, text="access too frequent", content_type="text/plain")


def fault_response(state: SimState, fault: Fault, info: RequestInfo) -> web.Response:
    """The answer an injected (non-`drop`) fault gives instead of the handler's."""
    kind = fault.kind
    if kind.startswith("http_5"):
        status = int(kind[5:])
        html = f"<html><head><title>{status} {_REASONS[status]}</title></head><body></body></html>"
        return web.Response(status=status, text=html, content_type="text/html")
    if kind == "http_403":
        if info.path.startswith("/v5/"):
            state.ip.ban()
            state.bans += 1
        return forbidden(state)
    if kind == "malformed_json":
        return web.Response(status=200, body=_BROKEN_JSON, content_type="application/json")
    if kind == "ret_10016":
        return envelope(state, 10016, "Internal server error.", {})
    if kind == "ret_10001_empty":
        return envelope(state, 10001, "params error: symbol invalid", {"category": "", "list": []})
    state.rate_limited += 1  # ret_10006
    limit = state.config.endpoint_limits.get(info.path, state.config.ip_limit)
    reset_ms = int(state.clock() * 1000 + fault.amount)
    headers = {"X-Bapi-Limit": str(limit), "X-Bapi-Limit-Status": "0", "X-Bapi-Limit-Reset-Timestamp": str(reset_ms)}
    return envelope(state, 10006, "Too many visits!", {}, headers=headers)


async def huge_json(request: web.Request, size: int) -> web.StreamResponse:
    """A well-formed JSON answer of `size` bytes, chunked (no Content-Length): only a reader that
    counts what it buffers stops it."""
    stream = web.StreamResponse(status=200)
    stream.content_type = "application/json"
    await stream.prepare(request)
    head, tail = b'{"retCode":0,"retMsg":"OK","result":{"list":[],"pad":"', b'"}}'
    await stream.write(head)
    chunk, left = b"x" * (1 << 20), size - len(head) - len(tail)
    while left > 0:
        await stream.write(chunk[: min(left, len(chunk))])
        left -= len(chunk)
    await stream.write(tail)
    await stream.write_eof()
    return stream


async def drop_connection(request: web.Request, response: web.StreamResponse,
                          stall_s: float = 0.0) -> web.StreamResponse:
    """Send the headers and half the body, then close the socket: a transfer cut mid-way; with
    `stall_s`, stay silent that long instead (the connection open), then close it."""
    path: Path | None = request.get(FILE_PATH_KEY)
    if isinstance(response, web.FileResponse) and path is not None:
        body = await asyncio.to_thread(path.read_bytes)
    else:
        body = bytes(getattr(response, "body", None) or b"")
    skip = {hdrs.CONTENT_LENGTH, hdrs.TRANSFER_ENCODING, hdrs.CONTENT_TYPE}
    stream = web.StreamResponse(status=response.status,
                                headers={k: v for k, v in response.headers.items() if k not in skip})
    stream.content_type = response.content_type
    stream.content_length = len(body)
    await stream.prepare(request)
    await stream.write(body[: len(body) // 2])
    waited = 0.0
    while waited < stall_s and request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(0.05)  # until the client gives up on it (or the stall ends)
        waited += 0.05
    if request.transport is not None:
        request.transport.close()  # flushes what was written, then closes: the client sees EOF early
    return stream


async def _respond(request: web.Request, handler: Handler, state: SimState, info: RequestInfo,
                   mix: list[Fault]) -> web.StreamResponse:
    delay = state.config.latency_ms + sum(f.amount for f in state.faults.take(info, ("latency",), extra=mix))
    if delay > 0:
        await asyncio.sleep(delay / 1000)
    v5 = info.path.startswith("/v5/")
    if v5:
        verdict = state.ip.check()
        if not verdict.allowed:
            state.bans += int(verdict.ban_started)
            return forbidden(state)
    hits = state.faults.take(info, TERMINAL_KINDS, first_only=True, extra=mix)
    fault = hits[0] if hits else None
    if fault is not None and fault.kind == "huge_json":
        return await huge_json(request, int(fault.amount))
    if fault is not None and fault.kind not in _STREAMING_KINDS:
        return fault_response(state, fault, info)
    limit = state.endpoints.hit(info.path, request.headers.get("X-BAPI-API-KEY", "")) if v5 else None
    if limit is not None and not limit.allowed:
        state.rate_limited += 1
        return envelope(state, 10006, "Too many visits!", {}, headers=limit.headers())
    response = await handler(request)
    if limit is not None:
        response.headers.update(limit.headers())
    if fault is not None:
        return await drop_connection(request, response, fault.amount if fault.kind == "stall" else 0.0)
    return response


@web.middleware
async def sim_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    began = time.perf_counter()
    info = request_info(request)
    state.count(info)
    mix = state.faults.roll(info)
    request[MIX_KEY] = mix
    try:
        response = await _respond(request, handler, state, info, mix)
    except web.HTTPException as exc:  # router misses (unknown paths) and the like
        state.log.append((request.path, raw_query(request), exc.status))
        _log_request(request, exc.status, began, mix)
        raise
    state.log.append((request.path, raw_query(request), response.status))
    _log_request(request, response.status, began, mix)
    return response


def _log_request(request: web.Request, status: int, began: float, mix: list[Fault]) -> None:
    """One DEBUG line per request on the `sim` logger (`bybit-backfill sim -v` shows them)."""
    if log.isEnabledFor(logging.DEBUG):
        query = f"?{request.query_string}" if request.query_string else ""
        faults = f" fault: {', '.join(f.kind for f in mix)}" if mix else ""
        log.debug("%s %s%s -> %d in %.1f ms%s", request.method, request.path, query, status,
                  (time.perf_counter() - began) * 1000, faults)


def create_app(config: SimConfig | None = None, state: SimState | None = None) -> web.Application:
    """A fresh emulator app; pass `state` to share counters/faults or inject a clock."""
    config = config if config is not None else (state.config if state is not None else SimConfig())
    state = state if state is not None else SimState(config)
    app = web.Application(middlewares=[sim_middleware])
    app[STATE_KEY] = state
    add_routes(app)
    add_ws_routes(app)
    return app
