"""Tiny client-side helpers for the sim tests: plain aiohttp plus an independent HMAC signer.

Deliberately not the project's client: these tests pin the emulator's behaviour on their own.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import hmac
import io
import time
from typing import Any

import aiohttp

KEY, SECRET = "test-key", "test-secret"


def hmac_sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def signed_headers(query: str, *, key: str = KEY, secret: str = SECRET, ts_ms: int | None = None,
                   recv_window: str = "5000", sign: str | None = None) -> dict[str, str]:
    ts = str(ts_ms if ts_ms is not None else int(time.time() * 1000))
    return {"X-BAPI-API-KEY": key, "X-BAPI-TIMESTAMP": ts, "X-BAPI-RECV-WINDOW": recv_window,
            "X-BAPI-SIGN": sign if sign is not None else hmac_sign(secret, ts + key + recv_window + query)}


async def signed_get(session: aiohttp.ClientSession, base: str, path: str, query: str,
                     **kw: Any) -> tuple[aiohttp.ClientResponse, dict[str, Any]]:
    """GET `path?query` with the query sent byte for byte as signed (encoded=True: no re-encoding)."""
    from yarl import URL

    url = URL(f"{base}{path}?{query}" if query else f"{base}{path}", encoded=True)
    async with session.get(url, headers=signed_headers(query, **kw)) as resp:
        return resp, await resp.json()


async def get_json(session: aiohttp.ClientSession, url: str, **params: Any) -> tuple[aiohttp.ClientResponse, Any]:
    async with session.get(url, params={k: str(v) for k, v in params.items()}) as resp:
        return resp, await resp.json(content_type=None)


def parse_gz_csv(data: bytes) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a .csv.gz archive file, via stdlib gzip + csv only."""
    reader = csv.reader(io.StringIO(gzip.decompress(data).decode()))
    header = next(reader)
    return header, list(reader)
