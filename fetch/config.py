"""Frozen value objects that configure the fetch layer.

`fetch/` never reads the environment: `store.settings.Settings` builds these at the edge, and tests
build them directly with small numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the REST API, the archive files and the public WebSocket streams are (point all three at
    `sim/` to run offline)."""

    rest_base_url: str = "https://api.bybit.com"
    archive_base_url: str = "https://public.bybit.com"
    ws_base_url: str = "wss://stream.bybit.com"  # public streams: {ws_base_url}/v5/public/{category}


@dataclass(frozen=True, slots=True)
class Credentials:
    """API key and secret; the repr never shows the secret."""

    api_key: str = ""
    api_secret: str = field(default="", repr=False)
    recv_window_ms: int = 5000

    @property
    def present(self) -> bool:
        return bool(self.api_key and self.api_secret)

    def __repr__(self) -> str:
        shown = "set" if self.api_secret else "unset"
        return f"Credentials(api_key={self.api_key[:4] + '…' if self.api_key else ''!r}, api_secret={shown})"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with +-25% jitter (`fetch.retry.JITTER`): base, 2*base, 4*base... capped at
    `max_delay_s`, up to `max_retries` tries more."""

    max_retries: int = 5
    base_s: float = 0.5
    max_delay_s: float = 30.0


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When the breaker opens and how long it stays open."""

    rate_limit_threshold: int = 5
    cooldown_s: float = 60.0
    ban_cooldown_s: float = 600.0  # Bybit bans for at least 10 minutes after a 403
    throttle_max: float = 5.0
    throttle_step: float = 1.5
    throttle_decay: float = 0.9


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Request budgets: the IP limit for all traffic, per-endpoint limits per second."""

    ip_requests: int = 600
    ip_window_s: float = 5.0
    ip_safety: float = 0.9  # use at most 90% of the IP budget: a ban costs 10 minutes
    endpoint_per_s: dict[str, int] = field(default_factory=lambda: {"/v5/execution/list": 50})
    public_delay_ms: int = 0
    max_concurrency: int = 8


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds an API request may take in all and to connect; an archive download gets longer."""

    total_s: float = 30.0
    connect_s: float = 10.0
    archive_total_s: float = 600.0


@dataclass(frozen=True, slots=True)
class FetchConfig:
    """Everything the fetch layer needs, in one object."""

    endpoints: Endpoints = field(default_factory=Endpoints)
    credentials: Credentials = field(default_factory=Credentials)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    limits: RateLimits = field(default_factory=RateLimits)
    timeouts: Timeouts = field(default_factory=Timeouts)
    archive_concurrency: int = 4
