"""Ways to run the emulator: inside a test's event loop, in a background thread, or as a server.

All bind 127.0.0.1 (port 0 = any free port, read back into `.url`): the emulator never listens on
other interfaces unless `serve` is told to.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

from aiohttp import web

from .app import create_app
from .config import SimConfig
from .state import SimState


@dataclass(frozen=True)
class RunningSim:
    """A live emulator: point both base URLs (REST and archive) at `url`."""

    url: str
    state: SimState
    config: SimConfig


async def _start(config: SimConfig, state: SimState | None, host: str, port: int) -> tuple[web.AppRunner, RunningSim]:
    state = state if state is not None else SimState(config)
    runner = web.AppRunner(create_app(state.config, state), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, RunningSim(f"http://{host}:{bound}", state, state.config)


@asynccontextmanager
async def running_sim(config: SimConfig | None = None, state: SimState | None = None) -> AsyncIterator[RunningSim]:
    """Serve the emulator on 127.0.0.1:<free port> in the current event loop."""
    runner, sim = await _start(config or SimConfig(), state, "127.0.0.1", 0)
    try:
        yield sim
    finally:
        await runner.cleanup()


class _Thread(threading.Thread):
    """Owns the background loop: starts the app, serves until stopped, then cleans up."""

    def __init__(self, config: SimConfig, state: SimState | None) -> None:
        super().__init__(name="bybit-sim", daemon=True)
        self.config, self.state = config, state
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.started: tuple[web.AppRunner, RunningSim] | None = None
        self.error: Exception | None = None

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.started = self.loop.run_until_complete(_start(self.config, self.state, "127.0.0.1", 0))
        except Exception as exc:  # noqa: BLE001 - handed to the caller's thread, re-raised there
            self.error = exc
        finally:
            self.ready.set()
        if self.started is not None:
            self.loop.run_forever()
            self.loop.run_until_complete(self.started[0].cleanup())
        self.loop.close()


@contextmanager
def run_in_thread(config: SimConfig | None = None, state: SimState | None = None) -> Iterator[RunningSim]:
    """Serve the emulator from a background thread with its own loop, for synchronous callers."""
    thread = _Thread(config or SimConfig(), state)
    thread.start()
    if not thread.ready.wait(timeout=30):
        raise RuntimeError("the emulator thread did not start within 30 s")
    if thread.started is None:
        raise RuntimeError(f"the emulator failed to start: {thread.error}") from thread.error
    try:
        yield thread.started[1]
    finally:
        thread.loop.call_soon_threadsafe(thread.loop.stop)
        thread.join(timeout=30)


def serve(port: int, host: str = "127.0.0.1", config: SimConfig | None = None) -> None:
    """Block serving the emulator until interrupted (`bybit-backfill sim`, `python -m sim`)."""
    app = create_app(config or SimConfig())

    def announce(_message: str) -> None:
        print(f"Bybit emulator on http://{host}:{port} (REST and archive) and ws://{host}:{port}/v5/public/... "
              "(WebSocket); Ctrl+C to stop", flush=True)

    web.run_app(app, host=host, port=port, print=announce, access_log=None)
