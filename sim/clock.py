"""The market clock: the instant up to which trades exist, as the emulator's handlers see it.

Separate from the server clock (signatures, `/v5/market/time`, rate limits), which is always real
time plus the configured skew. The market clock can follow the wall clock, start at any instant
and run faster or stand still, so a test can cross a UTC midnight in seconds (`speed=600`) or step
the market by hand (`speed=0` and `jump`), and the REST tail, the archive's "published" days and
the WebSocket pushes all agree on what has traded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class MarketClock:
    """`now_ms()` = start + jumps + (wall time since creation) * speed.

    Thread-safe: a `run_in_thread` emulator is stepped from the test's thread.
    """

    def __init__(self, start_ms: int | None = None, speed: float = 1.0,
                 wall: Callable[[], float] = time.time) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0 (0 stands still; move it with jump())")
        self._wall = wall
        self._anchor_s = wall()
        self._start_ms = float(start_ms) if start_ms is not None else self._anchor_s * 1000
        self._speed = float(speed)
        self._offset_ms = 0.0
        self._lock = threading.Lock()

    @property
    def speed(self) -> float:
        return self._speed

    def now_ms(self) -> int:
        with self._lock:
            return int(self._start_ms + self._offset_ms + (self._wall() - self._anchor_s) * 1000 * self._speed)

    __call__ = now_ms

    def jump(self, ms: float) -> int:
        """Move the market forward (never back: trades cannot un-happen); returns the new now."""
        if ms < 0:
            raise ValueError("the market clock only moves forward")
        with self._lock:
            self._offset_ms += ms
        return self.now_ms()

    def set_speed(self, speed: float) -> None:
        """Change the rate from now on, keeping the current instant."""
        if speed < 0:
            raise ValueError("speed must be >= 0")
        with self._lock:
            wall = self._wall()
            self._start_ms += (wall - self._anchor_s) * 1000 * self._speed
            self._anchor_s = wall
            self._speed = float(speed)
