"""One error tree for the whole tool.

The root lives here, in the lowest layer, so `store/` and `cli.py` can extend it without cycles::

    BackfillError                      every error this tool raises on purpose
    ├── InputError                     bad dates, unknown symbol, bad options       (Terminal)
    ├── ExchangeError(ret_code)        Bybit answered with a non-zero retCode
    │   ├── ParameterError             10001: a parameter is wrong                  (Terminal)
    │   ├── RateLimited                10006: per-endpoint limit, wait until reset  (Transient)
    │   ├── IpBanned                   HTTP 403 / 10018: IP limit, breaker opens    (Transient)
    │   ├── AuthError                  10003/10004/10005/10010, HTTP 401            (Terminal)
    │   ├── ClockSkew                  10002: resync the clock, retry once          (Transient)
    │   └── ServerError                5xx, 10000, 10016                            (Transient)
    ├── TransportError                 timeouts, resets, refused connections        (Transient)
    ├── BadResponse                    non-JSON or malformed body                   (Transient)
    ├── Implausible(source)            parses, but cannot be true (time, symbol, price) (Terminal)
    ├── ResponseTooLarge               an answer over the size cap (16 MB)          (Terminal)
    ├── CircuitOpen                    the breaker refuses to send                  (Terminal)
    ├── ArchiveError(day)              a daily file is missing, truncated, malformed (Terminal)
    └── StoreError (store/errors.py)   StoreLocked, NotADatabase, ExportError, QueryError

`Transient` and `Terminal` are marker mixins: the retry layer decides by the type alone. It retries
`Transient` errors, except `ClockSkew`, which it hands up first so the client resyncs its clock and
retries once with a fresh signature (`fetch.retry.classify`).
"""

from __future__ import annotations


class BackfillError(Exception):
    """Root of every error this tool raises; its message says what to do next."""


class Transient:
    """Marker: trying again later may succeed."""


class Terminal:
    """Marker: trying again will not help; a person must act."""


class InputError(BackfillError, Terminal):
    """The caller asked for something impossible (bad dates, unknown symbol...)."""


class ExchangeError(BackfillError):
    """Bybit answered, but with a non-zero retCode or an error status."""

    def __init__(self, message: str, *, ret_code: int | None = None, status: int | None = None,
                 endpoint: str = "") -> None:
        super().__init__(message)
        self.ret_code = ret_code
        self.status = status
        self.endpoint = endpoint


class ParameterError(ExchangeError, Terminal):
    """retCode 10001: a request parameter (often the symbol) is wrong."""


class RateLimited(ExchangeError, Transient):
    """retCode 10006 or HTTP 429: wait until `reset_at_ms` (when known), then retry slower."""

    def __init__(self, message: str, *, reset_at_ms: int | None = None, ret_code: int | None = None,
                 status: int | None = None, endpoint: str = "") -> None:
        super().__init__(message, ret_code=ret_code, status=status, endpoint=endpoint)
        self.reset_at_ms = reset_at_ms


class IpBanned(ExchangeError, Transient):
    """HTTP 403 or retCode 10018: the IP limit was hit; Bybit bans for at least 10 minutes."""


class AuthError(ExchangeError, Terminal):
    """The API key, signature, permission or IP whitelist was refused."""


class ClockSkew(ExchangeError, Transient):
    """retCode 10002: our timestamp is outside recv_window; resync from /v5/market/time."""


class ServerError(ExchangeError, Transient):
    """HTTP 5xx or retCode 10000/10016: Bybit had a transient problem."""


class TransportError(BackfillError, Transient):
    """The request never got a complete answer (timeout, reset, refused, cut body)."""


class BadResponse(BackfillError, Transient):
    """The answer could not be read (not JSON, missing fields)."""


class Implausible(BackfillError, Terminal):
    """A well-formed answer that cannot be true: a trade of another symbol, timed before Bybit
    existed or after the exchange's now, with a price or size that is not a positive number. Nothing
    of such an answer is stored or counted as coverage; asking again is pointless."""

    def __init__(self, message: str, *, source: str = "") -> None:
        super().__init__(message)
        self.source = source


class ResponseTooLarge(BackfillError, Terminal):
    """An API answer grew past the size cap: not Bybit's API (or a hostile one). Never retried:
    asking again would buffer the same megabytes again."""


class CircuitOpen(BackfillError, Terminal):
    """The circuit breaker is open: nothing is sent until the cooldown ends."""

    def __init__(self, message: str, *, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ArchiveError(BackfillError, Terminal):
    """A daily archive file is unusable; `day` names it so the rest of the range can go on."""

    def __init__(self, message: str, *, day: str = "", url: str = "") -> None:
        super().__init__(message)
        self.day = day
        self.url = url


AUTH_CODES = frozenset({10003, 10004, 10005, 10010})
_SERVER_CODES = frozenset({10000, 10016})


def error_for(ret_code: int, ret_msg: str, *, endpoint: str = "",
              reset_at_ms: int | None = None) -> ExchangeError:
    """Map a non-zero retCode to the one exception class that decides what happens next."""
    where = f" on {endpoint}" if endpoint else ""
    base = f"Bybit retCode {ret_code} ({ret_msg or 'no message'}){where}"
    if ret_code == 10006:
        return RateLimited(f"{base}: per-endpoint rate limit; slowing down", reset_at_ms=reset_at_ms,
                           ret_code=ret_code, endpoint=endpoint)
    cls, advice = _classify_code(ret_code)
    return cls(f"{base}: {advice}", ret_code=ret_code, endpoint=endpoint)


def _classify_code(ret_code: int) -> tuple[type[ExchangeError], str]:
    if ret_code == 10001:
        return ParameterError, "a request parameter is wrong; check the symbol, category and dates"
    if ret_code == 10002:
        return ClockSkew, "the local clock is off; it is resynced from /v5/market/time"
    if ret_code in AUTH_CODES:
        return AuthError, ("check BYBIT_API_KEY, BYBIT_API_SECRET, the key's permissions and its IP "
                           "whitelist")
    if ret_code == 10018:
        return IpBanned, "IP rate limit exceeded; waiting out the ban"
    if ret_code in _SERVER_CODES:
        return ServerError, "transient server error (retried with backoff); try again later if it persists"
    return ExchangeError, "unexpected error; see Bybit's error code list"


def error_for_status(status: int, *, endpoint: str = "") -> ExchangeError | None:
    """Map an HTTP status that is an error by itself; None when the JSON body must decide."""
    where = f" on {endpoint}" if endpoint else ""
    if status == 429:
        return RateLimited(f"HTTP 429{where}: system frequency protection; slowing down",
                           status=status, endpoint=endpoint)
    found = _classify_status(status)
    if found is None:
        return None
    cls, advice = found
    return cls(f"HTTP {status}{where}: {advice}", status=status, endpoint=endpoint)


def _classify_status(status: int) -> tuple[type[ExchangeError], str] | None:
    if status == 403:
        return IpBanned, ("Bybit's IP rate limit ban (over 600 requests per 5 s bans for at least 10 "
                          "minutes) or a restricted region; waiting out the cooldown")
    if status == 401:
        return AuthError, "the API key was refused; check BYBIT_API_KEY and BYBIT_API_SECRET"
    if status >= 500:
        return ServerError, "Bybit server error (retried with backoff); try again later if it persists"
    if status >= 400:
        return ExchangeError, ("unexpected client error; check that BYBIT_REST_BASE_URL and "
                               "BYBIT_ARCHIVE_BASE_URL point at Bybit")
    return None
