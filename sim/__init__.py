"""A local Bybit exchange emulator (aiohttp.web): the ground truth for tests, benchmarks and the demo.

It serves the public WebSocket streams (`/v5/public/linear|inverse|spot`, `sim.ws`), `/v5/market/time`, `/v5/market/recent-trade`, the signed `/v5/execution/list` and the
public daily archive (`/trading/...`, `/spot/...`) from one address, with Bybit's formats, limits,
bans and error codes, deterministic data (`sim.market.expected_trades`, `sim.fills.expected_fills`
give the ground truth) and injectable faults (`SimState.faults`).

    async with running_sim(SimConfig(now_ms=...)) as sim:
        sim.state.faults.add("http_502", path="/v5/market/recent-trade")
        ...  # point the client's REST and archive base URLs at sim.url

The package stands beside the library: `fetch` and `store` never import it, and it never imports them.
"""

from .app import create_app
from .clock import MarketClock
from .config import MarketSpec, SimConfig
from .faults import Faults
from .server import run_in_thread, running_sim, serve
from .state import SimState

__all__ = ["Faults", "MarketClock", "MarketSpec", "SimConfig", "SimState", "create_app", "run_in_thread", "running_sim", "serve"]
