"""Turn a raw `Response` into either a checked response or the one error that says what happened.

This is where HTTP statuses and Bybit's retCode envelope become our exceptions, just above the
wire, so the retry layer and the breaker see every attempt's real outcome. The retCode mapping
itself is `fetch.errors.error_for`; this module only decides which of status or body speaks.
"""

from __future__ import annotations

import dataclasses

from .errors import BadResponse, ExchangeError, RateLimited, error_for_status
from .parse import check_envelope, parse_envelope
from .wire import Request, Response, Transport, parse_limit_headers

# Statuses that are errors whatever the body says (the body of a 403 ban is not JSON anyway).
_STATUS_FIRST = frozenset({401, 403, 429})


def check_response(request: Request, response: Response) -> Response:
    """The response with `result` filled in (API) or as is (archive 200/404); otherwise raise."""
    if request.kind == "archive":
        return _check_archive(request, response)
    endpoint = request.endpoint or request.path
    reset_at_ms = parse_limit_headers(response.headers).reset_at_ms
    status = response.status
    if status in _STATUS_FIRST or status >= 500:
        raise _status_error(status, endpoint, reset_at_ms)
    try:
        envelope = parse_envelope(response.body, endpoint=endpoint)
    except BadResponse:
        if status != 200:
            raise _status_error(status, endpoint, reset_at_ms) from None
        raise
    result = check_envelope(envelope, endpoint=endpoint, reset_at_ms=reset_at_ms)
    if status != 200:
        raise _status_error(status, endpoint, reset_at_ms)
    return dataclasses.replace(response, result=result)


def _check_archive(request: Request, response: Response) -> Response:
    if response.status in (200, 404):
        return response
    raise _status_error(response.status, request.redacted_url, None)


def _status_error(status: int, endpoint: str, reset_at_ms: int | None) -> ExchangeError:
    error = error_for_status(status, endpoint=endpoint)
    if error is None:
        return ExchangeError(f"HTTP {status} on {endpoint}: unexpected status", status=status,
                             endpoint=endpoint)
    if isinstance(error, RateLimited):
        error.reset_at_ms = reset_at_ms
    return error


class CheckLayer:
    """Applies `check_response` to every answer of the layer below."""

    def __init__(self, inner: Transport) -> None:
        self._inner = inner

    async def send(self, request: Request) -> Response:
        return check_response(request, await self._inner.send(request))
