"""`python -m sim --port 8099`: run the emulator in the foreground (the same options as
`bybit-backfill sim`, parsed by `sim.options`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .options import MARKETS_EXAMPLE, SimOptions, clear_cache
from .server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sim", description="Serve the local Bybit emulator.")
    parser.add_argument("--port", type=int, default=8099, help="0 = any free port (printed on start)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--markets", help=f"SYMBOL:CATEGORY[:TRADES_PER_DAY],... e.g. {MARKETS_EXAMPLE}")
    parser.add_argument("--trades-per-day", type=int, default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--now", help="freeze the market's now, ISO UTC time (e.g. 2024-01-10T12:00)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--clock-start", help="start a running market clock at this ISO UTC instant")
    parser.add_argument("--speed", type=float, default=1.0, help="market seconds per wall second")
    parser.add_argument("--fault", action="append", default=[], help="KIND[:RATE], repeatable")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--clear-cache", action="store_true", help="delete the generated day files and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each request")
    args = parser.parse_args(argv)
    if args.clear_cache:
        target, removed = clear_cache(args.cache_dir)
        print(f"removed {removed} generated files from {target}")
        return
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(message)s")
    options = SimOptions(markets=args.markets, trades_per_day=args.trades_per_day, seed=args.seed,
                         now=args.now, clock_start=args.clock_start, speed=args.speed,
                         latency_ms=args.latency_ms, faults=tuple(args.fault), cache_dir=args.cache_dir)
    try:
        config, faults = options.build()
    except ValueError as error:
        parser.error(str(error))
    serve(args.port, args.host, config, faults)


if __name__ == "__main__":
    main()
