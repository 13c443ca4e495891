"""Ways to run the emulator: inside a test's event loop, in a background thread, or as a server.

All bind 127.0.0.1 (port 0 = any free port, read back into `.url`): the emulator never listens on
other interfaces unless `serve` is told to.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
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


def serve(port: int, host: str = "127.0.0.1", config: SimConfig | None = None,
          faults: list[tuple[str, float]] | None = None,
          announce: Callable[[str], None] | None = None) -> None:
    """Block serving the emulator until interrupted (`bybit-backfill sim`, `python -m sim`).

    It binds first and then announces the bound address (port 0 = any free port, so a script or a
    test can start it without guessing a port), its markets, its key and the env lines to paste.
    `faults` are (kind, rate) random mixes, seeded from the config's seed."""
    from .options import banner

    config = config or SimConfig()
    say = announce or (lambda line: print(line, flush=True))

    async def run() -> None:
        state = SimState(config)
        for number, (kind, rate) in enumerate(faults or []):
            state.faults.random_mix(rate, [kind], seed=config.seed + number)
        runner, running = await _start(config, state, host, port)
        try:
            for line in banner(running.url, config, faults or []):
                say(line)
            await asyncio.Event().wait()  # until Ctrl-C / SIGTERM cancels the loop
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
