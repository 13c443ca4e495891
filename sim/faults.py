"""Faults a test switches on to see how a client copes with a misbehaving exchange.

A test registers faults (`faults.add("http_502", path="/v5/market/recent-trade", times=2)`); the
app's middleware and archive handler ask the registry, per request, which faults fire. This module
only decides *which* fault fires; what the fault does to the response lives in `sim.app`.

Response kinds act on any request: `latency` (value = ms), `http_500`, `http_502`, `http_503`,
`ret_10016`, `ret_10006` (value = ms until the limit resets, default 200), `ret_10001_empty`,
`drop` (headers and half the body, then the connection is closed), `stall` (headers and half the
body, then silence for value seconds, default 5, the connection kept open), `huge_json` (a 200 JSON
answer of value bytes, default 17 MiB, streamed without a Content-Length), `malformed_json`,
`http_403` (starts the IP ban on /v5 paths).
Archive kinds act on archive file downloads only: `truncate_gzip`, `corrupt_deflate` (the gzip
header intact, its first deflate block invalid: isal raises its own error type), `drift_header`,
`shuffle_rows`, `dup_across_days`, and the hostile files `wrong_day`, `header_only`,
`foreign_symbol`, `zero_price`, `nan_price`, `negative_qty`, `reuse_id` (see `sim.archive`).
Recent-trade kinds bend one row of a recent-trade answer: `recent_seconds`, `recent_future`,
`recent_foreign_symbol`, `recent_zero_price`.
WebSocket kinds act on the `/v5/public/...` streams (`path` may name one, `symbol` one topic), one
pushed message (or subscribe request) per hit: `ws_drop` (close the socket instead of sending),
`ws_stall` (stop pushing trades but keep answering pings: the dead-but-ponging socket; value =
wall seconds, default forever), `ws_duplicate` (send the message twice), `ws_replay` (send it, then
the previous message again), `ws_skip` (never send it: its trades are lost to this connection),
`ws_phantom` (add one trade that never happened, id `phantom-...`), `ws_refuse` (answer a
subscribe with `success: false`).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import date

RESPONSE_KINDS = ("latency", "http_500", "http_502", "http_503", "ret_10016", "ret_10006",
                  "ret_10001_empty", "drop", "stall", "huge_json", "malformed_json", "http_403")
HOSTILE_ARCHIVE_KINDS = ("wrong_day", "header_only", "foreign_symbol", "zero_price", "nan_price",
                         "negative_qty", "reuse_id")
ARCHIVE_KINDS = ("truncate_gzip", "corrupt_deflate", "drift_header", "shuffle_rows",
                 "dup_across_days") + HOSTILE_ARCHIVE_KINDS
# recent-trade answers that parse but cannot be true: one row timed in seconds, one in 2100, one of
# another symbol, one priced 0.
RECENT_KINDS = ("recent_seconds", "recent_future", "recent_foreign_symbol", "recent_zero_price")
WS_KINDS = ("ws_drop", "ws_stall", "ws_duplicate", "ws_replay", "ws_skip", "ws_phantom", "ws_refuse")
KINDS = RESPONSE_KINDS + ARCHIVE_KINDS + RECENT_KINDS + WS_KINDS
ARCHIVE_VARIANT = {"drift_header": "drift", "shuffle_rows": "shuffle", "dup_across_days": "dup",
                   **{kind: kind for kind in HOSTILE_ARCHIVE_KINDS}}
DEFAULT_VALUE = {"latency": 100.0, "ret_10006": 200.0, "stall": 5.0, "huge_json": float(17 << 20)}


@dataclass(frozen=True)
class RequestInfo:
    """What a fault can match on: the path, the symbol (query or archive path), the archive day."""

    path: str
    symbol: str | None = None
    day: date | None = None
    archive_file: bool = False
    ws: bool = False  # a WebSocket event (a push or a subscribe), not an HTTP request


@dataclass
class Fault:
    """One registered fault; `times` is how many matching requests it still hits (-1: always)."""

    kind: str
    path: str | None = None
    times: int = 1
    day: date | None = None
    symbol: str | None = None
    value: float | None = None

    def matches(self, req: RequestInfo) -> bool:
        if self.times == 0:
            return False
        if self.kind in ARCHIVE_KINDS and not req.archive_file:
            return False
        if self.kind in RECENT_KINDS and not req.path.startswith("/v5/market/recent-trade"):
            return False
        if (self.kind in WS_KINDS) != req.ws:
            return False
        if self.path is not None and not req.path.startswith(self.path):
            return False
        if self.symbol is not None and self.symbol != req.symbol:
            return False
        return self.day is None or self.day == req.day

    def consume(self) -> None:
        if self.times > 0:
            self.times -= 1

    @property
    def amount(self) -> float:
        """The fault's value, or the kind's default (latency 100 ms, ret_10006 reset 200 ms)."""
        return self.value if self.value is not None else DEFAULT_VALUE.get(self.kind, 0.0)


@dataclass
class _Mix:
    rate: float
    kinds: tuple[str, ...]
    rng: random.Random
    path: str | None


class Faults:
    """The registry. Thread-safe: a `run_in_thread` sim is configured from the test's thread."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._mixes: list[_Mix] = []
        self._lock = threading.Lock()
        self.fired: Counter[str] = Counter()  # kind -> how many times it hit a request

    def add(self, kind: str, *, path: str | None = None, times: int = 1, day: date | None = None,
            symbol: str | None = None, value: float | None = None) -> Fault:
        """Register a fault; `path` is a prefix ('/trading' covers every derivative archive file)."""
        _check_kinds([kind])
        if times == 0 or times < -1:
            raise ValueError("times must be a positive count or -1 (always)")
        fault = Fault(kind, path, times, day, symbol, value)
        with self._lock:
            self._faults.append(fault)
        return fault

    def random_mix(self, rate: float, kinds: list[str], seed: int, path: str | None = None) -> None:
        """Soak mode: each matching request draws one of `kinds` with probability `rate` (seeded)."""
        _check_kinds(kinds)
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        with self._lock:
            self._mixes.append(_Mix(rate, tuple(kinds), random.Random(seed), path))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self._mixes.clear()

    def roll(self, req: RequestInfo) -> list[Fault]:
        """Random-mix draws for one request (called once per request); applicable kinds only."""
        out = []
        with self._lock:
            for mix in self._mixes:
                if mix.path is not None and not req.path.startswith(mix.path):
                    continue
                usable = [k for k in mix.kinds if (req.archive_file or k not in ARCHIVE_KINDS)
                          and (k in WS_KINDS) == req.ws]
                if usable and mix.rng.random() < mix.rate:
                    out.append(Fault(mix.rng.choice(usable), times=1))
        return out

    def take(self, req: RequestInfo, kinds: tuple[str, ...], first_only: bool = False,
             extra: list[Fault] | None = None) -> list[Fault]:
        """Consume and return the faults of `kinds` that hit this request.

        At most one fault per kind fires per request; with `first_only`, at most one in all (the
        earliest registered), so two faults registered for 'the next request' hit two requests.
        """
        hits: list[Fault] = []
        with self._lock:
            for fault in list(extra or []) + self._faults:
                if fault.kind not in kinds or any(h.kind == fault.kind for h in hits):
                    continue
                if fault.matches(req):
                    fault.consume()
                    hits.append(fault)
                    self.fired[fault.kind] += 1
                    if first_only:
                        break
        return hits


def _check_kinds(kinds: list[str]) -> None:
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown fault kinds {unknown}; known: {', '.join(KINDS)}")
