"""Bybit v5 request authentication, checked the way the exchange does it.

Written independently of `fetch.signing` on purpose: the emulator is the referee, so a shared bug
cannot make both sides agree. The signature covers the query string *exactly as sent* (its order,
its percent-encoding), so callers must pass the raw bytes of the request line, never a re-encoded
dict.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

RET_TIMESTAMP, RET_API_KEY, RET_SIGN = 10002, 10003, 10004


@dataclass(frozen=True)
class AuthFailure:
    ret_code: int
    ret_msg: str


def sign(secret: str, payload: str) -> str:
    """HMAC-SHA256 of `payload` with `secret`, lower-case hex."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def verify(headers: Mapping[str, str], raw_query: str, api_keys: Mapping[str, str], server_ms: int,
           recv_window_default: int) -> AuthFailure | None:
    """None if the GET request is properly signed, else the retCode Bybit answers with.

    Order of checks: key (10003), then time window (10002), then signature (10004), so a client
    with a drifting clock learns about its clock, not about a "bad signature".
    """
    api_key = headers.get("X-BAPI-API-KEY", "")
    secret = api_keys.get(api_key) if api_key else None
    if secret is None:
        return AuthFailure(RET_API_KEY, "API key is invalid.")
    ts_raw = headers.get("X-BAPI-TIMESTAMP", "")
    recv_raw = headers.get("X-BAPI-RECV-WINDOW", "")
    try:
        ts = int(ts_raw)
        recv_window = int(recv_raw) if recv_raw else recv_window_default
    except ValueError:
        return AuthFailure(RET_TIMESTAMP, f"invalid request, timestamp or recv_window is not an integer: "
                                          f"req_timestamp[{ts_raw}], recv_window[{recv_raw}]")
    if not server_ms - recv_window <= ts < server_ms + 1000:
        return AuthFailure(RET_TIMESTAMP, "invalid request, please check your server timestamp or recv_window "
                                          f"param. req_timestamp[{ts}],server_timestamp[{server_ms}],"
                                          f"recv_window[{recv_window}]")
    origin = f"{ts_raw}{api_key}{recv_raw}{raw_query}"
    given = headers.get("X-BAPI-SIGN", "")
    if not hmac.compare_digest(given.encode(), sign(secret, origin).encode()):
        return AuthFailure(RET_SIGN, f"error sign! origin_string[{origin}]")
    return None
