"""The context service's own settings object, read as ours.

The service constructs `BybitConnectorHistory(settings)` with *its* settings: a plain dataclass whose
attributes are the seed guide's variables lower-cased (`bybit_api_key`, `backfill_cache_dir`, ...,
plus `symbol` and many fields of its own), with plain-string secrets. It has no attribute for our
DuckDB path, archive URL or WebSocket URL. So: every attribute whose name is one of our settings is
taken from the object (and validated as ours), `symbol` names the symbol, and whatever the object
lacks or leaves `None` comes from our environment (`BACKFILL_DB_PATH`, `BYBIT_ARCHIVE_BASE_URL`, ...).
Secrets are wrapped in `SecretStr` at once, so no repr or log line shows them.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from fetch.errors import InputError
from store.settings import Settings

# The service's names that are not ours, and the setting each one means.
_ALIASES = {"symbol": "bybit_symbol", "category": "bybit_category"}


def settings_from(source: Any) -> Settings:
    """Our `Settings` from ours, from None (the environment), or from any object with our names."""
    if isinstance(source, Settings):
        return source
    if source is None:
        return _validated({})
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(source, name, None)
        if value is not None:
            values[name] = value
    for theirs, ours in _ALIASES.items():
        value = getattr(source, theirs, None)
        if value is not None and ours not in values:
            values[ours] = value
    return _validated(values)


def _validated(values: dict[str, Any]) -> Settings:
    try:
        return Settings(**values)
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]) if first.get("loc") else "settings"
        raise InputError(f"setting {name} ({name.upper()}) is invalid: {first['msg']}; fix it in the "
                         "service's settings or the environment") from None
