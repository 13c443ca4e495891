"""The standalone emulator's options, shared by `bybit-backfill sim` and `python -m sim`.

Pure: text in, a `SimConfig` (or a banner) out, so both front ends parse `--markets`, `--fault` and
the clock options the same way, and the tests check the parsing without a server. A bad value is a
`ValueError` whose message names the option and the expected form; the front ends turn it into
their own usage error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .clock import MarketClock
from .config import MarketSpec, SimConfig, default_cache_dir
from .faults import KINDS

_GENERATED = re.compile(r"^\.?v\d+-s-?\d+-(linear|inverse|spot)-")
MARKETS_EXAMPLE = "BTCUSDT:linear:1500000,ETHUSDT:linear:200000"
DEFAULT_FAULT_RATE = 0.05


def parse_markets(text: str, trades_per_day: int | None = None) -> list[MarketSpec]:
    """`SYMBOL:CATEGORY[:TRADES_PER_DAY],...` -> markets; `trades_per_day` fills in a missing count."""
    markets = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        parts = item.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"--markets: cannot read {item!r}: use SYMBOL:CATEGORY[:TRADES_PER_DAY], "
                             f"e.g. {MARKETS_EXAMPLE}")
        count = trades_per_day if trades_per_day is not None else 20_000
        if len(parts) == 3:
            try:
                count = int(parts[2].replace("_", ""))
            except ValueError:
                raise ValueError(f"--markets: {parts[2]!r} in {item!r} is not a whole number of trades") from None
        markets.append(MarketSpec(parts[0].strip().upper(), parts[1].strip().lower(), trades_per_day=count))
    if not markets:
        raise ValueError(f"--markets is empty: give e.g. {MARKETS_EXAMPLE}")
    return markets


def parse_fault(text: str) -> tuple[str, float]:
    """`KIND[:RATE]` -> (kind, probability per request); the rate defaults to 5%."""
    kind, _, rate_text = text.partition(":")
    if kind not in KINDS:
        raise ValueError(f"--fault: unknown kind {kind!r}; known: {', '.join(KINDS)}")
    try:
        rate = float(rate_text) if rate_text else DEFAULT_FAULT_RATE
    except ValueError:
        raise ValueError(f"--fault: rate {rate_text!r} is not a number between 0 and 1") from None
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"--fault: rate {rate_text!r} is not between 0 and 1")
    return kind, rate


def parse_instant(text: str, option: str) -> int:
    """An ISO UTC instant (naive means UTC) -> epoch ms."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option}: cannot read {text!r}: use YYYY-MM-DDTHH:MM[:SS] (UTC)") from None
    return int((when.replace(tzinfo=UTC) if when.tzinfo is None else when).timestamp() * 1000)


@dataclass(frozen=True)
class SimOptions:
    """What a user can set on the command line; `build()` makes the emulator's config."""

    markets: str | None = None
    trades_per_day: int | None = None
    seed: int = 7
    now: str | None = None
    clock_start: str | None = None
    speed: float = 1.0
    latency_ms: float = 0.0
    faults: tuple[str, ...] = field(default_factory=tuple)
    cache_dir: Path | None = None

    def build(self) -> tuple[SimConfig, list[tuple[str, float]]]:
        """The config, and the (kind, rate) faults to switch on once its state exists."""
        if self.speed < 0:
            raise ValueError("--speed must be >= 0")
        if self.latency_ms < 0:
            raise ValueError("--latency-ms must be >= 0")
        if self.trades_per_day is not None and self.trades_per_day < 1:
            raise ValueError("--trades-per-day must be >= 1")
        if self.now and self.clock_start:
            raise ValueError("--now freezes the market clock, --clock-start runs it: give one of them")
        config = SimConfig(seed=self.seed, latency_ms=self.latency_ms, cache_dir=self.cache_dir)
        if self.markets:
            config.markets = parse_markets(self.markets, self.trades_per_day)
        elif self.trades_per_day is not None:
            config.markets = [MarketSpec(m.symbol, m.category, self.trades_per_day, m.base_price, m.listed,
                                         m.rpi_from, m.status) for m in config.markets]
        if self.now:
            config.now_ms = parse_instant(self.now, "--now")
        elif self.clock_start or self.speed != 1.0:
            start = parse_instant(self.clock_start, "--clock-start") if self.clock_start else None
            config.clock = MarketClock(start, self.speed)
        return config, [parse_fault(text) for text in self.faults]


def banner(url: str, config: SimConfig, faults: list[tuple[str, float]]) -> list[str]:
    """What `sim` prints on start: where it listens, what it trades, the key it accepts and the env
    lines that point the tool at it (the emulator's own test key, not a secret)."""
    ws_url = url.replace("http://", "ws://", 1)
    key, secret = next(iter(config.api_keys.items()))
    lines = [(f"Bybit emulator on {url} (REST and archive) and {ws_url}/v5/public/{{linear,inverse,spot}} "
              "(WebSocket); Ctrl+C to stop"),
             "markets: " + ", ".join(f"{m.symbol} ({m.category}, {m.trades_per_day:,} trades/day)"
                                     for m in config.markets),
             f"API key it accepts: {key} / secret {secret}",
             f"archive cache: {config.resolved_cache_dir()}"]
    if faults:
        lines.append("faults: " + ", ".join(f"{kind} at {rate:.0%}" for kind, rate in faults))
    lines += ["# paste into the shell that runs bybit-backfill:",
              f"export BYBIT_REST_BASE_URL={url}",
              f"export BYBIT_ARCHIVE_BASE_URL={url}",
              f"export BYBIT_WS_BASE_URL={ws_url}",
              f"export BYBIT_API_KEY={key}",
              f"export BYBIT_API_SECRET={secret}"]
    return lines


def clear_cache(directory: Path | None) -> tuple[Path, int]:
    """Delete the emulator's generated day files (and leftover temp files) in its cache dir: only
    names it writes (`v1-s7-linear-BTCUSDT-...`), since the default dir is shared and may hold other files."""
    target = Path(directory) if directory is not None else default_cache_dir()
    removed = 0
    if target.is_dir():
        for path in target.iterdir():
            if path.is_file() and _GENERATED.match(path.name):
                path.unlink(missing_ok=True)
                removed += 1
    return target, removed
