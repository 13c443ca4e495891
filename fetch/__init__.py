"""Everything that talks to Bybit: a signed, rate-limited, retrying client and three trade sources.

Knows nothing of DuckDB and never reads the environment: build a `FetchConfig` and go::

    async with BybitClient(FetchConfig()) as client:
        market = Market("linear", "BTCUSDT")
        tail = await RecentTradeSource(client).fetch(market)
        days = await ArchiveSource(client, work_dir).list_days(market)
"""

# Importing the package is cheap: each public name is imported from its submodule on first access
# (PEP 562), so `from fetch.errors import InputError` or `fetch.config` never loads the client and
# its HTTP stack. The `TYPE_CHECKING` imports show mypy and IDEs the same names eagerly.

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_names

if TYPE_CHECKING:
    from .archive import ArchiveFile, ArchiveSource, archive_path
    from .breaker import BreakerState, CircuitBreaker
    from .client import BybitClient, ClientStats
    from .config import BreakerPolicy, Credentials, Endpoints, FetchConfig, RateLimits, RetryPolicy, Timeouts
    from .errors import (
        ArchiveError,
        AuthError,
        BackfillError,
        BadResponse,
        CircuitOpen,
        ClockSkew,
        ExchangeError,
        InputError,
        IpBanned,
        ParameterError,
        RateLimited,
        ServerError,
        Terminal,
        Transient,
        TransportError,
    )
    from .executions import ExecutionSource, Window, plan_windows
    from .market_span import CATEGORIES, Category, Market, Span
    from .models import TRADE_SCHEMA, Execution, RecentTail, Source, Trade, trades_to_table
    from .parse import archive_rows, read_archive
    from .rest import RecentTradeSource
    from .wire import LimitStatus

__all__ = [
    "CATEGORIES", "TRADE_SCHEMA", "ArchiveError", "ArchiveFile", "ArchiveSource", "AuthError", "BackfillError",
    "BadResponse", "BreakerPolicy", "BreakerState", "BybitClient", "Category", "CircuitBreaker",
    "CircuitOpen", "ClientStats", "ClockSkew", "Credentials", "Endpoints", "ExchangeError", "Execution",
    "ExecutionSource", "FetchConfig", "InputError", "IpBanned", "LimitStatus", "Market", "ParameterError",
    "RateLimited", "RateLimits", "RecentTail", "RecentTradeSource", "RetryPolicy", "ServerError",
    "Source", "Span", "Terminal", "Timeouts", "Trade", "Transient", "TransportError", "Window", "archive_path",
    "archive_rows", "plan_windows", "read_archive", "trades_to_table",
]

_EXPORTS = {
    "archive": ("ArchiveFile", "ArchiveSource", "archive_path"),
    "breaker": ("BreakerState", "CircuitBreaker"),
    "client": ("BybitClient", "ClientStats"),
    "config": ("BreakerPolicy", "Credentials", "Endpoints", "FetchConfig", "RateLimits", "RetryPolicy",
               "Timeouts"),
    "errors": ("ArchiveError", "AuthError", "BackfillError", "BadResponse", "CircuitOpen", "ClockSkew",
               "ExchangeError", "InputError", "IpBanned", "ParameterError", "RateLimited", "ServerError",
               "Terminal", "Transient", "TransportError"),
    "executions": ("ExecutionSource", "Window", "plan_windows"),
    "market_span": ("CATEGORIES", "Category", "Market", "Span"),
    "models": ("TRADE_SCHEMA", "Execution", "RecentTail", "Source", "Trade", "trades_to_table"),
    "parse": ("archive_rows", "read_archive"),
    "rest": ("RecentTradeSource",),
    "wire": ("LimitStatus",),
}
__getattr__, __dir__ = lazy_names(__name__, _EXPORTS, globals())
