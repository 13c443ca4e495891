"""Signing is a pure function of (secret, key, timestamp, recv_window, exact query string)."""

from __future__ import annotations

import hashlib
import hmac

from fetch.signing import auth_headers, build_query, sign

KEY, SECRET = "XXXXXXXXXX", "YYYYYYYYYY"
TS, RECV = 1658384314791, 5000
QUERY = "category=option&symbol=BTC-29JUL22-25000-C"


def test_signature_matches_an_independent_hmac_of_timestamp_key_window_and_query() -> None:
    expected = hmac.new(SECRET.encode(), f"{TS}{KEY}{RECV}{QUERY}".encode(), hashlib.sha256).hexdigest()
    assert sign(SECRET, KEY, TS, RECV, QUERY) == expected


def test_signature_matches_a_hard_coded_vector() -> None:
    assert sign(SECRET, KEY, TS, RECV, QUERY) == (
        "37813c67fafb3017e92354eb88f218e7e52a98f9f5eb74cfcf0b21f17edb143b")


def test_signature_is_lower_case_hex_of_64_chars() -> None:
    digest = sign(SECRET, KEY, TS, RECV, "")
    assert len(digest) == 64 and digest == digest.lower()
    int(digest, 16)


def test_auth_headers_carry_key_timestamp_window_and_signature() -> None:
    headers = auth_headers(KEY, SECRET, TS, RECV, QUERY)
    assert headers == {
        "X-BAPI-API-KEY": KEY,
        "X-BAPI-TIMESTAMP": str(TS),
        "X-BAPI-SIGN": sign(SECRET, KEY, TS, RECV, QUERY),
        "X-BAPI-RECV-WINDOW": str(RECV),
    }
    assert SECRET not in repr(headers)


def test_query_keeps_insertion_order_and_drops_none() -> None:
    assert build_query({"category": "linear", "symbol": "BTCUSDT", "cursor": None, "limit": 100}) == (
        "category=linear&symbol=BTCUSDT&limit=100")


def test_query_encodes_ordinary_values_but_sends_the_cursor_verbatim() -> None:
    cursor = "page_token%3D9a1f%26prev%3Dfalse"
    query = build_query({"symbol": "BTC-29JUL22 C/x", "cursor": cursor, "flag": True})
    assert query == f"symbol=BTC-29JUL22%20C%2Fx&cursor={cursor}&flag=true"
