"""`bybit-backfill`: a thin click skin over the `store` library.

Each command builds `Settings`, calls one library function and renders its result. Library errors
become one line on stderr (and, with `--json`, `{"error": ..., "exit_code": ...}` on stdout) and an
exit code by kind (`_exit_code`: 2 bad input, 3 the exchange, 4 the store) in exactly one place:
`_Group.invoke`, with `_Group.make_context` for bad group-level options. `-v` and `--version` are
added to every command by `_add_common_options`, so they work before or after the command name.

Each command imports the library modules it calls, inside its function: pydantic, DuckDB, pyarrow,
aiohttp and the refresh machinery then load only when a command needs them, so `--help`, `--version`
and the read-only commands start fast. Module level stays click and the error classes
(`tests/test_startup.py` checks this).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from fetch.errors import BackfillError, InputError
from fetch.market_span import CATEGORIES, Category, Market, Span

if TYPE_CHECKING:
    from store.refresh_summary import Progress, RefreshSummary
    from store.settings import Settings

log = logging.getLogger("context.backfill")
F = TypeVar("F", bound=Callable[..., Any])
EXIT_PARTIAL = 1  # the run finished, but part of it failed (e.g. an unusable archive day): rerun
EXIT_INPUT = 2     # bad input or a refusal: fix the command, the settings or the credentials
EXIT_EXCHANGE = 3  # Bybit unreachable or unusable after the retries (network, bans, bad answers)
EXIT_STORE = 4     # the store or its cache dir: locked, not ours, unwritable
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE: what a shell tool reports when its reader went away


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bybit-backfill")
    except PackageNotFoundError:
        return "0+unknown"


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """`click.version_option`'s output, but the installed version is looked up only when asked for."""
    if value and not ctx.resilient_parsing:
        click.echo(f"bybit-backfill, version {_version()}", color=ctx.color)
        ctx.exit()


EXIT_UNEXPECTED = 1


def _exit_code(error: BackfillError) -> int:
    """Bad input (a wrong symbol and refused credentials included) first, then the store; any other
    error of ours came from the exchange or the way to it."""
    from fetch.errors import AuthError, ParameterError
    from store.errors import StoreError

    if isinstance(error, InputError | ParameterError | AuthError):
        return EXIT_INPUT
    if isinstance(error, StoreError):
        return EXIT_STORE
    return EXIT_EXCHANGE


class _Group(click.Group):
    """The one place library errors and Ctrl-C turn into messages and exit codes.

    With `--json` anywhere on the command line, an error is also JSON, on stdout
    (`{"error": ..., "exit_code": ...}`), so a script reading stdout sees it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["json_errors"] = "--json" in args
        return super().parse_args(ctx, args)

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        """Bad group-level options (`bybit-backfill --bogus`) get the same one line as the rest."""
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as error:
            where = error.ctx.command_path if error.ctx is not None else (info_name or "bybit-backfill")
            _report(f"{error.format_message()} (see `{where} --help`)", EXIT_INPUT, "--json" in args)
            raise click.exceptions.Exit(EXIT_INPUT) from None

    def invoke(self, ctx: click.Context) -> Any:
        as_json = bool(ctx.meta.get("json_errors"))
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort):
            raise
        except BackfillError as error:
            _report(str(error), _exit_code(error), as_json)
            ctx.exit(_exit_code(error))
        except click.UsageError as error:  # bad options too get one line, not a usage screen
            where = error.ctx.command_path if error.ctx is not None else ctx.command_path
            _report(f"{error.format_message()} (see `{where} --help`)", EXIT_INPUT, as_json)
            ctx.exit(EXIT_INPUT)
        except BrokenPipeError:  # `sql ... | head`: the reader has what it wanted; nothing to report
            ctx.exit(EXIT_PIPE_CLOSED)
        except KeyboardInterrupt:
            _report("interrupted: finished days are kept and the day in progress was rolled back; "
                    "rerun the same command to continue", EXIT_INTERRUPTED, as_json, prefix="")
            ctx.exit(EXIT_INTERRUPTED)
        except click.ClickException as error:
            _report(error.format_message(), EXIT_INPUT, as_json)
            ctx.exit(EXIT_INPUT)
        except Exception as error:  # noqa: BLE001  (a bug: one line, the traceback only when asked for)
            if (ctx.obj or {}).get("verbose"):
                import traceback

                click.echo(traceback.format_exc().rstrip(), err=True)
            first = str(error).splitlines()[0] if str(error) else ""
            _report(f"unexpected {type(error).__name__}: {first} (a bug in bybit-backfill; "
                    "rerun with -v for the traceback and report it)", EXIT_UNEXPECTED, as_json)
            ctx.exit(EXIT_UNEXPECTED)


def _report(message: str, code: int, as_json: bool, prefix: str = "error: ") -> None:
    """One error: a line on stderr, and with --json the same as JSON on stdout."""
    click.echo(f"{prefix}{message}", err=True)
    if as_json:
        click.echo(json.dumps({"error": message, "exit_code": code}))


def _verbose(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """`-v` after a command name means the same as before it: debug lines of context.backfill."""
    if value and not ctx.resilient_parsing:
        root = ctx.find_root()
        root.ensure_object(dict)["verbose"] = True
        log.setLevel(logging.DEBUG)


def _add_common_options(group: click.Group) -> None:
    """Every command (and subcommand) takes -v and --version, as the group does."""
    for command in group.commands.values():
        names = {name for param in command.params for name in param.opts}
        if "-v" not in names:
            command.params.append(click.Option(["-v", "--verbose", "verbose_flag"], is_flag=True,
                                               expose_value=False, callback=_verbose,
                                               help="Debug logs of the context.backfill logger."))
        if "--version" not in names:
            command.params.append(click.Option(["--version"], is_flag=True, expose_value=False,
                                               is_eager=True, callback=_show_version,
                                               help="Show the version and exit."))
        if isinstance(command, click.Group):
            _add_common_options(command)


class _Finite(click.ParamType[float]):
    """A float that is a real number: nan and inf read as floats but are no length or duration."""

    name = "float"

    def __init__(self, *, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        import math

        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a valid float", param, ctx)
        if not math.isfinite(number) or (self.positive and number <= 0) or number < 0:
            self.fail(f"{value!r} is not a {'positive' if self.positive else 'non-negative'} finite number",
                      param, ctx)
        return number


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj["settings"]
    return settings


def _symbol(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Every command spells a symbol as Bybit does (BTCUSDT), whatever was typed."""
    from fetch.symbols import normalize_symbol

    if value is None:
        return None
    try:
        return normalize_symbol(value)
    except BackfillError as error:
        raise click.BadParameter(str(error)) from None


def _symbols(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(str(_symbol(ctx, param, value)) for value in values)


def _db_option(f: F) -> F:
    return click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help="DuckDB store file [default: BACKFILL_DB_PATH or ./bybit_backfill.duckdb]")(f)


def _range_options(f: F, default_days: int = 3) -> F:
    f = click.option("--days", type=_Finite(positive=True), default=None,
                     help=f"Length of the range in days (with --start or --end, not both) [default: {default_days}].")(f)
    f = click.option("--end", default=None,
                     help="End (exclusive), YYYY-MM-DD[THH:MM[:SS]] UTC [default: now, or --start + --days].")(f)
    f = click.option("--start", default=None,
                     help=f"Start (inclusive), YYYY-MM-DD[THH:MM[:SS]] UTC [default: the last {default_days} days, "
                          "i.e. --end minus --days].")(f)
    return f


def _week_range_options(f: F) -> F:
    return _range_options(f, default_days=7)


def _category_option(f: F) -> F:
    return click.option("--category", type=click.Choice(CATEGORIES), default="linear",
                        show_default=True)(f)


def _json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(f)


def _lock_wait(ctx: click.Context, explicit: float | None = None) -> float:
    """How long to wait for the store while another process holds it: the option, else the setting."""
    return explicit if explicit is not None else _settings(ctx).backfill_lock_wait_s


def _db_path(ctx: click.Context, db: Path | None) -> Path:
    """The command's --db, else the group's --db, else BACKFILL_DB_PATH."""
    group_db: Path | None = (ctx.obj or {}).get("db")
    return db if db is not None else group_db if group_db is not None else _settings(ctx).backfill_db_path


def _now() -> datetime:
    return datetime.now(UTC)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _table(names: Sequence[str], rows: Sequence[Sequence[Any]], wrap: dict[int, int] | None = None) -> str:
    from store.report import render_table

    return render_table(names, rows, wrap=wrap)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_show_version,
              help="Show the version and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logs of the context.backfill logger: each "
              "request with its timing, retries, plan decisions, commits.")
@click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="DuckDB store file of every command [default: BACKFILL_DB_PATH or ./bybit_backfill.duckdb].")
@click.pass_context
def main(ctx: click.Context, verbose: bool, db: Path | None) -> None:
    """A complete, verified local history of Bybit trades.

    Whole past days come from Bybit's daily archive files, the newest trades from recent-trade;
    everything lands once in a DuckDB file and is exported as daily parquet files.

    \b
    Example:
        bybit-backfill demo
        bybit-backfill refresh BTCUSDT --start 2024-01-01 --end 2024-01-08
    """
    from store.settings import Settings

    interactive = sys.stderr.isatty()
    _configure_logging(ctx, logging.DEBUG if verbose else (logging.WARNING if interactive else logging.INFO))
    ctx.ensure_object(dict)
    ctx.obj["interactive"] = interactive
    ctx.obj["verbose"] = verbose
    ctx.obj["db"] = db
    if ctx.invoked_subcommand not in {"sim"}:
        ctx.obj["settings"] = Settings()


def _configure_logging(ctx: click.Context, level: int) -> None:
    """Log lines on stderr for this command; the logger is restored afterwards (library callers
    and tests running several commands in one process keep their own configuration)."""
    saved = (log.handlers[:], log.level, log.propagate)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False

    def restore() -> None:
        log.handlers[:] = saved[0]
        log.setLevel(saved[1])
        log.propagate = saved[2]

    ctx.call_on_close(restore)


class _ProgressLine:
    """One self-rewriting line on a terminal: days, megabytes, rows."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.days = self.total = self.rows = self.bytes = 0

    def __call__(self, event: Progress) -> None:
        if event.event == "plan":
            self.total = event.total_days
        elif event.event == "bytes":
            self.bytes += event.bytes
        elif event.event in ("day", "tail"):
            self.days += event.event == "day"
            self.rows += event.rows
        if self.enabled:
            click.echo(f"\r  days {self.days}/{self.total}  {self.bytes / 1e6:8.1f} MB  "
                       f"{self.rows:>12,} rows", nl=False, err=True)

    def close(self) -> None:
        if self.enabled and self.total:
            click.echo("", err=True)


def _render_summary(summary: RefreshSummary) -> None:
    click.echo(f"{summary.symbol} ({summary.category}) {summary.start} .. {summary.end}")
    click.echo(f"  days: {summary.days_in_range} in range, {summary.days_from_store} already stored, "
               f"{summary.days_fetched} fetched, {len(summary.days_failed)} failed")
    click.echo(f"  rows added: {summary.rows_added:,}  duplicates skipped: {summary.duplicates_skipped:,}"
               f"  conflicts: {summary.conflicts:,}  from the REST tail: {summary.tail_rows:,}")
    click.echo(f"  requests: {summary.requests}  retries: {summary.retries}  breaker openings: "
               f"{summary.breaker_openings}  peak throttle: {summary.peak_throttle:.1f}x  "
               f"downloaded: {summary.bytes_downloaded / 1e6:.1f} MB")
    click.echo(f"  exported files: {summary.files_exported}  elapsed: {summary.elapsed_s:.2f} s "
               f"({summary.rows_per_s:,.0f} rows/s)")
    click.echo(f"  gaps left: {len(summary.gaps)}")
    for gap in summary.gaps:
        click.echo(f"    {gap.start.isoformat()} .. {gap.end.isoformat()}: {gap.reason}")


@main.command("refresh")
@click.argument("symbols", nargs=-1, callback=_symbols)
@_category_option
@_range_options
@click.option("--no-export", is_flag=True, help="Do not write the daily parquet files.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where backfill_YYYY-MM-DD.parquet go [default: BACKFILL_CACHE_DIR]; a template with "
                   "{symbol} and {category} for several symbols, e.g. 'cache/{symbol}'.")
@click.option("--wait-lock", type=_Finite(), default=None,
              help="Seconds to wait while another process holds the store [default: BACKFILL_LOCK_WAIT_S, 30].")
@click.option("--all", "all_symbols", is_flag=True, help="Every symbol of the category (instruments-info).")
@click.option("--status", default="Trading", show_default=True,
              help="With --all: Trading, Closed (delisted symbols keep their archive) or all.")
@click.option("--shard", default=None, help="K/N: only the (symbol, day) pairs machine K of N owns [default: all of them].")
@click.option("--concurrency", type=int, default=32, show_default=True,  # store.market.DEFAULT_CONCURRENCY
              help="Symbols downloading at once (their staged days share a bound of 256 MB of archive files).")
@click.option("--lake", default=None, help="Keep this lake (directory or s3://bucket/prefix) current [default: no lake].")
@_db_option
@_json_option
@click.pass_context
def refresh_command(ctx: click.Context, symbols: tuple[str, ...], category: Category, start: str | None,
                    end: str | None, days: float | None, no_export: bool, cache_dir: Path | None,
                    wait_lock: float | None, all_symbols: bool, status: str, shard: str | None, concurrency: int,
                    lake: str | None, db: Path | None, as_json: bool) -> None:
    """Make the store complete over a range: archive days, then the REST tail; export; report.

    Several symbols, or --all of a category, are refreshed a few at once and summed up in one table;
    --shard K/N splits that work across N machines (each with its own store) filling one --lake.

    \b
    Example:
        bybit-backfill refresh BTCUSDT --start 2024-01-01 --end 2024-01-08
        bybit-backfill refresh ETHUSDT --days 3 --json
        bybit-backfill refresh BTCUSDT ETHUSDT --days 7 --cache-dir 'cache/{symbol}'
        bybit-backfill refresh --all --shard 1/4 --start 2024-01-01 --no-export --lake s3://bucket/bybit
    """
    import asyncio

    from store.orchestrator import refresh
    from store.schema import open_store
    from store.timerange import resolve_range

    settings = _settings(ctx)
    span = resolve_range(start, end, days, _now())
    if all_symbols == bool(symbols):
        raise InputError("give the symbols to refresh, or --all for every symbol of the category (not both)")
    if len(symbols) > 1 or all_symbols or shard is not None:
        _refresh_many(ctx, symbols, span, category=category, no_export=no_export,
                      cache_dir=cache_dir, wait_lock=wait_lock, status=status, shard=shard,
                      concurrency=concurrency, lake=lake, db=db, as_json=as_json)
        return
    symbol = symbols[0]
    if cache_dir is not None and "{" in str(cache_dir):
        from store.market import cache_dir_for, check_cache_template

        check_cache_template(str(cache_dir), 1)
        cache_dir = cache_dir_for(str(cache_dir), Market(category, symbol))
    progress = _ProgressLine(ctx.obj["interactive"] and not as_json)
    with open_store(_db_path(ctx, db), wait_s=_lock_wait(ctx, wait_lock)) as store:
        try:
            summary = asyncio.run(refresh(store, settings.fetch_config(), symbol, *span,
                                          category=category, progress=progress,
                                          command=f"refresh {category} {symbol}",
                                          **settings.refresh_arguments(export=not no_export, cache_dir=cache_dir)))
        finally:
            progress.close()
    lake_report = _single_lake(ctx, store_path=_db_path(ctx, db), lake=lake, market=Market(category, symbol),
                               span=span)
    if as_json:
        _print_json({**summary.as_dict(), **({"lake": lake_report.as_dict()} if lake_report else {})})
    else:
        _render_summary(summary)
        if lake_report is not None:
            _render_lake(lake_report)
    if summary.days_failed:
        failed = ", ".join(summary.days_failed)
        click.echo(f"error: {len(summary.days_failed)} archive day(s) failed ({failed}): the other days "
                   "are stored; rerun the same command to fetch them again", err=True)
        ctx.exit(EXIT_PARTIAL)


def _single_lake(ctx: click.Context, *, store_path: Path, lake: str | None, market: Market, span: Span) -> Any:
    """`refresh SYMBOL --lake DEST`: the refreshed days into the lake, after the refresh."""
    if lake is None:
        return None
    import os
    from datetime import timedelta

    from store.lake import open_location, write_lake
    from store.schema import open_store
    from store.timeutil import day_of_us

    location = open_location(lake, os.environ)
    with open_store(store_path, read_only=True, wait_s=_lock_wait(ctx)) as store:
        return write_lake(store, location, categories=[market.category], symbols=[market.symbol],
                          first=day_of_us(span.start_us), stop=day_of_us(span.end_us - 1) + timedelta(days=1))


def _refresh_many(ctx: click.Context, symbols: tuple[str, ...], span: Span, *, category: Category,
                  no_export: bool, cache_dir: Path | None, wait_lock: float | None, status: str, shard: str | None,
                  concurrency: int, lake: str | None, db: Path | None, as_json: bool) -> None:
    """Several symbols (or --all): `store.market.refresh_market`, one table at the end."""
    import asyncio
    import os

    from fetch.instruments import statuses_for
    from store.lake import open_location
    from store.market import Shard, refresh_market
    from store.schema import open_store

    settings = _settings(ctx)
    statuses = statuses_for(status)
    parsed = Shard.parse(shard) if shard is not None else None
    template = None if no_export or not settings.backfill_cache_enabled else str(
        cache_dir or settings.backfill_cache_dir)
    location = open_location(lake, os.environ) if lake else None

    def done(result: Any) -> None:
        log.info("%s: %d days fetched, %d rows added%s", result.symbol, result.days_fetched,
                 result.rows_added, f", failed: {result.error}" if result.error else "")

    with open_store(_db_path(ctx, db), wait_s=_lock_wait(ctx, wait_lock)) as store:
        summary = asyncio.run(refresh_market(
            store, settings.fetch_config(), list(symbols) or None, span, category=category,
            statuses=statuses, shard=parsed, cache_template=template, id_mode=settings.backfill_export_id,
            lake=location, concurrency=concurrency, on_symbol=done))
    if as_json:
        _print_json(summary.as_dict())
    else:
        _render_market(summary)
    if summary.failed:
        names = [r.symbol for r in summary.results if r.failures]
        click.echo(f"error: {len(names)} symbol(s) had failures ({', '.join(names[:20])}"
                   f"{', ...' if len(names) > 20 else ''}): the rest is stored; rerun the same command to "
                   "fetch what failed", err=True)
        ctx.exit(EXIT_PARTIAL)


def _render_market(summary: Any) -> None:
    shard = f", shard {summary.shard}" if summary.shard else ""
    click.echo(f"{len(summary.results)} symbols ({summary.category}{shard}) {summary.start} .. {summary.end}")
    rows = [[r.symbol, f"{r.days_fetched}/{r.days_in_range}", r.days_from_store, f"{r.rows_added:,}", r.gaps,
             r.failures if not r.error else f"{r.failures}: {r.error[:80]}"] for r in summary.results]
    click.echo(_table(["symbol", "days fetched", "from store", "rows added", "gaps", "failures"], rows))
    click.echo(f"  total: {summary.rows_added:,} rows added  requests: {summary.requests}  retries: "
               f"{summary.retries}  downloaded: {summary.bytes_downloaded / 1e6:.1f} MB  elapsed: "
               f"{summary.elapsed_s:.2f} s")
    if summary.lake is not None:
        _render_lake(summary.lake)


@main.command("follow")
@click.argument("symbols", nargs=-1, required=True, callback=_symbols)
@_category_option
@click.option("--export-every", type=float, default=60.0, show_default=True,
              help="Seconds between rewrites of today's parquet file of each symbol.")
@click.option("--no-export", is_flag=True, help="Do not write the daily parquet files.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where backfill_YYYY-MM-DD.parquet go [default: BACKFILL_CACHE_DIR; one subdirectory "
                   "per symbol when following several].")
@click.option("--archive-check", type=float, default=300.0, show_default=True,
              help="Seconds between looks for a captured day's archive file (then the archive replaces it).")
@click.option("--commit-every", type=float, default=0.5, show_default=True,
              help="Seconds between commits (the store is held only while one commits).")
@click.option("--ping-every", type=float, default=20.0, show_default=True, help="WebSocket ping interval.")
@click.option("--stale-after", type=float, default=90.0, show_default=True,
              help="Seconds without a trade after which an open connection counts as dead.")
@click.option("--wait-lock", type=float, default=10.0, show_default=True,
              help="Seconds each commit waits for another writer.")
@_db_option
@_json_option
@click.pass_context
def follow_command(ctx: click.Context, symbols: tuple[str, ...], category: Category, export_every: float,
                   no_export: bool, cache_dir: Path | None, archive_check: float, commit_every: float,
                   ping_every: float, stale_after: float, wait_lock: float, db: Path | None,
                   as_json: bool) -> None:
    """Capture trades live over the WebSocket into the store, until stopped (SIGTERM or Ctrl-C).

    Holes after a reconnect are bridged with recent-trade or recorded as gaps; once a captured
    day's archive file is published, the archive replaces the live rows and the difference is
    recorded in the `reconciliation` table.

    \b
    Example:
        bybit-backfill follow BTCUSDT ETHUSDT
        bybit-backfill follow BTCUSDT --category spot --export-every 30
    """
    import asyncio
    import signal

    from store.follow import FollowConfig, Follower, StreamOptions

    settings = _settings(ctx)
    if min(export_every, archive_check, commit_every, ping_every, stale_after) <= 0 or wait_lock < 0:
        raise click.BadParameter("intervals must be positive (and --wait-lock >= 0)")
    export_to = None if no_export or not settings.backfill_cache_enabled else (
        cache_dir or settings.backfill_cache_dir)
    config = FollowConfig(_db_path(ctx, db), settings.fetch_config(), category,
                          tuple(s.upper() for s in symbols), cache_dir=export_to, export_every_s=export_every,
                          commit_every_s=commit_every, archive_check_s=archive_check, lock_wait_s=wait_lock,
                          stream=StreamOptions(ping_interval_s=ping_every, stale_after_s=stale_after),
                          id_mode=settings.backfill_export_id)
    follower = Follower(config)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, follower.stop)
        await follower.run()

    asyncio.run(run())
    stats = follower.stats
    if as_json:
        _print_json(dict(stats))
        return
    click.echo(f"follow stopped: {stats['rows_added']:,} rows added in {stats['commits']} commits, "
               f"{stats['disconnects']} disconnects, {stats['gaps']} gaps recorded, "
               f"{stats['archive_days']} days settled from the archive", err=True)


@main.command("executions")
@_category_option
@click.option("--symbol", default=None, callback=_symbol, help="Only this symbol (default: all).")
@click.option("--exec-type", default=None, help="Only this execType, e.g. Trade or Funding [default: every type].")
@_week_range_options
@_db_option
@_json_option
@click.pass_context
def executions_command(ctx: click.Context, category: Category, symbol: str | None, exec_type: str | None,
                       start: str | None, end: str | None, days: float | None, db: Path | None,
                       as_json: bool) -> None:
    """Fetch the account's own fills (needs BYBIT_API_KEY and BYBIT_API_SECRET).

    \b
    Example:
        bybit-backfill executions --start 2024-01-01 --end 2024-03-01
    """
    import asyncio

    from store.executions import refresh_executions
    from store.schema import open_store
    from store.timerange import resolve_range

    settings = _settings(ctx)
    config = settings.fetch_config()
    if not config.credentials.present:
        raise InputError("executions needs BYBIT_API_KEY and BYBIT_API_SECRET (env or .env): set both "
                         "to a key with read permission")
    span = resolve_range(start, end, days, _now(), default_days=7)
    with open_store(_db_path(ctx, db), wait_s=_lock_wait(ctx)) as store:
        summary = asyncio.run(refresh_executions(store, config, span, category=category,
                                                 symbol=symbol, exec_type=exec_type))
    if as_json:
        _print_json(summary.as_dict())
        return
    click.echo(f"executions {summary.symbol} ({summary.category}) {summary.start} .. {summary.end}")
    click.echo(f"  windows fetched: {summary.windows_fetched}  rows added: {summary.rows_added:,}  "
               f"duplicates skipped: {summary.duplicates_skipped:,}  requests: {summary.requests}  "
               f"retries: {summary.retries}  elapsed: {summary.elapsed_s:.2f} s")
    for kind, count in sorted(summary.by_exec_type.items()):
        click.echo(f"  {kind}: {count:,}")


@main.command("status")
@click.argument("symbol", required=False, callback=_symbol)
@_db_option
@_json_option
@click.pass_context
def status_command(ctx: click.Context, symbol: str | None, db: Path | None, as_json: bool) -> None:
    """Per market: days covered, holes, first and last trade, rows, open gaps, fills, last refresh, follower.

    Times are ISO-8601 UTC (Z). `open_gaps` counts what `gaps` lists over `gaps_range` (the
    command to see them is printed); `holes` are the uncovered spans inside the stored range.

    \b
    Example:
        bybit-backfill status BTCUSDT
        bybit-backfill status --json
    """
    from store.follow_state import follower_status
    from store.report import iso_utc, status, stored_symbols
    from store.schema import open_store
    from store.writer_state import active_writer

    with open_store(_db_path(ctx, db), read_only=True, wait_s=_lock_wait(ctx)) as store:
        rows = status(store, symbol)
        known = stored_symbols(store) if not rows else []
    followers = follower_status(_db_path(ctx, db))
    writer = active_writer(_db_path(ctx, db))
    for row in rows:
        found = followers.get((row["category"], row["symbol"]),
                              {"follower": "none", "live_last_trade": None, "live_lag_s": None})
        row.update({key: iso_utc(value) for key, value in found.items()})
        if as_json:
            row["writer"] = writer
    if writer is not None and not as_json:
        click.echo(f"writer: {writer['command']} (pid {writer['pid']}, since {writer['since']})"
                   f"{': ' + writer['progress'] if writer.get('progress') else ''}")
    if as_json:
        _print_json(rows)
    elif not rows:
        if symbol is not None and known:
            click.echo(f"no trades for {symbol} (the store has {', '.join(known)}): "
                       f"run `bybit-backfill refresh {symbol}`")
        else:
            click.echo("the store holds no trades yet: run `bybit-backfill refresh SYMBOL`")
    else:
        for number, row in enumerate(rows):
            if number:
                click.echo("")
            click.echo(_render_status(row))


def _render_status(row: dict[str, Any]) -> str:
    """One market as `name: value` lines: every field of the row, so fields added later show too."""
    lines = [f"{row['symbol']} ({row['category']})"]
    for key, value in row.items():
        if key in ("symbol", "category", "gaps_range"):
            continue
        if key == "holes":
            lines.append(f"  holes: {len(value)}" + "".join(f"\n    {hole}" for hole in value))
            continue
        if key == "open_gaps" and value and row.get("gaps_range"):
            lo, hi = row["gaps_range"]
            value = f"{value} (`bybit-backfill gaps {row['symbol']} --category {row['category']} --start {lo} --end {hi}`)"
        shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else (
            "-" if value is None else value)
        lines.append(f"  {key}: {shown}")
    return "\n".join(lines)


@main.command("gaps")
@click.argument("symbol", callback=_symbol)
@_category_option
@_range_options
@click.option("--min-silence", type=_Finite(positive=True), default=None,
              help="Also report stretches of more than SECONDS without a trade [default: not looked for].")
@_db_option
@_json_option
@click.pass_context
def gaps_command(ctx: click.Context, symbol: str, category: Category, start: str | None, end: str | None,
                 days: float | None, min_silence: float | None, db: Path | None, as_json: bool) -> None:
    """What the store cannot vouch for in a range: uncovered spans, silences, count mismatches.

    \b
    Example:
        bybit-backfill gaps BTCUSDT --start 2024-01-01 --end 2024-01-08 --min-silence 60
    """
    from store.coverage import find_gaps
    from store.schema import open_store
    from store.timerange import resolve_range

    span = resolve_range(start, end, days, _now())
    with open_store(_db_path(ctx, db), read_only=True, wait_s=_lock_wait(ctx)) as store:
        found = find_gaps(store, Market(category, symbol), span, min_silence)
    if as_json:
        _print_json([gap.as_dict() for gap in found])
    elif not found:
        click.echo("no gaps: the range is covered and consistent")
    else:
        click.echo(_table(["kind", "start", "end", "reason"],
                          [[g.kind, g.start.isoformat(), g.end.isoformat(), g.reason] for g in found],
                          wrap={3: 60}))


@main.command("export")
@click.argument("symbol", callback=_symbol)
@_category_option
@_range_options
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Target directory [default: BACKFILL_CACHE_DIR].")
@click.option("--id-mode", type=click.Choice(["tick", "raw"]), default=None,
              help="`i` column: decimal TradeTick.id (tick) or the exchange's id (raw) [default: BACKFILL_EXPORT_ID, tick].")
@_db_option
@_json_option
@click.pass_context
def export_command(ctx: click.Context, symbol: str, category: Category, start: str | None, end: str | None,
                   days: float | None, cache_dir: Path | None, id_mode: str | None,
                   db: Path | None, as_json: bool) -> None:
    """(Re)write the daily parquet cache files of a range from the store.

    Only days complete in the store get a file (a reader takes a file as the whole day); the others
    are listed as skipped, with why.

    \b
    Example:
        bybit-backfill export BTCUSDT --start 2024-01-01 --end 2024-01-08 --cache-dir ./cache
    """
    from store.export import export_range
    from store.schema import open_store
    from store.timerange import resolve_range
    from store.timeutil import days_touching

    settings = _settings(ctx)
    wanted: list[date] = days_touching([resolve_range(start, end, days, _now())])
    with open_store(_db_path(ctx, db), wait_s=_lock_wait(ctx)) as store:
        report = export_range(store, market=Market(category, symbol), days=wanted,
                              cache_dir=cache_dir or settings.backfill_cache_dir,
                              id_mode=id_mode or settings.backfill_export_id)
    if as_json:
        _print_json({"written": [{"path": str(w.path), "day": str(w.day), "rows": w.rows} for w in report.written],
                     "skipped": [{"day": str(k.day), "reason": k.reason} for k in report.skipped]})
        return
    for item in report.written:
        click.echo(f"{item.path}  {item.rows:,} rows")
    for skipped in report.skipped:
        click.echo(f"skipped {skipped.day}: {skipped.reason}")


@main.command("sql")
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table",
              show_default=True, help="parquet needs --output.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the answer to this file (csv, json or parquet) [default: stdout].")
@_db_option
@_json_option
@click.pass_context
def sql_command(ctx: click.Context, query: str, fmt: str, output: Path | None, db: Path | None,
                as_json: bool) -> None:
    """Run read-only SQL against the store: it can change neither the store nor any other file.

    Several statements run in order and each answer is printed. Answers stream (a million rows
    cost one batch of memory); --json is --format json (NaN as null); the table shows floats as
    stored and cuts cells wider than 40 characters with an ellipsis.

    \b
    Example:
        bybit-backfill sql "SELECT * FROM daily ORDER BY day"
        bybit-backfill sql "SELECT * FROM trades_v WHERE symbol = 'BTCUSDT'" --format csv > trades.csv
        bybit-backfill sql "SELECT * FROM trades_v LIMIT 1000" --format parquet --output sample.parquet
    """
    from store.sql_output import stream_sql, write_sql_file

    fmt = "json" if as_json else fmt
    if output is not None:
        if fmt == "table":
            raise InputError("--output writes csv, json or parquet: add --format csv|json|parquet")
        written = write_sql_file(_db_path(ctx, db), query, fmt, output, wait_s=_lock_wait(ctx))
        click.echo(f"{output}  {sum(written.rows):,} rows", err=True)
        return
    if fmt == "parquet":
        raise InputError("--format parquet needs --output PATH (parquet is not for a terminal)")
    stream_sql(_db_path(ctx, db), query, fmt, sys.stdout.buffer, wait_s=_lock_wait(ctx))


@main.command("verify")
@_db_option
@_json_option
@click.option("--repair", is_flag=True, help="First drop what the store cannot back (implausible trades with "
              "the coverage of their spans, coverage claiming the impossible), so the next refresh fetches "
              "it again; then check.")
@click.pass_context
def verify_command(ctx: click.Context, db: Path | None, as_json: bool, repair: bool) -> None:
    """Integrity checks: unique keys, coverage backed by rows, plausible trades, exports matching the store.

    \b
    Example:
        bybit-backfill verify
        bybit-backfill verify --repair && bybit-backfill refresh BTCUSDT --start 2024-01-01
    """
    from store.report import repair as repair_store
    from store.report import verify
    from store.schema import open_store

    with open_store(_db_path(ctx, db), read_only=not repair, wait_s=_lock_wait(ctx)) as store:
        if repair:
            repaired = repair_store(store)
            if not as_json:
                click.echo(f"repaired: {repaired.coverage_rows} coverage rows and {repaired.trades} trades "
                           "dropped; `refresh` fetches those spans again")
        report = verify(store)
    if as_json:
        _print_json(report.as_dict())
    else:
        for name, passed, detail in report.checks:
            click.echo(f"{'ok  ' if passed else 'FAIL'}  {name}{'' if passed else ': ' + detail}")
    if not report.ok:
        ctx.exit(1)


class _LakeGroup(click.Group):
    """`lake DEST ...` writes (the default subcommand); `lake verify DEST` checks."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["write", *args]
        return super().parse_args(ctx, args)


@main.group("lake", cls=_LakeGroup)
def lake_group() -> None:
    """A hive-partitioned parquet lake of the store (local dir or s3://bucket/prefix).

    \b
    Example:
        bybit-backfill lake ./lake --symbol BTCUSDT --start 2024-01-01 --end 2024-02-01
        bybit-backfill lake s3://bucket/bybit
        bybit-backfill lake verify ./lake
    """


def _render_lake(report: Any) -> None:
    rows = sum(w.rows for w in report.written)
    click.echo(f"lake {report.uri}: {len(report.written)} partitions written ({rows:,} rows), "
               f"{report.unchanged} unchanged, {len(report.skipped)} skipped")
    for category, symbol, day, reason in report.skipped:
        click.echo(f"  skipped {category} {symbol} {day.isoformat()}: {reason}")


@lake_group.command("write")
@click.argument("dest")
@click.option("--symbol", "symbols", multiple=True, help="Only this symbol (repeatable; default: all).")
@click.option("--category", type=click.Choice(CATEGORIES), default=None,
              help="Only this category (default: all).")
@click.option("--start", default=None, help="First day (inclusive), YYYY-MM-DD UTC [default: the first stored].")
@click.option("--end", default=None, help="Last day (exclusive), YYYY-MM-DD UTC [default: the last stored].")
@_db_option
@_json_option
@click.pass_context
def lake_write_command(ctx: click.Context, dest: str, symbols: tuple[str, ...], category: Category | None,
                       start: str | None, end: str | None, db: Path | None, as_json: bool) -> None:
    """Write every complete stored day whose partition is missing or out of date.

    \b
    Example:
        bybit-backfill lake ./lake --symbol BTCUSDT --start 2024-01-01
    """
    import os

    from store.lake import open_location, write_lake
    from store.schema import open_store
    from store.timerange import parse_when

    now = _now()
    first = parse_when(start, now).date() if start else date(2000, 1, 1)
    stop = parse_when(end, now).date() if end else None
    location = open_location(dest, os.environ)
    with open_store(_db_path(ctx, db), read_only=True, wait_s=_lock_wait(ctx)) as store:
        report = write_lake(store, location, categories=[category] if category else None,
                            symbols=list(symbols) or None, first=first, stop=stop)
    _print_json(report.as_dict()) if as_json else _render_lake(report)


@lake_group.command("verify")
@click.argument("dest")
@_json_option
@click.pass_context
def lake_verify_command(ctx: click.Context, dest: str, as_json: bool) -> None:
    """Check every partition's rows and fingerprint against its manifest; exit 1 when one is wrong.

    \b
    Example:
        bybit-backfill lake verify s3://bucket/bybit
    """
    import os

    from store.lake import open_location, verify_lake

    report = verify_lake(open_location(dest, os.environ))
    if as_json:
        _print_json(report.as_dict())
    else:
        for line in report.failures:
            click.echo(f"FAIL  {line}")
        click.echo(f"{'ok  ' if report.ok else 'FAIL'}  {report.checked} partitions checked in {report.uri}")
    if not report.ok:
        ctx.exit(EXIT_PARTIAL)


@main.command("demo")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=Path("demo-data"), show_default=True, help="Where the demo store and cache go.")
@click.option("--days", type=int, default=3, show_default=True)
@click.option("--trades-per-day", type=int, default=200_000, show_default=True)
@click.pass_context
def demo_command(ctx: click.Context, directory: Path, days: int, trades_per_day: int) -> None:
    """Offline end to end: a local Bybit emulator, a refresh, parquet files and an analyst query.

    \b
    Example:
        bybit-backfill demo
    """
    from demo import run_demo

    run_demo(directory, days=days, trades_per_day=trades_per_day, echo=click.echo)


@main.command("sim")
@click.option("--port", type=int, default=8099, show_default=True, help="0 picks a free port (printed).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--markets", default=None,
              help="SYMBOL:CATEGORY[:TRADES_PER_DAY],... e.g. BTCUSDT:linear:1500000,ETHUSDT:linear:200000 "
                   "[default: BTCUSDT linear 20,000/day, ETHUSDT linear, BTCUSD inverse, BTCUSDT spot 5,000/day].")
@click.option("--trades-per-day", type=int, default=None,
              help="Trades per day of every market without its own count [default: 20,000 / 5,000].")
@click.option("--seed", type=int, default=7, show_default=True, help="Same seed, same trades and files.")
@click.option("--now", default=None, help="Freeze the market's now at this UTC instant (ISO) [default: the wall clock].")
@click.option("--clock-start", default=None,
              help="Start a running market clock at this UTC instant (ISO, e.g. 2024-01-10T23:59) [default: now].")
@click.option("--speed", type=float, default=1.0, show_default=True,
              help="Market seconds per wall second (600 crosses a midnight in 6 s of a 1-hour start).")
@click.option("--latency-ms", type=float, default=0.0, show_default=True, help="Added to every answer and push.")
@click.option("--fault", "faults", multiple=True, metavar="KIND[:RATE]",
              help="Inject a fault kind of sim/faults.py (http_502, ret_10006, drop, truncate_gzip, ws_drop...) "
                   "into that share of requests [default rate: 0.05]; repeatable.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where generated archive files are kept [default: $TMPDIR/bybit-sim-cache].")
@click.option("--clear-cache", is_flag=True, help="Delete the generated archive files of the cache dir and exit.")
@click.pass_context
def sim_command(ctx: click.Context, port: int, host: str, markets: str | None, trades_per_day: int | None,
                seed: int, now: str | None, clock_start: str | None, speed: float, latency_ms: float,
                faults: tuple[str, ...], cache_dir: Path | None, clear_cache: bool) -> None:
    """Serve the local Bybit emulator until stopped; it prints the env lines that point the tool at it.

    REST, archive and the public WebSocket streams on one port. On start it prints its URL, markets,
    the API key pair it accepts (its own test key) and `export BYBIT_..._BASE_URL=...` lines to paste.
    -v logs each request with its status and time.

    \b
    Example:
        bybit-backfill sim --port 8099
        bybit-backfill sim --markets BTCUSDT:linear:1500000,ETHUSDT:linear:200000 --fault http_502:0.1 -v
        bybit-backfill sim --clock-start 2024-01-10T23:55 --speed 60 --trades-per-day 500000
        bybit-backfill sim --clear-cache
    """
    import sim
    from sim.options import SimOptions
    from sim.options import clear_cache as clear

    if clear_cache:
        target, removed = clear(cache_dir)
        click.echo(f"removed {removed} generated archive files from {target}")
        return
    if ctx.obj.get("verbose"):
        sim_log = logging.getLogger("sim")
        sim_log.handlers[:] = log.handlers[:]
        sim_log.setLevel(logging.DEBUG)
        sim_log.propagate = False
    options = SimOptions(markets=markets, trades_per_day=trades_per_day, seed=seed, now=now,
                         clock_start=clock_start, speed=speed, latency_ms=latency_ms, faults=faults,
                         cache_dir=cache_dir)
    try:
        config, mixes = options.build()
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    sim.serve(port=port, host=host, config=config, faults=mixes, announce=click.echo)


@main.command("config")
@_json_option
@click.pass_context
def config_command(ctx: click.Context, as_json: bool) -> None:
    """The effective configuration: every variable, its value and where it came from.

    Sources: `flag` (the group's --db), `env`, `.env` (in the current directory) or `default`.
    Secrets (BYBIT_API_KEY, BYBIT_API_SECRET) are never printed: `****` when set.

    \b
    Example:
        bybit-backfill config
        BYBIT_API_TIMEOUT=10 bybit-backfill --db other.duckdb config --json
    """
    import os

    from store.settings import describe_settings

    flags = {"backfill_db_path": ctx.obj.get("db")}
    rows = describe_settings(_settings(ctx), dict(os.environ), Path(".env"), flags)
    if as_json:
        _print_json(rows)
        return
    click.echo(_table(["variable", "value", "source"],
                      [[r["variable"], r["value"] if r["set"] else "(not set)", r["source"]] for r in rows]))


@main.command("forget")
@click.argument("symbol", callback=_symbol)
@click.option("--category", type=click.Choice(CATEGORIES), required=True,
              help="The category to forget (required: no default, so a wrong guess deletes nothing).")
@click.option("--start", default=None, help="First day forgotten (inclusive), YYYY-MM-DD UTC [default: the first stored].")
@click.option("--end", default=None, help="Day after the last one forgotten (exclusive), YYYY-MM-DD [default: all after --start].")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_db_option
@_json_option
@click.pass_context
def forget_command(ctx: click.Context, symbol: str, category: Category, start: str | None, end: str | None,
                   yes: bool, db: Path | None, as_json: bool) -> None:
    """Delete a market's trades, coverage, summaries, gaps and exported files over whole UTC days.

    One transaction: afterwards the store is as if the span had never been fetched (`verify`
    passes, the next `refresh` fetches it again). Undoes a refresh with the wrong --category.
    The account's own fills (`executions`) stay.

    \b
    Example:
        bybit-backfill forget BTCUSD --category linear --yes
        bybit-backfill forget BTCUSDT --category linear --start 2024-01-03 --end 2024-01-05
    """
    from store.forget import forget, forget_days, plan_forget
    from store.schema import open_store
    from store.timerange import parse_when

    now = _now()
    first, stop = forget_days(start, end, lambda text: parse_when(text, now))
    with open_store(_db_path(ctx, db), wait_s=_lock_wait(ctx)) as store:
        planned = plan_forget(store, Market(category, symbol), first, stop)
        if planned.empty:
            done = planned
        else:
            if not yes:
                counts = ", ".join(f"{n:,} {table}" for table, n in planned.rows.items() if n)
                click.confirm(f"forget {symbol} ({category}) {_days_text(first, stop)}: {counts} rows and "
                              f"{len(planned.files)} exported files?", abort=True, err=True)
            done = forget(store, Market(category, symbol), first, stop)
    if as_json:
        _print_json(done.as_dict())
    elif done.empty:
        click.echo(f"nothing stored for {symbol} ({category}) {_days_text(first, stop)}")
    else:
        counts = ", ".join(f"{table} {n:,}" for table, n in done.rows.items() if n)
        click.echo(f"forgot {symbol} ({category}) {_days_text(first, stop)}: {counts}; "
                   f"{done.files_deleted} exported files deleted")


def _days_text(first: date, stop: date) -> str:
    from store.forget import EVERYTHING

    if (first, stop) == EVERYTHING:
        return "on every day"
    return f"from {first if first != EVERYTHING[0] else 'the start'} to {stop if stop != EVERYTHING[1] else 'the end'} (exclusive)"


_add_common_options(main)


def run() -> NoReturn:
    """The `bybit-backfill` console script: `main`, then the process ends without the interpreter's
    teardown.

    When `main` returns, each command has closed its store, renamed its files into place and awaited
    its own work. A normal exit would then wait for every non-daemon thread and pool (done here too,
    by the same call the interpreter makes) and free DuckDB's and Arrow's memory object by object,
    module by module: ~0.15 s after a busy day (a twentieth of the run) that changes nothing on disk.
    So the logs and streams are flushed and the process leaves with `os._exit`. Library callers and
    tests call `main` and keep the normal exit; an unexpected exception leaves normally, traceback
    and all.
    """
    try:
        main()
    except SystemExit as done:
        code = done.code
    else:  # pragma: no cover - standalone click always raises SystemExit
        code = 0
    wait_for_threads = getattr(threading, "_shutdown", None)  # what Py_Finalize calls first
    if wait_for_threads is None or threading.current_thread() is not threading.main_thread():
        sys.exit(code)
    wait_for_threads()
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # what `sys.exit("message")` prints
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe cannot take the last bytes either way
            stream.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    run()
