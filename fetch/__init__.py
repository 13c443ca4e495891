"""Everything that talks to Bybit: a signed, rate-limited, retrying client and three trade sources.

Knows nothing of DuckDB and never reads the environment: build a `FetchConfig` and go::

    async with BybitClient(FetchConfig()) as client:
        tail = await RecentTradeSource(client).fetch("linear", "BTCUSDT")
        days = await ArchiveSource(client, work_dir).list_days("linear", "BTCUSDT")
"""

from .archive import ArchiveFile, ArchiveSource, archive_path
from .breaker import BreakerState, CircuitBreaker
from .client import BybitClient, ClientStats
from .config import BreakerPolicy, Credentials, Endpoints, FetchConfig, RateLimits, RetryPolicy, Timeouts
from .errors import (ArchiveError, AuthError, BackfillError, BadResponse, CircuitOpen, ClockSkew,
                     ExchangeError, InputError, IpBanned, ParameterError, RateLimited, ServerError,
                     Terminal, Transient, TransportError)
from .executions import ExecutionSource, Window, plan_windows
from .models import TRADE_SCHEMA, Category, Execution, LimitStatus, RecentTail, Source, Trade, trades_to_table
from .parse import archive_rows, read_archive
from .rest import RecentTradeSource

__all__ = [
    "ArchiveError", "ArchiveFile", "ArchiveSource", "AuthError", "BackfillError", "BadResponse",
    "BreakerPolicy", "BreakerState", "BybitClient", "Category", "CircuitBreaker", "CircuitOpen",
    "ClientStats", "ClockSkew", "Credentials", "Endpoints", "ExchangeError", "Execution",
    "ExecutionSource", "FetchConfig", "InputError", "IpBanned", "LimitStatus", "ParameterError",
    "RateLimited", "RateLimits", "RecentTail", "RecentTradeSource", "RetryPolicy", "ServerError",
    "Source", "TRADE_SCHEMA", "Terminal", "Timeouts", "Trade", "Transient", "TransportError", "Window",
    "archive_path", "archive_rows", "plan_windows", "read_archive", "trades_to_table",
]
