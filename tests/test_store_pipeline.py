"""The fetch pipeline's hand-over between the event loop and its staging thread (no server)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from fetch.market_span import Market, Span
from fetch.archive import ArchiveFile
from sim import archive as sim_archive
from sim.config import SimConfig
from store.db import Store
from store.schema import open_store
from store.pipeline import Job, _staged
from storeutil import day


async def test_a_cancelled_refresh_waits_for_its_staging_thread_before_using_the_connection(
        sim_config: SimConfig, tmp_path: Path) -> None:
    spec = replace(next(m for m in sim_config.markets if m.symbol == "BTCUSDT" and m.category == "linear"),
                   trades_per_day=300_000)
    path, _ = await asyncio.to_thread(sim_archive.ensure_file, sim_config, spec, day(1))
    item = ArchiveFile(day(1), path, "file", path.stat().st_size)
    with open_store(tmp_path / "s.duckdb") as store, Store.private() as private:
        job = Job(store, Market("linear", "BTCUSDT"), Span(0, 1), lambda _: None)
        appending = threading.Event()

        def trace(sql: str, _params: object) -> None:
            """In the worker: about to stage a batch (the statement follows this pause)."""
            if "FROM incoming_arrow" in sql and not appending.is_set():  # a batch's tick ids
                appending.set()
                time.sleep(0.2)

        private.tracer = trace
        staging = asyncio.ensure_future(_staged(job, private, day(1), item))
        for _ in range(6000):  # bounded: 30 s at most
            if appending.is_set():
                break
            await asyncio.sleep(0.005)
        assert appending.is_set(), "the staging worker never ran a statement on the private connection"
        staging.cancel()  # Ctrl-C just as the worker starts an INSERT on the staging connection
        with pytest.raises(asyncio.CancelledError):
            await staging
        # What a cancelled run's cleanup does next, for as long as the worker could still be staging:
        # DuckDB refuses a connection that a thread is still using.
        for _ in range(400):
            assert private.query_one("SELECT 42") == (42,)
            await asyncio.sleep(0.002)
        assert job.stopping.is_set()
