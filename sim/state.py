"""What one running emulator remembers: its config, faults, limiters and the counters tests read.

Tests assert on behaviour through these counters ("the second refresh made no request",
"one ban was started") instead of peeking into the client.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from aiohttp import web

from .archive import parse_file_name
from .config import SimConfig
from .faults import Faults, RequestInfo
from .limits import Clock, EndpointLimiter, IpLimiter


class SimState:
    """Mutable state of one emulator app.

    `clock` (epoch seconds) drives the rate limits and bans, so a test can pass a fake clock and
    step through a ten-minute ban instantly; it defaults to the server clock (real time + skew).
    """

    def __init__(self, config: SimConfig, clock: Clock | None = None, faults: Faults | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or (lambda: time.time() + config.clock_skew_ms / 1000)
        self.faults = faults if faults is not None else Faults()
        self.ip = IpLimiter(config.ip_limit, config.ip_window_s, config.ban_seconds, self.clock)
        self.endpoints = EndpointLimiter(config.endpoint_limits, self.clock)
        self.requests: Counter[str] = Counter()  # per path; archive files also under '/trading' or '/spot'
        self.rate_limited = 0  # retCode 10006 answers (limit or fault)
        self.bans = 0  # IP bans started
        self.forbidden = 0  # HTTP 403 answers
        self.files_generated = 0  # archive files generated (not served from the cache)
        self.log: list[tuple[str, str, int]] = []  # (path, raw query string, status)
        # WebSocket streams (sim.ws): connections accepted / open now, topics subscribed, snapshots
        # and trades pushed, trades lost to `ws_skip`, connections cut for silence
        self.ws_connections = self.ws_open = self.ws_subscriptions = 0
        self.ws_messages = self.ws_trades_pushed = self.ws_skipped_trades = self.ws_idle_cuts = 0

    def reset_counters(self) -> None:
        self.requests.clear()
        self.rate_limited = self.bans = self.forbidden = self.files_generated = 0
        self.log.clear()

    def count(self, info: RequestInfo) -> None:
        self.requests[info.path] += 1
        if info.archive_file:
            self.requests["/spot" if info.path.startswith("/spot/") else "/trading"] += 1

    def statuses(self, path: str) -> list[int]:
        """HTTP statuses answered on `path`, in order."""
        return [status for p, _, status in self.log if p == path]


STATE_KEY = web.AppKey("sim_state", SimState)
MIX_KEY = web.RequestKey("sim_mix_faults", list)  # random-mix faults drawn for this request
FILE_PATH_KEY = web.RequestKey("sim_file_path", Path)  # archive file behind the response (for `drop`)


def raw_query(request: web.BaseRequest) -> str:
    """The query string exactly as it came over the wire (never decoded and re-encoded)."""
    return request.raw_path.partition("?")[2]


def request_info(request: web.BaseRequest) -> RequestInfo:
    """What faults match on: path, symbol (query or archive path) and archive day."""
    parts = request.path.split("/")
    if len(parts) >= 3 and parts[1] in ("trading", "spot"):
        if len(parts) == 4 and parts[3]:
            day = parse_file_name("/" + parts[1], parts[2], parts[3])
            return RequestInfo(request.path, parts[2], day, archive_file=True)
        return RequestInfo(request.path, parts[2])
    return RequestInfo(request.path, request.query.get("symbol"))

