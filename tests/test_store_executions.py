"""The account's fills: a resumable crawl that stores each fill exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest
from storeutil import day, sim_fetch_config, total_requests, us

from fetch.errors import AuthError, ServerError
from fetch.market_span import Span
from sim.fills import expected_fills
from store import refresh_executions
from store.schema import open_store


@pytest.fixture
def store(tmp_path: Path):
    opened = open_store(tmp_path / "x.duckdb")
    yield opened
    opened.close()


def truth(sim, start_us: int, end_us: int, category: str = "linear") -> set[str]:
    fills = expected_fills(sim.config, start_us // 1000, end_us // 1000 - 1, category=category)
    return {f["execId"] for f in fills}


async def test_a_60_day_crawl_stores_every_fill_once_and_resumes_for_free(sim, store) -> None:
    config = sim_fetch_config(sim.url, credentials=True)
    start, end = us(day(10)) - 60 * 86_400_000_000, us(day(10))
    summary = await refresh_executions(store, config, Span(start, end))
    stored = [r[0] for r in store.query("SELECT exec_id FROM executions")]
    assert len(stored) == len(set(stored))
    assert set(stored) == truth(sim, start, end)
    assert summary.windows_fetched == 9 and summary.rows_added == len(stored)
    assert {"Trade", "Funding"} <= set(summary.by_exec_type)
    before = total_requests(sim.state)
    again = await refresh_executions(store, config, Span(start, end))
    assert total_requests(sim.state) == before and again.windows_fetched == 0


async def test_a_crawl_cut_short_resumes_at_the_first_unfinished_window(sim, store) -> None:
    config = sim_fetch_config(sim.url, credentials=True, max_retries=0)
    start, end = us(day(10)) - 28 * 86_400_000_000, us(day(10))
    sim.state.faults.add("http_500", path="/v5/execution/list", times=-1)
    with pytest.raises(ServerError):
        await refresh_executions(store, config, Span(start, end))
    sim.state.faults.clear()
    summary = await refresh_executions(store, config, Span(start, end))
    stored = [r[0] for r in store.query("SELECT exec_id FROM executions")]
    assert len(stored) == len(set(stored)) and set(stored) == truth(sim, start, end)
    assert summary.windows_fetched == 4


async def test_executions_without_a_key_stop_with_a_clear_auth_error(sim, store) -> None:
    with pytest.raises(AuthError, match="BYBIT_API_KEY"):
        await refresh_executions(store, sim_fetch_config(sim.url), Span(us(day(1)), us(day(2))))
    assert store.query_one("SELECT count(*) FROM coverage")[0] == 0
