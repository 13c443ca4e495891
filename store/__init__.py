"""The DuckDB store: schema, ingest with SQL dedup, coverage and gaps, refresh, export, history API."""

from store.coverage import Gap, find_gaps
from store.db import Store
from store.errors import ExportError, NotADatabase, StoreError, StoreLocked
from store.executions import ExecutionsSummary, refresh_executions
from store.export import CACHE_SCHEMA, cache_path, export_days
from store.history import BybitConnectorHistory, TradeTick, create_history_provider, read_cache, tick_id
from store.plan import resolve_range
from store.refresh import Progress, RefreshSummary, refresh
from store.settings import Settings

__all__ = [
    "BybitConnectorHistory", "CACHE_SCHEMA", "ExecutionsSummary", "ExportError", "Gap", "NotADatabase",
    "Progress", "RefreshSummary", "Settings", "Store", "StoreError", "StoreLocked", "TradeTick",
    "cache_path", "create_history_provider", "export_days", "find_gaps", "read_cache", "refresh",
    "refresh_executions", "resolve_range", "tick_id",
]
