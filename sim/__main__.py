"""`python -m sim --port 8099`: run the emulator in the foreground."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from .clock import MarketClock
from .config import SimConfig
from .server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sim", description="Serve the local Bybit emulator.")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--now", help="freeze the market's now, ISO UTC time (e.g. 2024-01-10T12:00)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--clock-start", help="start a running market clock at this ISO UTC instant")
    parser.add_argument("--speed", type=float, default=1.0, help="market seconds per wall second")
    args = parser.parse_args(argv)
    now_ms = None
    if args.now:
        now = datetime.fromisoformat(args.now)
        now = now.replace(tzinfo=UTC) if now.tzinfo is None else now
        now_ms = int(now.timestamp() * 1000)
    clock = None
    if args.clock_start or args.speed != 1.0:
        start = datetime.fromisoformat(args.clock_start) if args.clock_start else None
        start_ms = None if start is None else int((start.replace(tzinfo=UTC) if start.tzinfo is None
                                                   else start).timestamp() * 1000)
        clock = MarketClock(start_ms, args.speed)
    serve(args.port, args.host, SimConfig(seed=args.seed, now_ms=now_ms, latency_ms=args.latency_ms, clock=clock))


if __name__ == "__main__":
    main()
