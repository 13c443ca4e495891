"""The batched coverage questions (`store.coverage_many`) answer what the per-symbol ones do."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fetch.market_span import Market, Span
from store.coverage import Ask, Gap, find_gaps, record_open_gaps, unverified
from store.coverage_many import gaps_many, record_gaps_many, unverified_many
from store.schema import open_store

DAY = 86_400_000_000
SYMBOLS = [f"S{k}USDT" for k in range(8)]


def _random_store(path: Path, seed: int):
    """Coverage of every kind a market can have: archive days (some whose file disagrees with the
    store), REST and live spans overlapping them and each other, executions (not trade coverage),
    another category with the same symbols, and recorded reasons, some inside and some across asks."""
    rng = random.Random(seed)
    store = open_store(path)
    for category in ("linear", "spot"):
        for symbol in SYMBOLS[:rng.randint(3, len(SYMBOLS))]:
            for day in rng.sample(range(20), rng.randint(0, 12)):
                expected = rng.choice([0, 0, 0, 5])
                store.execute("INSERT INTO coverage (category, symbol, source, start_us, end_us, expected_rows, "
                              "added_rows) VALUES (?, ?, 'archive', ?, ?, ?, 0)",
                              [category, symbol, day * DAY, (day + 1) * DAY, expected])
            for _ in range(rng.randint(0, 6)):
                start = rng.randrange(0, 20 * DAY)
                source = rng.choice(["rest", "ws", "executions"])
                store.execute("INSERT INTO coverage (category, symbol, source, start_us, end_us, added_rows, "
                              "exec_type) VALUES (?, ?, ?, ?, ?, 0, ?)",
                              [category, symbol, source, start, start + rng.randrange(1, 3 * DAY),
                               rng.choice([None, "Trade"]) if source == "executions" else None])
            for _ in range(rng.randint(0, 4)):
                start = rng.randrange(0, 20 * DAY)
                store.execute("INSERT INTO open_gaps (category, symbol, start_us, end_us, reason) VALUES (?, ?, ?, ?, ?)",
                              [category, symbol, start, start + rng.randrange(1, 2 * DAY), f"reason {rng.random()}"])
    return store


def _asks(seed: int) -> list[Ask]:
    """Disjoint ranges per market (as a market run's work items are), some of unknown symbols."""
    rng = random.Random(seed + 1)
    asks = []
    for category in ("linear", "spot"):
        for symbol in [*SYMBOLS, "NEVERUSDT"]:
            cut = sorted(rng.sample(range(1, 22 * DAY, DAY // 7), 4))
            asks += [Ask(Market(category, symbol), Span(cut[0], cut[1])), Ask(Market(category, symbol), Span(cut[2], cut[3]))]
    rng.shuffle(asks)
    return asks


def _plan_asks(seed: int) -> list[Ask]:
    """`_asks` and single days (often wholly covered): the plan's asks may overlap."""
    rng = random.Random(seed + 3)
    days = [Ask(Market(c, s), Span(d * DAY, (d + 1) * DAY)) for c in ("linear", "spot") for s in SYMBOLS for d in rng.sample(range(20), 3)]
    return _asks(seed) + days


@pytest.mark.parametrize("seed", range(12))
def test_the_batched_plan_is_the_per_symbol_plan_of_every_ask(tmp_path: Path, seed: int) -> None:
    with _random_store(tmp_path / "s.duckdb", seed) as store:
        asks = _plan_asks(seed)
        for sources in (("archive", "rest", "ws"), ("archive",)):
            batched = unverified_many(store, asks, sources)
            assert batched == [unverified(store, a.market, a.span, sources) for a in asks]
        assert any(batched) and not all(batched), "the layout has both covered and missing ranges"


@pytest.mark.parametrize("seed", range(12))
def test_the_batched_gaps_and_their_reasons_are_the_per_symbol_ones(tmp_path: Path, seed: int) -> None:
    with _random_store(tmp_path / "s.duckdb", seed) as store:
        asks = _plan_asks(seed)
        batched = gaps_many(store, asks)
        assert batched == [find_gaps(store, a.market, a.span) for a in asks]
        kinds = {g.kind for gaps in batched for g in gaps}
        assert "uncovered" in kinds


@pytest.mark.parametrize("seed", range(6))
def test_recording_the_gaps_of_many_asks_at_once_leaves_what_one_by_one_leaves(tmp_path: Path, seed: int) -> None:
    asks = _asks(seed)
    rng = random.Random(seed + 2)
    found = [[Gap("uncovered", a.span.start_us + s, a.span.start_us + s + 1, f"gap {k}.{s}")
              for s in sorted(rng.sample(range(a.span.end_us - a.span.start_us - 1), rng.randint(0, 3)))]
             for k, a in enumerate(asks)]
    tables = []
    for name, batched in (("one.duckdb", False), ("many.duckdb", True)):
        with _random_store(tmp_path / name, seed) as store:
            with store.atomic():
                if batched:
                    record_gaps_many(store, asks, found)
                else:
                    for ask, gaps in zip(asks, found, strict=True):
                        record_open_gaps(store, ask.market, ask.span, gaps)
            tables.append(store.query("SELECT category, symbol, start_us, end_us, reason FROM open_gaps "
                                      "ORDER BY ALL"))
    assert tables[0] == tables[1] and len(tables[0]) > 0


@pytest.mark.parametrize("seed", range(6))
def test_incomplete_days_of_many_markets_are_each_markets_own(tmp_path: Path, seed: int) -> None:
    """Per market, the days a whole-day reader must not be given: a day is complete only if coverage
    vouches for all of it, wherever the list of days starts or ends; markets never mix."""
    from datetime import date, timedelta

    from store.coverage import incomplete_days_many, uncovered

    rng = random.Random(seed + 7)
    epoch = date(1970, 1, 1)
    with _random_store(tmp_path / "s.duckdb", seed) as store:
        wanted = []
        for category in ("linear", "spot"):
            for symbol in SYMBOLS:
                days = sorted(rng.sample(range(22), rng.randint(0, 6)))
                wanted.append((Market(category, symbol), [epoch + timedelta(days=d) for d in days]))
        answers = incomplete_days_many(store, wanted)
        assert len(answers) == len(wanted)
        for (market, days), answer in zip(wanted, answers, strict=True):
            expected = {d for d in days
                        if uncovered(store, market, Span((d - epoch).days * DAY, ((d - epoch).days + 1) * DAY))}
            assert answer == expected, (market, days)
