"""Bybit v5 request signing, as pure functions.

Bybit checks the HMAC over the query string *exactly as it arrives*, so the one rule here is: build
the query string once (`build_query`), sign that string, and send that very string. Nothing in this
module reads a clock or the environment; the caller passes the timestamp (local clock plus the
offset learned from /v5/market/time).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote

# Values of these parameters come from Bybit already URL-encoded (nextPageCursor) and are sent verbatim.
VERBATIM_PARAMS = frozenset({"cursor"})

API_KEY_HEADER = "X-BAPI-API-KEY"
TIMESTAMP_HEADER = "X-BAPI-TIMESTAMP"
SIGN_HEADER = "X-BAPI-SIGN"
RECV_WINDOW_HEADER = "X-BAPI-RECV-WINDOW"

ParamValue = str | int | float | bool | None


def sign(secret: str, api_key: str, timestamp_ms: int, recv_window: int, payload: str) -> str:
    """Lower-case hex HMAC-SHA256 of `timestamp + api_key + recv_window + payload`."""
    message = f"{timestamp_ms}{api_key}{recv_window}{payload}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def auth_headers(api_key: str, secret: str, timestamp_ms: int, recv_window: int,
                 payload: str) -> dict[str, str]:
    """The four X-BAPI-* headers that authenticate one request whose query string is `payload`."""
    return {
        API_KEY_HEADER: api_key,
        TIMESTAMP_HEADER: str(timestamp_ms),
        SIGN_HEADER: sign(secret, api_key, timestamp_ms, recv_window, payload),
        RECV_WINDOW_HEADER: str(recv_window),
    }


def build_query(params: Mapping[str, ParamValue]) -> str:
    """The query string to sign and send: insertion order, None dropped, values percent-encoded.

    Values of `VERBATIM_PARAMS` (the cursor) are already encoded by Bybit and are passed through
    untouched; re-encoding them would change the bytes the server signs against.
    """
    parts = []
    for key, value in params.items():
        if value is None:
            continue
        text = _format_value(value)
        if key not in VERBATIM_PARAMS:
            text = quote(text, safe="-_.~")
        parts.append(f"{quote(key, safe='-_.~')}={text}")
    return "&".join(parts)


def _format_value(value: str | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
