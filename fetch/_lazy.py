"""Lazy public names for a package's `__init__` (PEP 562), shared by `fetch` and `store`.

A package lists which submodule defines each public name; a name's submodule is imported the first
time the name is used, so importing the package itself costs nothing (the read-only commands start
without aiohttp, the client or the refresh machinery).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, exports: Mapping[str, tuple[str, ...]], namespace: dict[str, Any],
               ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose submodule `exports[module]` defines those
    names; a resolved name is kept in `namespace` (the package's globals) so it is looked up once."""
    module_of = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module_of[name]}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(module_of))

    return __getattr__, __dir__
