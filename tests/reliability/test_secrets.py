"""The API secret never leaves `Credentials` and the signing layer: not on stdout or stderr of any
command (at -v), not in any log record, exception text or repr, not in the store or the cache files,
also when Bybit refuses the signature (10004) and echoes what was signed.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from relutil import run_cli
from storeutil import day, sim_fetch_config, us

from fetch import AuthError, BybitClient, Credentials, ExecutionSource, FetchConfig
from fetch.market_span import Span
from sim import run_in_thread
from store import BybitConnectorHistory, Settings, refresh_executions
from store.schema import open_store

SECRET = "zq-SECRET-7c1e55d0a9-never-shown"
KEY = "reliability-key-4411"
RANGE = ["--start", "2024-01-08", "--end", "2024-01-10T12:00"]


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    """Every log record created anywhere (whatever handlers the CLI installs), at DEBUG."""
    caplog.set_level(logging.DEBUG)
    made: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def capture(*args: object, **kwargs: object) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        made.append(record)
        return record

    logging.setLogRecordFactory(capture)
    yield made
    logging.setLogRecordFactory(factory)


def rendered(record: logging.LogRecord) -> str:
    text = f"{record.getMessage()} {record.args!r}"
    if record.exc_info:
        text += "".join(traceback.format_exception(*record.exc_info))
    return text


def assert_nowhere(text: str) -> None:
    assert SECRET not in text
    assert SECRET[3:15] not in text, "not even a piece of it"


def keyed(url: str) -> FetchConfig:
    return replace(sim_fetch_config(url), credentials=Credentials(KEY, SECRET))


def env_for(url: str, tmp_path: Path) -> dict[str, str]:
    return {"BYBIT_REST_BASE_URL": url, "BYBIT_ARCHIVE_BASE_URL": url, "BYBIT_API_KEY": KEY,
            "BYBIT_API_SECRET": SECRET, "BACKFILL_DB_PATH": str(tmp_path / "s.duckdb"),
            "BACKFILL_CACHE_DIR": str(tmp_path / "cache"), "BYBIT_BACKFILL_RETRY_BASE": "0.01"}


COMMANDS = [
    ["refresh", "BTCUSDT", *RANGE],
    ["executions", "--start", "2023-12-20", "--end", "2024-01-10"],
    ["status"],
    ["gaps", "BTCUSDT", *RANGE],
    ["export", "BTCUSDT", "--start", "2024-01-08", "--end", "2024-01-10"],
    ["sql", "SELECT count(*) FROM executions"],
    ["verify"],
]


def test_no_command_shows_the_secret_even_at_debug_level(sim_config, tmp_path: Path, monkeypatch,
                                                          records: list[logging.LogRecord]) -> None:
    monkeypatch.chdir(tmp_path)
    with run_in_thread(replace(sim_config, api_keys={KEY: SECRET})) as sim:
        env = env_for(sim.url, tmp_path)
        logged = ""
        for command in COMMANDS:
            code, out, err = run_cli(env, "-v", *command)
            assert code == 0, (command, err)
            assert_nowhere(out + err)
            logged += err
        assert " DEBUG " in logged or " INFO " in logged, "-v really logged"
    assert records, "log records were made"
    for record in records:
        assert_nowhere(rendered(record))
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_refused_signature_is_reported_without_the_secret(sim_config, tmp_path: Path, monkeypatch,
                                                             records: list[logging.LogRecord]) -> None:
    monkeypatch.chdir(tmp_path)
    # The exchange knows another secret for this key: every signature is wrong (retCode 10004), and its
    # message echoes the signed string, API key included.
    with run_in_thread(replace(sim_config, api_keys={KEY: "the-exchange-knows-another"})) as sim:
        env = env_for(sim.url, tmp_path)
        code, out, err = run_cli(env, "-v", "executions", "--start", "2024-01-01", "--end", "2024-01-08")
        assert code == 2 and "Bybit refused the API key" in err and "10004" in err
        assert_nowhere(out + err)
        assert KEY not in err.splitlines()[-1], "the key shows only by its head in the error"
        code, out, err = run_cli(env, "-v", "refresh", "BTCUSDT", *RANGE)  # public data needs no key
        assert code == 0
        assert_nowhere(out + err)
        with open_store(tmp_path / "lib.duckdb") as store, pytest.raises(AuthError) as caught:
            asyncio.run(refresh_executions(store, keyed(sim.url), Span(us(day(1)), us(day(8)))))
    error = caught.value
    assert_nowhere(str(error) + repr(error) + "".join(traceback.format_exception(error)))
    for record in records:
        assert_nowhere(rendered(record))


async def test_signed_calls_and_test_mode_keep_the_secret_out_of_errors_and_logs(
        sim_config, tmp_path: Path, records: list[logging.LogRecord]) -> None:
    from sim import running_sim

    async with running_sim(replace(sim_config, api_keys={KEY: "the-exchange-knows-another"})) as sim:
        config = keyed(sim.url)
        async with BybitClient(config, sign_public=True) as client:
            await client.get_public("/v5/market/recent-trade", {"category": "linear", "symbol": "BTCUSDT",
                                                                 "limit": 5})  # signed public call
            with pytest.raises(AuthError) as caught:
                async for _ in ExecutionSource(client).fetch("linear", us(day(1)) // 1000,
                                                             us(day(2)) // 1000):
                    pass
            shown = repr(client) + str(client.stats.as_dict()) + repr(client.config)
        settings = Settings(bybit_api_key=KEY, bybit_api_secret=SECRET, bybit_rest_base_url=sim.url,
                            bybit_archive_base_url=sim.url, backfill_db_path=tmp_path / "h.duckdb",
                            context_backfill_test_mode=True, _env_file=None)
        with pytest.raises(AuthError) as in_test_mode:
            await BybitConnectorHistory(settings).test_single_window()
    assert_nowhere(shown + str(caught.value) + "".join(traceback.format_exception(caught.value)))
    assert_nowhere(str(in_test_mode.value) + "".join(traceback.format_exception(in_test_mode.value)))
    for record in records:
        assert_nowhere(rendered(record))


def test_settings_and_config_reprs_never_show_the_secret(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BYBIT_API_KEY", KEY)
    monkeypatch.setenv("BYBIT_API_SECRET", SECRET)
    settings = Settings()
    assert settings.bybit_api_secret.get_secret_value() == SECRET, "the secret was read"
    config = settings.fetch_config()
    assert config.credentials.api_secret == SECRET and config.credentials.present
    shown = [repr(settings), str(settings), settings.model_dump_json(), repr(settings.model_dump()),
             repr(config), str(config), repr(config.credentials), str(config.credentials),
             repr(BybitClient(config))]
    for text in shown:
        assert_nowhere(text)
    assert KEY not in repr(config.credentials), "the key shows only by its head"
