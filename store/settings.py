"""Configuration, read once at the edge (CLI or `BybitConnectorHistory`) from env and `.env`.

Field names are the environment variable names of the seed guide, lower-cased, so
`BYBIT_API_TIMEOUT=10` and `Settings(bybit_api_timeout=10)` mean the same. `fetch/` never sees this
class: `fetch_config()` turns it into the frozen value objects the fetch layer takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fetch.config import BreakerPolicy, Credentials, Endpoints, FetchConfig, RateLimits, RetryPolicy, Timeouts
from fetch.errors import InputError
from fetch.market_span import Category

_SECRET_FIELDS = frozenset({"bybit_api_key", "bybit_api_secret"})


class Settings(BaseSettings):
    """Every knob of the tool; secrets are `SecretStr`, so no repr, log or error shows them."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      case_sensitive=False, allow_inf_nan=False)

    def __init__(self, *args: Any, **values: Any) -> None:
        """pydantic's ValidationError is a multi-line report with a link: the CLI and the Python API
        both get our `InputError` instead, one line naming the variable (never a secret's value)."""
        try:
            super().__init__(*args, **values)
        except ValidationError as error:
            raise InputError(_describe(error)) from None

    data_source: str = Field("bybit", description="Trade history provider; this package serves 'bybit'.")
    bybit_api_key: SecretStr = Field(SecretStr(""), description="API key; only /v5/execution/list needs it.")
    bybit_api_secret: SecretStr = Field(SecretStr(""), description="API secret (never printed or logged).")
    bybit_rest_base_url: str = Field("https://api.bybit.com", description="REST API base URL.")
    bybit_archive_base_url: str = Field("https://public.bybit.com", description="Daily archive base URL.")
    bybit_ws_base_url: str = Field("wss://stream.bybit.com",
                                   description="WebSocket base URL of `follow` (the emulator: ws://127.0.0.1:PORT).")
    bybit_api_timeout: float = Field(30.0, gt=0, le=3600, description=(
        "Seconds before one API request times out; also how long a download may stall."))
    bybit_archive_timeout: float = Field(600.0, gt=0, le=86400,
                                         description="Seconds one archive day file may take to download.")
    bybit_recv_window_ms: int = Field(5000, gt=0, description="recv_window of signed requests, in ms.")
    bybit_backfill_max_retries: int = Field(5, ge=0, le=100, description="Retries of a transient failure.")
    bybit_backfill_retry_base: float = Field(0.5, gt=0, description="First backoff delay, in seconds.")
    bybit_backfill_rate_limit_threshold: int = Field(
        5, ge=1, description="Consecutive rate-limit errors that open the circuit breaker.")
    bybit_backfill_cooldown_seconds: float = Field(
        60.0, ge=0, description="How long an open breaker waits (at least 600 s after a 403 ban).")
    bybit_backfill_public_delay_ms: int = Field(0, ge=0, description="Minimum spacing of public API calls.")
    bybit_backfill_max_concurrent_chunks: int = Field(
        4, ge=1, le=64, description="Archive days downloaded at once / execution windows fetched at once.")
    bybit_symbol: str = Field("BTCUSDT", description="Symbol served by BybitConnectorHistory.")
    bybit_category: Category = Field(
        "linear", description="Category served by BybitConnectorHistory.")
    backfill_cache_dir: Path = Field(Path("./context_history_dir/backfill_cache"),
                                     description="Where backfill_YYYY-MM-DD.parquet files are written.")
    backfill_cache_enabled: bool = Field(True, description="Export parquet cache files after a refresh.")
    backfill_db_path: Path = Field(Path("./bybit_backfill.duckdb"), description="The DuckDB store file.")
    backfill_lock_wait_s: float = Field(30.0, ge=0, le=3600, description=(
        "Seconds a command waits for the store while another process holds it (a writer holds it only "
        "while it commits)."))
    backfill_export_id: Literal["tick", "raw"] = Field(
        "tick", description="Parquet `i`: 'tick' = decimal TradeTick.id, 'raw' = the exchange's id.")
    context_backfill_test_mode: bool = Field(
        False, description="BybitConnectorHistory runs one small signed call instead of a backfill.")

    @field_validator("bybit_symbol")
    @classmethod
    def _upper_symbol(cls, value: str) -> str:
        return value.strip().upper()

    @field_validator("bybit_api_key", "bybit_api_secret")
    @classmethod
    def _printable(cls, value: SecretStr) -> SecretStr:
        """A newline or a space in a key would end up in an HTTP header (or be silently refused)."""
        if any(char.isspace() or not char.isprintable() for char in value.get_secret_value()):
            raise ValueError("must not contain spaces, newlines or other control characters")
        return value

    def refresh_arguments(self, *, export: bool = True, cache_dir: Path | None = None) -> dict[str, Any]:
        """The settings-derived arguments of `store.orchestrator.refresh`, decided here once for the CLI,
        the Python API and the demo: where the daily files go (None when exporting is off, by the
        caller or by BACKFILL_CACHE_ENABLED) and in which id mode."""
        target = (cache_dir or self.backfill_cache_dir) if export and self.backfill_cache_enabled else None
        return {"cache_dir": target, "id_mode": self.backfill_export_id}

    def fetch_config(self) -> FetchConfig:
        """The fetch layer's view of these settings."""
        return FetchConfig(
            endpoints=Endpoints(rest_base_url=self.bybit_rest_base_url.rstrip("/"),
                                archive_base_url=self.bybit_archive_base_url.rstrip("/"),
                                ws_base_url=self.bybit_ws_base_url.rstrip("/")),
            credentials=Credentials(api_key=self.bybit_api_key.get_secret_value(),
                                    api_secret=self.bybit_api_secret.get_secret_value(),
                                    recv_window_ms=self.bybit_recv_window_ms),
            retry=RetryPolicy(max_retries=self.bybit_backfill_max_retries,
                              base_s=self.bybit_backfill_retry_base),
            breaker=BreakerPolicy(rate_limit_threshold=self.bybit_backfill_rate_limit_threshold,
                                  cooldown_s=self.bybit_backfill_cooldown_seconds,
                                  ban_cooldown_s=max(600.0, self.bybit_backfill_cooldown_seconds)),
            limits=RateLimits(public_delay_ms=self.bybit_backfill_public_delay_ms,
                              max_concurrency=self.bybit_backfill_max_concurrent_chunks * 2),
            timeouts=Timeouts(total_s=self.bybit_api_timeout, archive_total_s=self.bybit_archive_timeout),
            archive_concurrency=self.bybit_backfill_max_concurrent_chunks,
        )


def _describe(error: ValidationError) -> str:
    """`BYBIT_API_TIMEOUT='abc': Input should be a valid number; fix it in the environment or .env`."""
    problem = error.errors()[0]
    name = str(problem["loc"][0]) if problem.get("loc") else "a setting"
    shown = "" if name in _SECRET_FIELDS or "input" not in problem else f"={_short(problem['input'])}"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    message = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{name.upper()}{shown}: {message}{more}; fix it in the environment, .env or the arguments"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def settings_table() -> list[tuple[str, str, str]]:
    """(ENV_NAME, default, meaning) for every setting: the README's configuration table."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "" if isinstance(default, SecretStr) else str(default)
        rows.append((name.upper(), shown, field.description or ""))
    return rows


def describe_settings(settings: Settings, environ: dict[str, str], env_file: Path | None = Path(".env"),
                      flags: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The effective configuration, one row per variable: its value and where it came from (`flag`,
    `env`, `.env` or `default`), the way pydantic-settings resolved it (env beats .env beats the
    default). Secrets are never shown: `****` when set, with `set` saying whether it is."""
    from dotenv import dotenv_values

    in_env = {key.lower(): key for key in environ}
    in_file = {key.lower() for key, value in dotenv_values(env_file).items()
               if value is not None} if env_file is not None and env_file.is_file() else set()
    rows = []
    for name, field in Settings.model_fields.items():
        value = (flags or {}).get(name)
        source = "flag" if value is not None else "env" if name in in_env else ".env" if name in in_file else "default"
        if value is None:
            value = getattr(settings, name)
        row: dict[str, Any] = {"variable": name.upper(), "source": source}
        if isinstance(value, SecretStr):
            row.update(value="****" if value.get_secret_value() else "", set=bool(value.get_secret_value()))
        else:
            row.update(value=str(value), set=True)
        row["meaning"] = field.description or ""
        rows.append(row)
    return rows
