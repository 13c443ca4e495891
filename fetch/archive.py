"""`ArchiveSource`: Bybit's daily trade files on the archive host (public.bybit.com).

Whole past days come from here, never from REST. A 404 for a day means "not published yet" (the
last day or two can lag for hours), never "no trades", so it is reported as None, not as an empty
day. Files are downloaded to `work_dir` (streamed, then renamed into place by the transport); the
store parses them with `fetch.parse.archive_rows` in a worker thread and owns `work_dir` cleanup.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from .client import BybitClient
from .errors import ArchiveError, BackfillError, InputError
from .market_span import Market
from .ordered_map import ordered_map
from .parse import parse_archive_index


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """One downloaded day: the local gzip file and where it came from."""

    day: date
    path: Path
    url: str
    size_bytes: int


def archive_folder(market: Market) -> str:
    """The folder holding a symbol's daily files (its HTML index lists them)."""
    if market.category == "spot":
        return f"/spot/{market.symbol}/"
    return f"/trading/{market.symbol}/"


def archive_path(market: Market, day: date) -> str:
    """URL path of one day's file: linear/inverse `/trading/S/S2024-01-02.csv.gz`, spot with `_`."""
    symbol = market.symbol
    if market.category == "spot":
        return f"/spot/{symbol}/{symbol}_{day.isoformat()}.csv.gz"
    return f"/trading/{symbol}/{symbol}{day.isoformat()}.csv.gz"


class ArchiveSource:
    """Lists, downloads and (concurrently) fetches daily archive files for one client."""

    archive_path = staticmethod(archive_path)

    def __init__(self, client: BybitClient, work_dir: Path, *, concurrency: int | None = None) -> None:
        self.client = client
        self.work_dir = Path(work_dir)
        self.concurrency = max(1, concurrency or client.config.archive_concurrency)

    async def list_days(self, market: Market) -> list[date]:
        """Days the archive has for `market`, ascending; `InputError` if the archive has no such folder."""
        folder = archive_folder(market)
        html = await self.client.get_text(folder)
        if html is None:
            raise InputError(f"unknown symbol {market.symbol} ({market.category}) on the archive: "
                             f"{self._url(folder)} does not exist; check the symbol and the category")
        return parse_archive_index(html, market.symbol)

    async def download_day(self, market: Market, day: date,
                           on_bytes: Callable[[int], None] | None = None) -> ArchiveFile | None:
        """Download one day to `work_dir`; None when it is not published (404).

        Any failure after the client's retries becomes `ArchiveError(day=...)`, so a caller can skip
        the day and go on with the others.
        """
        url_path, symbol = archive_path(market, day), market.symbol
        dest = self.work_dir / market.category / symbol / url_path.rsplit("/", 1)[1]
        try:
            path = await self.client.download(url_path, dest, on_bytes=on_bytes)
        except ArchiveError:
            raise
        except BackfillError as exc:
            raise ArchiveError(f"archive file for {symbol} {day.isoformat()} could not be downloaded: {exc}",
                               day=day.isoformat(), url=self._url(url_path)) from exc
        except OSError as exc:
            raise ArchiveError(f"archive file for {symbol} {day.isoformat()} could not be written to "
                               f"{dest.parent} ({exc.strerror or exc}): check the work dir is writable "
                               "and has free space", day=day.isoformat(), url=self._url(url_path)) from exc
        if path is None:
            return None
        return ArchiveFile(day, path, self._url(url_path), path.stat().st_size)

    async def fetch_days(self, market: Market, days: Iterable[date],
                         on_bytes: Callable[[int], None] | None = None,
                         ) -> AsyncIterator[tuple[date, ArchiveFile | ArchiveError | None]]:
        """Download `days` concurrently (at most `concurrency` at once) and yield `(day, outcome)`.

        Pairs come in the order of `days`, each as soon as it and the days before it are done, while
        the next ones keep downloading. The outcome is the `ArchiveFile`, None (not published yet)
        or the `ArchiveError` of that day alone: one bad day never stops the others.
        """
        async def one(day: date) -> ArchiveFile | ArchiveError | None:
            try:
                return await self.download_day(market, day, on_bytes)
            except ArchiveError as exc:
                return exc

        async with aclosing(ordered_map(days, one, self.concurrency)) as results:
            async for day, outcome in results:
                yield day, outcome

    def _url(self, url_path: str) -> str:
        return self.client.config.endpoints.archive_base_url.rstrip("/") + url_path
