"""Symbols as Bybit spells them. Light on purpose (no pyarrow): every command's parser uses it."""

from __future__ import annotations

import re

from .errors import InputError

_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9-]{1,39}$")


def normalize_symbol(text: str) -> str:
    """A symbol as Bybit spells it (upper case, e.g. BTCUSDT), from whatever a person typed.

    Done once at each edge (CLI, Python API, library entry points): Bybit answers `btcusdt` with
    nothing, and coverage keyed by the spelling asked for would then claim the real symbol's span
    empty."""
    symbol = text.strip().upper()
    if not _SYMBOL.match(symbol):
        raise InputError(f"{text!r} is not a Bybit symbol: use letters and digits, e.g. BTCUSDT")
    return symbol
