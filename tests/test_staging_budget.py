"""The staged-bytes budget a whole-market run shares (`store.staging_budget`): pure, no server."""

from __future__ import annotations

import asyncio

from store.staging_budget import StagingBudget


async def _settle() -> None:
    for _ in range(5):  # let every ready task run its next step (no timers)
        await asyncio.sleep(0)


async def test_takes_wait_while_the_budget_is_spent_and_go_on_as_it_is_given_back() -> None:
    budget = StagingBudget(100)
    order: list[str] = []

    async def stage(name: str, size: int, release: asyncio.Event) -> None:
        await budget.take(size)
        order.append(f"+{name}")
        await release.wait()
        order.append(f"-{name}")
        budget.give(size)

    releases = {name: asyncio.Event() for name in "abc"}
    tasks = [asyncio.create_task(stage("a", 60, releases["a"])), asyncio.create_task(stage("b", 30, releases["b"])),
             asyncio.create_task(stage("c", 50, releases["c"]))]
    await _settle()
    assert order == ["+a", "+b"] and budget.used == 90, "c (50 more) does not fit beside a and b"
    releases["b"].set()
    await _settle()
    assert order == ["+a", "+b", "-b"] and budget.used == 60, "60 + 50 still does not fit"
    releases["a"].set()
    await _settle()
    assert order[-2:] == ["-a", "+c"] and budget.used == 50
    releases["c"].set()
    await asyncio.gather(*tasks)
    assert budget.used == 0


async def test_a_file_bigger_than_the_whole_budget_goes_alone_instead_of_waiting_forever() -> None:
    budget = StagingBudget(10)
    await budget.take(1_000)
    assert budget.used == 1_000
    waiting = asyncio.create_task(budget.take(1))
    await _settle()
    assert not waiting.done(), "nothing else stages beside it"
    budget.give(1_000)
    await asyncio.wait_for(waiting, 5)
    assert budget.used == 1


async def test_a_cancelled_take_leaves_nothing_taken() -> None:
    budget = StagingBudget(10)
    await budget.take(10)
    waiting = asyncio.create_task(budget.take(5))
    await _settle()
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    budget.give(10)
    assert budget.used == 0
    await asyncio.wait_for(budget.take(10), 5)
    assert budget.used == 10
