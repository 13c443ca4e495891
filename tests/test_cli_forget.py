"""`forget`: a span removed is as if it was never fetched (verify passes, refresh fetches it again)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import cli
from fetch.market_span import Market
from store import Store, open_store
from store.report import verify


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.main, list(args), env=env, input=stdin, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def snapshot(path: str) -> dict[str, list[tuple[object, ...]]]:
    with Store.open(path, read_only=True) as store:
        return {
            "trades": store.query("SELECT category, symbol, trade_id, time_us FROM trades ORDER BY ALL"),
            "coverage": store.query("SELECT category, symbol, source, start_us, end_us, expected_rows FROM coverage "
                                    "ORDER BY ALL"),
            "day_summary": store.query("SELECT category, symbol, day, fingerprint FROM day_summary ORDER BY ALL"),
            "exports": store.query("SELECT category, symbol, day, rows FROM exports ORDER BY ALL"),
        }


def test_forget_a_span_leaves_the_store_as_if_it_was_never_fetched(env: dict[str, str], tmp_path: Path) -> None:
    refresh = ["refresh", "BTCUSDT", "--start", "2024-01-02", "--end", "2024-01-04"]
    assert run(env, *refresh)[0] == 0
    expected = snapshot(env["BACKFILL_DB_PATH"])
    code, out, _ = run(env, "refresh", "BTCUSDT", "--start", "2024-01-02", "--end", "2024-01-06")
    assert code == 0
    cache = Path(env["BACKFILL_CACHE_DIR"])
    assert (cache / "backfill_2024-01-05.parquet").exists()

    code, out, _ = run(env, "forget", "BTCUSDT", "--category", "linear", "--start", "2024-01-04", "--end",
                       "2024-01-06", "--yes", "--json")
    assert code == 0, out
    done = json.loads(out)
    assert done["rows"]["trades"] == 4000 and done["files_deleted"] == 2
    assert snapshot(env["BACKFILL_DB_PATH"]) == expected
    assert not (cache / "backfill_2024-01-04.parquet").exists() and (cache / "backfill_2024-01-03.parquet").exists()
    with Store.open(env["BACKFILL_DB_PATH"], read_only=True) as store:
        assert verify(store).ok
    code, out, _ = run(env, "refresh", "BTCUSDT", "--start", "2024-01-02", "--end", "2024-01-06", "--json")
    summary = json.loads(out)
    assert (summary["days_from_store"], summary["days_fetched"], summary["rows_added"]) == (2, 2, 4000)


def test_forget_a_wrong_category_asks_first_and_keeps_the_right_one(env: dict[str, str]) -> None:
    assert run(env, "refresh", "BTCUSDT", "--start", "2024-01-02", "--days", "1", "--no-export")[0] == 0
    assert run(env, "refresh", "BTCUSDT", "--category", "spot", "--start", "2024-01-02", "--days", "1",
               "--no-export")[0] == 0
    code, _, err = run(env, "forget", "BTCUSDT", "--category", "spot", stdin="n\n")
    assert code == 1 and "forget BTCUSDT (spot)" in err
    with Store.open(env["BACKFILL_DB_PATH"], read_only=True) as store:
        assert store.query_one("SELECT count(*) FROM trades WHERE category = 'spot'")[0] == 1000
    code, out, _ = run(env, "forget", "BTCUSDT", "--category", "spot", stdin="y\n")
    assert code == 0 and "forgot BTCUSDT (spot)" in out
    with Store.open(env["BACKFILL_DB_PATH"], read_only=True) as store:
        assert store.query("SELECT DISTINCT category FROM trades") == [("linear",)]
        assert store.query("SELECT DISTINCT category FROM coverage") == [("linear",)]
        assert verify(store).ok
    code, _, err = run(env, "forget", "BTCUSDT", "--category", "linear", "--start", "2024-01-02T12:00", "--yes")
    assert code == 2 and "whole UTC days" in err


def test_forget_clips_coverage_that_reaches_past_the_span(tmp_path: Path) -> None:
    from datetime import date

    from store.forget import forget
    from store.timeutil import day_start_us

    with open_store(tmp_path / "clip.duckdb") as store:
        day = 86_400_000_000
        start = day_start_us(date(2024, 1, 1))
        store.execute("INSERT INTO coverage (category, symbol, source, start_us, end_us, added_rows) "
                      "VALUES ('linear', 'BTCUSDT', 'ws', ?, ?, 0)", [start, start + 3 * day])
        store.execute("INSERT INTO open_gaps (category, symbol, start_us, end_us, reason) "
                      "VALUES ('linear', 'BTCUSDT', ?, ?, 'r')", [start + day // 2, start + 2 * day])
        forget(store, Market("linear", "BTCUSDT"), date(2024, 1, 2), date(2024, 1, 3))
        assert store.query("SELECT start_us - ?, end_us - ? FROM coverage ORDER BY start_us", [start, start]) == [
            (0, day), (2 * day, 3 * day)]
        assert store.query("SELECT start_us - ?, end_us - ? FROM open_gaps", [start, start]) == [(day // 2, day)]
