"""The fetch package's public surface is explicit: every exported name exists and nothing leaks."""

from __future__ import annotations

import inspect

import fetch


def test_every_exported_name_exists() -> None:
    missing = [name for name in fetch.__all__ if not hasattr(fetch, name)]
    assert missing == []


def test_the_documented_names_are_exported() -> None:
    expected = {"BybitClient", "ClientStats", "ArchiveSource", "ArchiveFile", "RecentTradeSource",
                "ExecutionSource", "plan_windows", "Trade", "Execution", "TRADE_SCHEMA", "Category", "Source",
                "FetchConfig", "Endpoints", "Credentials", "RetryPolicy", "BreakerPolicy", "RateLimits",
                "Timeouts", "BackfillError", "InputError", "ExchangeError", "ParameterError", "RateLimited",
                "IpBanned", "AuthError", "ClockSkew", "ServerError", "TransportError", "BadResponse",
                "CircuitOpen", "ArchiveError", "archive_rows", "read_archive"}
    assert expected <= set(fetch.__all__)


def own_docstring(obj: object) -> str:
    """The docstring written for `obj` itself: not inherited, and not the signature `dataclasses` writes
    into an undocumented class (which `inspect.getdoc` would happily return)."""
    if not inspect.isclass(obj):
        return inspect.getdoc(obj) or ""
    import dataclasses

    doc = vars(obj).get("__doc__") or ""
    if dataclasses.is_dataclass(obj) and doc == obj.__name__ + str(inspect.signature(obj)).replace(" -> None", ""):
        return ""
    return doc.strip()


def test_own_docstring_sees_through_the_dataclass_signature() -> None:
    import dataclasses

    @dataclasses.dataclass
    class Bare:
        x: int

    @dataclasses.dataclass
    class Documented:
        """Says why."""

        x: int

    assert own_docstring(Bare) == "" and own_docstring(Documented) == "Says why."


def test_every_public_class_and_function_has_a_docstring() -> None:
    undocumented = [name for name in fetch.__all__
                    if (inspect.isclass(getattr(fetch, name)) or inspect.isfunction(getattr(fetch, name)))
                    and not own_docstring(getattr(fetch, name))]
    assert undocumented == []


def test_only_the_transport_imports_aiohttp() -> None:
    import pathlib

    root = pathlib.Path(fetch.__file__).parent
    users = sorted(p.name for p in root.glob("*.py") if "import aiohttp" in p.read_text()
                   or "from aiohttp" in p.read_text())
    assert users == ["transport.py"]
