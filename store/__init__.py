"""The DuckDB store: schema, ingest with SQL dedup, coverage and gaps, refresh, export, history API."""

# Importing the package is cheap: each public name is imported from its submodule on first access
# (PEP 562), so read-only users (`store.db`, `store.report`) never load the refresh machinery or the
# fetch client. The `TYPE_CHECKING` imports show mypy and IDEs the same names eagerly.

from __future__ import annotations

from typing import TYPE_CHECKING

from fetch._lazy import lazy_names

if TYPE_CHECKING:
    from store.cache_dir import cache_path
    from store.coverage import Gap, find_gaps
    from store.db import Store
    from store.errors import ExportError, NotADatabase, StoreError, StoreLocked
    from store.executions import ExecutionsSummary, refresh_executions
    from store.export import CACHE_SCHEMA, export_days
    from store.history import BybitConnectorHistory, TradeTick, create_history_provider, read_cache
    from store.orchestrator import refresh
    from store.refresh_summary import Progress, RefreshSummary
    from store.schema import open_store
    from store.settings import Settings
    from store.tick_ids import tick_id
    from store.timerange import resolve_range

__all__ = [
    "CACHE_SCHEMA", "BybitConnectorHistory", "ExecutionsSummary", "ExportError", "Gap", "NotADatabase",
    "Progress", "RefreshSummary", "Settings", "Store", "StoreError", "StoreLocked", "TradeTick",
    "cache_path", "create_history_provider", "export_days", "find_gaps", "open_store", "read_cache",
    "refresh", "refresh_executions", "resolve_range", "tick_id",
]

_EXPORTS = {
    "cache_dir": ("cache_path",),
    "coverage": ("Gap", "find_gaps"),
    "db": ("Store",),
    "errors": ("ExportError", "NotADatabase", "StoreError", "StoreLocked"),
    "executions": ("ExecutionsSummary", "refresh_executions"),
    "export": ("CACHE_SCHEMA", "export_days"),
    "history": ("BybitConnectorHistory", "TradeTick", "create_history_provider", "read_cache"),
    "orchestrator": ("refresh",),
    "refresh_summary": ("Progress", "RefreshSummary"),
    "schema": ("open_store",),
    "settings": ("Settings",),
    "tick_ids": ("tick_id",),
    "timerange": ("resolve_range",),
}
__getattr__, __dir__ = lazy_names(__name__, _EXPORTS, globals())

