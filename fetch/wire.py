"""The I/O-free vocabulary every client layer speaks: `Request` -> `Response` through the one-method
`Transport` protocol, and the `X-Bapi-Limit*` headers of an answer.

No aiohttp and no pyarrow here, so the retry, breaker and limiter layers (and their tests) load
nothing heavier than the standard library; `fetch.transport` puts these requests on the wire.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self

Kind = Literal["api", "archive"]


@dataclass(frozen=True, slots=True)
class Request:
    """One GET. `query` is the final, already-encoded query string: it is what gets signed and sent.

    `kind` says which host it goes to ('api' is rate-limited and guarded by the breaker, 'archive' is
    a static file server); `public` marks market-data calls (paced by `public_delay_ms`); `signed`
    asks the signing layer to add fresh X-BAPI-* headers; `dest` makes it a streamed download.
    """

    base_url: str
    path: str
    query: str = ""
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    kind: Kind = "api"
    endpoint: str = ""
    signed: bool = False
    public: bool = True
    dest: Path | None = None
    on_bytes: Callable[[int], None] | None = field(default=None, repr=False, compare=False)

    @property
    def url(self) -> str:
        base = self.base_url.rstrip("/") + "/" + self.path.lstrip("/")
        return f"{base}?{self.query}" if self.query else base

    @property
    def redacted_url(self) -> str:
        """The URL for messages: parameter names kept, long values (cursors) elided."""
        base = self.base_url.rstrip("/") + "/" + self.path.lstrip("/")
        if not self.query:
            return base
        shown = []
        for part in self.query.split("&"):
            key, _, value = part.partition("=")
            shown.append(f"{key}={value if len(value) <= 24 else '…'}")
        return f"{base}?{'&'.join(shown)}"


@dataclass(frozen=True, slots=True)
class Response:
    """What came back. Header names are lower-case. Downloads have `path` set and an empty body."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""
    path: Path | None = None
    elapsed_s: float = 0.0
    size_bytes: int = 0
    result: Mapping[str, object] | None = field(default=None, repr=False)


class Transport(Protocol):
    """Anything that can send a `Request`: the aiohttp transport, a layer wrapping it, a test fake."""

    async def send(self, request: Request) -> Response: ...


class Closing:
    """`async with` for an object that owns a session: leaving the block awaits its `close()`."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Release what the object owns; a no-op here."""


@dataclass(frozen=True, slots=True)
class LimitStatus:
    """The `X-Bapi-Limit*` headers of one response; every field is optional on the wire."""

    limit: int | None = None
    remaining: int | None = None
    reset_at_ms: int | None = None


def parse_limit_headers(headers: Mapping[str, str]) -> LimitStatus:
    """`X-Bapi-Limit`, `-Status`, `-Reset-Timestamp` (any case) -> `LimitStatus`; absent or bad -> None."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return LimitStatus(
        limit=_int_or_none(lowered.get("x-bapi-limit")),
        remaining=_int_or_none(lowered.get("x-bapi-limit-status")),
        reset_at_ms=_int_or_none(lowered.get("x-bapi-limit-reset-timestamp")),
    )


def _int_or_none(value: str | None) -> int | None:
    try:
        return None if value is None else int(value.strip())
    except ValueError:
        return None
