"""Reconciliation, computed in SQL inside the archive day's transaction before the live rows go:
matched by id (derivatives) or by values (spot), archive-only, missed inside claimed coverage,
phantoms; and nothing at all for a day without live rows."""

from __future__ import annotations

from pathlib import Path

from fetch.market_span import Market, Span
from fetch.models import Trade, trades_to_table
from store.schema import open_store
from store.coverage import add_coverage
from store.timeutil import DAY_US
from store.ingest import ingest_batch
from store.reconcile import reconciliations

DAY0 = 19_732 * DAY_US  # 2024-01-10


def t(category: str, trade_id: str, ms: int, source: str, price: float = 100.0) -> Trade:
    return Trade(category, "BTCUSDT", trade_id, DAY0 + ms * 1000, price, 1.0, "buy", None, source)


def live_then_archive(db: Path, category: str, live: list[Trade], archive: list[Trade],
                      covered_ms: tuple[int, int]) -> dict[str, object]:
    with open_store(db) as store:
        with store.atomic():
            ingest_batch(store, trades_to_table(live), market=Market(category, "BTCUSDT"))
            add_coverage(store, market=Market(category, "BTCUSDT"), source="ws", added_rows=len(live),
                         span=Span(DAY0 + covered_ms[0] * 1000, DAY0 + covered_ms[1] * 1000))
        with store.atomic():
            ingest_batch(store, trades_to_table(archive), market=Market(category, "BTCUSDT"),
                         replace_rest=Span(DAY0, DAY0 + DAY_US))
        [row] = reconciliations(store, Market(category, "BTCUSDT"))
        assert store.query("SELECT DISTINCT source FROM trades") == [("archive",)]
    return row


def test_derivatives_match_by_id_and_count_what_differs(tmp_path: Path) -> None:
    live = [t("linear", f"id{k}", 1000 + k, "ws") for k in range(10) if k != 4]  # id4 missed live
    live += [t("linear", "phantom", 1005, "ws"), t("linear", "id0", 1000, "ws")]  # a phantom; a repeat
    archive = [t("linear", f"id{k}", 1000 + k, "archive") for k in range(10)]
    archive += [t("linear", "early", 10, "archive")]  # before live capture started: not "missed"
    row = live_then_archive(tmp_path / "s.duckdb", "linear", live, archive, covered_ms=(1000, 2000))
    assert row["matched_by"] == "id"
    assert (row["archive_trades"], row["live_trades"], row["matched"]) == (11, 10, 9)
    assert (row["archive_only"], row["missed"], row["phantoms"]) == (2, 1, 1)


def test_spot_matches_by_values_because_its_archive_ids_differ(tmp_path: Path) -> None:
    live = [t("spot", f"20000{k}", 1000 + k // 2, "ws", price=100.0 + k % 2) for k in range(8)]
    archive = [t("spot", f"20240110{k:010d}", 1000 + k // 2, "archive", price=100.0 + k % 2) for k in range(8)]
    archive.append(t("spot", "202401109999999999", 1003, "archive"))  # a third equal trade in that ms
    row = live_then_archive(tmp_path / "s.duckdb", "spot", live, archive, covered_ms=(900, 2000))
    assert row["matched_by"] == "values"
    assert (row["matched"], row["missed"], row["phantoms"]) == (8, 1, 0)


def test_a_day_without_live_rows_records_nothing(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.duckdb") as store, store.atomic():
        ingest_batch(store, trades_to_table([t("linear", "a", 5, "archive")]), market=Market("linear", "BTCUSDT"),
                     replace_rest=Span(DAY0, DAY0 + DAY_US))
        assert reconciliations(store, Market("linear", "BTCUSDT")) == []
