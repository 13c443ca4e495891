"""Pure parsing: Bybit's bytes and dicts in, our models (or one of our errors) out.

Everything here is a function of its arguments (no I/O except reading the archive file it is handed),
so every format Bybit has used can be pinned by a unit test. Two rules run through it:

* a non-zero retCode is an error even when it carries an empty `list`: it never means "no trades";
* whatever cannot be read becomes `BadResponse` (JSON) or `ArchiveError` (archive CSV) here, at the
  boundary, so no caller ever sees a KeyError, a json error or a pyarrow exception.

The archive CSV reader lives in `fetch.archive_csv` (it is the one hot path) and is re-exported here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from .archive_csv import ArchiveFormat, archive_rows, read_archive, sniff_header
from .errors import BadResponse, error_for
from .market_span import Category, Market
from .models import Execution, Source, Trade

__all__ = [
    "ArchiveFormat", "Envelope", "ExecutionPage", "archive_rows", "check_envelope",
    "parse_archive_index", "parse_envelope", "parse_execution_page",
    "parse_recent_trades", "parse_server_time_ms", "read_archive", "sniff_header", "unwrap",
]


# --- the retCode envelope -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Envelope:
    """Bybit's `{"retCode", "retMsg", "result", "time"}` wrapper, with types normalized."""

    ret_code: int
    ret_msg: str
    result: dict[str, Any]
    time_ms: int | None


def parse_envelope(body: bytes | str, *, endpoint: str = "") -> Envelope:
    """Decode the JSON envelope; `retCode` and `time` may be strings or numbers on the wire."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadResponse(f"Bybit sent a non-JSON answer{_on(endpoint)} ({_snippet(body)}): retried; "
                          "if it persists, check BYBIT_REST_BASE_URL points at Bybit's v5 API") from exc
    if not isinstance(data, dict) or "retCode" not in data:
        raise BadResponse(f"Bybit's answer{_on(endpoint)} has no retCode ({_snippet(body)}): "
                          "check BYBIT_REST_BASE_URL points at the v5 API")
    ret_code = _as_int(data["retCode"], "retCode", endpoint)
    result = data.get("result")
    if result is None or result == []:
        result = {}
    if not isinstance(result, dict):
        raise BadResponse(f"Bybit's `result`{_on(endpoint)} is not an object ({_snippet(body)})")
    time_ms = None if data.get("time") in (None, "") else _as_int(data["time"], "time", endpoint)
    return Envelope(ret_code, str(data.get("retMsg") or ""), result, time_ms)


def check_envelope(envelope: Envelope, *, endpoint: str = "",
                   reset_at_ms: int | None = None) -> dict[str, Any]:
    """The `result` of a successful envelope; the matching `ExchangeError` for any other retCode."""
    if envelope.ret_code != 0:
        raise error_for(envelope.ret_code, envelope.ret_msg, endpoint=endpoint, reset_at_ms=reset_at_ms)
    return envelope.result


def unwrap(body: bytes | str, *, endpoint: str = "", reset_at_ms: int | None = None) -> dict[str, Any]:
    """`parse_envelope` then `check_envelope`: bytes in, `result` out, or an error."""
    return check_envelope(parse_envelope(body, endpoint=endpoint), endpoint=endpoint,
                          reset_at_ms=reset_at_ms)


def parse_server_time_ms(envelope: Envelope) -> int:
    """Server time in ms from /v5/market/time: `timeNano`, else `timeSecond`, else top-level `time`."""
    result = envelope.result
    if result.get("timeNano") not in (None, ""):
        return _as_int(result["timeNano"], "timeNano", "/v5/market/time") // 1_000_000
    if result.get("timeSecond") not in (None, ""):
        return _as_int(result["timeSecond"], "timeSecond", "/v5/market/time") * 1000
    if envelope.time_ms is not None:
        return envelope.time_ms
    raise BadResponse("/v5/market/time answered without any time field")


# --- recent-trade ---------------------------------------------------------------------------------

def parse_recent_trades(result: Mapping[str, Any], *, market: Market) -> list[Trade]:
    """recent-trade rows -> `Trade`s (source 'rest'), in the order received.

    `side` is the taker side; price, size and time are strings; `isBlockTrade` is optional (None when
    absent); `execId` is a UUID (derivatives) or a long numeric string (spot) and is kept verbatim.
    """
    rows = _rows(result, "/v5/market/recent-trade")
    return [_trade(row, market) for row in rows]


def _trade(row: Any, market: Market) -> Trade:
    where = "/v5/market/recent-trade"
    if not isinstance(row, dict):
        raise BadResponse(f"a recent-trade row is not an object: {_snippet(repr(row))}")
    return Trade(
        category=market.category,
        symbol=str(row.get("symbol") or market.symbol),
        trade_id=_required_str(row, "execId", where),
        time_us=_as_int(_required(row, "time", where), "time", where) * 1000,
        price=_as_float(_required(row, "price", where), "price", where),
        qty=_as_float(_required(row, "size", where), "size", where),
        side=_side(_required(row, "side", where), where),
        is_block_trade=_optional_bool(row.get("isBlockTrade")),
        source=Source.REST.value,
    )


# --- execution/list -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ExecutionPage:
    """One page of /v5/execution/list; `next_cursor` is '' on the last page (sent back verbatim)."""

    executions: tuple[Execution, ...]
    next_cursor: str


def parse_execution_page(result: Mapping[str, Any], *, category: Category) -> ExecutionPage:
    """execution/list `result` -> fills and the (already URL-encoded) nextPageCursor."""
    rows = _rows(result, "/v5/execution/list")
    executions = tuple(_execution(row, category) for row in rows)
    cursor = result.get("nextPageCursor")
    return ExecutionPage(executions, "" if cursor is None else str(cursor))


def _execution(row: Any, category: Category) -> Execution:
    where = "/v5/execution/list"
    if not isinstance(row, dict):
        raise BadResponse(f"an execution row is not an object: {_snippet(repr(row))}")
    return Execution(
        category=category,
        symbol=_required_str(row, "symbol", where),
        exec_id=_required_str(row, "execId", where),
        order_id=str(row.get("orderId") or ""),
        exec_type=str(row.get("execType") or "Trade"),
        time_us=_as_int(_required(row, "execTime", where), "execTime", where) * 1000,
        price=_as_float(_required(row, "execPrice", where), "execPrice", where),
        qty=_as_float(_required(row, "execQty", where), "execQty", where),
        side=_side(_required(row, "side", where), where),
        fee=_as_float(row.get("execFee") or 0, "execFee", where),
        fee_currency=str(row.get("feeCurrency") or ""),
        is_maker=bool(_optional_bool(row.get("isMaker"))),
    )


# --- archive index and rate-limit headers ---------------------------------------------------------

_INDEX_HREF = re.compile(r"""href\s*=\s*["']?([^"'>\s]*?)(\d{4}-\d{2}-\d{2})\.csv\.gz["'>\s]""",
                         re.IGNORECASE)


def parse_archive_index(html: str, symbol: str | None = None) -> list[date]:
    """The days listed in an archive folder's HTML index, ascending and unique.

    Only daily files count (`{S}2024-01-02.csv.gz`, `{S}_2024-01-02.csv.gz`); with `symbol` given,
    links to other symbols' files are ignored.
    """
    days = set()
    for match in _INDEX_HREF.finditer(html):
        prefix, text = match.group(1).rsplit("/", 1)[-1], match.group(2)
        if symbol is not None and prefix.rstrip("_") != symbol:
            continue
        try:
            days.add(date.fromisoformat(text))
        except ValueError:
            continue
    return sorted(days)


# --- small helpers --------------------------------------------------------------------------------

def _rows(result: Mapping[str, Any], endpoint: str) -> list[Any]:
    rows = result.get("list")
    if rows is None:
        raise BadResponse(f"{endpoint} answered without result.list")
    if not isinstance(rows, list):
        raise BadResponse(f"{endpoint} result.list is not a list")
    return rows


def _required(row: Mapping[str, Any], key: str, endpoint: str) -> Any:
    value = row.get(key)
    if value is None or value == "":
        raise BadResponse(f"{endpoint} row without `{key}`: {_snippet(json.dumps(row))}")
    return value


def _required_str(row: Mapping[str, Any], key: str, endpoint: str) -> str:
    return str(_required(row, key, endpoint))


def _as_int(value: Any, field: str, endpoint: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    raise BadResponse(f"`{field}`{_on(endpoint)} is not an integer: {_snippet(repr(value))}")


def _as_float(value: Any, field: str, endpoint: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadResponse(f"`{field}`{_on(endpoint)} is not a number: {_snippet(repr(value))}") from None
    if not math.isfinite(number):
        raise BadResponse(f"`{field}`{_on(endpoint)} is not a finite number: {value!r}")
    return number


def _side(value: Any, endpoint: str) -> str:
    side = str(value).lower()
    if side not in ("buy", "sell"):
        raise BadResponse(f"`side`{_on(endpoint)} is neither Buy nor Sell: {_snippet(repr(value))}")
    return side


def _optional_bool(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value)


def _on(endpoint: str) -> str:
    return f" on {endpoint}" if endpoint else ""


def _snippet(body: bytes | str, size: int = 120) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text if len(text) <= size else text[:size] + "…"

